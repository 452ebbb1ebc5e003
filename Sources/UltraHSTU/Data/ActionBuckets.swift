/// Action signals as small integer buckets, the indices of action embedding tables
/// (spec/ultra-hstu-paper.md §3.1). Bucket 0 is always reserved for "masked or unknown": the
/// predicted/candidate position, a missing rating, a first event.

/// How explicit ratings map to action buckets.
public enum RatingScale: String, Codable, Sendable, CaseIterable {
  /// Whole stars 1...5 (MovieLens-1M) → buckets 1...5.
  case stars
  /// Half stars 0.5...5.0 (later MovieLens releases) → buckets 1...10.
  case halfStars

  /// The scale of a data set: half stars when any rating is not a whole number, else stars.
  public init(detecting ratings: [Float]) {
    self = ratings.contains { $0.rounded() != $0 } ? .halfStars : .stars
  }

  /// The largest bucket; an embedding table needs `bucketCount + 1` rows (row 0: unknown).
  public var bucketCount: Int {
    switch self {
    case .stars: return 5
    case .halfStars: return 10
    }
  }

  /// The bucket of `rating`, or 0 when the rating is not a value of this scale.
  public func bucket(_ rating: Float) -> Int {
    let steps = self == .stars ? rating : 2 * rating
    guard steps.rounded() == steps, steps >= 1, steps <= Float(bucketCount) else { return 0 }
    return Int(steps)
  }
}

/// Log-bucketed time since the previous event: a gap of g ≥ 0 seconds falls in bucket
/// `1 + ⌊log₂(1 + g)⌋` (0 s → 1, 1–2 s → 2, 3–6 s → 3, …, about a year → 25), capped at
/// `maxBucket`; bucket 0 marks the first event and sequences without timestamps. A negative gap
/// (events out of order) counts as 0 s.
public struct TimeGapBuckets: Codable, Equatable, Sendable {
  /// The largest bucket; an embedding table needs `maxBucket + 1` rows.
  public var maxBucket: Int

  public init(maxBucket: Int = 32) {
    precondition(maxBucket >= 1)
    self.maxBucket = maxBucket
  }

  /// The bucket of a gap of `seconds` since the previous event.
  public func bucket(seconds: Int64) -> Int {
    let x = UInt64(max(0, seconds)) + 1
    let log2 = UInt64.bitWidth - 1 - x.leadingZeroBitCount
    return min(1 + log2, maxBucket)
  }

  /// The bucket of every event of a chronological sequence of `timestamps` (Unix seconds).
  public func buckets<C: Collection>(timestamps: C) -> [Int] where C.Element == Int64 {
    var result: [Int] = []
    result.reserveCapacity(timestamps.count)
    var previous: Int64?
    for t in timestamps {
      result.append(previous.map { bucket(seconds: t - $0) } ?? 0)
      previous = t
    }
    return result
  }
}

extension UserSequences {
  /// The rating bucket of each of `user`'s events; all 0 when the data has no ratings.
  public func ratingBuckets(user: Int, scale: RatingScale) -> [Int] {
    guard let ratings else { return Array(repeating: 0, count: range(of: user).count) }
    return ratings[range(of: user)].map { scale.bucket($0) }
  }

  /// The time-gap bucket of each of `user`'s events; all 0 when the data has no timestamps.
  public func timeGapBuckets(user: Int, buckets: TimeGapBuckets) -> [Int] {
    guard let timestamps else { return Array(repeating: 0, count: range(of: user).count) }
    return buckets.buckets(timestamps: timestamps[range(of: user)])
  }
}
