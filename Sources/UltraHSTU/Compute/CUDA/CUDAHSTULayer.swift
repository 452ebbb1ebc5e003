/// One HSTU layer on the GPU (the CPU's `HSTULayer`):
///
///     n = LN(x) (bf16);  pre = n·W_uvqk;  u, v, q, k = SiLU(pre)   (v, q, k bf16, padded heads)
///     o = Σ_j SiLU(q_i·k_j + rab^p_{i−j} + rab^t_{bucket}) / N · v_j  (fused attention, any AttentionMask)
///     g = Dropout(u ⊙ LN(o)) (bf16, one kernel);  x' = x + g·W_o + b_o   (cuBLASLt, bias + residual fused)
/// u is never stored: the gated LayerNorm takes SiLU of pre's u columns, and its backward writes
/// dL/dpre_u into dPre (`SiLUGate`). With unpadded heads the attention backward writes dPre's v and
/// k columns itself (`AttentionKeyGradients.siluMerged`), so dk and dv never exist in fp32.
///
/// Precision: x, the LayerNorm statistics and the residual stream's gradient are fp32; the four
/// GEMMs (and their backward) run on tensor cores with bf16 operands and fp32 accumulation against
/// the bf16 weight copy; pre, n, o, g, q, k, v are stored in bf16, as under PyTorch's autocast
/// (o = the attention's P V product, fp32-accumulated), and so are the data-gradient GEMMs'
/// outputs (dGated, dNormed, dPre) that feed the LayerNorm backwards.
final class CUDAHSTULayer: CUDAEncoderLayer {
  /// Backward scratch shared by the HSTU layers of a stack (one backward runs at a time).
  final class Scratch {
    let dAttention, dq, dk, dv, attentionPadded: DeviceArray<Float>
    let dGated, dNormed, dAttentionBF16, dPre: DeviceArray<BFloat16>

    init(config c: ModelConfig, device: CUDADevice, maxTokens t: Int) throws {
      let d = c.embeddingDim, hv = c.heads * c.linearDim, w = 2 * c.heads * (c.linearDim + c.attentionDim)
      let vp = c.heads * CUDADevice.paddedHeadDim(c.linearDim), qp = c.heads * CUDADevice.paddedHeadDim(c.attentionDim)
      let padded = vp != hv   // head dims that are not multiples of 16 go through pad/unpad copies
      func floats(_ count: Int) throws -> DeviceArray<Float> { try device.allocate(Float.self, count: count) }
      attentionPadded = try floats(padded ? t * vp : 1)
      dAttention = try floats(padded ? t * hv : 1)
      // Unpadded heads: the attention backward merges dk and dv into dPre (`AttentionKeyGradients`).
      let merged = CUDAHSTULayer.mergesKeyGradients(c)
      dq = try floats(t * qp); dk = try floats(merged ? 1 : t * qp); dv = try floats(merged ? 1 : t * vp)
      dGated = try device.allocate(BFloat16.self, count: t * hv); dNormed = try device.allocate(BFloat16.self, count: t * d)
      dAttentionBF16 = try device.allocate(BFloat16.self, count: t * vp)
      dPre = try device.allocate(BFloat16.self, count: t * w)
    }
  }

  let config: ModelConfig
  let index: Int
  let parameters: CUDAParameters
  let scratch: Scratch
  let uvqk, outputWeight, outputBias: ParameterEntry
  let positionBias, timeBias: ParameterEntry?
  // Saved activations.
  let mean1, rstd1, mean2, rstd2: DeviceArray<Float>
  let normed, pre, attention, gated, q, k, v: DeviceArray<BFloat16>

  var device: CUDADevice { parameters.device }
  var valueWidth: Int { config.heads * config.linearDim }
  var width: Int { 2 * config.heads * (config.linearDim + config.attentionDim) }
  var paddedValue: Int { CUDADevice.paddedHeadDim(config.linearDim) }
  var paddedQuery: Int { CUDADevice.paddedHeadDim(config.attentionDim) }
  var padded: Bool { paddedValue != config.linearDim }
  /// Neither head dim padded: dPre's layout is the attention's, so its backward can merge dk and dv.
  static func mergesKeyGradients(_ c: ModelConfig) -> Bool {
    CUDADevice.paddedHeadDim(c.linearDim) == c.linearDim && CUDADevice.paddedHeadDim(c.attentionDim) == c.attentionDim
  }

  init(_ layer: HSTULayer, parameters: CUDAParameters, scratch: Scratch, maxTokens t: Int) throws {
    let c = layer.config, device = parameters.device
    config = c
    index = layer.index
    self.parameters = parameters
    self.scratch = scratch
    uvqk = layer.uvqkWeight; outputWeight = layer.outputWeight; outputBias = layer.outputBias
    positionBias = layer.positionBias; timeBias = layer.timeBias
    let d = c.embeddingDim, hv = c.heads * c.linearDim, w = 2 * c.heads * (c.linearDim + c.attentionDim)
    let vp = c.heads * CUDADevice.paddedHeadDim(c.linearDim), qp = c.heads * CUDADevice.paddedHeadDim(c.attentionDim)
    func floats(_ count: Int) throws -> DeviceArray<Float> { try device.allocate(Float.self, count: count) }
    func halves(_ count: Int) throws -> DeviceArray<BFloat16> { try device.allocate(BFloat16.self, count: count) }
    mean1 = try floats(t); rstd1 = try floats(t)
    mean2 = try floats(t); rstd2 = try floats(t)
    normed = try halves(t * d); pre = try halves(t * w); attention = try halves(t * hv); gated = try halves(t * hv)
    q = try halves(t * qp); k = try halves(t * qp); v = try halves(t * vp)
  }

