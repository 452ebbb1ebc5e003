import Foundation
import Testing
import UltraHSTU

/// Finite-difference checks of every CPU op's backward.
@Suite struct OpGradientTests {
  let tolerance = 1e-2

  @Test func silu() {
    let n = 40, x = randomArray(n, seed: 1), w = randomArray(n, seed: 2)
    var dx = [Float](repeating: 0, count: n)
    CPUOps.siluBackward(w, x, &dx, count: n)
    let err = finiteDifferenceError(x, analytic: dx) { x in
      var y = [Float](repeating: 0, count: n); CPUOps.siluForward(x, &y, count: n); return weightedSum(y, w)
    }
    #expect(err < tolerance)
  }

  /// The vectorised SiLU (its own exp polynomial) against double precision over a wide range.
  @Test func siluMatchesDoublePrecision() {
    let x = (0..<4001).map { Float($0 - 2000) * 0.02 } + [-100, -88, 88, 100]
    var y = [Float](repeating: .nan, count: x.count)
    CPUOps.siluForward(x, &y, count: x.count)
    for (xi, yi) in zip(x, y) {
      let ref = Double(xi) / (1 + Foundation.exp(-Double(xi)))
      #expect(abs(Double(yi) - ref) <= 1e-6 * max(1, abs(ref)), "silu(\(xi)) = \(yi), expected \(ref)")
    }
  }

  @Test func relu() {
    let n = 40, x = randomArray(n, seed: 3), w = randomArray(n, seed: 4)
    var y = [Float](repeating: 0, count: n), dx = y
    CPUOps.reluForward(x, &y, count: n)
    CPUOps.reluBackward(w, y, &dx, count: n)
    let err = finiteDifferenceError(x, analytic: dx, h: 1e-3) { x in
      var y = [Float](repeating: 0, count: n); CPUOps.reluForward(x, &y, count: n); return weightedSum(y, w)
    }
    #expect(err < tolerance)
  }

  @Test func dropoutIsLinearWithItsOwnMask() {
    let n = 64, x = randomArray(n, seed: 5), w = randomArray(n, seed: 6), r = CounterRandom(seed: 9)
    var y = [Float](repeating: 0, count: n), dx = y
    CPUOps.dropoutForward(x, &y, count: n, p: 0.3, random: r, stream: 4)
    CPUOps.dropoutBackward(w, &dx, count: n, p: 0.3, random: r, stream: 4)
    let kept = y.filter { $0 != 0 }.count
    #expect(kept > 20 && kept < 60)
    let err = finiteDifferenceError(x, analytic: dx) { x in
      var y = [Float](repeating: 0, count: n); CPUOps.dropoutForward(x, &y, count: n, p: 0.3, random: r, stream: 4)
      return weightedSum(y, w)
    }
    #expect(err < tolerance)
  }

  @Test func elementwiseProduct() {
    let n = 30, a = randomArray(n, seed: 7), b = randomArray(n, seed: 8), w = randomArray(n, seed: 9)
    var da = [Float](repeating: 0, count: n), db = da
    CPUOps.mulBackward(w, a, b, &da, &db, count: n)
    let ea = finiteDifferenceError(a, analytic: da) { a in
      var y = [Float](repeating: 0, count: n); CPUOps.mulForward(a, b, &y, count: n); return weightedSum(y, w)
    }
    let eb = finiteDifferenceError(b, analytic: db) { b in
      var y = [Float](repeating: 0, count: n); CPUOps.mulForward(a, b, &y, count: n); return weightedSum(y, w)
    }
    #expect(ea < tolerance && eb < tolerance)
  }

