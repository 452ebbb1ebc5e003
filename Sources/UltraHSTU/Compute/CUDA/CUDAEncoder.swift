/// One HSTU stack of a `SequentialModel` on the GPU — the main stream, or a channel of a mixture
/// of transducers — reading its weights from the shared `CUDAParameters` and adding into its
/// gradients. Every activation a forward and backward need is carved from the arena at init.
///
///     x_0 = Dropout(E[item]·√D + Σ_s A_s[action_s]·√D + P[pos])
///     per layer: n = LN(x) (bf16);  pre = n·W_uvqk;  u, v, q, k = SiLU(pre)   (v, q, k bf16, padded heads)
///                o = Σ_j SiLU(q_i·k_j + rab^p_{i−j}) / N · v_j                 (fused attention, any AttentionMask)
///                g = Dropout(u ⊙ LN(o)) (bf16, one kernel);  x' = x + g·W_o + b_o   (cuBLASLt, bias + residual fused)
///     attention truncation: after `layersBefore` layers only the last `keepLast` rows of each
///     sequence (gathered) go through the remaining layers, with the truncation's mask; the output
///     is those rows, or every row with the dropped ones as they left layer `layersBefore` − 1
///     (`supervisesDroppedRows`).
///
/// Precision: the residual stream x, LayerNorm statistics, u and every gradient are fp32; the four
/// GEMMs per layer (and their backward) run on tensor cores with bf16 operands and fp32
/// accumulation against the bf16 weight copy; pre, n, g, q, k, v are stored in bf16, as under
/// PyTorch's autocast. Dropout masks come from the CPU model's counter streams.
final class CUDAEncoder {
  let config: ModelConfig
  let parameters: CUDAParameters
  let device: CUDADevice
  /// Largest number of tokens (and of sequences) a batch may have.
  let maxTokens: Int, maxSequences: Int

  struct Layer {
    var uvqk, outputWeight, outputBias: ParameterEntry
    var positionBias: ParameterEntry?
    // Saved activations.
    var mean1, rstd1, u, attention, mean2, rstd2: DeviceArray<Float>
    var normed, pre, gated, q, k, v: DeviceArray<BFloat16>
  }

  /// The rows one group of layers runs on: the whole batch, or the rows truncation keeps.
  struct Stage {
    var rows = 0, sequences = 0, longest = 0
    var offsets: DeviceArray<Int32>
    var mask: AttentionMask
  }

  let itemEmbedding, positionEmbedding: ParameterEntry
  let actionEmbeddings: [ParameterEntry]
  var layers: [Layer] = []
  /// hidden[l] is the output of layer l − 1 (hidden[0]: the embedded input), in the rows of its stage.
  var hidden: [DeviceArray<Float>] = []
  /// The kept rows of hidden[layersBefore], the input of the first truncated layer.
  let truncatedInput: DeviceArray<Float>
  /// Under truncation that supervises the dropped rows: the output, every row (kept rows from the
  /// last layer, dropped rows from hidden[layersBefore]), and the kept rows' share of its gradient.
  let composedOutput, dKept: DeviceArray<Float>
  /// Batch words (Int32), uploaded in one copy: items, positions, actions `[T × signals]`, offsets,
  /// then, under truncation, the kept rows' offsets and batch tokens.
  let batchWords: DeviceArray<Int32>
  var items: DeviceArray<Int32>, positions: DeviceArray<Int32>, actions: DeviceArray<Int32>, keptRows: DeviceArray<Int32>
  var full: Stage, kept: Stage
  /// The output rows per sequence, and the batch token of each, on the host.
  private(set) var outputOffsets: [Int] = [0], outputTokens: [Int32] = []
  // Backward scratch shared by the layers.
  /// d output `[rows, D]`: the loss (or the fusion) writes it, `backward` consumes it.
  let outputGradient: DeviceArray<Float>
  let dx, dGated, dU, dAttention, dq, dk, dv, dNormed, attentionPadded: DeviceArray<Float>
  let dAttentionBF16, dxBF16, dPre: DeviceArray<BFloat16>

  var width: Int { 2 * config.heads * (config.linearDim + config.attentionDim) }
  var valueWidth: Int { config.heads * config.linearDim }
  var paddedValue: Int { CUDADevice.paddedHeadDim(config.linearDim) }
  var paddedQuery: Int { CUDADevice.paddedHeadDim(config.attentionDim) }
  var layersBefore: Int { min(config.truncation?.layersBefore ?? config.layers, config.layers) }
  var truncates: Bool { layersBefore < config.layers }
  /// Truncation whose dropped rows are outputs too.
  var exitsEarly: Bool { truncates && config.truncation?.supervisesDroppedRows == true }

