/// Full-ranking evaluation: for every evaluated user, encode the history before the held-out
/// target, score *all* items by cosine similarity, drop the items of the encoded history from the
/// ranking (Meta's protocol), and record the target's rank.
public enum Evaluator {
  /// Users encoded per forward pass.
  public static let batchSize = 256

  public static func evaluate(model: RetrievalModel, data: UserSequences, split: LeaveOneOutSplit,
                              stage: LeaveOneOutSplit.Stage, actions: ActionFeatures? = nil) -> RankingMetrics {
    let d = model.config.embeddingDim, tableRows = model.itemCount + 1
    let normalizedItems = HostBuffer(count: tableRows * d), itemNorms = HostBuffer(count: tableRows)
    CPUOps.l2NormalizeForward(model.itemTable, normalizedItems.pointer, norms: itemNorms.pointer, rows: tableRows, dim: d)
    let actions = actions ?? (model.config.input == .itemsOnly ? nil : ActionFeatures(data, signals: model.config.actionSignals))
    let users = split.evaluationUsers
    let lastRows = HostBuffer(), normalizedUsers = HostBuffer(), userNorms = HostBuffer(), scores = HostBuffer()
    var metrics = RankingMetrics()
    for start in stride(from: 0, to: users.count, by: batchSize) {
      var batch = SequenceBatch()
      var targets: [Int] = []
      for u in users[start..<min(start + batchSize, users.count)] {
        guard let history = split.history(user: u, stage: stage), !history.isEmpty,
              let target = split.targetIndex(user: u, stage: stage) else { continue }
        batch.append(user: u, events: history, maxEvents: model.config.maxSequenceLength, data: data,
                     target: data.items[target], targetTime: data.timestamps?[target], input: model.config.input,
                     actionFeatures: actions)
        targets.append(Int(data.items[target]))
      }
      let b = batch.batchSize
      if b == 0 { continue }
      let encoded = model.forward(batch, training: false, random: CounterRandom(seed: 0), step: 0)
      let last = lastRows.reserve(b * d)
      for s in 0..<b { (last + s * d).update(from: encoded.output + (encoded.offsets[s + 1] - 1) * d, count: d) }
      CPUOps.l2NormalizeForward(last, normalizedUsers.reserve(b * d), norms: userNorms.reserve(b), rows: b, dim: d)
      BLAS.shared.sgemm(transB: true, m: b, n: tableRows, k: d, a: normalizedUsers.pointer, lda: d,
                        b: normalizedItems.pointer, ldb: d, c: scores.reserve(b * tableRows), ldc: tableRows)
      var parts = [RankingMetrics](repeating: RankingMetrics(), count: b)
      parts.withUnsafeMutableBufferPointer { parts in
        Parallel.forChunks(b) { r in
          for s in r {
            let row = UnsafeBufferPointer(start: scores.pointer + s * tableRows, count: tableRows)
            let history = batch.items[batch.offsets[s]..<batch.offsets[s + 1]].filter { $0 != 0 }
            parts[s].add(rank: RankingMetrics.rank(of: targets[s], scores: row, excluding: history))
          }
        }
      }
      for p in parts { metrics.merge(p) }
    }
    return metrics
  }
}
