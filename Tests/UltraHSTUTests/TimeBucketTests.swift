import Testing
import UltraHSTU

/// The time buckets of rab^t and the integer thresholds the GPU corrects its fast log with.
@Suite struct TimeBucketTests {
  /// Hand-computed: ln(1)/0.301 = 0, ln(2)/0.301 = 2.30, ln(3)/0.301 = 3.65, ln(60)/0.301 = 13.6,
  /// ln(86400)/0.301 = 37.8; |Δt| < 1 counts as 1; the table caps at `buckets`.
  @Test func bucketValues() {
    #expect(hstuTimeBucket(0, buckets: 128) == 0)
    #expect(hstuTimeBucket(1, buckets: 128) == 0)
    #expect(hstuTimeBucket(2, buckets: 128) == 2)
    #expect(hstuTimeBucket(-3, buckets: 128) == 3)
    #expect(hstuTimeBucket(60, buckets: 128) == 13)
    #expect(hstuTimeBucket(86_400, buckets: 128) == 37)
    #expect(hstuTimeBucket(86_400, buckets: 20) == 20)
  }

  /// thresholds[b] is the least |Δt| in bucket b or above: the bucket of every |Δt| equals the
  /// number of thresholds 1...buckets at or below it, at each threshold and its neighbours.
  @Test(arguments: [128, 40]) func thresholdsGiveTheBucket(buckets: Int) {
    let thresholds = hstuTimeBucketThresholds(buckets: buckets)
    #expect(thresholds.count == buckets + 1)
    #expect(thresholds[0] == 1)
    #expect(zip(thresholds, thresholds.dropFirst()).allSatisfy { $0 <= $1 })
    func counted(_ a: Int64) -> Int { thresholds.dropFirst().filter { $0 <= a }.count }
    for t in thresholds where t < Int64.max / 4 {
      for a in [t - 1, t, t + 1] where a >= 1 {
        #expect(Int(hstuTimeBucket(a, buckets: buckets)) == counted(a), "|Δt| = \(a)")
      }
    }
    for a: Int64 in [1, 2, 7, 1000, 1 << 30, 1 << 40] {
      #expect(Int(hstuTimeBucket(a, buckets: buckets)) == counted(a))
    }
  }
}
