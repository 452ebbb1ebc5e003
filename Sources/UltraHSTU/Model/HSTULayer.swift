/// One research-HSTU block (Zhai et al. 2024) on a jagged batch:
///
///     n   = LayerNorm(x)
///     u, v, q, k = split(SiLU(n · W_uvqk))
///     o   = Σ_j M_ij · SiLU(q_i·k_j + rab^p_{i−j} + rab^t_ij) / N · v_j
///     y   = u ⊙ LayerNorm(o)
///     x'  = x + Dropout(y) · W_o + b_o
///
/// Activations of the last forward are kept for the backward. With selective rematerialisation
/// the recomputable ones (`HSTURecomputable`) live in one buffer set shared by all layers and are
/// rebuilt from the layer's input and attention output at the start of its backward.
final class HSTULayer {
  let config: ModelConfig
  let index: Int
  let uvqkWeight, outputWeight, outputBias: ParameterEntry
  let positionBias, timeBias: ParameterEntry?

  // Kept activations, each [T, width].
  let input = HostBuffer(), mean1 = HostBuffer(), rstd1 = HostBuffer()
  let attention = HostBuffer(), mean2 = HostBuffer(), rstd2 = HostBuffer()
  let saved: HSTURecomputable
  var normed: HostBuffer { saved.normed }
  var preActivation: HostBuffer { saved.preActivation }
  var u: HostBuffer { saved.u }
  var v: HostBuffer { saved.v }
  var q: HostBuffer { saved.q }
  var k: HostBuffer { saved.k }
  var attentionNormed: HostBuffer { saved.attentionNormed }
  var gated: HostBuffer { saved.gated }
  var gatedDropped: HostBuffer { saved.gatedDropped }
  // Gradient scratch.
  /// Gradient scratch, shared by all layers of a stack (one layer's backward runs at a time).
  let scratch: HSTUGradientScratch
  var dGated: HostBuffer { scratch.dGated }
  var dU: HostBuffer { scratch.dU }
  var dAttentionNormed: HostBuffer { scratch.dAttentionNormed }
  var dAttention: HostBuffer { scratch.dAttention }
  var dUVQK: HostBuffer { scratch.dUVQK }
  var dQ: HostBuffer { scratch.dQ }
  var dK: HostBuffer { scratch.dK }
  var dV: HostBuffer { scratch.dV }
  var dNormed: HostBuffer { scratch.dNormed }
  var dInput: HostBuffer { scratch.dInput }

  /// The activation buffers this layer keeps for its backward (the shared recomputable set is
  /// counted once by the model).
  var keptActivations: [HostBuffer] {
    [input, mean1, rstd1, attention, mean2, rstd2] + (config.rematerialize ? [] : saved.buffers)
  }

  var projectionWidth: Int { 2 * config.heads * (config.linearDim + config.attentionDim) }
  var valueWidth: Int { config.heads * config.linearDim }
  var queryWidth: Int { config.heads * config.attentionDim }

  init(config: ModelConfig, index: Int, parameters: ParameterStore, prefix: String, shared: HSTURecomputable?,
       scratch: HSTUGradientScratch) {
    self.config = config
    self.index = index
    saved = shared ?? HSTURecomputable()
    self.scratch = scratch
    let d = config.embeddingDim, hv = config.heads * config.linearDim
    let width = 2 * config.heads * (config.linearDim + config.attentionDim)
    uvqkWeight = parameters.declare("\(prefix)layers.\(index).uvqk.weight", [d, width], .normal(std: 0.02))
    outputWeight = parameters.declare("\(prefix)layers.\(index).output.weight", [hv, d], .xavierUniform(fanIn: hv, fanOut: d))
    outputBias = parameters.declare("\(prefix)layers.\(index).output.bias", [d], .uniformFanIn(hv))
    positionBias = config.positionBias
      ? parameters.declare("\(prefix)layers.\(index).rab.position", [config.maxTokens], .normal(std: 0.02)) : nil
    timeBias = config.timeBias
      ? parameters.declare("\(prefix)layers.\(index).rab.time", [config.timeBuckets + 1], .normal(std: 0.02)) : nil
  }

