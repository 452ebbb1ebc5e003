/// One SASRec block on the GPU (the CPU's `SASRecLayer`):
///
///     n₁ = LN₁(x)                                   (fp32 for the residual, bf16 for the GEMM)
///     q = n₁·W_q + b_q;  [k | v] = x·W_kv + b_kv     (cuBLASLt, bias fused; padded into bf16 heads)
///     a = softmax attention(q, k, v)                (fused online-softmax kernel, saves lse)
///     x₂ = n₁ + a·W_o + b_o                         (bias + residual fused)
///     n₂ = LN₂(x₂);  h = ReLU(n₂·W₁ + b₁);  z = Dropout(h)   (bf16)
///     x' = n₂ + Dropout(z·W₂ + b₂)
///
/// Precision as in the HSTU layer: GEMM operands and q, k, v, a, z in bf16, fp32 accumulation;
/// the residual stream, LayerNorm statistics and every gradient in fp32.
final class CUDASASRecLayer: CUDAEncoderLayer {
  /// Scratch shared by the SASRec layers of a stack (one forward or backward runs at a time).
  final class Scratch {
    /// `[T, D]`, `[T, 2D]` and `[T, F]` fp32 rows: GEMM outputs on their way into another layout.
    let rowsD, rowsD2, rowsF, dN2, dX2, dN1: DeviceArray<Float>
    let dq, dk, dv: DeviceArray<Float>
    let rowsDBF16, dX2BF16, dKVBF16, dHiddenBF16, dAttentionPadded: DeviceArray<BFloat16>

    init(config c: ModelConfig, device: CUDADevice, maxTokens t: Int) throws {
      let d = c.embeddingDim, f = c.ffnDim, hp = c.heads * CUDADevice.paddedHeadDim(d / c.heads)
      func floats(_ count: Int) throws -> DeviceArray<Float> { try device.allocate(Float.self, count: count) }
      func halves(_ count: Int) throws -> DeviceArray<BFloat16> { try device.allocate(BFloat16.self, count: count) }
      rowsD = try floats(t * d); rowsD2 = try floats(t * 2 * d); rowsF = try floats(t * f)
      dN2 = try floats(t * d); dX2 = try floats(t * d); dN1 = try floats(t * d)
      dq = try floats(t * hp); dk = try floats(t * hp); dv = try floats(t * hp)
      rowsDBF16 = try halves(t * d); dX2BF16 = try halves(t * d); dKVBF16 = try halves(t * 2 * d)
      dHiddenBF16 = try halves(t * f); dAttentionPadded = try halves(t * hp)
    }
  }

  let config: ModelConfig
  let index: Int
  let parameters: CUDAParameters
  let scratch: Scratch
  let ln1Gamma, ln1Beta, qWeight, qBias, kvWeight, kvBias, oWeight, oBias: ParameterEntry
  let ln2Gamma, ln2Beta, ffn1Weight, ffn1Bias, ffn2Weight, ffn2Bias: ParameterEntry
  // Saved activations.
  let mean1, rstd1, n1, attention, logSumExp, x2, mean2, rstd2, n2, hidden: DeviceArray<Float>
  let xBF16, n1BF16, q, k, v, attentionBF16, n2BF16, hiddenDropped: DeviceArray<BFloat16>

  var device: CUDADevice { parameters.device }
  var headDim: Int { config.embeddingDim / config.heads }
  var paddedHead: Int { CUDADevice.paddedHeadDim(headDim) }

  init(_ layer: SASRecLayer, parameters: CUDAParameters, scratch: Scratch, maxTokens t: Int) throws {
    let c = layer.config, device = parameters.device
    guard c.embeddingDim % c.heads == 0 else {
      throw CUDAError.unsupported("SASRec with D = \(c.embeddingDim) not divisible by \(c.heads) heads")
    }
    config = c
    index = layer.index
    self.parameters = parameters
    self.scratch = scratch
    ln1Gamma = layer.ln1Gamma; ln1Beta = layer.ln1Beta; qWeight = layer.qWeight; qBias = layer.qBias
    kvWeight = layer.kvWeight; kvBias = layer.kvBias; oWeight = layer.oWeight; oBias = layer.oBias
    ln2Gamma = layer.ln2Gamma; ln2Beta = layer.ln2Beta; ffn1Weight = layer.ffn1Weight; ffn1Bias = layer.ffn1Bias
    ffn2Weight = layer.ffn2Weight; ffn2Bias = layer.ffn2Bias
    let d = c.embeddingDim, f = c.ffnDim, hp = c.heads * CUDADevice.paddedHeadDim(d / c.heads)
    func floats(_ count: Int) throws -> DeviceArray<Float> { try device.allocate(Float.self, count: count) }
    func halves(_ count: Int) throws -> DeviceArray<BFloat16> { try device.allocate(BFloat16.self, count: count) }
    mean1 = try floats(t); rstd1 = try floats(t); n1 = try floats(t * d); attention = try floats(t * hp)
    logSumExp = try floats(t * c.heads); x2 = try floats(t * d); mean2 = try floats(t); rstd2 = try floats(t)
    n2 = try floats(t * d); hidden = try floats(t * f)
    xBF16 = try halves(t * d); n1BF16 = try halves(t * d); q = try halves(t * hp); k = try halves(t * hp); v = try halves(t * hp)
    attentionBF16 = try halves(t * d); n2BF16 = try halves(t * d); hiddenDropped = try halves(t * f)
  }

