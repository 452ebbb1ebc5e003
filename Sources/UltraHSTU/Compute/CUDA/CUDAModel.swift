/// A retrieval model on one GPU — a single HSTU or SASRec stack (`SequentialModel`) or a mixture of
/// transducers — with the same parameters (names, shapes, `ParameterStore` layout) as fp32 master
/// weights in device memory, their gradients and AdamW moments, and every activation a training
/// step or an evaluation pass needs, all carved from the device arena once at init.
///
/// A training step, written out in `forward`, `lossForwardBackward` and `backward`:
///
///     main = CUDAEncoder(batch)                                  (rows: the kept rows under truncation)
///     out  = main + Σ_c gather(channel_c(batch_c), src_c) · W_c   (mixture of transducers, fp32)
///     loss = sampled softmax over the L2-normalised outputs of the supervised rows (those with a
///            label) and the items, uniform negatives (fused kernel)
///
/// Each channel's batch and the channel row each main row reads (`src_c`) are the CPU model's
/// (`MixtureOfTransducers.channelInput`); dropout masks and negatives come from the CPU's counter
/// streams, so a step on the same batch and weights gives the CPU's loss and gradients up to the
/// bf16 roundings (checked by `hstu gpu-check`).
public final class CUDAModel {
  public let config: ModelConfig
  public let itemCount: Int
  public let device: CUDADevice
  public let parameters: CUDAParameters
  /// Largest number of tokens (and of sequences) a main-stream batch may have.
  public let maxTokens: Int, maxSequences: Int
  let main: CUDAEncoder
  /// The last loss's item-table gradient while it runs on the side stream (`joinTableGradient`).
  private var pendingTableGradient: SideStreamWork?
  /// The item-table rows the current training step's inputs read, and the AdamW step of the
  /// others while it runs on the side stream (`trainingStep`).
  let tableMarks: TableRowMarks
  private var pendingTableUpdate: SideStreamWork?

  struct Channel {
    var encoder: CUDAEncoder
    var projection: ParameterEntry
    /// The channel output row each main output row reads (−1: none), and those rows gathered.
    var sourceRows: DeviceArray<Int32>
    var gathered, dGathered: DeviceArray<Float>
  }
  var channels: [Channel] = []
  let mixture: MixtureOfTransducers?
  /// The fused output `[rows, D]` of a mixture of transducers (unused for a single stack).
  let fused: DeviceArray<Float>

  // Loss.
  /// Most negatives per row the loss buffers hold.
  public static let maxNegatives = 128
  /// The sampled negatives of the last step, `[S, R]` row-major over the supervised rows.
  public let negatives: DeviceArray<Int32>
  /// Supervised output rows (those with a label), their labels, and their outputs / gradients
  /// gathered when not every output row is supervised.
  let supervisedRows: DeviceArray<Int32>, labels: DeviceArray<Int32>
  let supervisedOutput, dSupervised: DeviceArray<Float>
  var supervised = 0, allRowsSupervised = true
  let ones: DeviceArray<Float>, rowLoss: DeviceArray<Float>
  /// Sum of the per-step mean losses since the last `takeLossSum()`.
  let lossSum: DeviceArray<Float>

