/// The key bounds of every 64-query tile of a jagged batch under a mask (the table
/// `hstu_attention_bounds` writes), kept between attention calls: the layers of an encoder stage
/// share the batch, mask and offsets, so the first call computes the table and the others, forward
/// and backward, reuse it. The owner calls `invalidate()` whenever the offsets' contents change.
public final class AttentionBoundsCache {
  /// Room for `capacity` Int32 words (8 per sequence and query tile).
  let table: DeviceArray<Int32>
  private var key: Key?

  struct Key: Equatable {
    var batch, maxLength: Int
    var mask: AttentionMask
    var offsets, targets: UInt64
  }

  /// A cache for up to `maxSequences` sequences of at most `maxLength` tokens.
  public init(device: CUDADevice, maxSequences: Int, maxLength: Int) throws {
    let tiles = (maxLength + CUDADevice.attentionQueryTile - 1) / CUDADevice.attentionQueryTile
    table = try device.allocate(Int32.self, count: max(1, maxSequences * tiles * 8))
  }

  /// Forgets the table (a new batch was uploaded to the same offsets).
  public func invalidate() { key = nil }

  /// The cache's table and whether it already holds `key`'s bounds; nil when `words` do not fit.
  func lookup(_ key: Key, words: Int) -> (table: DeviceArray<Int32>, cached: Bool)? {
    guard words <= table.count else { return nil }
    return (table, self.key == key)
  }

  /// Records that the table now holds `key`'s bounds.
  func remember(_ key: Key) { self.key = key }
}
