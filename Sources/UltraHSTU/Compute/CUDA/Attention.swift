#if canImport(Glibc)
import Glibc
#endif

/// Swift launchers for `AttentionKernels`: fused jagged HSTU (SiLU) attention with its relative
/// position and time biases, and SASRec's softmax attention, forward and backward.

/// The shape of one attention call: a jagged batch of `batch` sequences whose longest has
/// `maxLength` tokens, `heads` heads of `dqk` (query/key) and `dv` (value) columns.
public struct AttentionShape {
  public var batch: Int
  public var maxLength: Int
  public var heads: Int
  public var dqk: Int
  public var dv: Int
  /// The normaliser N of SiLU attention (`.trueLength` divides by each sequence's history length
  /// n − targets); softmax attention ignores it.
  public var normalizer: AttentionNormalizer
  public var mask: AttentionMask

  public init(batch: Int, maxLength: Int, heads: Int, dqk: Int, dv: Int, normalizer: AttentionNormalizer, mask: AttentionMask) {
    self.batch = batch
    self.maxLength = maxLength
    self.heads = heads
    self.dqk = dqk
    self.dv = dv
    self.normalizer = normalizer
    self.mask = mask
  }

  /// Multiply-adds the mask keeps (per head, summed over sequences) times 2: forward FLOPs are
  /// `2 · kept · (dqk + dv)`, backward `2 · kept · (2·dqk + 3·dv)` (S recomputed, dV, dP, dQ, dK).
  public static func keptPairs(lengths: [Int], mask: AttentionMask, targets: Int = 0) -> Int {
    var kept = 0
    for n in lengths {
      for i in 0..<n {
        let (p, b) = mask.keyIntervals(query: i, length: n, targets: targets)
        kept += p.count + b.count
      }
    }
    return kept
  }
}

/// The time bias (rab^t) of one HSTU attention call: `table[bucket(queryTimes[i] − keyTimes[j])]`
/// is added to S[i, j], with research HSTU's log buckets (`hstuTimeBucket`).
public struct AttentionTimeBias {
  /// Event time of each token (the key), and of the event it predicts (the query), `[T]`.
  public var keyTimes: DeviceArray<Int64>
  public var queryTimes: DeviceArray<Int64>
  /// One scalar per bucket, `buckets + 1` entries (fp32).
  public var table: DeviceArray<Float>
  /// `hstuTimeBucketThresholds(buckets:)`, uploaded.
  public var thresholds: DeviceArray<Int64>

  public init(keyTimes: DeviceArray<Int64>, queryTimes: DeviceArray<Int64>, table: DeviceArray<Float>, thresholds: DeviceArray<Int64>) {
    self.keyTimes = keyTimes
    self.queryTimes = queryTimes
    self.table = table
    self.thresholds = thresholds
  }

  var buckets: Int { table.count - 1 }
  var arguments: [KernelArgument] {
    [.pointer(keyTimes.address), .pointer(queryTimes.address), .pointer(table.address), .pointer(thresholds.address), .int(Int32(buckets))]
  }
  static let absent: [KernelArgument] = [.pointer(0), .pointer(0), .pointer(0), .pointer(0), .int(0)]
}

/// The kernels of the attention forward and backward: `.wgmma` (Hopper's warpgroup instructions;
/// head dims multiples of 64) and `.mmaSync` (every supported shape). `.automatic` takes wgmma
/// where it applies; for the HSTU forward only once sequences reach
/// `CUDADevice.attentionWGMMAMinLength` tokens (128: at L = 200 its one-warpgroup CTAs beat the
/// mma.sync kernel, bench/results/gpu.md; shorter sequences were not timed on it).
public enum AttentionKernel: String, CaseIterable, Sendable {
  case automatic, wgmma, mmaSync
}