  func attentionShape(_ s: CUDAEncoder.Stage) -> AttentionShape {
    AttentionShape(batch: s.sequences, maxLength: s.longest, heads: config.heads, dqk: paddedHead, dv: paddedHead,
                   normalizer: config.normalizer, mask: s.mask)
  }
  var scoreScale: Float { 1 / Float(headDim).squareRoot() }

  func forward(_ x: DeviceArray<Float>, into out: DeviceArray<Float>, stage s: CUDAEncoder.Stage, pass: CUDAPass) throws {
    let rows = s.rows, d = config.embeddingDim, f = config.ffnDim, heads = config.heads
    let values = parameters.values, weights = parameters.valuesBF16, sc = scratch
    try device.castToBFloat16(x.prefix(rows * d), into: xBF16)
    try device.layerNormForward(x: x, gamma: values.slice(ln1Gamma), beta: values.slice(ln1Beta), y: n1, yBF16: n1BF16,
                                mean: mean1, rstd: rstd1, rows: rows, dim: d, eps: 1e-6)
    try device.gemm(m: rows, n: d, k: d, a: n1BF16, b: weights.slice(qWeight), d: sc.rowsD, bias: values.slice(qBias))
    try device.padHeadsBFloat16(sc.rowsD, into: q, tokens: rows, heads: heads, dim: headDim)
    try device.gemm(m: rows, n: 2 * d, k: d, a: xBF16, b: weights.slice(kvWeight), d: sc.rowsD2, bias: values.slice(kvBias))
    try device.padHeadsBFloat16(sc.rowsD2, into: k, tokens: rows, heads: heads, dim: headDim, stride: 2 * d, offset: 0)
    try device.padHeadsBFloat16(sc.rowsD2, into: v, tokens: rows, heads: heads, dim: headDim, stride: 2 * d, offset: d)
    try device.softmaxAttentionForward(attentionShape(s), q: q, k: k, v: v, offsets: s.offsets, scale: scoreScale,
                                       out: attention.prefix(rows * heads * paddedHead), logSumExp: logSumExp.prefix(rows * heads),
                                       bounds: s.bounds)
    try device.unpadHeads(attention, intoBF16: attentionBF16, tokens: rows, heads: heads, dim: headDim)
    try device.gemm(m: rows, n: d, k: d, a: attentionBF16, b: weights.slice(oWeight), d: x2, bias: values.slice(oBias), residual: n1)
    try device.layerNormForward(x: x2, gamma: values.slice(ln2Gamma), beta: values.slice(ln2Beta), y: n2, yBF16: n2BF16,
                                mean: mean2, rstd: rstd2, rows: rows, dim: d, eps: 1e-6)
    try device.gemm(m: rows, n: f, k: d, a: n2BF16, b: weights.slice(ffn1Weight), d: hidden, bias: values.slice(ffn1Bias))
    try device.reluDropoutForward(hidden.prefix(rows * f), dropped: hiddenDropped,
                                  mask: pass.dropout(rate: config.linearDropout, layer: index, site: 1))
    try device.gemm(m: rows, n: d, k: f, a: hiddenDropped, b: weights.slice(ffn2Weight), d: sc.rowsD, bias: values.slice(ffn2Bias))
    try device.dropout(sc.rowsD.prefix(rows * d), into: out, residual: n2,
                       mask: pass.dropout(rate: config.linearDropout, layer: index, site: 2))
  }

