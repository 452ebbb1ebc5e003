import Foundation

/// Learned relative attention bias of research HSTU (rab^{p,t}), shared across heads.
public struct RelativeAttentionBias {
  /// rab^p: one scalar per relative distance `i − j` (length ≥ longest sequence), or nil.
  public var positionTable: UnsafePointer<Float>?
  /// rab^t: one scalar per time bucket, or nil.
  public var timeTable: UnsafePointer<Float>?
  /// Time bucket of every (query, key) pair, per sequence an n×n row-major block at `bucketOffsets[b]`.
  public var timeBuckets: UnsafePointer<UInt8>?
  public var bucketOffsets: UnsafePointer<Int>?

  public init(positionTable: UnsafePointer<Float>? = nil, timeTable: UnsafePointer<Float>? = nil,
              timeBuckets: UnsafePointer<UInt8>? = nil, bucketOffsets: UnsafePointer<Int>? = nil) {
    self.positionTable = positionTable
    self.timeTable = timeTable
    self.timeBuckets = timeBuckets
    self.bucketOffsets = bucketOffsets
  }

  public static let none = RelativeAttentionBias()

  /// Whether any bias term is configured.
  var hasTerms: Bool { positionTable != nil || (timeTable != nil && timeBuckets != nil) }

  @inline(__always) func value(sequence b: Int, n: Int, i: Int, j: Int) -> Float {
    var s: Float = 0
    if let positionTable { s += positionTable[i - j] }
    if let timeTable, let timeBuckets, let bucketOffsets { s += timeTable[Int(timeBuckets[bucketOffsets[b] + i * n + j])] }
    return s
  }
}

/// A jagged batch's shape as seen by attention: sequence `b` owns rows `offsets[b]..<offsets[b+1]`.
public struct JaggedShape {
  public var offsets: UnsafePointer<Int>
  public var batch: Int
  /// Number of candidate tokens at the end of each sequence (nil: none).
  public var targets: UnsafePointer<Int32>?

  public init(offsets: UnsafePointer<Int>, batch: Int, targets: UnsafePointer<Int32>? = nil) {
    self.offsets = offsets
    self.batch = batch
    self.targets = targets
  }

  @inline(__always) func length(_ b: Int) -> Int { offsets[b + 1] - offsets[b] }
  @inline(__always) func targetCount(_ b: Int) -> Int { targets.map { Int($0[b]) } ?? 0 }
  var maxLength: Int { (0..<batch).map(length).max() ?? 0 }
}

/// Time bucket of research HSTU: `clamp(trunc(ln(max(|Δt|, 1)) / 0.301), 0, buckets)`.
@inline(__always) public func hstuTimeBucket(_ dt: Int64, buckets: Int) -> UInt8 {
  let a = Double(max(abs(dt), 1))
  return UInt8(min(buckets, max(0, Int(Foundation.log(a) / 0.301))))
}

/// `thresholds[b]`: the least |Δt| ≥ 1 whose `hstuTimeBucket` is b or more (`Int64.max` when no
/// Δt reaches b), for b in 0...buckets. The bucket is monotone in |Δt|, so these integers give it
/// exactly; the GPU corrects its fast-log bucket with them.
public func hstuTimeBucketThresholds(buckets: Int) -> [Int64] {
  (0...buckets).map { b in
    var low: Int64 = 1, high = Int64.max / 2
    guard Int(hstuTimeBucket(high, buckets: buckets)) >= b else { return .max }
    while low < high {
      let mid = low + (high - low) / 2
      if Int(hstuTimeBucket(mid, buckets: buckets)) >= b { high = mid } else { low = mid + 1 }
    }
    return low
  }
}

extension CPUOps {
  /// Query rows per block; a block computes only the key ranges its rows can see.
  static let attentionBlockRows = 64

