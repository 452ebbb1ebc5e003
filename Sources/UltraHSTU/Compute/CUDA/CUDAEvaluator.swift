/// `Evaluator` on the device: the same users, histories (the last `maxSequenceLength` events
/// before the target, laid out as the model's input says), batches of `Evaluator.batchSize`, the
/// model output at each history's last row, full ranking by cosine similarity over every item
/// with the encoded history excluded, and the same tie rule; only the ranks (one Int32 per user)
/// come back to the host.
public final class CUDAEvaluator {
  public let model: CUDAModel
  let normalizedItems, lastRows, normalizedUsers, scores: DeviceArray<Float>
  let lastRowIndex, targets, ranks: DeviceArray<Int32>

  /// Allocates the scoring buffers for `model` (its `maxSequences` must be at least `Evaluator.batchSize`).
  public init(model: CUDAModel) throws {
    self.model = model
    let device = model.device, b = Evaluator.batchSize, d = model.config.embeddingDim, columns = model.itemCount + 1
    guard model.maxSequences >= b, model.maxTokens >= b * model.config.maxTokens else {
      throw CUDAError.unsupported("evaluation needs a model sized for \(b) sequences of \(model.config.maxTokens) tokens")
    }
    normalizedItems = try device.allocate(Float.self, count: columns * d)
    lastRows = try device.allocate(Float.self, count: b * d)
    normalizedUsers = try device.allocate(Float.self, count: b * d)
    scores = try device.allocate(Float.self, count: b * columns)
    lastRowIndex = try device.allocate(Int32.self, count: b)
    targets = try device.allocate(Int32.self, count: b)
    ranks = try device.allocate(Int32.self, count: b)
  }

  /// HR/NDCG/MRR of `stage` with the model's current weights (`actions` as in `Evaluator.evaluate`).
  public func evaluate(data: UserSequences, split: LeaveOneOutSplit, stage: LeaveOneOutSplit.Stage,
                       actions: ActionFeatures? = nil) throws -> RankingMetrics {
    let device = model.device, config = model.config, d = config.embeddingDim, columns = model.itemCount + 1
    let itemTable = model.parameters.values.slice(model.itemEmbedding)
    let actions = actions ?? (config.input == .itemsOnly ? nil : ActionFeatures(data, signals: config.actionSignals))
    try device.l2Normalize(itemTable, into: normalizedItems, rows: columns, dim: d)
    let users = split.evaluationUsers
    var metrics = RankingMetrics()
    for start in stride(from: 0, to: users.count, by: Evaluator.batchSize) {
      var batch = SequenceBatch()
      var targetItems: [Int32] = []
      for u in users[start..<min(start + Evaluator.batchSize, users.count)] {
        guard let history = split.history(user: u, stage: stage), !history.isEmpty,
              let target = split.targetIndex(user: u, stage: stage) else { continue }
        batch.append(user: u, events: history, maxEvents: config.maxSequenceLength, data: data,
                     target: data.items[target], targetTime: data.timestamps?[target], input: config.input,
                     actionFeatures: actions)
        targetItems.append(data.items[target])
      }
      let b = batch.batchSize
      if b == 0 { continue }
      try model.setBatch(batch)
      try model.forward(training: false, seed: 0, step: 0)
      try device.upload((1...b).map { Int32(model.outputOffsets[$0] - 1) }, to: lastRowIndex)
      try device.upload(targetItems, to: targets)
      try device.embeddingGather(table: model.output, ids: lastRowIndex.prefix(b), out: lastRows, dim: d)
      try device.l2Normalize(lastRows, into: normalizedUsers, rows: b, dim: d)
      try device.gemm(m: b, n: columns, k: d, a: normalizedUsers, b: normalizedItems, transB: true, d: scores)
      try device.excludeHistory(scores: scores, offsets: model.main.batchOffsets, items: model.main.items, targets: targets,
                                users: b, columns: columns)
      try device.targetRanks(scores: scores, targets: targets, ranks: ranks, users: b, columns: columns)
      for r in try device.download(ranks.prefix(b)) { metrics.add(rank: Int(r)) }
    }
    return metrics
  }
}