  func backward(_ gradient: DeviceArray<Float>, gradientBF16: DeviceArray<BFloat16>, input x: DeviceArray<Float>,
                stage s: CUDAEncoder.Stage, pass: CUDAPass) throws {
    let rows = s.rows, d = config.embeddingDim, f = config.ffnDim, heads = config.heads
    let values = parameters.values, weights = parameters.valuesBF16, grads = parameters.gradients, sc = scratch
    let dY = gradient.prefix(rows * d)
    // x' = n₂ + Dropout(z·W₂ + b₂):  dT = Dropout(dY) (fp32 rowsD, bf16 rowsDBF16).
    try device.dropout(dY, into: sc.rowsD, intoBF16: sc.rowsDBF16, mask: pass.dropout(rate: config.linearDropout, layer: index, site: 2))
    try device.gemm(m: f, n: d, k: rows, a: hiddenDropped.prefix(rows * f), transA: true, b: sc.rowsDBF16, d: grads.slice(ffn2Weight))
    try device.biasGradient(sc.rowsD, into: grads.slice(ffn2Bias), rows: rows, cols: d)
    try device.gemm(m: rows, n: f, k: d, a: sc.rowsDBF16, b: weights.slice(ffn2Weight), transB: true, d: sc.rowsF)
    // h = ReLU(n₂·W₁ + b₁), z = Dropout(h).
    let dHidden = sc.rowsF.prefix(rows * f)
    try device.reluDropoutBackward(dHidden, y: hidden.prefix(rows * f), dx: dHidden, dxBF16: sc.dHiddenBF16,
                                   mask: pass.dropout(rate: config.linearDropout, layer: index, site: 1))
    try device.gemm(m: d, n: f, k: rows, a: n2BF16.prefix(rows * d), transA: true, b: sc.dHiddenBF16, d: grads.slice(ffn1Weight))
    try device.biasGradient(dHidden, into: grads.slice(ffn1Bias), rows: rows, cols: f)
    try device.gemm(m: rows, n: d, k: f, a: sc.dHiddenBF16, b: weights.slice(ffn1Weight), transB: true, d: sc.dN2, residual: dY)
    // n₂ = LN₂(x₂).
    try device.layerNormBackward(dy: sc.dN2, x: x2, gamma: values.slice(ln2Gamma), beta: values.slice(ln2Beta), mean: mean2, rstd: rstd2,
                                 dx: sc.dX2, dxBF16: sc.dX2BF16, dGamma: grads.slice(ln2Gamma), dBeta: grads.slice(ln2Beta), rows: rows, dim: d)
    // x₂ = n₁ + a·W_o + b_o.
    try device.gemm(m: d, n: d, k: rows, a: attentionBF16.prefix(rows * d), transA: true, b: sc.dX2BF16, d: grads.slice(oWeight))
    try device.biasGradient(sc.dX2, into: grads.slice(oBias), rows: rows, cols: d)
    try device.gemm(m: rows, n: d, k: d, a: sc.dX2BF16, b: weights.slice(oWeight), transB: true, d: sc.rowsD)
    try device.padHeadsBFloat16(sc.rowsD, into: sc.dAttentionPadded, tokens: rows, heads: heads, dim: headDim)
    let padded = rows * heads * paddedHead
    try device.softmaxAttentionBackward(attentionShape(s), q: q, k: k, v: v, out: attention.prefix(padded),
                                        dOut: sc.dAttentionPadded.prefix(padded), logSumExp: logSumExp.prefix(rows * heads),
                                        offsets: s.offsets, scale: scoreScale, dq: sc.dq.prefix(padded), dk: sc.dk, dv: sc.dv,
                                        bounds: s.bounds)
    // q = n₁·W_q + b_q:  dN₁ = dX₂ + dq·W_qᵀ.
    try device.unpadHeads(sc.dq, into: sc.rowsD, intoBF16: sc.rowsDBF16, tokens: rows, heads: heads, dim: headDim)
    try device.gemm(m: d, n: d, k: rows, a: n1BF16.prefix(rows * d), transA: true, b: sc.rowsDBF16, d: grads.slice(qWeight))
    try device.biasGradient(sc.rowsD, into: grads.slice(qBias), rows: rows, cols: d)
    try device.gemm(m: rows, n: d, k: d, a: sc.rowsDBF16, b: weights.slice(qWeight), transB: true, d: sc.dN1, residual: sc.dX2)
    // [k | v] = x·W_kv + b_kv:  dx = d[k | v]·W_kvᵀ, then + LN₁ backward of dN₁.
    try device.unpadHeads(sc.dk, into: sc.rowsD2, intoBF16: sc.dKVBF16, tokens: rows, heads: heads, dim: headDim, stride: 2 * d, offset: 0)
    try device.unpadHeads(sc.dv, into: sc.rowsD2, intoBF16: sc.dKVBF16, tokens: rows, heads: heads, dim: headDim, stride: 2 * d, offset: d)
    try device.gemm(m: d, n: 2 * d, k: rows, a: xBF16.prefix(rows * d), transA: true, b: sc.dKVBF16, d: grads.slice(kvWeight))
    try device.biasGradient(sc.rowsD2, into: grads.slice(kvBias), rows: rows, cols: 2 * d)
    try device.gemm(m: rows, n: d, k: 2 * d, a: sc.dKVBF16, b: weights.slice(kvWeight), transB: true, d: dY)
    try device.layerNormBackward(dy: sc.dN1, x: x, gamma: values.slice(ln1Gamma), beta: values.slice(ln1Beta), mean: mean1, rstd: rstd1,
                                 dx: dY, dxBF16: gradientBF16, accumulate: true, dGamma: grads.slice(ln1Gamma), dBeta: grads.slice(ln1Beta),
                                 rows: rows, dim: d)
  }
}