  /// Mirrors `model` on `device`: uploads its current weights, AdamW moments and step.
  /// `maxSequences` sequences of at most `maxTokens` tokens in all bound every batch later passed in.
  public init(_ model: RetrievalModel, device: CUDADevice, maxTokens: Int, maxSequences: Int) throws {
    config = model.config
    itemCount = model.itemCount
    self.device = device
    self.maxTokens = maxTokens
    self.maxSequences = maxSequences
    parameters = try CUDAParameters(model.parameters, device: device)
    let d = config.embeddingDim
    let stack: SequentialModel
    if let mixture = model as? MixtureOfTransducers {
      stack = mixture.main
      self.mixture = mixture
    } else if let single = model as? SequentialModel {
      stack = single
      mixture = nil
    } else {
      throw CUDAError.unsupported("the GPU path has no \(type(of: model))")
    }
    main = try CUDAEncoder(stack, parameters: parameters, maxTokens: maxTokens, maxSequences: maxSequences)
    for entry in mixture?.channels ?? [] {
      let encoder = try CUDAEncoder(entry.model, parameters: parameters, maxTokens: maxSequences * entry.model.config.maxTokens,
                                    maxSequences: maxSequences)
      let dc = entry.model.config.embeddingDim
      channels.append(Channel(encoder: encoder, projection: entry.projection,
                              sourceRows: try device.allocate(Int32.self, count: maxTokens),
                              gathered: try device.allocate(Float.self, count: maxTokens * dc),
                              dGathered: try device.allocate(Float.self, count: maxTokens * dc)))
    }
    fused = try device.allocate(Float.self, count: channels.isEmpty ? 1 : maxTokens * d)
    tableMarks = try TableRowMarks(rows: main.itemEmbedding.count / d, dim: d, device: device)
    negatives = try device.allocate(Int32.self, count: maxTokens * Self.maxNegatives)
    supervisedRows = try device.allocate(Int32.self, count: maxTokens)
    labels = try device.allocate(Int32.self, count: maxTokens)
    supervisedOutput = try device.allocate(Float.self, count: maxTokens * d)
    dSupervised = try device.allocate(Float.self, count: maxTokens * d)
    ones = try device.array([Float](repeating: 1, count: maxTokens))
    rowLoss = try device.allocate(Float.self, count: maxTokens)
    lossSum = try device.allocate(Float.self, count: 1)
    try device.fill(lossSum)
  }

  public var entries: [ParameterEntry] { parameters.entries }
  public var gradients: DeviceArray<Float> { parameters.gradients }
  /// AdamW steps taken.
  public var step: Int { parameters.step }
  var itemEmbedding: ParameterEntry { main.itemEmbedding }

  public func load(from store: ParameterStore) throws { try parameters.load(from: store) }
  public func save(to store: ParameterStore) throws { try parameters.save(to: store) }

  /// Uploads `batch` (and each channel's batch); it becomes the batch of the next `forward`.
  public func setBatch(_ batch: SequenceBatch) throws {
    try main.setBatch(batch)
    let rows = main.outputStage.rows
    for c in channels.indices {
      guard let mixture else { break }
      let (channelBatch, sources) = main.outputOffsets.withUnsafeBufferPointer { offsets in
        main.outputTokens.withUnsafeBufferPointer { tokens in
          mixture.channelInput(c, for: batch, outputOffsets: offsets.baseAddress!, outputTokens: tokens.baseAddress!, outputRows: rows)
        }
      }
      try channels[c].encoder.setBatch(channelBatch)
      try device.upload(sources, to: channels[c].sourceRows)
    }
    // The supervised rows: the output rows whose token has a label.
    var rowList: [Int32] = [], labelList: [Int32] = []
    for (r, token) in main.outputTokens.enumerated() {
      let label = batch.nextItems.isEmpty ? 0 : batch.nextItems[Int(token)]
      if label != 0 { rowList.append(Int32(r)); labelList.append(label) }
    }
    supervised = rowList.count
    allRowsSupervised = supervised == rows
    try device.upload(labelList, to: labels)
    if !allRowsSupervised { try device.upload(rowList, to: supervisedRows) }
  }

  /// The model output of the last `forward`, `[rows, D]`: row r belongs to sequence b when
  /// `outputOffsets[b] ≤ r < outputOffsets[b + 1]`.
  public var output: DeviceArray<Float> {
    channels.isEmpty ? main.output : fused.prefix(main.outputStage.rows * config.embeddingDim)
  }
  /// Output rows per sequence of the current batch (host).
  public var outputOffsets: [Int] { main.outputOffsets }

