/// The HSTU `SequentialModel` on one GPU: the same parameters (names, shapes, layout of the
/// `ParameterStore`) as fp32 master weights in device memory, with their gradients and AdamW
/// moments, and every activation a training step or an evaluation pass needs, all carved from the
/// device arena once at init (a step allocates nothing).
///
/// A training step, written out in `forward`, `lossForwardBackward` and `backward`:
///
///     x_0 = Dropout(E[item]·√D + P[pos])
///     per layer: n = LN(x) (bf16);  pre = n·W_uvqk;  u, v, q, k = SiLU(pre)   (v, q, k bf16, padded heads)
///                o = Σ_j SiLU(q_i·k_j + rab^p_{i−j}) / N · v_j                 (fused attention, any AttentionMask)
///                g = Dropout(u ⊙ LN(o)) (bf16, one kernel);  x' = x + g·W_o + b_o   (cuBLASLt, bias + residual fused)
///     loss = sampled softmax over L2-normalised outputs and items (fused kernel), uniform negatives
///
/// Precision: the residual stream x, LayerNorm statistics, u, the loss and every gradient and
/// AdamW state are fp32; the model's four GEMMs per layer (and their backward) run on tensor
/// cores with bf16 operands and fp32 accumulation: bf16 activations (n, g, dx, dPre) times the
/// bf16 copy of the weights (`valuesBF16`), which AdamW rewrites in the same pass as the fp32
/// master weights. pre (the widest activation, [T, 2·H·(dv + dqk)]) is stored in bf16, as under
/// PyTorch's autocast; the attention reads bf16 q, k, v, dO.
///
/// Dropout masks and negatives come from the same counter-based streams as the CPU model, so a
/// step on the same batch and weights gives the CPU's loss and gradients up to those bf16
/// roundings (checked by `hstu gpu-check`).
public final class CUDAModel {
  public let config: ModelConfig
  public let itemCount: Int
  public let device: CUDADevice
  /// The parameter layout, identical to the CPU model's `ParameterStore.entries`.
  public let entries: [ParameterEntry]
  /// Largest number of tokens (and of sequences) a batch may have.
  public let maxTokens: Int, maxSequences: Int
  /// All parameters, gradients and AdamW moments, flat in the `entries` layout.
  public let values: DeviceArray<Float>, gradients: DeviceArray<Float>, firstMoment: DeviceArray<Float>, secondMoment: DeviceArray<Float>
  /// `values` rounded to bf16 (same layout), the weight operand of the tensor-core GEMMs.
  public let valuesBF16: DeviceArray<BFloat16>
  /// AdamW steps taken.
  public var step = 0
  /// The attention mask of every layer (the CPU model's is causal; benchmarks set semi-local ones).
  public var mask = AttentionMask.causal

  struct Layer {
    var uvqk, outputWeight, outputBias: ParameterEntry
    var positionBias: ParameterEntry?
    // Saved activations.
    var mean1, rstd1, u, attention, mean2, rstd2: DeviceArray<Float>
    var normed, pre, gated, q, k, v: DeviceArray<BFloat16>
  }

  let itemEmbedding, positionEmbedding: ParameterEntry
  var layers: [Layer] = []
  /// hidden[l] is the input of layer l; hidden[layers] the encoder output.
  var hidden: [DeviceArray<Float>] = []
  // Batch (Int32): items, positions, labels, offsets, all uploaded in one copy.
  let batchWords: DeviceArray<Int32>
  var items: DeviceArray<Int32>, positions: DeviceArray<Int32>, labels: DeviceArray<Int32>, offsets: DeviceArray<Int32>
  var tokens = 0, sequences = 0, longest = 0
  // Loss.
  /// Most negatives per row the loss buffers hold.
  public static let maxNegatives = 128
  /// The sampled negatives of the last step, `[T, R]` row-major (capacity for R ≤ `maxNegatives`).
  public let negatives: DeviceArray<Int32>
  let ones: DeviceArray<Float>, rowLoss: DeviceArray<Float>
  /// Sum of the per-step mean losses since the last `takeLossSum()`.
  let lossSum: DeviceArray<Float>
  // Backward scratch shared by the layers.
  let attentionPadded, dx, dGated, dU, dAttention, dq, dk, dv, dNormed: DeviceArray<Float>
  let dAttentionBF16, dxBF16, dPre: DeviceArray<BFloat16>

