/// A jagged batch of user histories: sequence `b` owns tokens `offsets[b]..<offsets[b+1]`; no padding.
public struct SequenceBatch: Sendable {
  /// Dense item index of each token (0 for the action tokens of interleaved input).
  public var items: [Int32] = []
  /// Position of each token inside its sequence window (0 = oldest kept token).
  public var positions: [Int32] = []
  /// `[T × signals]` action bucket of each token per signal; −1 = the token has no action
  /// embedding (item tokens of interleaved input, or input without actions).
  public var actions: [Int32] = []
  /// The absolute event index (into `UserSequences`) each token comes from.
  public var events: [Int32] = []
  /// The item each token is trained to predict (its label); 0 = unsupervised.
  public var nextItems: [Int32] = []
  /// Event time of each token (Unix seconds), when the data has timestamps.
  public var keyTimes: [Int64]? = nil
  /// Time of the event being predicted at each token (the next event; the target at the end).
  public var queryTimes: [Int64]? = nil
  /// `batch + 1` token offsets.
  public var offsets: [Int] = [0]
  /// Which user each sequence belongs to.
  public var users: [Int] = []

  public init() {}

  public var batchSize: Int { offsets.count - 1 }
  public var tokenCount: Int { items.count }
  public var maxLength: Int { (0..<batchSize).map { offsets[$0 + 1] - offsets[$0] }.max() ?? 0 }

  /// Appends the sequence of `events` (absolute indices into `data`, chronological, the kept
  /// subset already chosen), laid out as `input` says. Each event's token predicts the following
  /// event's item, and the last one predicts `target` (0: no label). Only actions of the events
  /// themselves enter the input, never the action of an event being predicted.
  public mutating func append(user: Int, events: [Int], data: UserSequences, target: Int32, targetTime: Int64?,
                              input: InputMode = .itemsOnly, actionFeatures: ActionFeatures? = nil) {
    let signals = input == .itemsOnly ? 0 : (actionFeatures?.signals.count ?? 0)
    if data.timestamps != nil && keyTimes == nil { keyTimes = []; queryTimes = [] }
    var position: Int32 = 0
    for (k, e) in events.enumerated() {
      let label = k + 1 < events.count ? data.items[events[k + 1]] : target
      let keyTime = data.timestamps?[e]
      let queryTime = k + 1 < events.count ? data.timestamps?[events[k + 1]] : (targetTime ?? keyTime)
      func token(item: Int32, withActions: Bool, label: Int32) {
        items.append(item)
        self.events.append(Int32(e))
        positions.append(position)
        position += 1
        nextItems.append(label)
        for s in 0..<signals { actions.append(withActions ? actionFeatures?.buckets[s][e] ?? 0 : -1) }
        if let keyTime, let queryTime {
          keyTimes!.append(keyTime)
          queryTimes!.append(queryTime)
        }
      }
      switch input {
      case .itemsOnly: token(item: data.items[e], withActions: false, label: label)
      case .actionAware: token(item: data.items[e], withActions: true, label: label)
      case .interleaved:
        token(item: data.items[e], withActions: false, label: 0)
        token(item: 0, withActions: true, label: label)
      }
    }
    offsets.append(items.count)
    users.append(user)
  }

  /// `append` for a contiguous range, keeping its last `maxEvents` events.
  public mutating func append(user: Int, events: Range<Int>, maxEvents: Int, data: UserSequences, target: Int32,
                              targetTime: Int64?, input: InputMode = .itemsOnly, actionFeatures: ActionFeatures? = nil) {
    let kept = max(events.lowerBound, events.upperBound - maxEvents)..<events.upperBound
    append(user: user, events: Array(kept), data: data, target: target, targetTime: targetTime, input: input,
           actionFeatures: actionFeatures)
  }
}