  /// Runs every stack over the current batch and fuses the channels into the main output.
  public func forward(training: Bool, seed: UInt64, step: UInt64) throws {
    try main.forward(training: training, seed: seed, step: step)
    let rows = main.outputStage.rows, d = config.embeddingDim
    for (c, channel) in channels.enumerated() {
      let encoder = channel.encoder, dc = encoder.config.embeddingDim
      try encoder.forward(training: training, seed: seed, step: MixtureOfTransducers.channelStep(step, channel: c))
      try device.embeddingGather(table: encoder.output, ids: channel.sourceRows, rows: rows, out: channel.gathered, dim: dc)
      try device.gemm(m: rows, n: d, k: dc, a: channel.gathered, b: parameters.values.slice(channel.projection),
                      d: fused.prefix(rows * d), residual: c == 0 ? main.output : fused.prefix(rows * d))
    }
  }

  /// Sampled-softmax loss of the last training forward with the negatives of `step` (the CPU's
  /// stream): adds the mean loss to the device loss sum, writes d output into the main stack's
  /// `outputGradient` and overwrites the item-table gradient, on the side stream: `backward` joins
  /// it before any stack writes an embedding table's gradient. With `updatesUnmarkedRows` the side
  /// stream then runs the first half of the AdamW step (`adamWStepBegin`, pending in `pendingTableUpdate`).
  func lossForwardBackward(train: TrainConfig, seed: UInt64, step: UInt64, updatesUnmarkedRows: Bool) throws {
    let s = supervised, r = train.negatives, d = config.embeddingDim, rows = main.outputStage.rows
    guard r <= Self.maxNegatives else { throw CUDAError.unsupported("at most \(Self.maxNegatives) negatives (got \(r))") }
    let dOutput = main.outputGradient.prefix(rows * d)
    if s == 0 {
      try device.fill(dOutput)
      try device.fill(parameters.gradients.slice(itemEmbedding))
      return
    }
    let negs = negatives.prefix(s * r)
    try device.sampleNegatives(negs, itemCount: itemCount, seed: seed, stream: ForwardContext.negativeStream(step: step))
    let user = allRowsSupervised ? output : supervisedOutput.prefix(s * d)
    if !allRowsSupervised {
      try device.embeddingGather(table: output, ids: supervisedRows, rows: s, out: user, dim: d)
    }
    pendingTableGradient = try device.sampledSoftmaxLoss(
      user: user, table: parameters.valuesBF16.slice(itemEmbedding), positives: labels, negatives: negs,
      weights: ones.prefix(s), weightSum: Float(s), loss: rowLoss.prefix(s), dUser: allRowsSupervised ? dOutput : dSupervised,
      dTable: parameters.gradients.slice(itemEmbedding), rows: s, dim: d, numNegatives: r, temperature: train.temperature,
      tableGradientOnSideStream: true)
    if updatesUnmarkedRows, let work = pendingTableGradient {
      pendingTableUpdate = try device.continueOnSideStream(after: work) {
        try parameters.adamWStepBegin(train, table: itemEmbedding, marks: tableMarks)
      }
    }
    if !allRowsSupervised {
      try device.fill(dOutput)
      try device.embeddingScatterAdd(dOut: dSupervised, ids: supervisedRows, rows: s, dTable: dOutput, dim: d)
    }
    try device.accumulateSum(rowLoss.prefix(s), scale: 1 / Float(s), into: lossSum)
  }

  /// Makes the main stream wait for the loss's item-table gradient, if it still runs on the side stream.
  func joinTableGradient() throws { try join(&pendingTableGradient) }