  /// Mirrors the stack of `model` (its entries live in `parameters`), sized for batches of at most
  /// `maxTokens` tokens in `maxSequences` sequences.
  init(_ model: SequentialModel, parameters: CUDAParameters, maxTokens: Int, maxSequences: Int) throws {
    let c = model.config
    guard c.kind == .hstu else { throw CUDAError.unsupported("the GPU path runs HSTU stacks only (got \(c.kind.rawValue))") }
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

    let t = maxTokens, d = c.embeddingDim, hv = c.heads * c.linearDim
    let w = 2 * c.heads * (c.linearDim + c.attentionDim)
    let vp = c.heads * CUDADevice.paddedHeadDim(c.linearDim), qp = c.heads * CUDADevice.paddedHeadDim(c.attentionDim)
    func floats(_ count: Int) throws -> DeviceArray<Float> { try device.allocate(Float.self, count: count) }
    func halves(_ count: Int) throws -> DeviceArray<BFloat16> { try device.allocate(BFloat16.self, count: count) }
    for layer in model.layers {
      guard let layer = layer as? HSTULayer else { throw CUDAError.unsupported("HSTU stack with a non-HSTU layer") }
      layers.append(Layer(
        uvqk: layer.uvqkWeight, outputWeight: layer.outputWeight, outputBias: layer.outputBias, positionBias: layer.positionBias,
        mean1: try floats(t), rstd1: try floats(t), u: try floats(t * hv),
        attention: try floats(t * hv), mean2: try floats(t), rstd2: try floats(t),
        normed: try halves(t * d), pre: try halves(t * w), gated: try halves(t * hv), q: try halves(t * qp), k: try halves(t * qp), v: try halves(t * vp)))
    }
    hidden = try (0...c.layers).map { _ in try floats(t * d) }
    let truncating = min(c.truncation?.layersBefore ?? c.layers, c.layers) < c.layers
    let early = truncating && c.truncation?.supervisesDroppedRows == true
    truncatedInput = try floats(truncating ? t * d : 1)
    composedOutput = try floats(early ? t * d : 1)
    let signals = actionEmbeddings.count
    batchWords = try device.allocate(Int32.self, count: (3 + signals) * t + 2 * (maxSequences + 1))
    items = batchWords; positions = batchWords; actions = batchWords; keptRows = batchWords
    full = Stage(offsets: batchWords, mask: c.mask)
    kept = Stage(offsets: batchWords, mask: c.truncation?.mask ?? c.mask)
    let padded = vp != hv   // head dims that are not multiples of 16 go through pad/unpad copies
    attentionPadded = try floats(padded ? t * vp : 1)
    let dOutput = try floats(t * d)
    outputGradient = dOutput
    dx = truncating ? try floats(t * d) : dOutput
    dKept = early ? try floats(t * d) : dOutput
    dGated = try floats(t * hv); dU = try floats(t * hv); dAttention = try floats(padded ? t * hv : 1)
    dq = try floats(t * qp); dk = try floats(t * qp); dv = try floats(t * vp); dNormed = try floats(t * d)
    dAttentionBF16 = try halves(t * vp); dxBF16 = try halves(t * d); dPre = try halves(t * w)
  }