  @Test(arguments: [false, true]) func layerNorm(affine: Bool) {
    let rows = 5, dim = 7, n = rows * dim
    let x = randomArray(n, seed: 10), w = randomArray(n, seed: 11)
    let gamma = randomArray(dim, seed: 12), beta = randomArray(dim, seed: 13)
    func forward(_ x: [Float], _ g: [Float], _ b: [Float]) -> Double {
      var y = [Float](repeating: 0, count: n), m = [Float](repeating: 0, count: rows), s = m
      CPUOps.layerNormForward(x, &y, mean: &m, rstd: &s, gamma: affine ? g : nil, beta: affine ? b : nil, rows: rows, dim: dim)
      return weightedSum(y, w)
    }
    var y = [Float](repeating: 0, count: n), m = [Float](repeating: 0, count: rows), s = m
    CPUOps.layerNormForward(x, &y, mean: &m, rstd: &s, gamma: affine ? gamma : nil, beta: affine ? beta : nil, rows: rows, dim: dim)
    var dx = [Float](repeating: 0, count: n), dg = [Float](repeating: 0, count: dim), db = dg
    dg.withUnsafeMutableBufferPointer { dg in
      db.withUnsafeMutableBufferPointer { db in
        CPUOps.layerNormBackward(w, x, mean: m, rstd: s, gamma: affine ? gamma : nil, &dx,
                                 dgamma: affine ? dg.baseAddress : nil, dbeta: affine ? db.baseAddress : nil,
                                 rows: rows, dim: dim)
      }
    }
    #expect(finiteDifferenceError(x, analytic: dx) { forward($0, gamma, beta) } < tolerance)
    if affine {
      #expect(finiteDifferenceError(gamma, analytic: dg) { forward(x, $0, beta) } < tolerance)
      #expect(finiteDifferenceError(beta, analytic: db) { forward(x, gamma, $0) } < tolerance)
    }
  }

  @Test func linear() {
    let rows = 6, inDim = 5, outDim = 4
    let x = randomArray(rows * inDim, seed: 14), wt = randomArray(inDim * outDim, seed: 15)
    let bias = randomArray(outDim, seed: 16), w = randomArray(rows * outDim, seed: 17)
    func forward(_ x: [Float], _ wt: [Float], _ b: [Float]) -> Double {
      var y = [Float](repeating: 0, count: rows * outDim)
      CPUOps.linearForward(x, weight: wt, bias: b, &y, rows: rows, inDim: inDim, outDim: outDim)
      return weightedSum(y, w)
    }
    var dx = [Float](repeating: 0, count: rows * inDim), dw = [Float](repeating: 0, count: inDim * outDim)
    var db = [Float](repeating: 0, count: outDim)
    CPUOps.linearBackward(w, x, weight: wt, &dx, dWeight: &dw, dBias: &db, rows: rows, inDim: inDim, outDim: outDim)
    #expect(finiteDifferenceError(x, analytic: dx) { forward($0, wt, bias) } < tolerance)
    #expect(finiteDifferenceError(wt, analytic: dw) { forward(x, $0, bias) } < tolerance)
    #expect(finiteDifferenceError(bias, analytic: db) { forward(x, wt, $0) } < tolerance)
  }

  @Test func embedding() {
    let dim = 3, ids: [Int32] = [2, 0, 2, 1], pos: [Int32] = [0, 1, 1, 0], rows = ids.count
    let table = randomArray(3 * dim, seed: 18), positions = randomArray(2 * dim, seed: 19)
    let w = randomArray(rows * dim, seed: 20)
    func forward(_ t: [Float], _ p: [Float]) -> Double {
      var y = [Float](repeating: 0, count: rows * dim)
      CPUOps.embeddingForward(ids: ids, table: t, scale: 2, positionIndex: pos, positionTable: p, &y, rows: rows, dim: dim)
      return weightedSum(y, w)
    }
    var dt = [Float](repeating: 0, count: 3 * dim), dp = [Float](repeating: 0, count: 2 * dim)
    CPUOps.embeddingBackward(w, ids: ids, scale: 2, positionIndex: pos, dTable: &dt, dPositionTable: &dp, rows: rows, dim: dim)
    #expect(finiteDifferenceError(table, analytic: dt) { forward($0, positions) } < tolerance)
    #expect(finiteDifferenceError(positions, analytic: dp) { forward(table, $0) } < tolerance)
  }

