import Testing
import UltraHSTU

@Test func starBuckets() {
  #expect([1, 2, 3, 4, 5].map { RatingScale.stars.bucket(Float($0)) } == [1, 2, 3, 4, 5])
  // Off the scale: unknown.
  #expect([0, 0.5, 3.5, 6, -1].map { RatingScale.stars.bucket($0) } == [0, 0, 0, 0, 0])
  #expect(RatingScale.stars.bucketCount == 5)
}

@Test func halfStarBuckets() {
  let ratings: [Float] = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5]
  #expect(ratings.map { RatingScale.halfStars.bucket($0) } == Array(1...10))
  #expect([0, 0.25, 5.5].map { RatingScale.halfStars.bucket($0) } == [0, 0, 0])
  #expect(RatingScale.halfStars.bucketCount == 10)
}

@Test func ratingScaleDetection() {
  #expect(RatingScale(detecting: [1, 5, 3]) == .stars)
  #expect(RatingScale(detecting: [1, 4.5, 3]) == .halfStars)
}

@Test func timeGapBucketsAreLogarithmic() {
  let buckets = TimeGapBuckets()
  // 1 + ⌊log₂(1 + g)⌋
  let gaps: [Int64] = [0, 1, 2, 3, 6, 7, 60, 3_600, 86_400, 31_536_000]
  #expect(gaps.map { buckets.bucket(seconds: $0) } == [1, 2, 2, 3, 3, 4, 6, 12, 17, 25])
  #expect(buckets.bucket(seconds: -5) == 1)
  #expect(TimeGapBuckets(maxBucket: 4).bucket(seconds: 1_000) == 4)
  // First event: 0; then the gaps 0 s, 7 s and 3 s.
  #expect(buckets.buckets(timestamps: [100, 100, 107, 110]) == [0, 1, 4, 3])
  #expect(buckets.buckets(timestamps: [Int64]()) == [])
}

@Test func bucketsOfUserSequences() {
  let sequences = UserSequences(itemCount: 3, offsets: [0, 2, 5], items: [1, 2, 3, 1, 2],
                                ratings: [4, 2.5, 5, 1, 0.5], timestamps: [10, 12, 50, 50, 51],
                                userIDs: [7, 8], originalItemIDs: [0, 11, 12, 13])
  #expect(sequences.ratingBuckets(user: 1, scale: .halfStars) == [10, 2, 1])
  #expect(sequences.timeGapBuckets(user: 0, buckets: TimeGapBuckets()) == [0, 2])
  #expect(sequences.timeGapBuckets(user: 1, buckets: TimeGapBuckets()) == [0, 1, 2])
  var bare = sequences
  bare.ratings = nil
  bare.timestamps = nil
  #expect(bare.ratingBuckets(user: 1, scale: .stars) == [0, 0, 0])
  #expect(bare.timeGapBuckets(user: 0, buckets: TimeGapBuckets()) == [0, 0])
}