  /// Uploads `batch` (one copy) and chooses the rows truncation keeps; it becomes the batch of the
  /// next `forward`.
  func setBatch(_ batch: SequenceBatch) throws {
    let t = batch.tokenCount, b = batch.batchSize, signals = actionEmbeddings.count
    guard t <= maxTokens, b <= maxSequences else {
      throw CUDAError.unsupported("batch of \(t) tokens / \(b) sequences exceeds the model's \(maxTokens) / \(maxSequences)")
    }
    guard batch.actions.count == t * signals else {
      throw CUDAError.unsupported("batch built without the \(signals) action signal(s) this model's input needs")
    }
    guard !config.timeBias || batch.keyTimes == nil else {
      throw CUDAError.unsupported("the GPU path has no time bias (rab^t); train on the CPU or without timeBias")
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
  }

  /// The batch's tokens per sequence (device), for the evaluator's history exclusion.
  var batchOffsets: DeviceArray<Int32> { full.offsets }
  /// The output stage: the kept rows under truncation (unless it supervises the dropped rows), else the whole batch.
  var outputStage: Stage { truncates && !exitsEarly ? kept : full }
  /// The encoder output of the last `forward`, `[rows, D]` (rows of `outputStage`).
  var output: DeviceArray<Float> {
    (exitsEarly ? composedOutput : hidden[config.layers]).prefix(outputStage.rows * config.embeddingDim)
  }

  func stage(ofLayer l: Int) -> Stage { l < layersBefore ? full : kept }
  func input(ofLayer l: Int) -> DeviceArray<Float> { truncates && l == layersBefore ? truncatedInput : hidden[l] }

  func attentionShape(_ s: Stage) -> HSTUAttentionShape {
    HSTUAttentionShape(batch: s.sequences, maxLength: s.longest, heads: config.heads, dqk: paddedQuery, dv: paddedValue,
                       normalizer: config.normalizer, mask: s.mask)
  }

  /// The mask of the dropout after the output gate of `layer`, nil when off.
  func linearDropout(training: Bool, seed: UInt64, step: UInt64, layer: Int) -> DropoutMask? {
    guard training && config.linearDropout > 0 else { return nil }
    return DropoutMask(rate: config.linearDropout, seed: seed, stream: ForwardContext.dropoutStream(step: step, layer: layer, site: 1))
  }

  /// Runs the stack over the current batch; the result is `output`.
  func forward(training: Bool, seed: UInt64, step: UInt64) throws {
    let t = full.rows, d = config.embeddingDim, hv = valueWidth, w = width, scale = Float(d).squareRoot()
    let values = parameters.values, valuesBF16 = parameters.valuesBF16
    let x0 = hidden[0].prefix(t * d)
    try device.embeddingGather(table: values.slice(itemEmbedding), ids: items, positionTable: values.slice(positionEmbedding),
                               positionIds: positions, out: x0, dim: d, scale: scale)
    for (s, table) in actionEmbeddings.enumerated() {
      try device.embeddingGather(table: values.slice(table), ids: actions.prefix(t * actionEmbeddings.count, from: s),
                                 idStride: actionEmbeddings.count, rows: t, out: x0, dim: d, scale: scale, accumulate: true)
    }
    if training && config.inputDropout > 0 {
      try device.dropout(x0, into: x0, rate: config.inputDropout, seed: seed,
                         stream: ForwardContext.dropoutStream(step: step, layer: 0xFFF, site: 0))
    }
    for (l, layer) in layers.enumerated() {
      if truncates && l == layersBefore {
        try device.embeddingGather(table: hidden[l], ids: keptRows, out: truncatedInput, dim: d)
      }
      let s = stage(ofLayer: l), rows = s.rows
      let x = input(ofLayer: l).prefix(rows * d)
      try device.layerNormForward(x: x, yBF16: layer.normed, mean: layer.mean1, rstd: layer.rstd1, rows: rows, dim: d, eps: 1e-6)
      try device.gemm(m: rows, n: w, k: d, a: layer.normed, b: valuesBF16.slice(layer.uvqk), d: layer.pre)
      try device.uvqkSplitSiLU(pre: layer.pre, u: layer.u, v: layer.v, q: layer.q, k: layer.k, tokens: rows, heads: config.heads,
                               dv: config.linearDim, dqk: config.attentionDim)
      let padded = paddedValue != config.linearDim
      try device.hstuAttentionForward(attentionShape(s), q: layer.q, k: layer.k, v: layer.v, offsets: s.offsets,
                                      pos: layer.positionBias.map { values.slice($0) },
                                      out: padded ? attentionPadded.prefix(rows * config.heads * paddedValue) : layer.attention.prefix(rows * hv))
      if padded {
        try device.unpadHeads(attentionPadded, into: layer.attention, tokens: rows, heads: config.heads, dim: config.linearDim)
      }
      try device.layerNormForward(x: layer.attention.prefix(rows * hv), gate: layer.u, yBF16: layer.gated,
                                  dropout: linearDropout(training: training, seed: seed, step: step, layer: l),
                                  mean: layer.mean2, rstd: layer.rstd2, rows: rows, dim: hv, eps: 1e-6)
      try device.gemm(m: rows, n: d, k: hv, a: layer.gated, b: valuesBF16.slice(layer.outputWeight), d: hidden[l + 1],
                      bias: values.slice(layer.outputBias), residual: x)
    }
    if exitsEarly {
      try device.copy(hidden[layersBefore].prefix(t * d), to: composedOutput)
      try device.scatterRows(hidden[config.layers], ids: keptRows, into: composedOutput, dim: d)
    }
  }

  /// Back-propagates `outputGradient` (consumed) through the last training forward into the gradients.
  /// `dx` (fp32) carries the residual stream's gradient; `dxBF16`, its bf16 copy, feeds the GEMMs.
  func backward(training: Bool, seed: UInt64, step: UInt64) throws {
    let d = config.embeddingDim, hv = valueWidth, w = width
    let valuesBF16 = parameters.valuesBF16, gradients = parameters.gradients
    var dResidual = outputGradient
    if exitsEarly {
      try device.embeddingGather(table: outputGradient, ids: keptRows, out: dKept, dim: d)
      dResidual = dKept
    }
    try device.castToBFloat16(dResidual.prefix(stage(ofLayer: config.layers - 1).rows * d), into: dxBF16)
    for (l, layer) in layers.enumerated().reversed() {
      let s = stage(ofLayer: l), rows = s.rows
      try device.gemm(m: rows, n: hv, k: d, a: dxBF16, b: valuesBF16.slice(layer.outputWeight), transB: true, d: dGated)
      try device.gemm(m: hv, n: d, k: rows, a: layer.gated.prefix(rows * hv), transA: true, b: dxBF16, d: gradients.slice(layer.outputWeight))
      try device.biasGradient(dResidual, into: gradients.slice(layer.outputBias), rows: rows, cols: d)
      let padded = paddedValue != config.linearDim
      try device.layerNormBackward(dy: dGated, x: layer.attention, gate: layer.u,
                                   dropout: linearDropout(training: training, seed: seed, step: step, layer: l),
                                   mean: layer.mean2, rstd: layer.rstd2, dx: padded ? dAttention : nil,
                                   dxBF16: padded ? nil : dAttentionBF16, dGate: dU, rows: rows, dim: hv)
      if padded {
        try device.padHeadsBFloat16(dAttention, into: dAttentionBF16, tokens: rows, heads: config.heads, dim: config.linearDim)
      }
      try device.hstuAttentionBackward(attentionShape(s), q: layer.q, k: layer.k, v: layer.v, dOut: dAttentionBF16, offsets: s.offsets,
                                       pos: layer.positionBias.map { parameters.values.slice($0) },
                                       dq: dq.prefix(rows * config.heads * paddedQuery), dk: dk, dv: dv,
                                       dPos: layer.positionBias.map { gradients.slice($0) })
      try device.uvqkMergeSiLUBackward(pre: layer.pre, du: dU, dv: dv, dq: dq, dk: dk, dPre: dPre, tokens: rows, heads: config.heads,
                                       dvDim: config.linearDim, dqkDim: config.attentionDim)
      try device.gemm(m: rows, n: d, k: w, a: dPre, b: valuesBF16.slice(layer.uvqk), transB: true, d: dNormed)
      try device.gemm(m: d, n: w, k: rows, a: layer.normed.prefix(rows * d), transA: true, b: dPre, d: gradients.slice(layer.uvqk))
      // dResidual += LN backward of the layer's input, and its bf16 copy for the next layer down.
      try device.layerNormBackward(dy: dNormed, x: input(ofLayer: l), mean: layer.mean1, rstd: layer.rstd1, dx: dResidual.prefix(rows * d),
                                   dxBF16: dxBF16, accumulate: true, rows: rows, dim: d)
      if truncates && l == layersBefore {
        // Back to the whole batch: the kept rows' gradients land on their tokens; the dropped rows
        // get their own output gradient when they are outputs, else none.
        if exitsEarly { try device.copy(outputGradient.prefix(full.rows * d), to: dx) } else { try device.fill(dx.prefix(full.rows * d)) }
        try device.scatterRows(dResidual, ids: keptRows, into: dx, dim: d)
        dResidual = dx
        try device.castToBFloat16(dx.prefix(full.rows * d), into: dxBF16)
      }
    }
    let t = full.rows, dx0 = dResidual.prefix(t * d), scale = Float(d).squareRoot()
    if training && config.inputDropout > 0 {
      try device.dropout(dx0, into: dx0, rate: config.inputDropout, seed: seed,
                         stream: ForwardContext.dropoutStream(step: step, layer: 0xFFF, site: 0))
    }
    try device.embeddingScatterAdd(dOut: dx0, ids: items, dTable: gradients.slice(itemEmbedding), dim: d, scale: scale)
    try device.embeddingScatterAdd(dOut: dx0, ids: positions, dTable: gradients.slice(positionEmbedding), dim: d)
    for (s, table) in actionEmbeddings.enumerated() {
      try device.embeddingScatterAdd(dOut: dx0, ids: actions.prefix(t * actionEmbeddings.count, from: s), idStride: actionEmbeddings.count,
                                     rows: t, dTable: gradients.slice(table), dim: d, scale: scale)
    }
  }
}