  /// Back-propagates the output gradient (in the main stack's `outputGradient`) through the
  /// fusion and every stack into `gradients`. The loss's item-table gradient runs alongside on the
  /// side stream until the first stack writes into an embedding table's gradient.
  func backward(training: Bool, seed: UInt64, step: UInt64) throws {
    let rows = main.outputStage.rows, d = config.embeddingDim
    let dFused = main.outputGradient.prefix(rows * d)
    for (c, channel) in channels.enumerated() {
      let encoder = channel.encoder, dc = encoder.config.embeddingDim
      try device.gemm(m: rows, n: dc, k: d, a: dFused, b: parameters.values.slice(channel.projection), transB: true, d: channel.dGathered)
      try device.gemm(m: dc, n: d, k: rows, a: channel.gathered.prefix(rows * dc), transA: true, b: dFused,
                      d: parameters.gradients.slice(channel.projection))
      // The gathered rows' gradients go back to the channel rows they were read from.
      try device.fill(encoder.outputGradient.prefix(encoder.outputStage.rows * dc))
      try device.embeddingScatterAdd(dOut: channel.dGathered, ids: channel.sourceRows, rows: rows, dTable: encoder.outputGradient, dim: dc)
      try encoder.backward(training: training, seed: seed, step: MixtureOfTransducers.channelStep(step, channel: c),
                           beforeEmbeddingGradients: joinTableGradient)
    }
    try main.backward(training: training, seed: seed, step: step, beforeEmbeddingGradients: joinTableGradient)
    try joinTableGradient()
  }

  /// Zeroes the gradients, then forward, loss and backward of the current batch with the dropout
  /// masks and negatives of `step` (as `Trainer.lossAndGradients`). Queues work only; the loss
  /// lands in the device loss sum.
  public func lossAndGradients(train: TrainConfig, step: UInt64) throws {
    try queueStep(train: train, step: step, optimizes: false)
  }

  /// One AdamW step over every parameter with the current gradients.
  public func adamWStep(_ train: TrainConfig) throws { try parameters.adamWStep(train) }

  /// `lossAndGradients` then `adamWStep`, with the same results, but the item-table rows that the
  /// batch's inputs did not read (whose gradient the loss alone writes) are updated on the side
  /// stream alongside the encoder backward, and only the rest after it.
  public func trainingStep(train: TrainConfig, step: UInt64) throws {
    try queueStep(train: train, step: step, optimizes: true)
    if pendingTableUpdate != nil {
      try parameters.adamWStepFinish(train, table: itemEmbedding, marks: tableMarks)
      try joinTableUpdate()
    } else {
      try parameters.adamWStep(train)
    }
  }

  /// Makes the main stream wait for the side stream's AdamW of the unmarked item-table rows, if queued.
  func joinTableUpdate() throws { try join(&pendingTableUpdate) }

  /// Makes the main stream wait for `work`, if any is pending, and clears it.
  private func join(_ work: inout SideStreamWork?) throws {
    guard let pending = work else { return }
    work = nil
    try device.join(pending)
  }

  /// The work of `lossAndGradients`; with `optimizes`, marks the item-table rows the inputs read
  /// and starts AdamW on the others (`pendingTableUpdate`, unless the batch had no label).
  private func queueStep(train: TrainConfig, step: UInt64, optimizes: Bool) throws {
    // Only after an earlier step threw between its loss and its end.
    try joinTableGradient()
    try joinTableUpdate()
    // Every gradient but the item table's (most of their bytes), which the loss overwrites.
    let table = itemEmbedding
    for range in parameters.ranges(outside: table) {
      try device.fill(parameters.gradients.prefix(range.count, from: range.lowerBound))
    }
    if optimizes {
      let encoders = [main] + channels.map(\.encoder).filter { $0.itemEmbedding.offset == table.offset }
      try tableMarks.mark(encoders.map { $0.items })
    }
    try forward(training: true, seed: train.seed, step: step)
    try lossForwardBackward(train: train, seed: train.seed, step: step, updatesUnmarkedRows: optimizes)
    try backward(training: true, seed: train.seed, step: step)
  }

  /// Returns the loss sum accumulated since the last call and resets it (synchronises).
  public func takeLossSum() throws -> Float {
    let value = try device.download(lossSum)[0]
    try device.fill(lossSum)
    return value
  }
}