  func attentionShape(_ s: CUDAEncoder.Stage) -> AttentionShape {
    AttentionShape(batch: s.sequences, maxLength: s.longest, heads: config.heads, dqk: paddedQuery, dv: paddedValue,
                   normalizer: config.normalizer, mask: s.mask)
  }

  /// rab^t of this layer over the stage's tokens, when the layer has one and the batch has times.
  func timeBias(_ s: CUDAEncoder.Stage) -> AttentionTimeBias? {
    guard let timeBias, let times = s.times else { return nil }
    return AttentionTimeBias(keyTimes: times.keys, queryTimes: times.queries, table: parameters.values.slice(timeBias),
                             thresholds: times.thresholds)
  }

  func forward(_ x: DeviceArray<Float>, into out: DeviceArray<Float>, stage s: CUDAEncoder.Stage, pass: CUDAPass) throws {
    let rows = s.rows, d = config.embeddingDim, hv = valueWidth
    let values = parameters.values, valuesBF16 = parameters.valuesBF16
    try device.layerNormForward(x: x, yBF16: normed, mean: mean1, rstd: rstd1, rows: rows, dim: d, eps: 1e-6)
    try device.gemm(m: rows, n: width, k: d, a: normed, b: valuesBF16.slice(uvqk), d: pre)
    try device.uvqkSplitSiLU(pre: pre, v: v, q: q, k: k, tokens: rows, heads: config.heads,
                             dv: config.linearDim, dqk: config.attentionDim)
    let pos = positionBias.map { values.slice($0) }
    if padded {   // fp32 with padded heads, then the heads unpadded into bf16 o
      try device.hstuAttentionForward(attentionShape(s), q: q, k: k, v: v, offsets: s.offsets, pos: pos, time: timeBias(s),
                                      out: scratch.attentionPadded.prefix(rows * config.heads * paddedValue), bounds: s.bounds)
      try device.unpadHeads(scratch.attentionPadded, intoBF16: attention, tokens: rows, heads: config.heads, dim: config.linearDim)
    } else {
      try device.hstuAttentionForward(attentionShape(s), q: q, k: k, v: v, offsets: s.offsets, pos: pos, time: timeBias(s),
                                      out: attention.prefix(rows * hv), bounds: s.bounds)
    }
    try device.layerNormForward(x: attention.prefix(rows * hv), gate: SiLUGate(pre: pre, stride: width), yBF16: gated,
                                dropout: pass.dropout(rate: config.linearDropout, layer: index, site: 1),
                                mean: mean2, rstd: rstd2, rows: rows, dim: hv, eps: 1e-6)
    try device.gemm(m: rows, n: d, k: hv, a: gated, b: valuesBF16.slice(outputWeight), d: out,
                    bias: values.slice(outputBias), residual: x)
  }

  func backward(_ gradient: DeviceArray<Float>, gradientBF16: DeviceArray<BFloat16>, input x: DeviceArray<Float>,
                stage s: CUDAEncoder.Stage, pass: CUDAPass) throws {
    let rows = s.rows, d = config.embeddingDim, hv = valueWidth, w = width
    let valuesBF16 = parameters.valuesBF16, gradients = parameters.gradients, sc = scratch
    try device.gemm(m: rows, n: hv, k: d, a: gradientBF16, b: valuesBF16.slice(outputWeight), transB: true, d: sc.dGated)
    try device.gemm(m: hv, n: d, k: rows, a: gated.prefix(rows * hv), transA: true, b: gradientBF16, d: gradients.slice(outputWeight))
    try device.biasGradient(gradientBF16, into: gradients.slice(outputBias), rows: rows, cols: d)
    try device.layerNormBackward(dy: sc.dGated, x: attention, gate: SiLUGate(pre: pre, stride: w, dPre: sc.dPre),
                                 dropout: pass.dropout(rate: config.linearDropout, layer: index, site: 1),
                                 mean: mean2, rstd: rstd2, dx: padded ? sc.dAttention : nil,
                                 dxBF16: padded ? nil : sc.dAttentionBF16, rows: rows, dim: hv)
    if padded {
      try device.padHeadsBFloat16(sc.dAttention, into: sc.dAttentionBF16, tokens: rows, heads: config.heads, dim: config.linearDim)
    }
    let time = timeBias(s)
    let keys: AttentionKeyGradients = Self.mergesKeyGradients(config) ? .siluMerged(pre: pre, dPre: sc.dPre) : .separate(dk: sc.dk, dv: sc.dv)
    try device.hstuAttentionBackward(attentionShape(s), q: q, k: k, v: v, dOut: sc.dAttentionBF16, offsets: s.offsets,
                                     pos: positionBias.map { parameters.values.slice($0) }, time: time,
                                     dq: sc.dq.prefix(rows * config.heads * paddedQuery), keys: keys,
                                     dPos: positionBias.map { gradients.slice($0) },
                                     dTime: time == nil ? nil : timeBias.map { gradients.slice($0) }, bounds: s.bounds)
    try device.uvqkMergeSiLUBackward(pre: pre, dq: sc.dq, keys: keys, dPre: sc.dPre, tokens: rows, heads: config.heads,
                                     dvDim: config.linearDim, dqkDim: config.attentionDim)
    try device.gemm(m: rows, n: d, k: w, a: sc.dPre, b: valuesBF16.slice(uvqk), transB: true, d: sc.dNormed)
    try device.gemm(m: d, n: w, k: rows, a: normed.prefix(rows * d), transA: true, b: sc.dPre, d: gradients.slice(uvqk))
    // d x = d out + LN backward of the input, and its bf16 copy for the next layer down.
    try device.layerNormBackward(dy: sc.dNormed, x: x, mean: mean1, rstd: rstd1, dx: gradient,
                                 dxBF16: gradientBF16, accumulate: true, rows: rows, dim: d)
  }
}
