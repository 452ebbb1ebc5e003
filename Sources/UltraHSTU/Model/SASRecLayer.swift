/// One SASRec block as in the original SASRec and Meta's research baseline:
///
///     n₁ = LayerNorm₁(x)                       (queries come from the normalised input,
///     q = n₁·W_q + b_q;  k, v = x·W_kv + b_kv   keys and values from the raw input)
///     a  = SoftmaxAttention(q, k, v) · W_o + b_o
///     x₂ = n₁ + a
///     n₂ = LayerNorm₂(x₂)
///     x' = n₂ + Dropout(Dropout(ReLU(n₂·W₁ + b₁)) · W₂ + b₂)
final class SASRecLayer {
  let config: ModelConfig
  let index: Int
  let ln1Gamma, ln1Beta, qWeight, qBias, kvWeight, kvBias, oWeight, oBias: ParameterEntry
  let ln2Gamma, ln2Beta, ffn1Weight, ffn1Bias, ffn2Weight, ffn2Bias: ParameterEntry

  let input = HostBuffer(), n1 = HostBuffer(), mean1 = HostBuffer(), rstd1 = HostBuffer()
  let q = HostBuffer(), kv = HostBuffer(), k = HostBuffer(), v = HostBuffer(), attention = HostBuffer()
  let logSumExp = HostBuffer(), x2 = HostBuffer(), n2 = HostBuffer(), mean2 = HostBuffer(), rstd2 = HostBuffer()
  let hidden = HostBuffer(), hiddenDropped = HostBuffer()
  let dHidden = HostBuffer(), dN2 = HostBuffer(), dX2 = HostBuffer(), dAttention = HostBuffer()
  let dQ = HostBuffer(), dK = HostBuffer(), dV = HostBuffer(), dKV = HostBuffer(), dN1 = HostBuffer()

  init(config: ModelConfig, index: Int, parameters p: ParameterStore, prefix: String) {
    self.config = config
    self.index = index
    let d = config.embeddingDim, f = config.ffnDim, name = "\(prefix)layers.\(index)"
    ln1Gamma = p.declare("\(name).ln1.weight", [d], .ones)
    ln1Beta = p.declare("\(name).ln1.bias", [d], .zeros)
    qWeight = p.declare("\(name).q.weight", [d, d], .xavierUniform(fanIn: d, fanOut: 3 * d))
    qBias = p.declare("\(name).q.bias", [d], .zeros)
    kvWeight = p.declare("\(name).kv.weight", [d, 2 * d], .xavierUniform(fanIn: d, fanOut: 3 * d))
    kvBias = p.declare("\(name).kv.bias", [2 * d], .zeros)
    oWeight = p.declare("\(name).output.weight", [d, d], .uniformFanIn(d))
    oBias = p.declare("\(name).output.bias", [d], .zeros)
    ln2Gamma = p.declare("\(name).ln2.weight", [d], .ones)
    ln2Beta = p.declare("\(name).ln2.bias", [d], .zeros)
    ffn1Weight = p.declare("\(name).ffn1.weight", [d, f], .uniformFanIn(d))
    ffn1Bias = p.declare("\(name).ffn1.bias", [f], .uniformFanIn(d))
    ffn2Weight = p.declare("\(name).ffn2.weight", [f, d], .uniformFanIn(f))
    ffn2Bias = p.declare("\(name).ffn2.bias", [d], .uniformFanIn(f))
  }

  func forward(_ x: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext) {
    let t = c.tokens, d = config.embeddingDim, f = config.ffnDim, heads = config.heads
    let drop = c.training ? config.linearDropout : 0
    input.reserve(t * d).update(from: x, count: t * d)
    CPUOps.layerNormForward(x, n1.reserve(t * d), mean: mean1.reserve(t), rstd: rstd1.reserve(t),
                            gamma: p.value(ln1Gamma), beta: p.value(ln1Beta), rows: t, dim: d)
    CPUOps.linearForward(n1.pointer, weight: p.value(qWeight), bias: p.value(qBias), q.reserve(t * d),
                         rows: t, inDim: d, outDim: d)
    CPUOps.linearForward(input.pointer, weight: p.value(kvWeight), bias: p.value(kvBias), kv.reserve(t * 2 * d),
                         rows: t, inDim: d, outDim: 2 * d)
    split(kv.pointer, rows: t, into: [(k, d), (v, d)]) { src, dst, n in dst.update(from: src, count: n) }
    CPUOps.softmaxAttentionForward(q: q.pointer, k: k.pointer, v: v.pointer, out: attention.reserve(t * d),
                                   logSumExp: logSumExp.reserve(t * heads), shape: c.shape, heads: heads,
                                   headDim: d / heads, mask: c.mask)
    CPUOps.linearForward(attention.pointer, weight: p.value(oWeight), bias: p.value(oBias), x2.reserve(t * d),
                         rows: t, inDim: d, outDim: d)
    CPUOps.addInPlace(x2.pointer, n1.pointer, count: t * d)
    CPUOps.layerNormForward(x2.pointer, n2.reserve(t * d), mean: mean2.reserve(t), rstd: rstd2.reserve(t),
                            gamma: p.value(ln2Gamma), beta: p.value(ln2Beta), rows: t, dim: d)
    CPUOps.linearForward(n2.pointer, weight: p.value(ffn1Weight), bias: p.value(ffn1Bias), hidden.reserve(t * f),
                         rows: t, inDim: d, outDim: f)
    CPUOps.reluForward(hidden.pointer, hidden.pointer, count: t * f)
    CPUOps.dropoutForward(hidden.pointer, hiddenDropped.reserve(t * f), count: t * f, p: drop, random: c.random,
                          stream: c.dropoutStream(layer: index, site: 1))
    CPUOps.linearForward(hiddenDropped.pointer, weight: p.value(ffn2Weight), bias: p.value(ffn2Bias), x,
                         rows: t, inDim: f, outDim: d)
    CPUOps.dropoutForward(x, x, count: t * d, p: drop, random: c.random, stream: c.dropoutStream(layer: index, site: 2))
    CPUOps.addInPlace(x, n2.pointer, count: t * d)
  }

