import Testing
import UltraHSTU

/// Finite-difference checks of the jagged attention ops, under several masks, with the relative
/// attention bias, and an element-wise comparison of the block-skipping forward with a dense loop.
@Suite struct AttentionGradientTests {
  let lengths = [5, 1, 7]
  var offsets: [Int] { lengths.reduce(into: [0]) { $0.append($0.last! + $1) } }
  var tokens: Int { lengths.reduce(0, +) }

  static let masks: [AttentionMask] = [.causal, .semiLocalMeta(k1: 2, k2: 2), .semiLocalPrefix(k1: 2, k2: 2),
                                       AttentionMask(localWindow: 1)]

  /// A dense O(L²) evaluation of the HSTU attention formula, the reference for the blocked op.
  func denseHSTU(q: [Float], k: [Float], v: [Float], heads: Int, dqk: Int, dv: Int, mask: AttentionMask,
                 position: [Float], targets: [Int32]) -> [Float] {
    var out = [Float](repeating: 0, count: tokens * heads * dv)
    for (b, n) in lengths.enumerated() {
      let base = offsets[b]
      for h in 0..<heads {
        for i in 0..<n {
          for j in 0..<n where mask.allows(query: i, key: j, length: n, targets: Int(targets[b])) {
            var s: Float = position[i - j]
            for d in 0..<dqk { s += q[(base + i) * heads * dqk + h * dqk + d] * k[(base + j) * heads * dqk + h * dqk + d] }
            let p = s / (1 + Foundation.exp(-s)) / 9
            for d in 0..<dv { out[(base + i) * heads * dv + h * dv + d] += p * v[(base + j) * heads * dv + h * dv + d] }
          }
        }
      }
    }
    return out
  }

  @Test(arguments: masks) func hstuAttention(mask: AttentionMask) {
    let heads = 2, dqk = 3, dv = 2, t = tokens
    let q = randomArray(t * heads * dqk, seed: 31), k = randomArray(t * heads * dqk, seed: 32)
    let v = randomArray(t * heads * dv, seed: 33), position = randomArray(8, seed: 34, scale: 0.3)
    let w = randomArray(t * heads * dv, seed: 35), targets: [Int32] = [1, 0, 2]
    func forward(_ q: [Float], _ k: [Float], _ v: [Float], _ pos: [Float]) -> [Float] {
      var out = [Float](repeating: .nan, count: t * heads * dv)
      offsets.withUnsafeBufferPointer { o in
        targets.withUnsafeBufferPointer { tg in
          pos.withUnsafeBufferPointer { p in
            CPUOps.hstuAttentionForward(q: q, k: k, v: v, out: &out,
                                        shape: JaggedShape(offsets: o.baseAddress!, batch: lengths.count, targets: tg.baseAddress!),
                                        heads: heads, attentionDim: dqk, linearDim: dv, mask: mask, normalizer: .fixed(9),
                                        bias: RelativeAttentionBias(positionTable: p.baseAddress!))
          }
        }
      }
      return out
    }
    let out = forward(q, k, v, position)
    let dense = denseHSTU(q: q, k: k, v: v, heads: heads, dqk: dqk, dv: dv, mask: mask, position: position, targets: targets)
    #expect(zip(out, dense).allSatisfy { abs($0 - $1) < 1e-5 })
    var dq = [Float](repeating: 0, count: q.count), dk = dq, dvv = [Float](repeating: 0, count: v.count)
    var dpos = [Float](repeating: 0, count: position.count)
    offsets.withUnsafeBufferPointer { o in
      targets.withUnsafeBufferPointer { tg in
        position.withUnsafeBufferPointer { p in
          dpos.withUnsafeMutableBufferPointer { dp in
            CPUOps.hstuAttentionBackward(dout: w, q: q, k: k, v: v, dq: &dq, dk: &dk, dv: &dvv,
                                         shape: JaggedShape(offsets: o.baseAddress!, batch: lengths.count, targets: tg.baseAddress!),
                                         heads: heads, attentionDim: dqk, linearDim: dv, mask: mask, normalizer: .fixed(9),
                                         bias: RelativeAttentionBias(positionTable: p.baseAddress!),
                                         biasGradient: .init(positionTable: dp.baseAddress!, positionCount: position.count))
          }
        }
      }
    }
    let loss = { (o: [Float]) in weightedSum(o, w) }
    #expect(finiteDifferenceError(q, analytic: dq, h: 1e-3) { loss(forward($0, k, v, position)) } < 1e-2)
    #expect(finiteDifferenceError(k, analytic: dk, h: 1e-3) { loss(forward(q, $0, v, position)) } < 1e-2)
    #expect(finiteDifferenceError(v, analytic: dvv, h: 1e-3) { loss(forward(q, k, $0, position)) } < 1e-2)
    #expect(finiteDifferenceError(position, analytic: dpos, h: 1e-3) { loss(forward(q, k, v, $0)) } < 1e-2)
  }

