/// Swift launchers for `AttentionKernels` (fused jagged HSTU attention, forward and backward).

/// The shape of one attention call: a jagged batch of `batch` sequences whose longest has
/// `maxLength` tokens, `heads` heads of `dqk` (query/key) and `dv` (value) columns.
public struct HSTUAttentionShape {
  public var batch: Int
  public var maxLength: Int
  public var heads: Int
  public var dqk: Int
  public var dv: Int
  /// The normaliser N (`.trueLength` divides by each sequence's history length n − targets).
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

extension CUDADevice {
  static let attentionForwardWarps = 8, attentionQueryTile = 64, attentionKeyTile = 64

  private func attentionModule(_ shape: HSTUAttentionShape) throws -> CUDAModule {
    guard shape.dqk % 16 == 0, shape.dv % 16 == 0, (16...128).contains(shape.dqk), (16...128).contains(shape.dv) else {
      throw CUDAError.unsupported("HSTU attention head dims must be multiples of 16 in 16...128 (dqk=\(shape.dqk), dv=\(shape.dv))")
    }
    return try module("hstu_attention", source: AttentionKernels.source, defines: ["DQK": shape.dqk, "DV": shape.dv])
  }

  private func maskArguments(_ mask: AttentionMask) -> [KernelArgument] {
    [.int(Int32(mask.localWindow ?? -1)), .int(Int32(mask.globalTailRows)), .int(Int32(mask.globalPrefixColumns)), .int(Int32(mask.contextualPrefix))]
  }

  /// Fills the per-64-query-tile interval bounds that both attention kernels read.
  private func attentionBounds(_ shape: HSTUAttentionShape, module: CUDAModule, offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>?) throws -> (DeviceArray<Int32>, Int) {
    let tiles = (shape.maxLength + Self.attentionQueryTile - 1) / Self.attentionQueryTile
    let bounds = try allocate(Int32.self, count: max(1, shape.batch * tiles * 8))
    try launch(module.function("hstu_attention_bounds"), grid: (tiles, shape.batch, 1), block: (Self.attentionQueryTile, 1, 1),
               [.pointer(offsets.address), .pointer(targets?.address ?? 0), .pointer(bounds.address), .int(Int32(tiles))] + maskArguments(shape.mask))
    return (bounds, tiles)
  }

  private func inverseNormalizer(_ shape: HSTUAttentionShape) -> Float {
    if case .fixed(let n) = shape.normalizer { return 1 / Float(n) }
    return 0
  }

  /// Key tiles one forward CTA walks at most when the mask bounds most rows' keys (a local
  /// window): longer rows (global tail rows) are split over several CTAs. Causal masks are not
  /// split: their long rows are balanced by the many shorter ones, and atomics would only cost.
  static let attentionSplitTiles = 16

  /// out = Σ_j mask · SiLU(q·k + pos) / N · v for every token and head; see `AttentionKernels`.
  /// `out` must span exactly the batch's tokens: it is zeroed first when rows are split.
  /// `targets` (optional) holds each sequence's number of target tokens; `pos` (optional, fp32,
  /// `posLength` entries) is the relative-position bias by i − j, shared by heads.
  public func hstuAttentionForward(
    _ shape: HSTUAttentionShape, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>? = nil, pos: DeviceArray<Float>? = nil,
    out: DeviceArray<Float>
  ) throws {
    let module = try attentionModule(shape)
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let (bounds, tiles) = try attentionBounds(shape, module: module, offsets: offsets, targets: targets)
    let rows = 16 * Self.attentionForwardWarps
    let shared = 2 * (rows * (shape.dqk + 8) + 2 * Self.attentionKeyTile * (shape.dqk + 8) + 2 * Self.attentionKeyTile * (shape.dv + 8))
    let keyTiles = (shape.maxLength + Self.attentionKeyTile - 1) / Self.attentionKeyTile
    let splitTiles = shape.mask.localWindow == nil ? max(1, keyTiles) : Self.attentionSplitTiles
    let splits = (keyTiles + splitTiles - 1) / splitTiles
    if splits > 1 { try fill(out) }
    try launch(module.function("hstu_attention_forward"),
               grid: ((shape.maxLength + rows - 1) / rows, shape.heads * max(1, splits), shape.batch),
               block: (32 * Self.attentionForwardWarps, 1, 1), sharedBytes: shared,
               [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(offsets.address), .pointer(targets?.address ?? 0),
                .pointer(bounds.address), .pointer(pos?.address ?? 0), .int(Int32(pos?.count ?? 0)), .pointer(out.address),
                .int(Int32(shape.heads)), .int(Int32(tiles)), .float(inverseNormalizer(shape)),
                .int(Int32(max(1, splits))), .int(Int32(splitTiles))] + maskArguments(shape.mask))
  }

  /// Gradients of `hstuAttentionForward`: dq, dk, dv (fp32, overwritten) and, when `pos` is
  /// given, dPos (fp32, `pos.count` entries, overwritten) summed over heads.
  public func hstuAttentionBackward(
    _ shape: HSTUAttentionShape, q: DeviceArray<BFloat16>, k: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>,
    dOut: DeviceArray<BFloat16>, offsets: DeviceArray<Int32>, targets: DeviceArray<Int32>? = nil,
    pos: DeviceArray<Float>? = nil, dq: DeviceArray<Float>, dk: DeviceArray<Float>, dv: DeviceArray<Float>,
    dPos: DeviceArray<Float>? = nil
  ) throws {
    let module = try attentionModule(shape)
    let mark = arena.mark()
    defer { arena.release(to: mark) }
    let (bounds, tiles) = try attentionBounds(shape, module: module, offsets: offsets, targets: targets)
    try fill(dq)
    if let dPos { try fill(dPos) }
    let bn = Self.attentionKeyTile, qt = Self.attentionQueryTile
    let shared = 2 * (bn * (shape.dqk + 8) + bn * (shape.dv + 8) + 2 * qt * (shape.dqk + 8) + 2 * qt * (shape.dv + 8) + bn * (qt + 8))
      + 4 * 3 * qt + 4 * (qt + bn)
    try launch(module.function("hstu_attention_backward"),
               grid: ((shape.maxLength + bn - 1) / bn, shape.heads, shape.batch), block: (128, 1, 1), sharedBytes: shared,
               [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(dOut.address), .pointer(offsets.address),
                .pointer(targets?.address ?? 0), .pointer(bounds.address), .pointer(pos?.address ?? 0), .int(Int32(pos?.count ?? 0)),
                .pointer(dq.address), .pointer(dk.address), .pointer(dv.address), .pointer(dPos?.address ?? 0),
                .int(Int32(shape.heads)), .int(Int32(tiles)), .float(inverseNormalizer(shape))] + maskArguments(shape.mask))
  }
}