  func bias(_ p: ParameterStore, _ c: ForwardContext) -> RelativeAttentionBias {
    RelativeAttentionBias(positionTable: positionBias.map { UnsafePointer(p.value($0)) },
                          timeTable: timeBias.map { UnsafePointer(p.value($0)) },
                          timeBuckets: c.timeBuckets, bucketOffsets: c.bucketOffsets)
  }

  /// `x` holds the layer input on entry and its output on exit.
  func forward(_ x: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext) {
    let t = c.tokens, d = config.embeddingDim, hv = valueWidth
    input.reserve(t * d).update(from: x, count: t * d)
    projectInput(p, c)
    CPUOps.hstuAttentionForward(q: q.pointer, k: k.pointer, v: v.pointer, out: attention.reserve(t * hv),
                                shape: c.shape, heads: config.heads, attentionDim: config.attentionDim,
                                linearDim: config.linearDim, mask: c.mask, normalizer: config.normalizer,
                                bias: bias(p, c))
    gate(c)
    CPUOps.linearForward(gatedDropped.pointer, weight: p.value(outputWeight), bias: p.value(outputBias), x,
                         rows: t, inDim: hv, outDim: d)
    CPUOps.addInPlace(x, input.pointer, count: t * d)
  }

  /// `n = LayerNorm(x)`, `u, v, q, k = split(SiLU(n · W_uvqk))` from the kept input.
  private func projectInput(_ p: ParameterStore, _ c: ForwardContext) {
    let t = c.tokens, d = config.embeddingDim, w = projectionWidth, hv = valueWidth, hq = queryWidth
    CPUOps.layerNormForward(input.pointer, normed.reserve(t * d), mean: mean1.reserve(t), rstd: rstd1.reserve(t),
                            gamma: nil, beta: nil, rows: t, dim: d)
    CPUOps.linearForward(normed.pointer, weight: p.value(uvqkWeight), bias: nil, preActivation.reserve(t * w),
                         rows: t, inDim: d, outDim: w)
    split(preActivation.pointer, rows: t, into: [(u, hv), (v, hv), (q, hq), (k, hq)]) { src, dst, n in
      VectorMath.silu(src, dst, n)
    }
  }

  /// `y = Dropout(u ⊙ LayerNorm(o))` from the kept attention output.
  private func gate(_ c: ForwardContext) {
    let t = c.tokens, hv = valueWidth
    CPUOps.layerNormForward(attention.pointer, attentionNormed.reserve(t * hv), mean: mean2.reserve(t),
                            rstd: rstd2.reserve(t), gamma: nil, beta: nil, rows: t, dim: hv)
    CPUOps.mulForward(u.pointer, attentionNormed.pointer, gated.reserve(t * hv), count: t * hv)
    CPUOps.dropoutForward(gated.pointer, gatedDropped.reserve(t * hv), count: t * hv,
                          p: c.training ? config.linearDropout : 0, random: c.random,
                          stream: c.dropoutStream(layer: index, site: 1))
  }