extension CUDADevice {
  static let attentionForwardWarps = 8, attentionBackwardWarps = 4, attentionQueryTile = 64, attentionKeyTile = 64
  /// Warpgroups per wgmma forward CTA (`WG_COUNT`): one (64 query rows, two CTAs per SM, so one
  /// CTA's first loads and last stores overlap the other's tiles) where CTAs walk few key tiles:
  /// under a local window, or in sequences shorter than `attentionTwoWarpgroupMinLength`; two (128
  /// rows, one CTA per SM) for longer causal rows, where they were faster (bench/results/gpu.md).
  static func attentionWGMMAWarpgroups(_ shape: AttentionShape) -> Int {
    shape.mask.localWindow == nil && shape.maxLength >= attentionTwoWarpgroupMinLength ? 2 : 1
  }

  /// The shortest `maxLength` whose causal forward runs two warpgroups per CTA.
  static let attentionTwoWarpgroupMinLength = 2048

  /// K/V tiles in the wgmma forward's shared ring (`WG_STAGES`) for `warpgroups` per CTA.
  static func attentionWGMMAStages(warpgroups: Int) -> Int { warpgroups == 1 ? 3 : 4 }

  /// The shortest `maxLength` for which `.automatic` picks the wgmma forward.
  public static let attentionWGMMAMinLength = 128

  /// Whether the wgmma kernels can run this shape here.
  public func attentionHasWGMMA(_ shape: AttentionShape) -> Bool {
    architecture == "sm_90a" && shape.dqk % 64 == 0 && shape.dv % 64 == 0
  }

  /// The kernels that can run `shape` here, wgmma first where it applies (checks and benchmarks run each).
  public func attentionKernels(_ shape: AttentionShape) -> [AttentionKernel] {
    attentionHasWGMMA(shape) ? [.wgmma, .mmaSync] : [.mmaSync]
  }

  /// Whether `kernel` runs on wgmma for `shape`: `.automatic` when it applies and sequences reach
  /// `minLength`. Throws when `.wgmma` is asked for where it cannot run.
  private func usesWGMMA(_ kernel: AttentionKernel, _ shape: AttentionShape, minLength: Int) throws -> Bool {
    switch kernel {
    case .automatic: return attentionHasWGMMA(shape) && shape.maxLength >= minLength
    case .wgmma:
      guard attentionHasWGMMA(shape) else {
        throw CUDAError.unsupported("the wgmma attention kernels need sm_90a and head dims that are multiples of 64 (dqk=\(shape.dqk), dv=\(shape.dv))")
      }
      return true
    case .mmaSync: return false
    }
  }

  /// The kernel variant: SiLU or softmax scores, with or without the position bias rab^p and the
  /// time bias (each compiled in or out, so a kernel holds only the code its launches run).
  private func attentionModule(_ shape: AttentionShape, softmax: Bool = false, positionBias: Bool = false,
                               timeBias: Bool = false, forwardWarpgroups: Int = 2) throws -> CUDAModule {
    guard shape.dqk % 16 == 0, shape.dv % 16 == 0, (16...128).contains(shape.dqk), (16...128).contains(shape.dv) else {
      throw CUDAError.unsupported("attention head dims must be multiples of 16 in 16...128 (dqk=\(shape.dqk), dv=\(shape.dv))")
    }
    var defines = ["DQK": shape.dqk, "DV": shape.dv]
    if softmax { defines["SOFTMAX"] = 1 }
    if positionBias { defines["POS_BIAS"] = 1 }
    if timeBias { defines["TIME_BIAS"] = 1 }
    if forwardWarpgroups != 2 { defines["WG_COUNT"] = forwardWarpgroups }
    return try module("hstu_attention", source: AttentionKernels.source, defines: defines)
  }

  private func maskArguments(_ mask: AttentionMask) -> [KernelArgument] {
    [.int(Int32(mask.localWindow ?? -1)), .int(Int32(mask.globalTailRows)), .int(Int32(mask.globalPrefixColumns)), .int(Int32(mask.contextualPrefix))]
  }

