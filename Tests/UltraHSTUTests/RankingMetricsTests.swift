import Foundation
import Testing
import UltraHSTU

@Suite struct RankingMetricsTests {
  @Test func handComputedValues() throws {
    var m = RankingMetrics()
    for rank in [1, 3, 12, 60] { m.add(rank: rank) }
    #expect(m.count == 4)
    #expect(m.hitRate(at: 1) == 0.25)
    #expect(m.hitRate(at: 10) == 0.5)
    #expect(m.hitRate(at: 50) == 0.75)
    #expect(m.hitRate(at: 200) == 1)
    #expect(abs(try #require(m.ndcg(at: 10)) - (1 + 1 / log2(4.0)) / 4) < 1e-12)
    #expect(abs(try #require(m.ndcg(at: 50)) - (1 + 1 / log2(4.0) + 1 / log2(13.0)) / 4) < 1e-12)
    #expect(abs(try #require(m.ndcg(at: 200)) - (1 + 1 / log2(4.0) + 1 / log2(13.0) + 1 / log2(61.0)) / 4) < 1e-12)
    #expect(abs(m.mrr - (1 + 1.0 / 3 + 1.0 / 12 + 1.0 / 60) / 4) < 1e-12)
    #expect(m.hitRate(at: 5) == nil)
  }

  @Test func emptyMetricsAreZero() {
    let m = RankingMetrics()
    #expect(m.mrr == 0)
    #expect(m.dictionary["HR@10"] == 0)
    #expect(m.dictionary["users"] == 0)
  }

  @Test func mergeEqualsSequentialAccumulation() {
    var all = RankingMetrics()
    var a = RankingMetrics()
    var b = RankingMetrics()
    for (i, rank) in [1, 3, 12, 60, 250, 7].enumerated() {
      all.add(rank: rank)
      if i % 2 == 0 { a.add(rank: rank) } else { b.add(rank: rank) }
    }
    a.merge(b)
    #expect(a.count == all.count)
    for (key, value) in all.dictionary { #expect(abs((a.dictionary[key] ?? .nan) - value) < 1e-12) }
  }

  @Test func jsonKeysAndRoundTrip() throws {
    var m = RankingMetrics()
    for rank in [1, 3, 12, 60] { m.add(rank: rank) }
    let json = try JSONEncoder().encode(m)
    let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
    let keys = ["HR@1", "HR@10", "HR@50", "HR@200", "NDCG@10", "NDCG@50", "NDCG@200", "MRR", "users"]
    #expect(Set(object.keys) == Set(keys))
    #expect(Set(m.dictionary.keys) == Set(keys))
    #expect(object["users"] as? Int == 4)
    let decoded = try JSONDecoder().decode(RankingMetrics.self, from: json)
    #expect(decoded.count == 4)
    for (key, value) in m.dictionary { #expect(abs((decoded.dictionary[key] ?? .nan) - value) < 1e-12) }
  }

  func rank(_ target: Int, _ scores: [Float], excluding history: [Int32] = []) -> Int {
    scores.withUnsafeBufferPointer { RankingMetrics.rank(of: target, scores: $0, excluding: history) }
  }

  @Test func rankCountsHigherScores() {
    //            pad   1    2    3    4    5    6
    let scores: [Float] = [99, 0.5, 0.9, 0.1, 0.7, 0.3, 0.8]
    #expect(rank(2, scores) == 1)
    #expect(rank(4, scores) == 3)
    #expect(rank(3, scores) == 6)  // the padding score never counts
  }

  @Test func rankSkipsHistoryButNeverTheTarget() {
    let scores: [Float] = [0, 0.5, 0.9, 0.1, 0.7, 0.3, 0.8]
    #expect(rank(4, scores, excluding: [2, 6]) == 1)
    #expect(rank(4, scores, excluding: [2, 2, 6, 6, 4]) == 1)  // duplicates, and the target itself
    #expect(rank(3, scores, excluding: [1, 5]) == 4)
    #expect(rank(3, scores, excluding: [0, -4, 70]) == 6)  // out-of-range history entries are ignored
  }

  @Test func tiesCountAboveWhenTheItemIndexIsLower() {
    let scores: [Float] = [0, 0.5, 0.5, 0.5, 0.2]
    #expect(rank(1, scores) == 1)
    #expect(rank(2, scores) == 2)
    #expect(rank(3, scores) == 3)
    #expect(rank(3, scores, excluding: [1]) == 2)
    #expect(rank(4, scores) == 4)
  }

  @Test func nanAndInvalidTargetsArePessimistic() {
    #expect(rank(2, [0, .nan, 0.5, 0.1]) == 2)
    #expect(rank(2, [0, 0.9, .nan, 0.1]) == 3)
    #expect(rank(0, [0, 1, 2]) == 3)
    #expect(rank(7, [0, 1, 2]) == 3)
  }
}

@Suite struct MostPopularTests {
  @Test func ranksByTrainingCountWithHistoryFiltered() throws {
    // Training events: user 1 -> [1, 2], user 2 -> [1, 3], user 3 -> [1, 2, 4]; popularity 1 > 2 > 3 = 4.
    let s = InteractionLog(
      userIDs: [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4],
      itemIDs: [1, 2, 3, 4, 1, 3, 2, 4, 1, 2, 4, 3, 2, 1]
    ).userSequences()
    let split = LeaveOneOutSplit(s)
    let baseline = MostPopular(s, split: split)
    #expect(baseline.counts == [0, 4, 2, 1, 1])

    // Validation targets: user 1 -> 3 (history {1,2}: rank 1), user 2 -> 2 (history {1,3}: rank 1),
    // user 3 -> 3 (history {1,2,4}: rank 1).
    let validation = baseline.evaluate(s, split: split, stage: .validation)
    #expect(validation.count == 3)
    #expect(validation.hitRate(at: 1) == 1)

    // Test targets: user 1 -> 4 (history {1,2,3}: rank 1), user 2 -> 4 (history {1,3,2}: rank 1),
    // user 3 -> 2 (in its history, never excluded: rank 1 after 1 is filtered).
    let test = baseline.evaluate(s, split: split, stage: .test)
    #expect(test.count == 3)
    #expect(test.mrr == 1)
  }

  @Test func tieBreakIsPessimistic() {
    // Items 1 and 2 both appear once in training; the target 2 ties with 1 and ranks below it.
    let s = InteractionLog(userIDs: [1, 1, 1, 1, 1], itemIDs: [1, 2, 3, 3, 2]).userSequences()
    let split = LeaveOneOutSplit(s)
    let test = MostPopular(s, split: split).evaluate(s, split: split, stage: .test)
    #expect(test.count == 1)
    // History {1, 2, 3, 3} excludes 1 and 3; the target is never excluded -> rank 1.
    #expect(test.mrr == 1)
    let fresh = InteractionLog(userIDs: [1, 1, 1, 1, 1], itemIDs: [1, 2, 3, 3, 4]).userSequences()
    let freshSplit = LeaveOneOutSplit(fresh)
    let validation = MostPopular(fresh, split: freshSplit).evaluate(fresh, split: freshSplit, stage: .test)
    // Counts: 1:1, 2:1, 3:1, 4:0; history {1,2,3,3} excluded; target 4 is the only candidate left.
    #expect(validation.mrr == 1)
  }
}
