/// Next-item retrieval loss of a training step: L2-normalise the encoder outputs of the supervised
/// rows (those with a label) and the item table, score each row's next item against uniformly
/// sampled negatives with temperature, and back-propagate into the outputs and the item table.
final class RetrievalLoss {
  let normalizedItems = HostBuffer(), itemNorms = HostBuffer(), dNormalizedItems = HostBuffer()
  let supervised = HostBuffer(), users = HostBuffer(), userNorms = HostBuffer(), dUsers = HostBuffer()
  let labels = HostArray<Int32>(), supervisedRows = HostArray<Int32>()
  let partialItemGradients = HostBuffer()

  /// Returns the mean loss over supervised rows; `encoded.output` is replaced by its gradient.
  func forwardBackward(model: RetrievalModel, encoded: EncodedBatch, batch: SequenceBatch,
                       train: TrainConfig, random: CounterRandom, step: UInt64) -> Float {
    let d = model.config.embeddingDim, tableRows = model.itemCount + 1
    var rowList: [Int32] = [], labelList: [Int32] = []
    for r in 0..<encoded.rows {
      let label = batch.nextItems[Int(encoded.tokenIndex[r])]
      if label != 0 { rowList.append(Int32(r)); labelList.append(label) }
    }
    supervisedRows.assign(rowList)
    labels.assign(labelList)
    let rows = rowList.count
    CPUOps.gatherRows(encoded.output, rows: supervisedRows.pointer, count: rows, dim: d, supervised.reserve(rows * d))
    CPUOps.l2NormalizeForward(model.itemTable, normalizedItems.reserve(tableRows * d), norms: itemNorms.reserve(tableRows),
                              rows: tableRows, dim: d)
    CPUOps.l2NormalizeForward(supervised.pointer, users.reserve(rows * d), norms: userNorms.reserve(rows), rows: rows, dim: d)
    dNormalizedItems.reserve(tableRows * d)
    dNormalizedItems.zero()
    let loss = CPUOps.sampledSoftmaxLoss(user: users.pointer, positives: labels.pointer, rows: rows, dim: d,
                                         items: normalizedItems.pointer, itemCount: model.itemCount,
                                         negatives: train.negatives, temperature: train.temperature, random: random,
                                         stream: step, dUser: dUsers.reserve(rows * d), dItems: dNormalizedItems.pointer,
                                         scratch: partialItemGradients)
    CPUOps.l2NormalizeBackward(dUsers.pointer, users.pointer, norms: userNorms.pointer, supervised.pointer, rows: rows, dim: d)
    encoded.output.update(repeating: 0, count: encoded.rows * d)
    CPUOps.scatterRows(supervised.pointer, rows: supervisedRows.pointer, count: rows, dim: d, encoded.output)
    CPUOps.l2NormalizeBackward(dNormalizedItems.pointer, normalizedItems.pointer, norms: itemNorms.pointer,
                               model.itemTableGradient, rows: tableRows, dim: d, accumulate: true)
    return loss
  }
}