  /// The kernels' `blockGroup` (`grid_position`): 0 takes CTAs sequence by sequence and head by
  /// head; G > 0 takes the heads and sequences G at a time, tile by tile across them. Block order
  /// is on for masks without a window once a sequence spans 16 key tiles: there a CTA's walk grows
  /// or shrinks with its tile by up to L/64 tiles, and sequence order leaves the last sequence's
  /// longest walks to the end of the launch (`bench/gpu/cta_order_model.py`). G holds the K and V
  /// of the heads and sequences in flight to `attentionOrderBytes`: in block order over every pair,
  /// 16 or more sequences of 4 heads at L = 4096 ran as slow as sequence order or slower, their
  /// operands no longer sharing the L2 cache. HSTU_ATTENTION_ORDER=group, =block (every pair) or
  /// =G forces one order.
  private func gridOrderArgument(_ shape: AttentionShape) -> KernelArgument {
    let pairs = shape.heads * shape.batch, pairBytes = shape.maxLength * (shape.dqk + shape.dv) * MemoryLayout<BFloat16>.size
    let group: Int
    switch Self.environmentAttentionOrder {
    case "block": group = pairs
    case "group": group = 0
    case let value?: group = Int(value) ?? 0
    case nil: group = shape.mask.localWindow == nil && shape.maxLength >= 16 * Self.attentionKeyTile
      ? max(1, Self.attentionOrderBytes / pairBytes) : 0
    }
    return .int(Int32(min(group, pairs)))   // the kernels multiply it by the tiles: at most every pair
  }
  /// The K and V bytes whose heads and sequences block order takes together (a third of the H200's L2).
  static let attentionOrderBytes = 16 << 20
  private static let environmentAttentionOrder = getenv("HSTU_ATTENTION_ORDER").map { String(cString: $0) }

  /// The key bounds of `shape`'s 64-query tiles that both attention kernels read: from `cache`
  /// when it holds this batch's, else computed (into the cache, or into the arena when there is
  /// none or it is too small).
  private func attentionBounds(_ shape: AttentionShape, module: CUDAModule, offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>?,
                               cache: AttentionBoundsCache?) throws -> (DeviceArray<Int32>, Int) {
    let tiles = (shape.maxLength + Self.attentionQueryTile - 1) / Self.attentionQueryTile
    let words = max(1, shape.batch * tiles * 8)
    let key = AttentionBoundsCache.Key(batch: shape.batch, maxLength: shape.maxLength, mask: shape.mask,
                                       offsets: offsets.address, targets: targets?.address ?? 0)
    let slot = cache?.lookup(key, words: words)
    if let slot, slot.cached { return (slot.table, tiles) }
    let bounds = try slot?.table ?? allocate(Int32.self, count: words)
    try launch(module.function("hstu_attention_bounds"), grid: (tiles, shape.batch, 1), block: (Self.attentionQueryTile, 1, 1),
               [.pointer(offsets.address), .pointer(targets?.address ?? 0), .pointer(bounds.address), .int(Int32(tiles))] + maskArguments(shape.mask))
    if slot != nil { cache?.remember(key) }
    return (bounds, tiles)
  }

  private func inverseNormalizer(_ shape: AttentionShape) -> Float {
    if case .fixed(let n) = shape.normalizer { return 1 / Float(n) }
    return 0
  }

  /// Key tiles one forward CTA walks at most when the mask bounds most rows' keys (a local
  /// window): longer rows (global tail rows) are split over several CTAs. Causal masks are not
  /// split: their long rows are balanced by the many shorter ones, and atomics would only cost.
  static let attentionSplitTiles = 16