  func backward(_ dx: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext) {
    let t = c.tokens, d = config.embeddingDim, f = config.ffnDim, heads = config.heads
    let drop = c.training ? config.linearDropout : 0
    // x' = n₂ + FFN(n₂): dn₂ = dx + FFN'(dx).
    dN2.reserve(t * d).update(from: dx, count: t * d)
    CPUOps.dropoutBackward(dx, dx, count: t * d, p: drop, random: c.random, stream: c.dropoutStream(layer: index, site: 2))
    CPUOps.linearBackward(dx, hiddenDropped.pointer, weight: p.value(ffn2Weight), dHidden.reserve(t * f),
                          dWeight: p.gradient(ffn2Weight), dBias: p.gradient(ffn2Bias), rows: t, inDim: f, outDim: d)
    CPUOps.dropoutBackward(dHidden.pointer, dHidden.pointer, count: t * f, p: drop, random: c.random,
                           stream: c.dropoutStream(layer: index, site: 1))
    CPUOps.reluBackward(dHidden.pointer, hidden.pointer, dHidden.pointer, count: t * f)
    CPUOps.linearBackward(dHidden.pointer, n2.pointer, weight: p.value(ffn1Weight), dN2.pointer,
                          dWeight: p.gradient(ffn1Weight), dBias: p.gradient(ffn1Bias), rows: t, inDim: d, outDim: f,
                          accumulateInput: true)
    CPUOps.layerNormBackward(dN2.pointer, x2.pointer, mean: mean2.pointer, rstd: rstd2.pointer, gamma: p.value(ln2Gamma),
                             dX2.reserve(t * d), dgamma: p.gradient(ln2Gamma), dbeta: p.gradient(ln2Beta), rows: t, dim: d)
    // x₂ = n₁ + a(q(n₁), kv(x)).
    CPUOps.linearBackward(dX2.pointer, attention.pointer, weight: p.value(oWeight), dAttention.reserve(t * d),
                          dWeight: p.gradient(oWeight), dBias: p.gradient(oBias), rows: t, inDim: d, outDim: d)
    CPUOps.softmaxAttentionBackward(dout: dAttention.pointer, q: q.pointer, k: k.pointer, v: v.pointer,
                                    logSumExp: logSumExp.pointer, dq: dQ.reserve(t * d), dk: dK.reserve(t * d),
                                    dv: dV.reserve(t * d), shape: c.shape, heads: heads, headDim: d / heads, mask: c.mask)
    let dN1Total = dN1.reserve(t * d)
    dN1Total.update(from: dX2.pointer, count: t * d)
    CPUOps.linearBackward(dQ.pointer, n1.pointer, weight: p.value(qWeight), dN1Total, dWeight: p.gradient(qWeight),
                          dBias: p.gradient(qBias), rows: t, inDim: d, outDim: d, accumulateInput: true)
    merge([(dK, d), (dV, d)], rows: t, into: dKV.reserve(t * 2 * d))
    CPUOps.linearBackward(dKV.pointer, input.pointer, weight: p.value(kvWeight), dx, dWeight: p.gradient(kvWeight),
                          dBias: p.gradient(kvBias), rows: t, inDim: d, outDim: 2 * d)
    CPUOps.layerNormBackward(dN1Total, input.pointer, mean: mean1.pointer, rstd: rstd1.pointer, gamma: p.value(ln1Gamma),
                             dX2.pointer, dgamma: p.gradient(ln1Gamma), dbeta: p.gradient(ln1Beta), rows: t, dim: d)
    CPUOps.addInPlace(dx, dX2.pointer, count: t * d)
  }
}