  var width: Int { 2 * config.heads * (config.linearDim + config.attentionDim) }
  var valueWidth: Int { config.heads * config.linearDim }
  var paddedValue: Int { CUDADevice.paddedHeadDim(config.linearDim) }
  var paddedQuery: Int { CUDADevice.paddedHeadDim(config.attentionDim) }

  /// Mirrors `model` on `device`: uploads its current weights, AdamW moments and step.
  /// `maxTokens` / `maxSequences` bound every batch later passed in.
  public init(_ model: SequentialModel, device: CUDADevice, maxTokens: Int, maxSequences: Int) throws {
    let c = model.config
    guard c.kind == .hstu else { throw CUDAError.unsupported("CUDAModel runs HSTU only (got \(c.kind.rawValue))") }
    guard !c.timeBias else { throw CUDAError.unsupported("CUDAModel has no time bias (rab^t) yet") }
    config = c
    itemCount = model.itemCount
    self.device = device
    self.maxTokens = maxTokens
    self.maxSequences = maxSequences
    let store = model.parameters
    entries = store.entries
    func entry(_ name: String) throws -> ParameterEntry {
      guard let e = store.entry(name) else { throw CUDAError.unsupported("parameter \(name) missing from the model") }
      return e
    }
    itemEmbedding = try entry("item_embedding")
    positionEmbedding = try entry("position_embedding")
    let n = store.count
    values = try device.allocate(Float.self, count: n)
    gradients = try device.allocate(Float.self, count: n)
    firstMoment = try device.allocate(Float.self, count: n)
    secondMoment = try device.allocate(Float.self, count: n)
    valuesBF16 = try device.allocate(BFloat16.self, count: n)

    let t = maxTokens, d = c.embeddingDim, hv = c.heads * c.linearDim
    let w = 2 * c.heads * (c.linearDim + c.attentionDim)
    let vp = c.heads * CUDADevice.paddedHeadDim(c.linearDim), qp = c.heads * CUDADevice.paddedHeadDim(c.attentionDim)
    func floats(_ count: Int) throws -> DeviceArray<Float> { try device.allocate(Float.self, count: count) }
    func halves(_ count: Int) throws -> DeviceArray<BFloat16> { try device.allocate(BFloat16.self, count: count) }
    for l in 0..<c.layers {
      layers.append(Layer(
        uvqk: try entry("layers.\(l).uvqk.weight"), outputWeight: try entry("layers.\(l).output.weight"),
        outputBias: try entry("layers.\(l).output.bias"),
        positionBias: c.positionBias ? try entry("layers.\(l).rab.position") : nil,
        mean1: try floats(t), rstd1: try floats(t), u: try floats(t * hv),
        attention: try floats(t * hv), mean2: try floats(t), rstd2: try floats(t),
        normed: try halves(t * d), pre: try halves(t * w), gated: try halves(t * hv), q: try halves(t * qp), k: try halves(t * qp), v: try halves(t * vp)))
    }
    hidden = try (0...c.layers).map { _ in try floats(t * d) }
    batchWords = try device.allocate(Int32.self, count: 3 * t + maxSequences + 1)
    items = batchWords; positions = batchWords; labels = batchWords; offsets = batchWords
    negatives = try device.allocate(Int32.self, count: t * Self.maxNegatives)
    ones = try device.array([Float](repeating: 1, count: t))
    rowLoss = try floats(t)
    lossSum = try floats(1)
    let padded = vp != hv   // head dims that are not multiples of 16 go through pad/unpad copies
    attentionPadded = try floats(padded ? t * vp : 1)
    dx = try floats(t * d); dGated = try floats(t * hv); dU = try floats(t * hv); dAttention = try floats(padded ? t * hv : 1)
    dq = try floats(t * qp); dk = try floats(t * qp); dv = try floats(t * vp); dNormed = try floats(t * d)
    dAttentionBF16 = try halves(t * vp); dxBF16 = try halves(t * d); dPre = try halves(t * w)
    try device.fill(lossSum)
    try load(from: store)
  }