  /// out = Σ_j mask · SiLU(q·k + pos + time) / N · v for every token and head; see `AttentionKernels`.
  /// `out` (fp32 or bf16) must span exactly the batch's tokens; the rows of split query tiles are
  /// zeroed first.
  /// `targets` (optional) holds each sequence's number of target tokens; `pos` (optional, fp32,
  /// `posLength` entries) is the relative-position bias by i − j, shared by heads; `time`
  /// (optional) the time bias; `kernel` overrides the device's `attentionForwardKernel`; `bounds`
  /// (optional) keeps the mask's key-bounds table for the next calls on the same batch.
  public func hstuAttentionForward<O>(
    _ shape: AttentionShape, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>? = nil, pos: DeviceArray<Float>? = nil,
    time: AttentionTimeBias? = nil, out: DeviceArray<O>, kernel: AttentionKernel? = nil,
    bounds: AttentionBoundsCache? = nil
  ) throws {
    let wgmma = try usesWGMMA(kernel ?? attentionForwardKernel, shape, minLength: Self.attentionWGMMAMinLength)
    let warpgroups = wgmma ? Self.attentionWGMMAWarpgroups(shape) : 2
    let module = try attentionModule(shape, positionBias: pos != nil, timeBias: time != nil, forwardWarpgroups: warpgroups)
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let paddedPos = try pos.map { try paddedPositionBias($0, shape, module: module) }
    try attentionForward(shape, module: module, q: q, k: k, v: v, offsets: offsets, targets: targets,
                         bias: [.pointer(paddedPos ?? 0)] + (time?.arguments ?? AttentionTimeBias.absent),
                         out: out, logSumExp: nil, scale: 0, splitKeys: shape.mask.localWindow != nil, wgmma: wgmma ? warpgroups : nil,
                         bounds: bounds)
  }

  /// Softmax attention (SASRec): out_i = Σ_j softmax_j(scale · q_i·k_j over the keys the mask
  /// allows) v_j, and the row log-sum-exp (`[T, heads]`, natural log) for the backward.
  public func softmaxAttentionForward(
    _ shape: AttentionShape, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>? = nil, scale: Float,
    out: DeviceArray<Float>, logSumExp: DeviceArray<Float>, bounds: AttentionBoundsCache? = nil
  ) throws {
    let module = try attentionModule(shape, softmax: true)
    try attentionForward(shape, module: module, q: q, k: k, v: v, offsets: offsets, targets: targets,
                         bias: [.pointer(0)] + AttentionTimeBias.absent, out: out, logSumExp: logSumExp,
                         scale: scale, splitKeys: false, wgmma: nil, bounds: bounds)
  }

  /// Diagonals of rab^p below 0 and past a sequence's last row that the attention kernels read: a
  /// forward CTA's rows (at most the mma.sync forward's 16 per warp; the wgmma forward's two
  /// warpgroups take as many) reach one fewer diagonals below its keys, and its last tile's rows past
  /// the sequence's end; the backward reaches 70 below and 63 past.
  static var attentionPositionPad: Int { 16 * attentionForwardWarps }

  /// `pos` by diagonal from −pad to maxLength + pad, clamped into the table, as pairs of diagonals
  /// d − 1, d in the arena (`hstu_position_bias_padded`): the address of diagonal 0's pair, which
  /// both attention directions read without a clamp.
  private func paddedPositionBias(_ pos: DeviceArray<Float>, _ shape: AttentionShape, module: CUDAModule) throws -> CUdeviceptr {
    let pad = Self.attentionPositionPad, length = pad + shape.maxLength + pad
    let padded = try allocate(Float.self, count: 2 * length)   // pairs of diagonals d − 1, d
    try launch(module.function("hstu_position_bias_padded"), grid: ((length + 255) / 256, 1, 1), block: (256, 1, 1),
               [.pointer(pos.address), .int(Int32(pos.count)), .pointer(padded.address), .int(Int32(pad)), .int(Int32(length))])
    return padded.address + CUdeviceptr(pad * 2 * MemoryLayout<Float>.size)
  }

