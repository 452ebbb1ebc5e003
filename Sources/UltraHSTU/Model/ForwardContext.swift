/// What every layer of one forward/backward pass shares: the batch's jagged shape, its attention
/// mask, the time buckets of its (query, key) pairs, and the dropout randomness of this step.
public struct ForwardContext {
  public var tokens: Int
  public var shape: JaggedShape
  public var mask: AttentionMask
  /// Per sequence an n×n block of time buckets (only with a time bias).
  public var timeBuckets: UnsafePointer<UInt8>?
  public var bucketOffsets: UnsafePointer<Int>?
  /// Dropout is applied only when training.
  public var training: Bool
  public var random: CounterRandom
  /// Distinguishes the dropout streams of different steps.
  public var step: UInt64

  /// The random stream of dropout site `site` in layer `layer` at this step.
  @inline(__always) func dropoutStream(layer: Int, site: Int) -> UInt64 {
    ForwardContext.dropoutStream(step: step, layer: layer, site: site)
  }

  /// The dropout stream of `site` in `layer` (0xFFF: the input embedding) at `step`; every engine
  /// uses it, so CPU and GPU runs drop the same elements.
  @inline(__always) public static func dropoutStream(step: UInt64, layer: Int, site: Int) -> UInt64 {
    (step << 16) | UInt64(layer << 4) | UInt64(site)
  }

  /// The random stream of the sampled negatives at `step` (disjoint from the dropout streams).
  @inline(__always) public static func negativeStream(step: UInt64) -> UInt64 { step | (1 << 62) }
}
