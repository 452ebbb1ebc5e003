/// One encoder stack of a `SequentialModel` on the GPU — HSTU or SASRec; the main stream, or a
/// channel of a mixture of transducers — reading its weights from the shared `CUDAParameters` and
/// adding into its gradients. Every activation a forward and backward need is carved from the
/// arena at init.
///
///     x_0 = Dropout(E[item]·√D + Σ_s A_s[action_s]·√D + P[pos])
///     x_{l+1} = layer_l(x_l)                 (`CUDAHSTULayer` or `CUDASASRecLayer`)
///     output = x_L, or LN_final(x_L) (SASRec)
///     attention truncation: after `layersBefore` layers only the last `keepLast` rows of each
///     sequence (gathered) go through the remaining layers, with the truncation's mask; the output
///     is those rows, or every row with the dropped ones as they left layer `layersBefore` − 1
///     (`supervisesDroppedRows`).
///
/// Dropout masks come from the CPU model's counter streams.
final class CUDAEncoder {
  let config: ModelConfig
  let parameters: CUDAParameters
  let device: CUDADevice
  /// Largest number of tokens (and of sequences) a batch may have.
  let maxTokens: Int, maxSequences: Int

  /// Event times of a stage's tokens for the time bias (rab^t).
  struct StageTimes {
    var keys, queries: DeviceArray<Int64>
    var thresholds: DeviceArray<Int64>
  }

  /// The rows one group of layers runs on: the whole batch, or the rows truncation keeps.
  struct Stage {
    var rows = 0, sequences = 0, longest = 0
    var offsets: DeviceArray<Int32>
    var mask: AttentionMask
    /// Present when a layer has a time bias and the batch has timestamps.
    var times: StageTimes?
    /// The mask's key bounds for the current batch, shared by the layers' attention calls.
    let bounds: AttentionBoundsCache
  }

  let itemEmbedding, positionEmbedding: ParameterEntry
  let actionEmbeddings: [ParameterEntry]
  let layers: [CUDAEncoderLayer]
  /// hidden[l] is the output of layer l − 1 (hidden[0]: the embedded input), in the rows of its stage.
  let hidden: [DeviceArray<Float>]
  /// The kept rows of hidden[layersBefore], the input of the first truncated layer.
  let truncatedInput: DeviceArray<Float>
  /// Under truncation that supervises the dropped rows: every row (kept rows from the last layer,
  /// dropped rows from hidden[layersBefore]), and the kept rows' share of its gradient.
  let composedOutput, dKept: DeviceArray<Float>
  /// SASRec's final LayerNorm: its parameters, statistics, output and input gradient.
  let finalNorm: (gamma: ParameterEntry, beta: ParameterEntry)?
  let finalMean, finalRstd, normalizedOutput, dFinalInput: DeviceArray<Float>
  /// Batch words (Int32), uploaded in one copy: items, positions, actions `[T × signals]`, offsets,
  /// then, under truncation, the kept rows' offsets and batch tokens.
  let batchWords: DeviceArray<Int32>
  var items: DeviceArray<Int32>, positions: DeviceArray<Int32>, actions: DeviceArray<Int32>, keptRows: DeviceArray<Int32>
  /// With a time bias: key and query times of the batch, then of the kept rows (one copy), and
  /// the bucket thresholds.
  let batchTimes, timeThresholds: DeviceArray<Int64>?
  var full: Stage, kept: Stage
  /// The output rows per sequence, and the batch token of each, on the host.
  private(set) var outputOffsets: [Int] = [0], outputTokens: [Int32] = []
  /// d output `[rows, D]`: the loss (or the fusion) writes it, `backward` consumes it.
  let outputGradient: DeviceArray<Float>
  /// The residual stream's gradient under truncation (the whole batch), and the bf16 copy of the
  /// running gradient that feeds the layers' GEMMs.
  let dx: DeviceArray<Float>
  let dxBF16: DeviceArray<BFloat16>

  var layersBefore: Int { min(config.truncation?.layersBefore ?? config.layers, config.layers) }
  var truncates: Bool { layersBefore < config.layers }
  /// Truncation whose dropped rows are outputs too.
  var exitsEarly: Bool { truncates && config.truncation?.supervisesDroppedRows == true }