  private func attentionForward<O>(
    _ shape: AttentionShape, module: CUDAModule, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>?, bias: [KernelArgument], out: DeviceArray<O>,
    logSumExp: DeviceArray<Float>?, scale: Float, splitKeys: Bool, wgmma warpgroups: Int?, bounds cache: AttentionBoundsCache?
  ) throws {
    guard O.self == Float.self || O.self == BFloat16.self else { throw CUDAError.unsupported("attention output of type \(O.self)") }
    let wgmma = warpgroups != nil
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let (bounds, tiles) = try attentionBounds(shape, module: module, offsets: offsets, targets: targets, cache: cache)
    // mma.sync: 8 warps, 128 query rows per CTA; wgmma: 64 rows per warpgroup.
    let threads = warpgroups.map { 128 * $0 } ?? 32 * Self.attentionForwardWarps
    let rows = warpgroups.map { 64 * $0 } ?? 16 * Self.attentionForwardWarps, keys = Self.attentionKeyTile
    // wgmma: Q (with one warpgroup, inside the ring) and a ring of K/V tiles, unpadded (swizzled),
    // plus 1 KB to align the swizzle atoms and two mbarriers per ring slot; mma.sync: Q and two K/V
    // tiles with padded rows.
    let shared: Int
    if let warpgroups {
      let stages = Self.attentionWGMMAStages(warpgroups: warpgroups), queryElements = warpgroups == 1 ? 0 : rows * shape.dqk
      shared = 1024 + 2 * (queryElements + stages * keys * (shape.dqk + shape.dv)) + 16 * stages
    } else {
      shared = 2 * (rows * (shape.dqk + 8) + 2 * keys * (shape.dqk + 8) + 2 * keys * (shape.dv + 8))
    }
    let keyTiles = (shape.maxLength + Self.attentionKeyTile - 1) / Self.attentionKeyTile
    let splitTiles = splitKeys ? Self.attentionSplitTiles : max(1, keyTiles)
    let splits = max(1, (keyTiles + splitTiles - 1) / splitTiles)
    let queryTiles = (shape.maxLength + rows - 1) / rows
    let splitQueryTiles = splits > 1 ? splitQueryTileCount(shape.mask, queryTiles: queryTiles, rows: rows, splitTiles: splitTiles,
                                                            targets: targets != nil) : queryTiles
    if splits > 1 {   // only the split tiles' rows take atomic adds
      let rowBytes = shape.heads * shape.dv * MemoryLayout<O>.stride, blocks = min(1024, (splitQueryTiles * rows * rowBytes / 16 + 255) / 256)
      try launch(module.function("hstu_attention_zero_split_rows"), grid: (blocks, shape.batch, 1), block: (256, 1, 1),
                 [.pointer(out.address), .pointer(offsets.address), .int(Int32(splitQueryTiles)), .int(Int32(rows)), .int(Int32(rowBytes))])
    }
    try launch(module.function(wgmma ? "hstu_attention_forward_wgmma" : "hstu_attention_forward"),
               grid: (queryTiles + (splits - 1) * splitQueryTiles, shape.heads, shape.batch),
               block: (threads, 1, 1), sharedBytes: shared,
               [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(offsets.address), .pointer(targets?.address ?? 0),
                .pointer(bounds.address)] + bias
               + [.pointer(out.address), .int(O.self == BFloat16.self ? 1 : 0), .pointer(logSumExp?.address ?? 0), .float(scale),
                  .int(Int32(shape.heads)), .int(Int32(tiles)), .float(inverseNormalizer(shape)),
                  .int(Int32(splitTiles)), .int(Int32(queryTiles)), .int(Int32(splitQueryTiles))] + maskArguments(shape.mask)
               + [gridOrderArgument(shape)]
               + (wgmma ? try attentionMaps(shape, tokens: out.count / (shape.heads * shape.dv), queryKey: [k], value: [v]) : []))
  }

  /// How many query tiles of `rows`, counted from each sequence's end, may hold rows that see more
  /// than `splitTiles` key tiles and so get CTAs for their later runs: under a local window without
  /// targets, those of the global tail rows (when a window row's keys fit in `splitTiles` with room
  /// for the block's span); every tile otherwise. The kernel makes any other tile's CTA walk all
  /// its keys, so this bound only decides how the work is spread.
  private func splitQueryTileCount(_ mask: AttentionMask, queryTiles: Int, rows: Int, splitTiles: Int, targets: Bool) -> Int {
    guard let window = mask.localWindow, !targets else { return queryTiles }
    let windowRowKeys = max(mask.globalPrefixColumns, mask.contextualPrefix) + window + 1
    guard windowRowKeys + rows + 2 * Self.attentionKeyTile <= splitTiles * Self.attentionKeyTile else { return queryTiles }
    return min(queryTiles, (mask.globalTailRows + rows - 1) / rows + 1)
  }