  /// Copies the weights, AdamW moments and step of `store` (same layout) to the device and
  /// rounds the weights into `valuesBF16`.
  public func load(from store: ParameterStore) throws {
    for (host, array) in [(store.values, values), (store.firstMoment, firstMoment), (store.secondMoment, secondMoment)] {
      try device.upload(Array(UnsafeBufferPointer(start: host.pointer, count: array.count)), to: array)
    }
    try device.castToBFloat16(values, into: valuesBF16)
    step = store.step
  }

  /// Copies the device weights, AdamW moments and step back into `store` (for checkpoints and CPU evaluation).
  public func save(to store: ParameterStore) throws {
    for (host, array) in [(store.values, values), (store.firstMoment, firstMoment), (store.secondMoment, secondMoment)] {
      let v = try device.download(array)
      v.withUnsafeBufferPointer { host.pointer.update(from: $0.baseAddress!, count: v.count) }
    }
    store.step = step
  }

  func slice<T>(_ a: DeviceArray<T>, _ e: ParameterEntry) -> DeviceArray<T> {
    DeviceArray(address: a.address + CUdeviceptr(e.offset * MemoryLayout<T>.stride), count: e.count)
  }
  func prefix<T>(_ a: DeviceArray<T>, _ count: Int, from start: Int = 0) -> DeviceArray<T> {
    DeviceArray(address: a.address + CUdeviceptr(start * MemoryLayout<T>.stride), count: count)
  }

  /// Uploads `batch` (one copy); it becomes the batch of the next `forward`.
  public func setBatch(_ batch: SequenceBatch) throws {
    let t = batch.tokenCount, b = batch.batchSize
    guard t <= maxTokens, b <= maxSequences else {
      throw CUDAError.unsupported("batch of \(t) tokens / \(b) sequences exceeds the model's \(maxTokens) / \(maxSequences)")
    }
    var words = batch.items
    words.reserveCapacity(3 * t + b + 1)
    words += batch.positions
    words += batch.nextItems.count == t ? batch.nextItems : [Int32](repeating: 0, count: t)
    words += batch.offsets.map { Int32($0) }
    try device.upload(words, to: batchWords)
    items = prefix(batchWords, t); positions = prefix(batchWords, t, from: t); labels = prefix(batchWords, t, from: 2 * t)
    offsets = prefix(batchWords, b + 1, from: 3 * t)
    tokens = t; sequences = b; longest = batch.maxLength
  }


  var attentionShape: HSTUAttentionShape {
    HSTUAttentionShape(batch: sequences, maxLength: longest, heads: config.heads, dqk: paddedQuery, dv: paddedValue,
                       normalizer: config.normalizer, mask: mask)
  }