  @Test func l2Normalize() {
    let rows = 4, dim = 6, x = randomArray(rows * dim, seed: 21), w = randomArray(rows * dim, seed: 22)
    var y = [Float](repeating: 0, count: rows * dim), norms = [Float](repeating: 0, count: rows)
    CPUOps.l2NormalizeForward(x, &y, norms: &norms, rows: rows, dim: dim)
    var dx = [Float](repeating: 0, count: rows * dim)
    CPUOps.l2NormalizeBackward(w, y, norms: norms, &dx, rows: rows, dim: dim)
    let err = finiteDifferenceError(x, analytic: dx) { x in
      var y = [Float](repeating: 0, count: rows * dim), n = [Float](repeating: 0, count: rows)
      CPUOps.l2NormalizeForward(x, &y, norms: &n, rows: rows, dim: dim)
      return weightedSum(y, w)
    }
    #expect(err < tolerance)
  }

  @Test func sampledSoftmax() {
    let rows = 5, dim = 4, itemCount = 9, r = CounterRandom(seed: 3)
    let user = randomArray(rows * dim, seed: 23, scale: 0.5), items = randomArray((itemCount + 1) * dim, seed: 24, scale: 0.5)
    let positives: [Int32] = [1, 4, 9, 2, 4]
    func loss(_ u: [Float], _ e: [Float]) -> Double {
      Double(CPUOps.sampledSoftmaxLoss(user: u, positives: positives, rows: rows, dim: dim, items: e, itemCount: itemCount,
                                       negatives: 6, temperature: 0.5, random: r, stream: 1, dUser: nil, dItems: nil))
    }
    var du = [Float](repeating: 0, count: rows * dim), de = [Float](repeating: 0, count: (itemCount + 1) * dim)
    let value = CPUOps.sampledSoftmaxLoss(user: user, positives: positives, rows: rows, dim: dim, items: items,
                                          itemCount: itemCount, negatives: 6, temperature: 0.5, random: r, stream: 1,
                                          dUser: &du, dItems: &de)
    #expect(abs(Double(value) - loss(user, items)) < 1e-6)
    #expect(finiteDifferenceError(user, analytic: du, h: 1e-3) { loss($0, items) } < tolerance)
    #expect(finiteDifferenceError(items, analytic: de, h: 1e-3) { loss(user, $0) } < tolerance)
  }

  @Test func sampledSoftmaxMatchesHandComputedLogits() {
    // One row, two negatives: loss = −log(e^{s₊/T} / Σ e^{s/T}), an accidental hit excluded.
    let dim = 2, items: [Float] = [0, 0, 1, 0, 0, 1, 0.6, 0.8]  // item 1 = (1,0), 2 = (0,1), 3 = (0.6,0.8)
    let user: [Float] = [1, 0], r = CounterRandom(seed: 11)
    let negs = (0..<2).map { CPUOps.sampledNegative(row: 0, sample: $0, negatives: 2, itemCount: 3, random: r, stream: 5) }
    let value = CPUOps.sampledSoftmaxLoss(user: user, positives: [1], rows: 1, dim: dim, items: items, itemCount: 3,
                                          negatives: 2, temperature: 0.5, random: r, stream: 5, dUser: nil, dItems: nil)
    let score: (Int) -> Double = { i in Double(items[i * 2]) / 0.5 }
    var denominator = exp(score(1))
    for n in negs where n != 1 { denominator += exp(score(n)) }
    #expect(abs(Double(value) - (-log(exp(score(1)) / denominator))) < 1e-5)
  }

  @Test func adamWMatchesTheFormula() {
    var p: [Float] = [1, -2], m: [Float] = [0, 0], v: [Float] = [0, 0]
    let g: [Float] = [0.5, -1]
    CPUOps.adamW(parameters: &p, gradients: g, m: &m, v: &v, count: 2, learningRate: 0.1, beta1: 0.9, beta2: 0.98,
                 epsilon: 1e-8, weightDecay: 0.01, step: 1)
    // Step 1: m̂ = g, v̂ = g², update = g/|g| + wd·p.
    #expect(abs(p[0] - (1 - 0.1 * (1 + 0.01 * 1))) < 1e-6)
    #expect(abs(p[1] - (-2 - 0.1 * (-1 + 0.01 * -2))) < 1e-6)
  }
}
