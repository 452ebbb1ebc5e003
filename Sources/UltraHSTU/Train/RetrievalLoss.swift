/// Next-item retrieval loss of a training step: L2-normalise the encoder outputs and the item
/// table, score each position's next item against uniformly sampled negatives with temperature,
/// and back-propagate into the outputs and the item table.
final class RetrievalLoss {
  let normalizedItems = HostBuffer(), itemNorms = HostBuffer(), dNormalizedItems = HostBuffer()
  let users = HostBuffer(), userNorms = HostBuffer(), dUsers = HostBuffer()
  let labels = HostArray<Int32>()

  /// Returns the mean loss; `output` is replaced by its gradient.
  func forwardBackward(model: SequentialModel, output: UnsafeMutablePointer<Float>, batch: SequenceBatch,
                       train: TrainConfig, random: CounterRandom, step: UInt64) -> Float {
    let d = model.config.embeddingDim, rows = batch.tokenCount, tableRows = model.itemCount + 1
    CPUOps.l2NormalizeForward(model.itemTable, normalizedItems.reserve(tableRows * d), norms: itemNorms.reserve(tableRows),
                              rows: tableRows, dim: d)
    CPUOps.l2NormalizeForward(output, users.reserve(rows * d), norms: userNorms.reserve(rows), rows: rows, dim: d)
    labels.assign(batch.nextItems)
    dNormalizedItems.reserve(tableRows * d)
    dNormalizedItems.zero()
    let loss = CPUOps.sampledSoftmaxLoss(user: users.pointer, positives: labels.pointer, rows: rows, dim: d,
                                         items: normalizedItems.pointer, itemCount: model.itemCount,
                                         negatives: train.negatives, temperature: train.temperature, random: random,
                                         stream: step, dUser: dUsers.reserve(rows * d), dItems: dNormalizedItems.pointer)
    CPUOps.l2NormalizeBackward(dUsers.pointer, users.pointer, norms: userNorms.pointer, output, rows: rows, dim: d)
    CPUOps.l2NormalizeBackward(dNormalizedItems.pointer, normalizedItems.pointer, norms: itemNorms.pointer,
                               model.itemTableGradient, rows: tableRows, dim: d, accumulate: true)
    return loss
  }
}