  /// Mirrors the stack of `model` (its entries live in `parameters`), sized for batches of at most
  /// `maxTokens` tokens in `maxSequences` sequences.
  init(_ model: SequentialModel, parameters: CUDAParameters, maxTokens: Int, maxSequences: Int) throws {
    let c = model.config
    guard !c.rematerialize else { throw CUDAError.unsupported("the GPU path keeps all activations (no rematerialisation)") }
    config = c
    self.parameters = parameters
    let device = parameters.device
    self.device = device
    self.maxTokens = maxTokens
    self.maxSequences = maxSequences
    itemEmbedding = model.itemEmbedding
    positionEmbedding = model.positionEmbedding
    actionEmbeddings = model.actionEmbeddings

    let t = maxTokens, d = c.embeddingDim
    func floats(_ count: Int) throws -> DeviceArray<Float> { try device.allocate(Float.self, count: count) }
    switch c.kind {
    case .hstu:
      let scratch = try CUDAHSTULayer.Scratch(config: c, device: device, maxTokens: t)
      layers = try model.layers.map { layer in
        guard let layer = layer as? HSTULayer else { throw CUDAError.unsupported("HSTU stack with a non-HSTU layer") }
        return try CUDAHSTULayer(layer, parameters: parameters, scratch: scratch, maxTokens: t)
      }
    case .sasrec:
      let scratch = try CUDASASRecLayer.Scratch(config: c, device: device, maxTokens: t)
      layers = try model.layers.map { layer in
        guard let layer = layer as? SASRecLayer else { throw CUDAError.unsupported("SASRec stack with a non-SASRec layer") }
        return try CUDASASRecLayer(layer, parameters: parameters, scratch: scratch, maxTokens: t)
      }
    }
    hidden = try (0...c.layers).map { _ in try floats(t * d) }
    let truncating = min(c.truncation?.layersBefore ?? c.layers, c.layers) < c.layers
    let early = truncating && c.truncation?.supervisesDroppedRows == true
    truncatedInput = try floats(truncating ? t * d : 1)
    composedOutput = try floats(early ? t * d : 1)
    if let gamma = model.finalGamma, let beta = model.finalBeta {
      finalNorm = (gamma, beta)
      finalMean = try floats(t); finalRstd = try floats(t); normalizedOutput = try floats(t * d); dFinalInput = try floats(t * d)
    } else {
      finalNorm = nil
      finalMean = try floats(1); finalRstd = finalMean; normalizedOutput = finalMean; dFinalInput = finalMean
    }
    let signals = actionEmbeddings.count
    batchWords = try device.allocate(Int32.self, count: (3 + signals) * t + 2 * (maxSequences + 1))
    items = batchWords; positions = batchWords; actions = batchWords; keptRows = batchWords
    if c.timeBias && c.kind == .hstu {
      batchTimes = try device.allocate(Int64.self, count: 4 * t)
      timeThresholds = try device.array(hstuTimeBucketThresholds(buckets: c.timeBuckets))
    } else {
      batchTimes = nil; timeThresholds = nil
    }
    full = Stage(offsets: batchWords, mask: c.mask, bounds: try AttentionBoundsCache(device: device, maxSequences: maxSequences, maxLength: t))
    kept = Stage(offsets: batchWords, mask: c.truncation?.mask ?? c.mask,
                 bounds: try AttentionBoundsCache(device: device, maxSequences: maxSequences, maxLength: t))
    let dOutput = try floats(t * d)
    outputGradient = dOutput
    dx = truncating ? try floats(t * d) : dOutput
    dKept = early ? try floats(t * d) : dOutput
    dxBF16 = try device.allocate(BFloat16.self, count: t * d)
  }

