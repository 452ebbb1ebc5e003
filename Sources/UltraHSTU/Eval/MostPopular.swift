/// The most-popular baseline: every user gets the same scores, the items' counts among the training
/// events of a leave-one-out split, with the user's history filtered out. Any trained model should beat it.
public struct MostPopular: Sendable {
  /// Training count of each dense item (index 0, padding, is 0).
  public let counts: [Int]

  /// Counts the training events of `split` (validation and test targets are not counted).
  public init(_ sequences: UserSequences, split: LeaveOneOutSplit) {
    var counts = [Int](repeating: 0, count: sequences.itemCount + 1)
    for user in 0..<split.userCount {
      for e in sequences.offsets[user]..<split.trainEnd(user: user) { counts[Int(sequences.items[e])] += 1 }
    }
    self.counts = counts
  }

  /// The metrics of ranking each evaluation user's `stage` target by popularity, excluding the items
  /// of the user's history (all events before the target), with `RankingMetrics.rank`.
  public func evaluate(_ sequences: UserSequences, split: LeaveOneOutSplit,
                       stage: LeaveOneOutSplit.Stage) -> RankingMetrics {
    let scores = counts.map(Float.init)
    let users = split.evaluationUsers
    let blocks = min(users.count, 64)
    var partial = [RankingMetrics](repeating: RankingMetrics(), count: blocks)
    scores.withUnsafeBufferPointer { scores in
      partial.withUnsafeMutableBufferPointer { partial in
        Parallel.forEach(blocks) { _, block in
          var metrics = RankingMetrics()
          for user in users[(users.count * block / blocks)..<(users.count * (block + 1) / blocks)] {
            guard let target = split.targetIndex(user: user, stage: stage),
              let history = split.history(user: user, stage: stage)
            else { continue }
            metrics.add(rank: RankingMetrics.rank(of: Int(sequences.items[target]), scores: scores,
                                                  excluding: sequences.items[history]))
          }
          partial[block] = metrics
        }
      }
    }
    return partial.reduce(into: RankingMetrics()) { $0.merge($1) }
  }
}