  /// The non-empty key ranges a block of query rows needs (the mask's prefix and band unions).
  @inline(__always)
  static func blockKeyRanges(mask: AttentionMask, rows: Range<Int>, length n: Int, targets t: Int) -> [Range<Int>] {
    let (prefix, band) = mask.blockKeyRanges(rows: rows, length: n, targets: t)
    return [prefix, band].filter { !$0.isEmpty }
  }

  /// Keys per chunk of a block's key range in the pointwise (SiLU) attention: the scores of a
  /// block stay in cache however long the range (a global row of semi-local attention sees all L).
  static let attentionKeyChunk = 512

  /// `blockKeyRanges` cut into chunks of at most `attentionKeyChunk` keys. Pointwise attention
  /// has no softmax normaliser, so chunks simply add up.
  @inline(__always)
  static func blockKeyChunks(mask: AttentionMask, rows: Range<Int>, length n: Int, targets t: Int) -> [Range<Int>] {
    blockKeyRanges(mask: mask, rows: rows, length: n, targets: t).flatMap { range in
      stride(from: range.lowerBound, to: range.upperBound, by: attentionKeyChunk).map {
        $0..<min($0 + attentionKeyChunk, range.upperBound)
      }
    }
  }

  /// Fused jagged HSTU attention forward: for every sequence and head
  /// `out_i = Σ_j M_ij · SiLU(q_i·k_j + rab_ij) / N · v_j`.
  /// Layouts: `q`, `k` are `[T, heads·attentionDim]`, `v`, `out` are `[T, heads·linearDim]`.
  /// Only the key blocks the mask lets a query block see are computed; the L×L matrix never exists.
  public static func hstuAttentionForward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                          out: UnsafeMutablePointer<Float>, shape: JaggedShape, heads: Int,
                                          attentionDim dqk: Int, linearDim dv: Int, mask: AttentionMask,
                                          normalizer: AttentionNormalizer, bias: RelativeAttentionBias) {
    let ldq = heads * dqk, ldv = heads * dv, bq = attentionBlockRows
    let maxN = shape.maxLength
    withAttentionWorkers(scratchPerWorker: bq * min(maxN, attentionKeyChunk)) { scratch in
      Parallel.forEach(shape.batch * heads) { worker, item in
        let b = item / heads, h = item % heads
        let base = shape.offsets[b], n = shape.length(b), t = shape.targetCount(b)
        let divisor = 1 / normalizer.divisor(length: n - t)
        let qh = q + base * ldq + h * dqk, kh = k + base * ldq + h * dqk
        let vh = v + base * ldv + h * dv, oh = out + base * ldv + h * dv
        for i in 0..<n { (oh + i * ldv).update(repeating: 0, count: dv) }
        let s = scratch[worker]
        for qs in stride(from: 0, to: n, by: bq) {
          let rows = qs..<min(qs + bq, n)
          for range in blockKeyChunks(mask: mask, rows: rows, length: n, targets: t) {
            let width = range.count
            BLAS.shared.sgemm(transB: true, m: rows.count, n: width, k: dqk, a: qh + qs * ldq, lda: ldq,
                              b: kh + range.lowerBound * ldq, ldb: ldq, c: s, ldc: width)
            for i in rows {
              let row = s + (i - qs) * width
              forEachVisibleSegment(mask: mask, query: i, length: n, targets: t, range: range, row: row) { j0, count in
                let seg = row + (j0 - range.lowerBound)
                if bias.hasTerms { for c in 0..<count { seg[c] += bias.value(sequence: b, n: n, i: i, j: j0 + c) } }
                VectorMath.silu(seg, seg, count)
                for c in 0..<count { seg[c] *= divisor }
              }
            }
            BLAS.shared.sgemm(m: rows.count, n: dv, k: width, a: s, lda: width, b: vh + range.lowerBound * ldv,
                              ldb: ldv, beta: 1, c: oh + qs * ldv, ldc: ldv)
          }
        }
      }
    }
  }

  /// Calls `body(firstKey, count)` for each run of keys in `range` that `query` may see (at most
  /// two), after zeroing the columns of `row` (and `alsoZero`) it may not see. Columns are keys
  /// minus `range.lowerBound`.
  @inline(__always)
  static func forEachVisibleSegment(mask: AttentionMask, query i: Int, length n: Int, targets t: Int, range: Range<Int>,
                                    row: UnsafeMutablePointer<Float>, alsoZero: UnsafeMutablePointer<Float>? = nil,
                                    _ body: (Int, Int) -> Void) {
    let (prefix, band) = mask.keyIntervals(query: i, length: n, targets: t)
    let visible = [prefix.clamped(to: range), band.clamped(to: range)].filter { !$0.isEmpty }
    var next = range.lowerBound
    for segment in visible + [range.upperBound..<range.upperBound] {
      if segment.lowerBound > next {
        let c = next - range.lowerBound, count = segment.lowerBound - next
        (row + c).update(repeating: 0, count: count)
        alsoZero.map { ($0 + c).update(repeating: 0, count: count) }
      }
      if !segment.isEmpty { body(segment.lowerBound, segment.count) }
      next = max(next, segment.upperBound)
    }
  }

  /// Gradients of the bias tables; accumulated (+=).
  public struct RelativeAttentionBiasGradient {
    public var positionTable: UnsafeMutablePointer<Float>?
    public var timeTable: UnsafeMutablePointer<Float>?
    public var positionCount: Int
    public var timeCount: Int

    public init(positionTable: UnsafeMutablePointer<Float>? = nil, positionCount: Int = 0,
                timeTable: UnsafeMutablePointer<Float>? = nil, timeCount: Int = 0) {
      self.positionTable = positionTable
      self.positionCount = positionCount
      self.timeTable = timeTable
      self.timeCount = timeCount
    }
  }

  /// Backward of `hstuAttentionForward`: recomputes S and P block by block, then
  /// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = dP ⊙ M ⊙ SiLU'(S) / N`, `dQ = dS K`, `dK = dSᵀ Q`,
  /// `drab_ij += Σ_heads dS_ij`. `dq`, `dk`, `dv` are overwritten; bias gradients accumulate.
  public static func hstuAttentionBackward(dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                           v: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                                           dk: UnsafeMutablePointer<Float>, dv dvOut: UnsafeMutablePointer<Float>,
                                           shape: JaggedShape, heads: Int, attentionDim dqk: Int, linearDim dv: Int,
                                           mask: AttentionMask, normalizer: AttentionNormalizer,
                                           bias: RelativeAttentionBias, biasGradient: RelativeAttentionBiasGradient) {
    let ldq = heads * dqk, ldv = heads * dv, bq = attentionBlockRows
    let maxN = shape.maxLength
    // One bias-gradient row per (sequence, head), summed in a fixed order afterwards, so the
    // result does not depend on which worker ran which item.
    let items = shape.batch * heads
    let biasWidth = biasGradient.positionCount + biasGradient.timeCount
    let biasPartials = UnsafeMutablePointer<Float>.allocate(capacity: max(1, items * biasWidth))
    biasPartials.initialize(repeating: 0, count: max(1, items * biasWidth))
    defer { biasPartials.deallocate() }
    withAttentionWorkers(scratchPerWorker: 2 * bq * min(maxN, attentionKeyChunk)) { scratch in
      Parallel.forEach(items) { worker, item in
        let b = item / heads, h = item % heads
        let base = shape.offsets[b], n = shape.length(b), t = shape.targetCount(b)
        let divisor = 1 / normalizer.divisor(length: n - t)
        let qh = q + base * ldq + h * dqk, kh = k + base * ldq + h * dqk
        let vh = v + base * ldv + h * dv, doh = dout + base * ldv + h * dv
        let dqh = dq + base * ldq + h * dqk, dkh = dk + base * ldq + h * dqk, dvh = dvOut + base * ldv + h * dv
        for i in 0..<n {
          (dqh + i * ldq).update(repeating: 0, count: dqk)
          (dkh + i * ldq).update(repeating: 0, count: dqk)
          (dvh + i * ldv).update(repeating: 0, count: dv)
        }
        let p = scratch[worker], ds = p + bq * min(maxN, attentionKeyChunk)
        let dPos = biasPartials + item * biasWidth, dTime = dPos + biasGradient.positionCount
        for qs in stride(from: 0, to: n, by: bq) {
          let rows = qs..<min(qs + bq, n), m = rows.count
          for range in blockKeyChunks(mask: mask, rows: rows, length: n, targets: t) {
            let width = range.count, k0 = range.lowerBound
            BLAS.shared.sgemm(transB: true, m: m, n: width, k: dqk, a: qh + qs * ldq, lda: ldq,
                              b: kh + k0 * ldq, ldb: ldq, c: p, ldc: width)
            BLAS.shared.sgemm(transB: true, m: m, n: width, k: dv, a: doh + qs * ldv, lda: ldv,
                              b: vh + k0 * ldv, ldb: ldv, c: ds, ldc: width)
            for i in rows {
              let pr = p + (i - qs) * width, dr = ds + (i - qs) * width
              // Zero the invisible columns of both rows; recompute P and dS on the visible ones.
              forEachVisibleSegment(mask: mask, query: i, length: n, targets: t, range: range, row: pr, alsoZero: dr) { j0, count in
                let c0 = j0 - k0
                if bias.hasTerms { for c in 0..<count { pr[c0 + c] += bias.value(sequence: b, n: n, i: i, j: j0 + c) } }
                VectorMath.siluWithGradient(pr + c0, dr + c0, count, scale: divisor)
                if biasGradient.positionTable != nil { for c in 0..<count { dPos[i - j0 - c] += dr[c0 + c] } }
                if biasGradient.timeTable != nil, let tb = bias.timeBuckets, let bo = bias.bucketOffsets {
                  for c in 0..<count { dTime[Int(tb[bo[b] + i * n + j0 + c])] += dr[c0 + c] }
                }
              }
            }
            BLAS.shared.sgemm(transA: true, m: width, n: dv, k: m, a: p, lda: width, b: doh + qs * ldv, ldb: ldv,
                              beta: 1, c: dvh + k0 * ldv, ldc: ldv)
            BLAS.shared.sgemm(m: m, n: dqk, k: width, a: ds, lda: width, b: kh + k0 * ldq, ldb: ldq,
                              beta: 1, c: dqh + qs * ldq, ldc: ldq)
            BLAS.shared.sgemm(transA: true, m: width, n: dqk, k: m, a: ds, lda: width, b: qh + qs * ldq, ldb: ldq,
                              beta: 1, c: dkh + k0 * ldq, ldc: ldq)
          }
        }
      }
    }
    guard biasWidth > 0 else { return }
    for item in 0..<items {
      let part = biasPartials + item * biasWidth
      if let d = biasGradient.positionTable { for i in 0..<biasGradient.positionCount { d[i] += part[i] } }
      if let d = biasGradient.timeTable {
        for i in 0..<biasGradient.timeCount { d[i] += part[biasGradient.positionCount + i] }
      }
    }
  }

  /// Runs `body` with one scratch block per worker and OpenBLAS single-threaded (the parallelism
  /// is over sequences and heads here, so BLAS calls must not spawn threads of their own).
  static func withAttentionWorkers(scratchPerWorker: Int, _ body: ([UnsafeMutablePointer<Float>]) -> Void) {
    let scratch = (0..<Parallel.workers).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratchPerWorker)) }
    defer { scratch.forEach { $0.deallocate() } }
    BLAS.shared.setThreads(1)
    defer { BLAS.shared.setThreads(Parallel.workers) }
    body(scratch)
  }
}