  /// The tensor maps the wgmma kernels read their operands through: one per array, each `[tokens,
  /// heads × dqk]` (`queryKey`) or `[tokens, heads × dv]` (`value`), in boxes of 64 rows (a key tile,
  /// and a backward query tile) × 64 columns. Rows past the batch read as zeros, never as stale
  /// rows of a larger buffer.
  private func attentionMaps(_ shape: AttentionShape, tokens: Int, queryKey: [DeviceArray<BFloat16>],
                             value: [DeviceArray<BFloat16>]) throws -> [KernelArgument] {
    try queryKey.map { .tensorMap(try tensorMap($0, rows: tokens, columns: shape.heads * shape.dqk, boxRows: Self.attentionKeyTile)) }
      + value.map { .tensorMap(try tensorMap($0, rows: tokens, columns: shape.heads * shape.dv, boxRows: Self.attentionKeyTile)) }
  }

  /// Gradients of `hstuAttentionForward`: dq (fp32, overwritten), dk and dv (overwritten, fp32 or
  /// merged into dPre: `keys`) and, when `pos` is given, dPos (fp32, `pos.count` entries,
  /// overwritten) and, with `time`, dTime (fp32, `time.table.count` entries, overwritten), both
  /// summed over heads.
  public func hstuAttentionBackward(
    _ shape: AttentionShape, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    dOut: DeviceArray<BFloat16>, offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>? = nil,
    pos: DeviceArray<Float>? = nil, time: AttentionTimeBias? = nil, dq: DeviceArray<Float>,
    keys: AttentionKeyGradients, dPos: DeviceArray<Float>? = nil, dTime: DeviceArray<Float>? = nil,
    kernel: AttentionKernel? = nil, bounds: AttentionBoundsCache? = nil
  ) throws {
    guard (time == nil) == (dTime == nil) else { throw CUDAError.unsupported("hstuAttentionBackward: time bias and dTime go together") }
    let module = try attentionModule(shape, positionBias: pos != nil, timeBias: time != nil)
    if let dPos { try fill(dPos) }
    if let dTime { try fill(dTime) }
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let paddedPos = try pos.map { try paddedPositionBias($0, shape, module: module) }
    try attentionBackward(shape, module: module, q: q, k: k, v: v, dOut: dOut, offsets: offsets, targets: targets,
                          bias: [.pointer(paddedPos ?? 0), .int(Int32(pos?.count ?? 0))] + (time?.arguments ?? AttentionTimeBias.absent),
                          softmax: [.pointer(0), .pointer(0), .float(0)], dq: dq, keys: keys,
                          biasGradients: [.pointer(dPos?.address ?? 0), .pointer(dTime?.address ?? 0)],
                          timeBuckets: time.map { $0.buckets + 1 } ?? 0, kernel: kernel, bounds: bounds)
  }

  /// Gradients of `softmaxAttentionForward` (given its `out` and `logSumExp`): dq, dk, dv (fp32, overwritten).
  public func softmaxAttentionBackward(
    _ shape: AttentionShape, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    out: DeviceArray<Float>, dOut: DeviceArray<BFloat16>, logSumExp: DeviceArray<Float>, offsets: DeviceArray<Int32>,
    targets: DeviceArray<Int32>? = nil, scale: Float, dq: DeviceArray<Float>, dk: DeviceArray<Float>, dv: DeviceArray<Float>,
    kernel: AttentionKernel? = nil, bounds: AttentionBoundsCache? = nil
  ) throws {
    let module = try attentionModule(shape, softmax: true)
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let items = logSumExp.count, delta = try allocate(Float.self, count: items)
    try launch(module.function("softmax_attention_delta"), grid: ((items + 7) / 8, 1, 1), block: (256, 1, 1),
               [.pointer(out.address), .pointer(dOut.address), .pointer(delta.address), .int(Int32(items / shape.heads)), .int(Int32(shape.heads))])
    try attentionBackward(shape, module: module, q: q, k: k, v: v, dOut: dOut, offsets: offsets, targets: targets,
                          bias: [.pointer(0), .int(0)] + AttentionTimeBias.absent,
                          softmax: [.pointer(logSumExp.address), .pointer(delta.address), .float(scale)], dq: dq,
                          keys: .separate(dk: dk, dv: dv),
                          biasGradients: [.pointer(0), .pointer(0)], timeBuckets: 0, kernel: kernel, bounds: bounds)
  }

