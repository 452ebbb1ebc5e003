/// A jagged batch of user histories: sequence `b` owns tokens `offsets[b]..<offsets[b+1]`; no padding.
public struct SequenceBatch: Sendable {
  /// Dense item index of each token.
  public var items: [Int32] = []
  /// Position of each token inside its sequence window (0 = oldest kept event).
  public var positions: [Int32] = []
  /// For training: the item that follows each token (the label of that position); 0 = unsupervised.
  public var nextItems: [Int32] = []
  /// Event time of each token (Unix seconds), when the data has timestamps.
  public var keyTimes: [Int64]? = nil
  /// Time of the event being predicted at each token (the next event; the request time at the end).
  public var queryTimes: [Int64]? = nil
  /// `batch + 1` token offsets.
  public var offsets: [Int] = [0]
  /// Which user each sequence belongs to.
  public var users: [Int] = []

  public init() {}

  public var batchSize: Int { offsets.count - 1 }
  public var tokenCount: Int { items.count }
  public var maxLength: Int { (0..<batchSize).map { offsets[$0 + 1] - offsets[$0] }.max() ?? 0 }

  /// Appends one sequence made of `events` (absolute indices into `data`), the last `maxLength`
  /// of them; `next` gives the label for every kept event (the following event, or `target` for
  /// the last one, 0 for none), `requestTime` the query time of the last token.
  public mutating func append(user: Int, events: Range<Int>, maxLength: Int, data: UserSequences,
                              target: Int32, targetTime: Int64?) {
    let kept = max(events.lowerBound, events.upperBound - maxLength)..<events.upperBound
    for (p, e) in kept.enumerated() {
      items.append(data.items[e])
      positions.append(Int32(p))
      nextItems.append(e + 1 < kept.upperBound ? data.items[e + 1] : target)
    }
    if let ts = data.timestamps {
      var keys = keyTimes ?? [], queries = queryTimes ?? []
      for e in kept {
        keys.append(ts[e])
        queries.append(e + 1 < kept.upperBound ? ts[e + 1] : (targetTime ?? ts[e]))
      }
      keyTimes = keys; queryTimes = queries
    }
    offsets.append(items.count)
    users.append(user)
  }
}
