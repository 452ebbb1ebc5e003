/// The action buckets of every event for each configured signal, computed once per dataset.
public struct ActionFeatures: Sendable {
  public let signals: [ActionSignal]
  /// `buckets[s][e]`: bucket of signal `s` for event `e` (0 = unknown).
  public let buckets: [[Int32]]

  public init(_ data: UserSequences, signals: [ActionSignal]) {
    self.signals = signals
    let scale = data.ratings.map { RatingScale(detecting: $0) } ?? .stars
    buckets = signals.map { signal in
      var out = [Int32](repeating: 0, count: data.eventCount)
      for u in 0..<data.userCount {
        let range = data.range(of: u)
        let values: [Int]
        switch signal {
        case .rating:
          values = data.ratingBuckets(user: u, scale: scale)
        case .timeGap:
          values = data.timeGapBuckets(user: u, buckets: TimeGapBuckets())
        }
        for (i, v) in values.enumerated() { out[range.lowerBound + i] = Int32(v) }
      }
      return out
    }
  }
}
