import Foundation

extension CPUOps {
  /// Jagged multi-head softmax attention (SASRec): `out_i = Σ_j softmax_j(q_i·k_j / √d over the
  /// keys the mask allows) · v_j`. Layouts `q`, `k`, `v`, `out`: `[T, heads·headDim]`.
  /// Saves the row log-sum-exp (`[T, heads]`) for the backward.
  public static func softmaxAttentionForward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                             out: UnsafeMutablePointer<Float>, logSumExp: UnsafeMutablePointer<Float>,
                                             shape: JaggedShape, heads: Int, headDim d: Int, mask: AttentionMask) {
    let ld = heads * d, bq = attentionBlockRows, scale = 1 / Float(d).squareRoot()
    withAttentionWorkers(scratchPerWorker: bq * shape.maxLength) { scratch in
      Parallel.forEach(shape.batch * heads) { worker, item in
        let b = item / heads, h = item % heads
        let base = shape.offsets[b], n = shape.length(b), t = shape.targetCount(b)
        let qh = q + base * ld + h * d, kh = k + base * ld + h * d, vh = v + base * ld + h * d
        let oh = out + base * ld + h * d
        let s = scratch[worker]
        for qs in stride(from: 0, to: n, by: bq) {
          let rows = qs..<min(qs + bq, n)
          let ranges = blockKeyRanges(mask: mask, rows: rows, length: n, targets: t)
          let width = ranges.reduce(0) { $0 + $1.count }
          var col = 0
          for range in ranges {
            BLAS.shared.sgemm(transB: true, m: rows.count, n: range.count, k: d, alpha: scale, a: qh + qs * ld, lda: ld,
                              b: kh + range.lowerBound * ld, ldb: ld, c: s + col, ldc: width)
            col += range.count
          }
          for i in rows {
            let (p, band) = mask.keyIntervals(query: i, length: n, targets: t)
            let row = s + (i - qs) * width
            var maxS = -Float.infinity
            forEachColumn(ranges) { c, j in
              if p.contains(j) || band.contains(j) { maxS = max(maxS, row[c]) } else { row[c] = -.infinity }
            }
            let sum = VectorMath.expShifted(row, width, shift: maxS)
            for c in 0..<width { row[c] /= sum }
            logSumExp[(base + i) * heads + h] = maxS + Foundation.log(sum)
          }
          col = 0
          for (r, range) in ranges.enumerated() {
            BLAS.shared.sgemm(m: rows.count, n: d, k: range.count, a: s + col, lda: width,
                              b: vh + range.lowerBound * ld, ldb: ld, beta: r == 0 ? 0 : 1, c: oh + qs * ld, ldc: ld)
            col += range.count
          }
        }
      }
    }
  }

  /// Backward of `softmaxAttentionForward`, recomputing P from the saved log-sum-exp:
  /// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = dS K / √d`, `dK = dSᵀ Q / √d`.
  /// `dq`, `dk`, `dv` are overwritten.
  public static func softmaxAttentionBackward(dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                              v: UnsafePointer<Float>, logSumExp: UnsafePointer<Float>,
                                              dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                              dv: UnsafeMutablePointer<Float>, shape: JaggedShape, heads: Int,
                                              headDim d: Int, mask: AttentionMask) {
    let ld = heads * d, bq = attentionBlockRows, scale = 1 / Float(d).squareRoot()
    withAttentionWorkers(scratchPerWorker: 2 * bq * shape.maxLength) { scratch in
      Parallel.forEach(shape.batch * heads) { worker, item in
        let b = item / heads, h = item % heads
        let base = shape.offsets[b], n = shape.length(b), t = shape.targetCount(b)
        let off = base * ld + h * d
        let qh = q + off, kh = k + off, vh = v + off, doh = dout + off
        let dqh = dq + off, dkh = dk + off, dvh = dv + off
        for i in 0..<n {
          (dqh + i * ld).update(repeating: 0, count: d)
          (dkh + i * ld).update(repeating: 0, count: d)
          (dvh + i * ld).update(repeating: 0, count: d)
        }
        let p = scratch[worker], ds = p + bq * shape.maxLength
        for qs in stride(from: 0, to: n, by: bq) {
          let rows = qs..<min(qs + bq, n), m = rows.count
          let ranges = blockKeyRanges(mask: mask, rows: rows, length: n, targets: t)
          let width = ranges.reduce(0) { $0 + $1.count }
          var col = 0
          for range in ranges {
            BLAS.shared.sgemm(transB: true, m: m, n: range.count, k: d, alpha: scale, a: qh + qs * ld, lda: ld,
                              b: kh + range.lowerBound * ld, ldb: ld, c: p + col, ldc: width)
            BLAS.shared.sgemm(transB: true, m: m, n: range.count, k: d, a: doh + qs * ld, lda: ld,
                              b: vh + range.lowerBound * ld, ldb: ld, c: ds + col, ldc: width)
            col += range.count
          }
          for i in rows {
            let (pre, band) = mask.keyIntervals(query: i, length: n, targets: t)
            let pr = p + (i - qs) * width, dr = ds + (i - qs) * width
            let lse = logSumExp[(base + i) * heads + h]
            var dot: Float = 0
            forEachColumn(ranges) { c, j in
              pr[c] = (pre.contains(j) || band.contains(j)) ? Foundation.exp(pr[c] - lse) : 0
              dot += pr[c] * dr[c]
            }
            for c in 0..<width { dr[c] = pr[c] * (dr[c] - dot) * scale }
          }
          col = 0
          for range in ranges {
            let k0 = range.lowerBound, w = range.count
            BLAS.shared.sgemm(transA: true, m: w, n: d, k: m, a: p + col, lda: width, b: doh + qs * ld, ldb: ld,
                              beta: 1, c: dvh + k0 * ld, ldc: ld)
            BLAS.shared.sgemm(m: m, n: d, k: w, a: ds + col, lda: width, b: kh + k0 * ld, ldb: ld,
                              beta: 1, c: dqh + qs * ld, ldc: ld)
            BLAS.shared.sgemm(transA: true, m: w, n: d, k: m, a: ds + col, lda: width, b: qh + qs * ld, ldb: ld,
                              beta: 1, c: dkh + k0 * ld, ldc: ld)
            col += w
          }
        }
      }
    }
  }

  /// Calls `body(column, key)` for the concatenated columns of `ranges`.
  @inline(__always)
  static func forEachColumn(_ ranges: [Range<Int>], _ body: (Int, Int) -> Void) {
    var c = 0
    for range in ranges { for j in range { body(c, j); c += 1 } }
  }
}