  /// Uploads `batch` (one copy, and one of its times under a time bias) and chooses the rows
  /// truncation keeps; it becomes the batch of the next `forward`.
  func setBatch(_ batch: SequenceBatch) throws {
    let t = batch.tokenCount, b = batch.batchSize, signals = actionEmbeddings.count
    guard t <= maxTokens, b <= maxSequences else {
      throw CUDAError.unsupported("batch of \(t) tokens / \(b) sequences exceeds the model's \(maxTokens) / \(maxSequences)")
    }
    guard batch.actions.count == t * signals else {
      throw CUDAError.unsupported("batch built without the \(signals) action signal(s) this model's input needs")
    }
    var words = batch.items
    words += batch.positions
    words += batch.actions
    words += batch.offsets.map { Int32($0) }
    outputOffsets = batch.offsets
    outputTokens = (0..<Int32(t)).map { $0 }
    // Under truncation the kept rows' offsets and batch tokens follow.
    let tail = config.truncation.flatMap { truncates ? SequentialModel.tail(offsets: batch.offsets, keep: $0.keepLast) : nil }
    if let tail {
      if !exitsEarly { (outputOffsets, outputTokens) = tail }
      words += tail.offsets.map { Int32($0) }
      words += tail.rows
    }
    try device.upload(words, to: batchWords)
    full.bounds.invalidate()
    kept.bounds.invalidate()
    items = batchWords.prefix(t)
    positions = batchWords.prefix(t, from: t)
    actions = batchWords.prefix(t * signals, from: 2 * t)
    let offsetsStart = (2 + signals) * t
    full.offsets = batchWords.prefix(b + 1, from: offsetsStart)
    full.rows = t; full.sequences = b; full.longest = batch.maxLength
    if let tail {
      kept.offsets = batchWords.prefix(b + 1, from: offsetsStart + b + 1)
      keptRows = batchWords.prefix(tail.rows.count, from: offsetsStart + 2 * (b + 1))
      kept.rows = tail.rows.count; kept.sequences = b
      kept.longest = (0..<b).map { tail.offsets[$0 + 1] - tail.offsets[$0] }.max() ?? 0
    }
    try setTimes(batch, keptTokens: tail?.rows)
  }

  /// The stages' key and query times (the CPU's time buckets come from the same pairs); none
  /// without a time bias or without timestamps.
  private func setTimes(_ batch: SequenceBatch, keptTokens: [Int32]?) throws {
    full.times = nil
    kept.times = nil
    guard let batchTimes, let timeThresholds, let keys = batch.keyTimes, let queries = batch.queryTimes else { return }
    let t = batch.tokenCount, k = keptTokens?.count ?? 0
    var words = keys + queries
    if let keptTokens {
      words += keptTokens.map { keys[Int($0)] }
      words += keptTokens.map { queries[Int($0)] }
    }
    try device.upload(words, to: batchTimes)
    full.times = StageTimes(keys: batchTimes.prefix(t), queries: batchTimes.prefix(t, from: t), thresholds: timeThresholds)
    if keptTokens != nil {
      kept.times = StageTimes(keys: batchTimes.prefix(k, from: 2 * t), queries: batchTimes.prefix(k, from: 2 * t + k),
                              thresholds: timeThresholds)
    }
  }

  /// The batch's tokens per sequence (device), for the evaluator's history exclusion.
  var batchOffsets: DeviceArray<Int32> { full.offsets }
  /// The output stage: the kept rows under truncation (unless it supervises the dropped rows), else the whole batch.
  var outputStage: Stage { truncates && !exitsEarly ? kept : full }
  /// The last layer's output (or the composition of kept and dropped rows), before a final LayerNorm.
  private var stackOutput: DeviceArray<Float> {
    (exitsEarly ? composedOutput : hidden[config.layers]).prefix(outputStage.rows * config.embeddingDim)
  }
  /// The encoder output of the last `forward`, `[rows, D]` (rows of `outputStage`).
  var output: DeviceArray<Float> {
    finalNorm == nil ? stackOutput : normalizedOutput.prefix(outputStage.rows * config.embeddingDim)
  }

  func stage(ofLayer l: Int) -> Stage { l < layersBefore ? full : kept }
  func input(ofLayer l: Int) -> DeviceArray<Float> { truncates && l == layersBefore ? truncatedInput : hidden[l] }