  /// `dx` holds the gradient of the layer output on entry and of its input on exit.
  func backward(_ dx: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext) {
    let t = c.tokens, d = config.embeddingDim, w = projectionWidth, hv = valueWidth, hq = queryWidth
    if config.rematerialize {
      projectInput(p, c)
      gate(c)
    }
    CPUOps.linearBackward(dx, gatedDropped.pointer, weight: p.value(outputWeight), dGated.reserve(t * hv),
                          dWeight: p.gradient(outputWeight), dBias: p.gradient(outputBias), rows: t, inDim: hv, outDim: d)
    CPUOps.dropoutBackward(dGated.pointer, dGated.pointer, count: t * hv, p: c.training ? config.linearDropout : 0,
                           random: c.random, stream: c.dropoutStream(layer: index, site: 1))
    CPUOps.mulBackward(dGated.pointer, u.pointer, attentionNormed.pointer, dU.reserve(t * hv),
                       dAttentionNormed.reserve(t * hv), count: t * hv)
    CPUOps.layerNormBackward(dAttentionNormed.pointer, attention.pointer, mean: mean2.pointer, rstd: rstd2.pointer,
                             gamma: nil, dAttention.reserve(t * hv), dgamma: nil, dbeta: nil, rows: t, dim: hv)
    var biasGradient = CPUOps.RelativeAttentionBiasGradient()
    if let e = positionBias { biasGradient.positionTable = p.gradient(e); biasGradient.positionCount = e.count }
    if let e = timeBias { biasGradient.timeTable = p.gradient(e); biasGradient.timeCount = e.count }
    CPUOps.hstuAttentionBackward(dout: dAttention.pointer, q: q.pointer, k: k.pointer, v: v.pointer,
                                 dq: dQ.reserve(t * hq), dk: dK.reserve(t * hq), dv: dV.reserve(t * hv),
                                 shape: c.shape, heads: config.heads, attentionDim: config.attentionDim,
                                 linearDim: config.linearDim, mask: c.mask, normalizer: config.normalizer,
                                 bias: bias(p, c), biasGradient: biasGradient)
    // Gather the four branch gradients back into the projection's layout, through SiLU.
    merge([(dU, hv), (dV, hv), (dQ, hq), (dK, hq)], rows: t, into: dUVQK.reserve(t * w))
    CPUOps.siluBackward(dUVQK.pointer, preActivation.pointer, dUVQK.pointer, count: t * w)
    CPUOps.linearBackward(dUVQK.pointer, normed.pointer, weight: p.value(uvqkWeight), dNormed.reserve(t * d),
                          dWeight: p.gradient(uvqkWeight), dBias: nil, rows: t, inDim: d, outDim: w)
    // Residual: dx (the output gradient) flows to the input unchanged, plus the LayerNorm branch.
    CPUOps.layerNormBackward(dNormed.pointer, input.pointer, mean: mean1.pointer, rstd: rstd1.pointer, gamma: nil,
                             dInput.reserve(t * d), dgamma: nil, dbeta: nil, rows: t, dim: d)
    CPUOps.addInPlace(dx, dInput.pointer, count: t * d)
  }
}

/// The activations selective rematerialisation recomputes instead of keeping per layer.
final class HSTURecomputable {
  let normed = HostBuffer(), preActivation = HostBuffer(), u = HostBuffer(), v = HostBuffer()
  let q = HostBuffer(), k = HostBuffer(), attentionNormed = HostBuffer(), gated = HostBuffer()
  let gatedDropped = HostBuffer()

  var buffers: [HostBuffer] { [normed, preActivation, u, v, q, k, attentionNormed, gated, gatedDropped] }
}

/// Gradient buffers of an HSTU layer's backward; only one layer's backward runs at a time.
final class HSTUGradientScratch {
  let dGated = HostBuffer(), dU = HostBuffer(), dAttentionNormed = HostBuffer(), dAttention = HostBuffer()
  let dUVQK = HostBuffer(), dQ = HostBuffer(), dK = HostBuffer(), dV = HostBuffer(), dNormed = HostBuffer()
  let dInput = HostBuffer()
}

/// Splits the columns of `source` (`rows × Σ widths`) into contiguous buffers, applying `transform`
/// (source, destination, count) row by row.
func split(_ source: UnsafePointer<Float>, rows: Int, into parts: [(HostBuffer, Int)],
           transform: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) {
  let total = parts.reduce(0) { $0 + $1.1 }
  for (buffer, width) in parts { buffer.reserve(rows * width) }
  Parallel.forChunks(rows, minimumPerWorker: 256) { r in
    for row in r {
      var col = 0
      for (buffer, width) in parts {
        transform(source + row * total + col, buffer.pointer + row * width, width)
        col += width
      }
    }
  }
}

/// The inverse of `split`: interleaves contiguous per-part rows back into `rows × Σ widths`.
func merge(_ parts: [(HostBuffer, Int)], rows: Int, into destination: UnsafeMutablePointer<Float>) {
  let total = parts.reduce(0) { $0 + $1.1 }
  Parallel.forChunks(rows, minimumPerWorker: 256) { r in
    for row in r {
      var col = 0
      for (buffer, width) in parts {
        (destination + row * total + col).update(from: buffer.pointer + row * width, count: width)
        col += width
      }
    }
  }
}