  /// Runs the encoder over the current batch; the output `[T, D]` is `output`.
  public func forward(training: Bool, seed: UInt64, step: UInt64) throws {
    let t = tokens, d = config.embeddingDim, hv = valueWidth, w = width
    try device.embeddingGather(table: slice(values, itemEmbedding), ids: items, positionTable: slice(values, positionEmbedding),
                               positionIds: positions, out: prefix(hidden[0], t * d), dim: d, scale: Float(d).squareRoot())
    if training && config.inputDropout > 0 {
      try device.dropout(prefix(hidden[0], t * d), into: prefix(hidden[0], t * d), rate: config.inputDropout, seed: seed,
                         stream: ForwardContext.dropoutStream(step: step, layer: 0xFFF, site: 0))
    }
    for (l, layer) in layers.enumerated() {
      let x = prefix(hidden[l], t * d)
      try device.layerNormForward(x: x, yBF16: layer.normed, mean: layer.mean1, rstd: layer.rstd1, rows: t, dim: d, eps: 1e-6)
      try device.gemm(m: t, n: w, k: d, a: layer.normed, b: slice(valuesBF16, layer.uvqk), d: layer.pre)
      try device.uvqkSplitSiLU(pre: layer.pre, u: layer.u, v: layer.v, q: layer.q, k: layer.k, tokens: t, heads: config.heads,
                               dv: config.linearDim, dqk: config.attentionDim)
      let padded = paddedValue != config.linearDim
      try device.hstuAttentionForward(attentionShape, q: layer.q, k: layer.k, v: layer.v, offsets: offsets,
                                      pos: layer.positionBias.map { slice(values, $0) },
                                      out: padded ? prefix(attentionPadded, t * config.heads * paddedValue) : prefix(layer.attention, t * hv))
      if padded {
        try device.unpadHeads(attentionPadded, into: layer.attention, tokens: t, heads: config.heads, dim: config.linearDim)
      }
      try device.layerNormForward(x: prefix(layer.attention, t * hv), gate: layer.u, yBF16: layer.gated,
                                  dropout: linearDropout(training: training, seed: seed, step: step, layer: l),
                                  mean: layer.mean2, rstd: layer.rstd2, rows: t, dim: hv, eps: 1e-6)
      try device.gemm(m: t, n: d, k: hv, a: layer.gated, b: slice(valuesBF16, layer.outputWeight), d: hidden[l + 1],
                      bias: slice(values, layer.outputBias), residual: x)
    }
  }

  /// The mask of the dropout after the output gate of `layer`, nil when off.
  func linearDropout(training: Bool, seed: UInt64, step: UInt64, layer: Int) -> DropoutMask? {
    guard training && config.linearDropout > 0 else { return nil }
    return DropoutMask(rate: config.linearDropout, seed: seed, stream: ForwardContext.dropoutStream(step: step, layer: layer, site: 1))
  }

  /// The encoder output of the last `forward`, `[T, D]`.
  public var output: DeviceArray<Float> { prefix(hidden[config.layers], tokens * config.embeddingDim) }

  /// Sampled-softmax loss of the last training forward with the negatives of `step` (the CPU's
  /// stream `step | 2⁶²`): adds the mean loss to the device loss sum, writes d output into `dx`
  /// and accumulates the item-table gradient.
  func lossForwardBackward(train: TrainConfig, seed: UInt64, step: UInt64) throws {
    let t = tokens, r = train.negatives
    guard r <= 128 else { throw CUDAError.unsupported("at most 128 negatives (got \(r))") }
    let negs = prefix(negatives, t * r)
    try device.sampleNegatives(negs, itemCount: itemCount, seed: seed, stream: ForwardContext.negativeStream(step: step))
    try device.sampledSoftmaxLoss(user: output, table: slice(values, itemEmbedding), positives: labels, negatives: negs,
                                  weights: prefix(ones, t), weightSum: Float(t), loss: prefix(rowLoss, t), dUser: dx,
                                  dTable: slice(gradients, itemEmbedding), rows: t, dim: config.embeddingDim, numNegatives: r,
                                  temperature: train.temperature)
    try device.accumulateSum(prefix(rowLoss, t), scale: 1 / Float(t), into: lossSum)
  }

