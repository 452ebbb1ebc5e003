/// Every user's events in chronological order (oldest first), with items re-indexed densely.
///
/// Item index 0 is reserved for padding; real items are `1...itemCount`. Events of user `u` are
/// `offsets[u]..<offsets[u+1]` in `items`, `ratings` and `timestamps`.
public struct UserSequences: Sendable, Equatable {
  /// Number of distinct items; dense item indices run `1...itemCount`.
  public var itemCount: Int
  /// `users + 1` offsets into the event arrays.
  public var offsets: [Int]
  /// Dense item index of each event.
  public var items: [Int32]
  /// The explicit rating of each event (stars), or nil when the source has none.
  public var ratings: [Float]?
  /// Unix seconds of each event, or nil when the source has none.
  public var timestamps: [Int64]?
  /// Original user id of each user.
  public var userIDs: [Int64]
  /// Original item id of each dense index (`originalItemIDs[0]` is unused padding, 0).
  public var originalItemIDs: [Int64]

  public init(itemCount: Int, offsets: [Int], items: [Int32], ratings: [Float]?, timestamps: [Int64]?,
              userIDs: [Int64], originalItemIDs: [Int64]) {
    self.itemCount = itemCount
    self.offsets = offsets
    self.items = items
    self.ratings = ratings
    self.timestamps = timestamps
    self.userIDs = userIDs
    self.originalItemIDs = originalItemIDs
  }

  /// Number of users.
  public var userCount: Int { offsets.count - 1 }
  /// Total number of events.
  public var eventCount: Int { items.count }
  /// The event range of user `u`.
  @inline(__always) public func range(of u: Int) -> Range<Int> { offsets[u]..<offsets[u + 1] }
}