  private func attentionBackward(
    _ shape: AttentionShape, module: CUDAModule, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    dOut: DeviceArray<BFloat16>, offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>?, bias: [KernelArgument],
    softmax: [KernelArgument], dq: DeviceArray<Float>, keys: AttentionKeyGradients,
    biasGradients: [KernelArgument], timeBuckets: Int, kernel: AttentionKernel?, bounds cache: AttentionBoundsCache?
  ) throws {
    let wgmma = try usesWGMMA(kernel ?? attentionBackwardKernel, shape, minLength: 0)
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let maxLength = (1 << 15) * Self.attentionQueryTile   // the backward numbers query tiles in 15 bits
    guard shape.maxLength <= maxLength else {
      throw CUDAError.unsupported("the attention backward takes sequences of at most \(maxLength) tokens, got \(shape.maxLength)")
    }
    let (bounds, tiles) = try attentionBounds(shape, module: module, offsets: offsets, targets: targets, cache: cache)
    try fill(dq)
    let bn = Self.attentionKeyTile, qt = Self.attentionQueryTile, tokens = dq.count / (shape.heads * shape.dqk)
    // K, V, two stages of a Q and a dO tile, dSᵀ (bf16; mma.sync: padded rows; wgmma: swizzled, 1 KB
    // to align the swizzle atoms, each stage large enough for the tile's fp32 dQ, three mbarriers);
    // the query tile's key intervals; the list of query tiles (its length, then 2 bytes per tile);
    // each warp's dPos sums over the QT + 15 diagonals of its 16 keys.
    let pad = wgmma ? 0 : 8
    let stage = wgmma ? max(qt * (shape.dqk + shape.dv), 2 * qt * shape.dqk) : qt * (shape.dqk + shape.dv + 2 * pad)
    var shared = (wgmma ? 1024 + 3 * 8 : 0)
      + 2 * (bn * (shape.dqk + pad) + bn * (shape.dv + pad) + 2 * stage + bn * (qt + pad))
      + 4 * 3 * qt + 4 + 4 * ((tiles + 1) / 2) + 4 * Self.attentionBackwardWarps * (qt + 15)
    if timeBuckets > 0 { shared = (shared + 7) / 8 * 8 + 8 * qt + 4 * timeBuckets }   // query times, dTime partial sums
    try launch(module.function(wgmma ? "hstu_attention_backward_wgmma" : "hstu_attention_backward"),
               grid: ((shape.maxLength + bn - 1) / bn, shape.heads, shape.batch), block: (32 * Self.attentionBackwardWarps, 1, 1), sharedBytes: shared,
               [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(dOut.address), .pointer(offsets.address),
                .pointer(targets?.address ?? 0), .pointer(bounds.address)] + bias + softmax
               + [.pointer(dq.address)] + (try keys.arguments(shape, tokens: tokens)) + biasGradients
               + [.int(Int32(shape.heads)), .int(Int32(tiles)), .float(inverseNormalizer(shape))] + maskArguments(shape.mask)
               + [gridOrderArgument(shape)]
               + (wgmma ? try attentionMaps(shape, tokens: tokens, queryKey: [q, k], value: [v, dOut])
                          + [.tensorMap(try tensorMap(dq, rows: tokens, columns: shape.heads * shape.dqk, boxRows: qt))] : []))
  }
}