  /// Back-propagates `dx` (d output) through the last training forward into `gradients`.
  /// `dx` (fp32) carries the residual stream's gradient; `dxBF16`, its bf16 copy, feeds the GEMMs.
  func backward(training: Bool, seed: UInt64, step: UInt64) throws {
    let t = tokens, d = config.embeddingDim, hv = valueWidth, w = width
    try device.castToBFloat16(prefix(dx, t * d), into: dxBF16)
    for (l, layer) in layers.enumerated().reversed() {
      try device.gemm(m: t, n: hv, k: d, a: dxBF16, b: slice(valuesBF16, layer.outputWeight), transB: true, d: dGated)
      try device.gemm(m: hv, n: d, k: t, a: prefix(layer.gated, t * hv), transA: true, b: dxBF16, d: slice(gradients, layer.outputWeight))
      try device.biasGradient(dx, into: slice(gradients, layer.outputBias), rows: t, cols: d)
      let padded = paddedValue != config.linearDim
      try device.layerNormBackward(dy: dGated, x: layer.attention, gate: layer.u,
                                   dropout: linearDropout(training: training, seed: seed, step: step, layer: l),
                                   mean: layer.mean2, rstd: layer.rstd2, dx: padded ? dAttention : nil,
                                   dxBF16: padded ? nil : dAttentionBF16, dGate: dU, rows: t, dim: hv)
      if padded {
        try device.padHeadsBFloat16(dAttention, into: dAttentionBF16, tokens: t, heads: config.heads, dim: config.linearDim)
      }
      try device.hstuAttentionBackward(attentionShape, q: layer.q, k: layer.k, v: layer.v, dOut: dAttentionBF16, offsets: offsets,
                                       pos: layer.positionBias.map { slice(values, $0) },
                                       dq: prefix(dq, t * config.heads * paddedQuery), dk: dk, dv: dv,
                                       dPos: layer.positionBias.map { slice(gradients, $0) })
      try device.uvqkMergeSiLUBackward(pre: layer.pre, du: dU, dv: dv, dq: dq, dk: dk, dPre: dPre, tokens: t, heads: config.heads,
                                       dvDim: config.linearDim, dqkDim: config.attentionDim)
      try device.gemm(m: t, n: d, k: w, a: dPre, b: slice(valuesBF16, layer.uvqk), transB: true, d: dNormed)
      try device.gemm(m: d, n: w, k: t, a: prefix(layer.normed, t * d), transA: true, b: dPre, d: slice(gradients, layer.uvqk))
      // dx += LN backward of the layer's input (the residual), and its bf16 copy for the next layer down.
      try device.layerNormBackward(dy: dNormed, x: hidden[l], mean: layer.mean1, rstd: layer.rstd1, dx: prefix(dx, t * d),
                                   dxBF16: dxBF16, accumulate: true, rows: t, dim: d)
    }
    if training && config.inputDropout > 0 {
      try device.dropout(prefix(dx, t * d), into: prefix(dx, t * d), rate: config.inputDropout, seed: seed,
                         stream: ForwardContext.dropoutStream(step: step, layer: 0xFFF, site: 0))
    }
    try device.embeddingScatterAdd(dOut: dx, ids: items, dTable: slice(gradients, itemEmbedding), dim: d, scale: Float(d).squareRoot())
    try device.embeddingScatterAdd(dOut: dx, ids: positions, dTable: slice(gradients, positionEmbedding), dim: d)
  }

  /// Zeroes the gradients, then forward, loss and backward of the current batch with the dropout
  /// masks and negatives of `step` (as `Trainer.lossAndGradients`). Queues work only; the loss
  /// lands in the device loss sum.
  public func lossAndGradients(train: TrainConfig, step: UInt64) throws {
    try device.fill(gradients)
    try forward(training: true, seed: train.seed, step: step)
    try lossForwardBackward(train: train, seed: train.seed, step: step)
    try backward(training: true, seed: train.seed, step: step)
  }

  /// One AdamW step over every parameter with the current gradients.
  public func adamWStep(_ train: TrainConfig) throws {
    step += 1
    try device.adamW(parameters: values, gradients: gradients, m: firstMoment, v: secondMoment, shadow: valuesBF16, lr: train.learningRate,
                     beta1: train.beta1, beta2: train.beta2, eps: train.epsilon, weightDecay: train.weightDecay, step: step)
  }

  /// Returns the loss sum accumulated since the last call and resets it (synchronises).
  public func takeLossSum() throws -> Float {
    let value = try device.download(lossSum)[0]
    try device.fill(lossSum)
    return value
  }
}