  @Test func hstuTimeBiasGradient() {
    // One sequence of 4 with a time-bucket matrix; the time table's gradient is checked.
    let n = 4, heads = 1, d = 2
    let q = randomArray(n * d, seed: 41), k = randomArray(n * d, seed: 42), v = randomArray(n * d, seed: 43)
    let table = randomArray(5, seed: 44, scale: 0.3), w = randomArray(n * d, seed: 45)
    let buckets: [UInt8] = (0..<(n * n)).map { UInt8($0 % 5) }
    let starts = [0, 4], bucketOffsets = [0]
    func run(_ table: [Float], dTable: UnsafeMutablePointer<Float>?) -> [Float] {
      var out = [Float](repeating: 0, count: n * d)
      starts.withUnsafeBufferPointer { o in
        buckets.withUnsafeBufferPointer { bk in
          bucketOffsets.withUnsafeBufferPointer { bo in
            table.withUnsafeBufferPointer { tb in
              let shape = JaggedShape(offsets: o.baseAddress!, batch: 1)
              let bias = RelativeAttentionBias(timeTable: tb.baseAddress!, timeBuckets: bk.baseAddress!, bucketOffsets: bo.baseAddress!)
              if let dTable {
                var dq = out, dk = out, dv = out
                CPUOps.hstuAttentionBackward(dout: w, q: q, k: k, v: v, dq: &dq, dk: &dk, dv: &dv, shape: shape, heads: heads,
                                             attentionDim: d, linearDim: d, mask: .causal, normalizer: .trueLength, bias: bias,
                                             biasGradient: .init(timeTable: dTable, timeCount: table.count))
              } else {
                CPUOps.hstuAttentionForward(q: q, k: k, v: v, out: &out, shape: shape, heads: heads, attentionDim: d,
                                            linearDim: d, mask: .causal, normalizer: .trueLength, bias: bias)
              }
            }
          }
        }
      }
      return out
    }
    var dTable = [Float](repeating: 0, count: table.count)
    dTable.withUnsafeMutableBufferPointer { _ = run(table, dTable: $0.baseAddress!) }
    #expect(finiteDifferenceError(table, analytic: dTable, h: 1e-3) { weightedSum(run($0, dTable: nil), w) } < 1e-2)
  }

  @Test(arguments: [AttentionMask.causal, .semiLocalMeta(k1: 2, k2: 2)]) func softmaxAttention(mask: AttentionMask) {
    let heads = 2, d = 3, t = tokens
    let q = randomArray(t * heads * d, seed: 51), k = randomArray(t * heads * d, seed: 52)
    let v = randomArray(t * heads * d, seed: 53), w = randomArray(t * heads * d, seed: 54)
    func forward(_ q: [Float], _ k: [Float], _ v: [Float], lse: inout [Float]) -> [Float] {
      var out = [Float](repeating: 0, count: t * heads * d)
      offsets.withUnsafeBufferPointer { o in
        CPUOps.softmaxAttentionForward(q: q, k: k, v: v, out: &out, logSumExp: &lse,
                                       shape: JaggedShape(offsets: o.baseAddress!, batch: lengths.count),
                                       heads: heads, headDim: d, mask: mask)
      }
      return out
    }
    var lse = [Float](repeating: 0, count: t * heads)
    _ = forward(q, k, v, lse: &lse)
    var dq = [Float](repeating: 0, count: q.count), dk = dq, dv = dq
    offsets.withUnsafeBufferPointer { o in
      CPUOps.softmaxAttentionBackward(dout: w, q: q, k: k, v: v, logSumExp: lse, dq: &dq, dk: &dk, dv: &dv,
                                      shape: JaggedShape(offsets: o.baseAddress!, batch: lengths.count),
                                      heads: heads, headDim: d, mask: mask)
    }
    let loss = { (q: [Float], k: [Float], v: [Float]) -> Double in
      var l = [Float](repeating: 0, count: t * heads); return weightedSum(forward(q, k, v, lse: &l), w)
    }
    #expect(finiteDifferenceError(q, analytic: dq, h: 1e-3) { loss($0, k, v) } < 1e-2)
    #expect(finiteDifferenceError(k, analytic: dk, h: 1e-3) { loss(q, $0, v) } < 1e-2)
    #expect(finiteDifferenceError(v, analytic: dv, h: 1e-3) { loss(q, k, $0) } < 1e-2)
  }
}

import Foundation