  /// Runs the stack over the current batch; the result is `output`.
  func forward(training: Bool, seed: UInt64, step: UInt64) throws {
    let pass = CUDAPass(training: training, seed: seed, step: step)
    let t = full.rows, d = config.embeddingDim, scale = Float(d).squareRoot()
    let values = parameters.values
    let x0 = hidden[0].prefix(t * d)
    // The input dropout rides on the last gather that writes x0.
    let mask = pass.dropout(rate: config.inputDropout, layer: 0xFFF, site: 0)
    try device.embeddingGather(table: values.slice(itemEmbedding), ids: items, positionTable: values.slice(positionEmbedding),
                               positionIds: positions, out: x0, dim: d, scale: scale, dropout: actionEmbeddings.isEmpty ? mask : nil)
    for (s, table) in actionEmbeddings.enumerated() {
      try device.embeddingGather(table: values.slice(table), ids: actions.prefix(t * actionEmbeddings.count, from: s),
                                 idStride: actionEmbeddings.count, rows: t, out: x0, dim: d, scale: scale, accumulate: true,
                                 dropout: s == actionEmbeddings.count - 1 ? mask : nil)
    }
    for (l, layer) in layers.enumerated() {
      if truncates && l == layersBefore {
        try device.embeddingGather(table: hidden[l], ids: keptRows, out: truncatedInput, dim: d)
      }
      let s = stage(ofLayer: l)
      try layer.forward(input(ofLayer: l).prefix(s.rows * d), into: hidden[l + 1], stage: s, pass: pass)
    }
    if exitsEarly {
      try device.copy(hidden[layersBefore].prefix(t * d), to: composedOutput)
      try device.scatterRows(hidden[config.layers], ids: keptRows, into: composedOutput, dim: d)
    }
    if let norm = finalNorm {
      try device.layerNormForward(x: stackOutput, gamma: values.slice(norm.gamma), beta: values.slice(norm.beta), y: normalizedOutput,
                                  mean: finalMean, rstd: finalRstd, rows: outputStage.rows, dim: d, eps: 1e-6)
    }
  }

  /// Back-propagates `outputGradient` (consumed) through the last training forward into the gradients;
  /// `beforeEmbeddingGradients` runs just before the first write into the embedding tables' gradients.
  func backward(training: Bool, seed: UInt64, step: UInt64, beforeEmbeddingGradients: () throws -> Void = {}) throws {
    let pass = CUDAPass(training: training, seed: seed, step: step)
    let d = config.embeddingDim
    var dOutput = outputGradient
    if let norm = finalNorm {
      let rows = outputStage.rows, values = parameters.values, gradients = parameters.gradients
      try device.layerNormBackward(dy: outputGradient.prefix(rows * d), x: stackOutput, gamma: values.slice(norm.gamma),
                                   beta: values.slice(norm.beta), mean: finalMean, rstd: finalRstd, dx: dFinalInput,
                                   dGamma: gradients.slice(norm.gamma), dBeta: gradients.slice(norm.beta), rows: rows, dim: d)
      dOutput = dFinalInput
    }
    var dResidual = dOutput
    if exitsEarly {
      try device.embeddingGather(table: dOutput, ids: keptRows, out: dKept, dim: d)
      dResidual = dKept
    }
    try device.castToBFloat16(dResidual.prefix(stage(ofLayer: config.layers - 1).rows * d), into: dxBF16)
    for (l, layer) in layers.enumerated().reversed() {
      let s = stage(ofLayer: l)
      try layer.backward(dResidual.prefix(s.rows * d), gradientBF16: dxBF16, input: input(ofLayer: l).prefix(s.rows * d),
                         stage: s, pass: pass)
      if truncates && l == layersBefore {
        // Back to the whole batch: the kept rows' gradients land on their tokens; the dropped rows
        // get their own output gradient when they are outputs, else none.
        if exitsEarly { try device.copy(dOutput.prefix(full.rows * d), to: dx) } else { try device.fill(dx.prefix(full.rows * d)) }
        try device.scatterRows(dResidual, ids: keptRows, into: dx, dim: d)
        dResidual = dx
        try device.castToBFloat16(dx.prefix(full.rows * d), into: dxBF16)
      }
    }
    // Each scatter takes dx0 through the input dropout's mask itself.
    let t = full.rows, dx0 = dResidual.prefix(t * d), scale = Float(d).squareRoot()
    let mask = pass.dropout(rate: config.inputDropout, layer: 0xFFF, site: 0)
    let gradients = parameters.gradients
    try beforeEmbeddingGradients()
    try device.embeddingScatterAdd(dOut: dx0, ids: items, dTable: gradients.slice(itemEmbedding), dim: d, scale: scale, dropout: mask)
    try device.embeddingScatterAdd(dOut: dx0, ids: positions, dTable: gradients.slice(positionEmbedding), dim: d, dropout: mask)
    for (s, table) in actionEmbeddings.enumerated() {
      try device.embeddingScatterAdd(dOut: dx0, ids: actions.prefix(t * actionEmbeddings.count, from: s), idStride: actionEmbeddings.count,
                                     rows: t, dTable: gradients.slice(table), dim: d, scale: scale, dropout: mask)
    }
  }
}
