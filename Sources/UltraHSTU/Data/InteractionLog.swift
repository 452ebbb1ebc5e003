/// Interactions as read from a file, in file order, with original ids; `userSequences()` groups them
/// into per-user chronological sequences.
public struct InteractionLog: Sendable, Equatable {
  public var userIDs: [Int64]
  public var itemIDs: [Int64]
  /// Stars per event, or nil when the source has no ratings.
  public var ratings: [Float]?
  /// Unix seconds per event, or nil when the source has no timestamps.
  public var timestamps: [Int64]?
  /// Position of each event in its user's chronological history, for sources that give the order
  /// instead of the time (ignored when `timestamps` is present).
  public var sequencePositions: [Int64]?

  public init(userIDs: [Int64], itemIDs: [Int64], ratings: [Float]? = nil, timestamps: [Int64]? = nil,
              sequencePositions: [Int64]? = nil) {
    self.userIDs = userIDs
    self.itemIDs = itemIDs
    self.ratings = ratings
    self.timestamps = timestamps
    self.sequencePositions = sequencePositions
  }

  /// Number of events.
  public var count: Int { userIDs.count }

  /// The events grouped by user: users in ascending original id, items re-indexed densely
  /// `1...itemCount` in ascending original id, each user's events ordered by timestamp (else by
  /// sequence position, else file order), ties keeping file order.
  public func userSequences() -> UserSequences {
    let (userOf, userIDs) = Self.denseIndices(of: self.userIDs, first: 0)
    let (itemOf, itemIDs) = Self.denseIndices(of: self.itemIDs, first: 1)
    let userCount = userIDs.count

    // Stable counting sort of the events by user.
    var offsets = [Int](repeating: 0, count: userCount + 1)
    for u in userOf { offsets[Int(u) + 1] += 1 }
    for u in 0..<userCount { offsets[u + 1] += offsets[u] }
    var next = offsets
    var order = [Int](repeating: 0, count: count)
    for (event, u) in userOf.enumerated() {
      order[next[Int(u)]] = event
      next[Int(u)] += 1
    }

    if let key = timestamps ?? sequencePositions, key.count == count {
      for u in 0..<userCount {
        let events = offsets[u]..<offsets[u + 1]
        let inOrder = zip(events.dropLast(), events.dropFirst()).allSatisfy { key[order[$0]] <= key[order[$1]] }
        if !inOrder { order[events].sort { (key[$0], $0) < (key[$1], $1) } }
      }
    }

    return UserSequences(
      itemCount: itemIDs.count,
      offsets: offsets,
      items: order.map { itemOf[$0] },
      ratings: ratings.map { r in order.map { r[$0] } },
      timestamps: timestamps.map { t in order.map { t[$0] } },
      userIDs: userIDs,
      originalItemIDs: [0] + itemIDs)
  }

  /// The dense index (`first`, `first + 1`, … in ascending id order) of every entry of `ids`, and the
  /// distinct ids in ascending order.
  static func denseIndices(of ids: [Int64], first: Int32) -> (indices: [Int32], sortedIDs: [Int64]) {
    var seen: [Int64: Int32] = [:]
    var distinct: [Int64] = []
    var indices = [Int32]()
    indices.reserveCapacity(ids.count)
    var lastID: Int64? = nil
    var lastIndex: Int32 = 0
    for id in ids {
      if id != lastID {
        if let known = seen[id] {
          lastIndex = known
        } else {
          lastIndex = Int32(distinct.count)
          seen[id] = lastIndex
          distinct.append(id)
        }
        lastID = id
      }
      indices.append(lastIndex)
    }
    let ascending = distinct.indices.sorted { distinct[$0] < distinct[$1] }
    var rank = [Int32](repeating: 0, count: distinct.count)
    for (position, firstSeen) in ascending.enumerated() { rank[firstSeen] = first + Int32(position) }
    for e in indices.indices { indices[e] = rank[Int(indices[e])] }
    return (indices, ascending.map { distinct[$0] })
  }
}
