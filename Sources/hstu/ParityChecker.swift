import Foundation
import UltraHSTU

/// Inputs, the comparisons and their report for `gpu-check`.
struct ParityChecker {
  let device: CUDADevice
  let random: CounterRandom
  var stream: UInt64 = 0
  var rows: [(op: String, error: Float, tolerance: Float)] = []
  var failures: Int { rows.filter { !($0.error <= $0.tolerance) }.count }

  init(device: CUDADevice, random: CounterRandom) {
    self.device = device
    self.random = random
  }

  mutating func randoms(_ count: Int, scale: Float = 1) -> [Float] {
    stream += 1
    return sideRandoms(count, scale: scale, tag: 0)
  }

  /// Normal draws from a stream of their own, derived from the current one and `tag`: a check can
  /// add such inputs without changing those of the checks after it.
  func sideRandoms(_ count: Int, scale: Float = 1, tag: UInt64) -> [Float] {
    let s = stream | tag << 32
    return (0..<count).map { random.normal(stream: s, counter: UInt64($0)) * scale }
  }

  /// max |gpu − cpu| / max |cpu| (NaN anywhere fails).
  static func relativeError(_ gpu: [Float], _ cpu: [Float]) -> Float {
    precondition(gpu.count == cpu.count)
    var diff: Float = 0, scale: Float = 0
    for i in 0..<gpu.count {
      if gpu[i].isNaN || cpu[i].isNaN { return .nan }
      diff = max(diff, abs(gpu[i] - cpu[i]))
      scale = max(scale, abs(cpu[i]))
    }
    return diff / max(scale, 1e-30)
  }

  /// Σ_r x[r, c] of a row-major `[rows, cols]` array, summed in double precision.
  static func columnSums(_ x: [Float], rows: Int, cols: Int) -> [Float] {
    (0..<cols).map { c in Float((0..<rows).reduce(0.0) { $0 + Double(x[$1 * cols + c]) }) }
  }

  /// ‖gpu − cpu‖₂ / ‖cpu‖₂ (NaN anywhere fails).
  static func relativeL2Error(_ gpu: [Float], _ cpu: [Float]) -> Float {
    precondition(gpu.count == cpu.count)
    var diff: Double = 0, scale: Double = 0
    for i in 0..<gpu.count {
      if gpu[i].isNaN || cpu[i].isNaN { return .nan }
      diff += Double(gpu[i] - cpu[i]) * Double(gpu[i] - cpu[i])
      scale += Double(cpu[i]) * Double(cpu[i])
    }
    return Float((diff / max(scale, 1e-60)).squareRoot())
  }

  /// Compares by the max relative error, or by the relative L2 error (`l2`).
  mutating func record(_ op: String, _ gpu: [Float], _ cpu: [Float], tolerance: Float, l2: Bool = false) {
    let e = l2 ? Self.relativeL2Error(gpu, cpu) : Self.relativeError(gpu, cpu)
    rows.append((op, e, tolerance))
    print(String(format: "%-58@ %@ %.3e  (tol %.0e)  %@", op as NSString, l2 ? "rel L2 err " : "max rel err", e, tolerance,
                 e <= tolerance ? "PASS" : "FAIL"))
  }

  func summary() -> String {
    "\(rows.count - failures) passed, \(failures) failed"
  }

  mutating func runAll() throws {
    try checkAttention(name: "causal, pos bias, N = n", lengths: [200, 77, 130, 1], heads: 2, dqk: 64, dv: 64,
                       mask: .causal, normalizer: .trueLength, targets: nil, withPos: true)
    try checkAttention(name: "window 40 + tail 16 (Meta SLA), 5 targets, N = 256", lengths: [256, 190, 64], heads: 2, dqk: 128, dv: 128,
                       mask: AttentionMask(localWindow: 40, globalTailRows: 16), normalizer: .fixed(256), targets: 5, withPos: true)
    try checkAttention(name: "window 30 + prefix 10 + context 3 (TorchEasyRec SLA)", lengths: [300, 45], heads: 3, dqk: 64, dv: 64,
                       mask: AttentionMask(localWindow: 30, globalPrefixColumns: 10, contextualPrefix: 3), normalizer: .trueLength, targets: nil, withPos: false)
    try checkAttention(name: "window 100, no global rows", lengths: [700, 130, 1], heads: 2, dqk: 128, dv: 128,
                       mask: AttentionMask(localWindow: 100), normalizer: .fixed(700), targets: nil, withPos: true)
    // 2300 keys = 36 key tiles > the 16 a forward CTA walks: the tail rows' keys are split over CTAs.
    try checkAttention(name: "window 64 + tail 70, split keys", lengths: [2300, 900, 1500], heads: 2, dqk: 32, dv: 32,
                       mask: AttentionMask(localWindow: 64, globalTailRows: 70), normalizer: .fixed(2300), targets: nil, withPos: true)
    try checkAttention(name: "window 64 + tail 70, split keys, dqk ≠ dv", lengths: [2300, 900, 1500], heads: 2, dqk: 64, dv: 128,
                       mask: AttentionMask(localWindow: 64, globalTailRows: 70), normalizer: .fixed(2300), targets: nil, withPos: true)
    try checkAttention(name: "causal, long rows, dqk ≠ dv", lengths: [1100, 513, 64, 1], heads: 2, dqk: 128, dv: 64,
                       mask: .causal, normalizer: .trueLength, targets: 3, withPos: false)
    try checkAttention(name: "causal, pos + time bias (rab^t)", lengths: [200, 77, 130, 1], heads: 2, dqk: 64, dv: 64,
                       mask: .causal, normalizer: .trueLength, targets: nil, withPos: true, withTime: true)
    try checkAttention(name: "window 40 + tail 16, time bias, 5 targets", lengths: [256, 190, 64], heads: 2, dqk: 128, dv: 128,
                       mask: AttentionMask(localWindow: 40, globalTailRows: 16), normalizer: .fixed(256), targets: 5, withPos: false, withTime: true)
    try checkSoftmaxAttention(name: "causal", lengths: [200, 77, 130, 1], heads: 1, headDim: 64, mask: .causal)
    try checkSoftmaxAttention(name: "causal, padded heads", lengths: [200, 77, 130, 1], heads: 2, headDim: 50, mask: .causal)
    try checkSoftmaxAttention(name: "window 40 + tail 16", lengths: [300, 45], heads: 2, headDim: 32,
                              mask: AttentionMask(localWindow: 40, globalTailRows: 16))
    for dim in [200, 50] {   // 16-byte accesses (dim % 4 == 0) and the scalar path
      try checkLayerNorm(affine: false, gated: false, dim: dim)
      try checkLayerNorm(affine: true, gated: false, dim: dim)
      try checkLayerNorm(affine: false, gated: true, dim: dim)
      try checkLayerNorm(affine: false, gated: false, bf16Gradient: true, dim: dim)
      try checkLayerNorm(affine: false, gated: true, bf16Gradient: true, dim: dim)
      try checkLayerNorm(affine: false, gated: true, bf16Gradient: true, dropout: true, dim: dim)
      try checkLayerNorm(affine: false, gated: true, bf16Gradient: true, bf16Input: true, dropout: true, dim: dim)
      try checkLayerNorm(affine: true, gated: false, dropout: true, dim: dim)
    }
    try checkElementwise()
    try checkEmbedding()
    try checkGEMM()
    // 64 and 512 take 8-column chunks (one and two per lane), 50 two-column chunks.
    for dim in [64, 512, 50] { try checkSampledSoftmax(dim: dim) }
    try checkBiasGradient()
    try checkAdamW()
    try checkAdamWRows()
    try checkLossSum()
    try checkModelStep("hstu", config: Preset.hstu.model)
    try checkModelStep("hstu-large", config: Preset.hstuLarge.model)
    // Head dims that are multiples of 16 take the unpadded split/merge kernels (the benchmark configs').
    var dense = Preset.hstuLarge.model
    dense.embeddingDim = 64
    dense.attentionDim = 32
    dense.linearDim = 32
    dense.layers = 3
    try checkModelStep("hstu, 2 heads × 32 (unpadded heads)", config: dense)
    var interleaved = Preset.hstu.model
    interleaved.input = .interleaved
    try checkModelStep("hstu, interleaved actions", config: interleaved)
    var truncated = Preset.hstuLarge.model
    truncated.input = .actionAware
    truncated.truncation = AttentionTruncation(layersBefore: 3, keepLast: 50, mask: .semiLocalMeta(k1: 16, k2: 8))
    try checkModelStep("hstu-large, action-aware, truncation", config: truncated)
    truncated.truncation?.supervisesDroppedRows = false
    try checkModelStep("hstu-large, action-aware, truncation, kept rows only", config: truncated)
    try checkModelStep("ultra-hstu", config: Preset.ultraHSTU.model)
    var timed = Preset.hstu.model
    timed.timeBias = true
    try checkModelStep("hstu, rab^t, timestamps", config: timed, timestamps: true)
    truncated.timeBias = true
    truncated.truncation?.supervisesDroppedRows = true
    try checkModelStep("hstu-large, action-aware, truncation, rab^t, timestamps", config: truncated, timestamps: true)
    // SASRec with its feed-forward biases raised by 4 (about 7 standard deviations of the
    // pre-activations), so no ReLU input lies within bf16 rounding of zero: every gradient is
    // compared element-wise at the usual tolerance. Then as initialised, by the relative L2 error.
    let raised = { (store: ParameterStore) in
      for e in store.entries where e.name.hasSuffix("ffn1.bias") { for i in 0..<e.count { store.value(e)[i] += 4 } }
    }
    try checkModelStep("sasrec, ReLU inputs away from 0", config: Preset.sasrec.model, adjust: raised)
    try checkModelStep("sasrec", config: Preset.sasrec.model, reluFlips: true)
    var sasrec = Preset.sasrec.model
    sasrec.heads = 2
    sasrec.ffnDim = 96
    try checkModelStep("sasrec, 2 heads, FFN 96, ReLU inputs away from 0", config: sasrec, adjust: raised)
    try checkModelStep("sasrec, 2 heads, FFN 96", config: sasrec, reluFlips: true)
  }

  // MARK: whole training step

  /// One training step of `config` (dropout and negatives on) on a batch of random rated
  /// histories built by the trainer, the same weights on CPU (`Trainer.lossAndGradients`) and GPU
  /// (`CUDAModel.trainingStep`): the loss and every parameter gradient, then the weights, first
  /// moments and bf16 weights after the GPU's AdamW (its item-table rows split between the side
  /// stream and the step's end) against one CPU AdamW over the GPU's gradients. The GPU rounds GEMM operands, q, k, v
  /// and dO to bf16; the CPU does not. A ReLU turns that rounding into whole flips: a
  /// pre-activation within rounding of zero is kept on one side and dropped on the other, and
  /// that element's full gradient differs. With `reluFlips` the gradients are compared by the
  /// relative L2 error at 1e-1 (measured 1–5e-2 for SASRec as initialised; a wiring error moves
  /// it by O(1)). `adjust` edits the weights before both copies are made.
  mutating func checkModelStep(_ name: String, config: ModelConfig, train: TrainConfig = TrainConfig(), timestamps: Bool = false,
                               reluFlips: Bool = false, adjust: (ParameterStore) -> Void = { _ in }) throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    let itemCount = 400, lengths = [203, 80, 133, 4, 48, 260]
    stream += 1
    let s = stream
    let events = lengths.reduce(0, +)
    let data = UserSequences(
      itemCount: itemCount, offsets: lengths.reduce(into: [0]) { $0.append($0.last! + $1) },
      items: (0..<events).map { Int32(1 + random.below(itemCount, stream: s, counter: UInt64($0))) },
      ratings: (0..<events).map { Float(1 + random.below(5, stream: s + 1 << 32, counter: UInt64($0))) },
      timestamps: timestamps ? eventTimes(lengths: lengths).keys : nil,
      userIDs: lengths.indices.map { Int64($0) }, originalItemIDs: (0...itemCount).map { Int64($0) })
    var train = train
    train.batchSize = lengths.count
    let model = makeModel(config: config, data: data, seed: 11)
    adjust(model.parameters)
    let trainer = Trainer(model: model, train: train, data: data, presetName: name, datasetName: "random")
    let batch = trainer.batches(epoch: 1)[0]
    let gpu = try CUDAModel(model, device: device, maxTokens: batch.tokenCount, maxSequences: batch.batchSize)
    let cpuLoss = trainer.lossAndGradients(batch, step: 3)
    try gpu.setBatch(batch)
    try gpu.trainingStep(train: train, step: 3)
    let gpuLoss = try gpu.takeLossSum()
    let gradients = try device.download(gpu.gradients)
    record("step [\(name)] loss (\(batch.tokenCount) tokens)", [gpuLoss], [cpuLoss], tolerance: 1e-3)
    for e in gpu.entries {
      let cpu = Array(UnsafeBufferPointer(start: model.parameters.gradient(e), count: e.count))
      record("step [\(name)] d \(e.name)", Array(gradients[e.offset..<(e.offset + e.count)]), cpu,
             tolerance: reluFlips ? 1e-1 : 3e-2, l2: reluFlips)
    }
    let store = model.parameters, n = store.count
    var p = Array(UnsafeBufferPointer(start: store.values.pointer, count: n))
    var m = Array(UnsafeBufferPointer(start: store.firstMoment.pointer, count: n))
    var v = Array(UnsafeBufferPointer(start: store.secondMoment.pointer, count: n))
    CPUOps.adamW(parameters: &p, gradients: gradients, m: &m, v: &v, count: n, learningRate: train.learningRate, beta1: train.beta1,
                 beta2: train.beta2, epsilon: train.epsilon, weightDecay: train.weightDecay, step: gpu.step)
    let weights = try device.download(gpu.parameters.values)
    record("step [\(name)] AdamW weights", weights, p, tolerance: 1e-5)
    record("step [\(name)] AdamW first moment", try device.download(gpu.parameters.firstMoment), m, tolerance: 1e-5)
    record("step [\(name)] AdamW bf16 weights = weights rounded", try device.download(gpu.parameters.valuesBF16).map(\.float),
           weights.map { BFloat16($0).float }, tolerance: 0)
  }

  // MARK: attention

  mutating func checkAttention(name: String, lengths: [Int], heads: Int, dqk: Int, dv: Int, mask: AttentionMask,
                               normalizer: AttentionNormalizer, targets: Int?, withPos: Bool, withTime: Bool = false) throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    var offsets = [0]
    for n in lengths { offsets.append(offsets.last! + n) }
    let total = offsets.last!, maxLength = lengths.max()!
    // bf16-rounded inputs, so the CPU reference sees exactly what the GPU sees.
    func bf(_ x: [Float]) -> [Float] { x.map { BFloat16($0).float } }
    let q = bf(randoms(total * heads * dqk, scale: 0.5)), k = bf(randoms(total * heads * dqk, scale: 0.5))
    let v = bf(randoms(total * heads * dv)), dOut = bf(randoms(total * heads * dv))
    let pos = withPos ? randoms(maxLength, scale: 0.5) : []
    let targetCounts = lengths.map { Int32(min(targets ?? 0, $0 - 1)) }
    let buckets = 128
    let times = withTime ? eventTimes(lengths: lengths) : (keys: [], queries: [])
    let timeTable = withTime ? randoms(buckets + 1, scale: 0.5) : []
    var pairBuckets: [UInt8] = [], bucketOffsets = [0]
    if withTime {
      for b in lengths.indices {
        let o = offsets[b], n = lengths[b]
        for i in 0..<n { for j in 0..<n { pairBuckets.append(hstuTimeBucket(times.queries[o + i] - times.keys[o + j], buckets: buckets)) } }
        bucketOffsets.append(pairBuckets.count)
      }
    }

    // CPU
    var cpuOut = [Float](repeating: 0, count: total * heads * dv)
    var cpuDq = [Float](repeating: 0, count: total * heads * dqk), cpuDk = cpuDq, cpuDv = cpuOut
    // Host copies with stable pointers for the shape and the bias tables.
    func host<T>(_ values: [T]) -> HostArray<T> { let h = HostArray<T>(); h.assign(values); return h }
    let hostOffsets = host(offsets), hostTargets = host(targetCounts), hostPos = host(pos), hostTimeTable = host(timeTable)
    let hostBuckets = host(pairBuckets), hostBucketOffsets = host(bucketOffsets)
    let dPosTableCPU = host([Float](repeating: 0, count: max(1, maxLength))), dTimeTableCPU = host([Float](repeating: 0, count: buckets + 1))
    let cpuShape = JaggedShape(offsets: hostOffsets.pointer, batch: lengths.count, targets: targets == nil ? nil : UnsafePointer(hostTargets.pointer))
    let bias = RelativeAttentionBias(positionTable: withPos ? UnsafePointer(hostPos.pointer) : nil,
                                     timeTable: withTime ? UnsafePointer(hostTimeTable.pointer) : nil,
                                     timeBuckets: withTime ? UnsafePointer(hostBuckets.pointer) : nil,
                                     bucketOffsets: withTime ? UnsafePointer(hostBucketOffsets.pointer) : nil)
    let biasGradient = CPUOps.RelativeAttentionBiasGradient(positionTable: withPos ? dPosTableCPU.pointer : nil, positionCount: withPos ? maxLength : 0,
                                                            timeTable: withTime ? dTimeTableCPU.pointer : nil, timeCount: withTime ? buckets + 1 : 0)
    CPUOps.hstuAttentionForward(q: q, k: k, v: v, out: &cpuOut, shape: cpuShape, heads: heads, attentionDim: dqk,
                                linearDim: dv, mask: mask, normalizer: normalizer, bias: bias)
    CPUOps.hstuAttentionBackward(dout: dOut, q: q, k: k, v: v, dq: &cpuDq, dk: &cpuDk, dv: &cpuDv, shape: cpuShape,
                                 heads: heads, attentionDim: dqk, linearDim: dv, mask: mask, normalizer: normalizer,
                                 bias: bias, biasGradient: biasGradient)
    let cpuDPos = Array(UnsafeBufferPointer(start: dPosTableCPU.pointer, count: max(1, maxLength)))
    let cpuDTime = Array(UnsafeBufferPointer(start: dTimeTableCPU.pointer, count: buckets + 1))

    // GPU
    let shape = AttentionShape(batch: lengths.count, maxLength: maxLength, heads: heads, dqk: dqk, dv: dv, normalizer: normalizer, mask: mask)
    let dQ = try device.array(q.map(BFloat16.init)), dK = try device.array(k.map(BFloat16.init))
    let dV = try device.array(v.map(BFloat16.init)), dDO = try device.array(dOut.map(BFloat16.init))
    let dOff = try device.array(offsets.map(Int32.init)), dT = targets == nil ? nil : try device.array(targetCounts)
    let dPosTable = withPos ? try device.array(pos) : nil
    let out = try device.allocate(Float.self, count: cpuOut.count), outBF16 = try device.allocate(BFloat16.self, count: cpuOut.count)
    let gq = try device.allocate(Float.self, count: cpuDq.count), gk = try device.allocate(Float.self, count: cpuDk.count)
    let gv = try device.allocate(Float.self, count: cpuDv.count)
    let gpos = withPos ? try device.allocate(Float.self, count: maxLength) : nil
    let time = withTime ? AttentionTimeBias(keyTimes: try device.array(times.keys), queryTimes: try device.array(times.queries),
                                            table: try device.array(timeTable),
                                            thresholds: try device.array(hstuTimeBucketThresholds(buckets: buckets))) : nil
    let gtime = withTime ? try device.allocate(Float.self, count: buckets + 1) : nil
    // Every kernel that can run this shape: wgmma (where it applies) and mma.sync; dk and dv are
    // NaN-poisoned before each backward, so every element must be written.
    let kernels = device.attentionKernels(shape)
    for kernel in kernels {
      try device.fill(out, word: 0x7FC0_0000)
      try device.hstuAttentionForward(shape, q: dQ, k: dK, v: dV, offsets: dOff, targets: dT, pos: dPosTable, time: time, out: out, kernel: kernel)
      try device.synchronize()
      record("attention [\(name)] d=\(dqk)/\(dv) out (\(kernel))", try device.download(out), cpuOut, tolerance: 2e-2)
      // The bf16 output the HSTU layer takes (its LayerNorm reads it).
      try device.fill(outBF16, word: 0x7FC0_7FC0)
      try device.hstuAttentionForward(shape, q: dQ, k: dK, v: dV, offsets: dOff, targets: dT, pos: dPosTable, time: time, out: outBF16,
                                      kernel: kernel)
      try device.synchronize()
      record("attention [\(name)] d=\(dqk)/\(dv) out bf16 (\(kernel))", try device.download(outBF16).map(\.float), cpuOut, tolerance: 2e-2)
    }
    // The HSTU block's pre = u | v | q | k rows for the backward that merges dk and dv into dPre
    // (`AttentionKeyGradients.siluMerged`): dPre's v and k columns must equal dv, dk ⊙ SiLU'(pre).
    let hv = heads * dv, hq = heads * dqk, width = 2 * (hv + hq)
    let pre = bf(sideRandoms(total * width, scale: 2, tag: 1))
    func columns(_ rows: [Float], from first: Int, count: Int) -> [Float] {
      (0..<total).flatMap { t in rows[(t * width + first)..<(t * width + first + count)] }
    }
    func siluBackward(_ dout: [Float], _ x: [Float]) -> [Float] {
      var dx = [Float](repeating: 0, count: dout.count)
      CPUOps.siluBackward(dout, x, &dx, count: dout.count)
      return dx
    }
    let cpuMergedV = siluBackward(cpuDv, columns(pre, from: hv, count: hv))
    let cpuMergedK = siluBackward(cpuDk, columns(pre, from: 2 * hv + hq, count: hq))
    let gPre = try device.array(pre.map(BFloat16.init)), gdPre = try device.allocate(BFloat16.self, count: pre.count)
    for kernel in kernels {
      for buffer in [gk, gv] { try device.fill(buffer, word: 0x7FC0_0000) }
      try device.hstuAttentionBackward(shape, q: dQ, k: dK, v: dV, dOut: dDO, offsets: dOff, targets: dT, pos: dPosTable, time: time,
                                       dq: gq, keys: .separate(dk: gk, dv: gv), dPos: gpos, dTime: gtime, kernel: kernel)
      try device.synchronize()
      let label = "attention [\(name)] d=\(dqk)/\(dv)", suffix = kernels.count > 1 ? " (\(kernel))" : ""
      record("\(label) dq\(suffix)", try device.download(gq), cpuDq, tolerance: 2e-2)
      record("\(label) dk\(suffix)", try device.download(gk), cpuDk, tolerance: 2e-2)
      record("\(label) dv\(suffix)", try device.download(gv), cpuDv, tolerance: 2e-2)
      if let gpos { record("\(label) dpos\(suffix)", try device.download(gpos), cpuDPos, tolerance: 2e-2) }
      if let gtime { record("\(label) dtime\(suffix)", try device.download(gtime), cpuDTime, tolerance: 2e-2) }

      try device.fill(gdPre, word: 0x7FC0_7FC0)   // NaN in every bf16: what the backward leaves stays NaN
      try device.hstuAttentionBackward(shape, q: dQ, k: dK, v: dV, dOut: dDO, offsets: dOff, targets: dT, pos: dPosTable, time: time,
                                       dq: gq, keys: .siluMerged(pre: gPre, dPre: gdPre), dPos: gpos, dTime: gtime, kernel: kernel)
      try device.synchronize()
      let merged = try device.download(gdPre).map(\.float)
      record("\(label) dPre_v = dv ⊙ SiLU'\(suffix)", columns(merged, from: hv, count: hv), cpuMergedV, tolerance: 2e-2)
      record("\(label) dPre_k = dk ⊙ SiLU'\(suffix)", columns(merged, from: 2 * hv + hq, count: hq), cpuMergedK, tolerance: 2e-2)
      let written = (columns(merged, from: 0, count: hv) + columns(merged, from: 2 * hv, count: hq)).filter { !$0.isNaN }.count
      record("\(label) dPre_u, dPre_q left alone\(suffix)", [Float(written)], [0], tolerance: 0)
    }
  }

  /// Increasing event times per sequence (keys) and each token's next event time (queries; the
  /// last token's is a later target time). Gaps are drawn from 0 s, the bucket thresholds ± 1 s
  /// (where a fast log could misplace the bucket) and log-uniform spans up to ~3 years.
  mutating func eventTimes(lengths: [Int]) -> (keys: [Int64], queries: [Int64]) {
    let thresholds = hstuTimeBucketThresholds(buckets: 128).filter { $0 < 1 << 40 }
    stream += 1
    let s = stream
    var counter: UInt64 = 0
    func gap() -> Int64 {
      counter += 1
      switch random.below(4, stream: s, counter: 2 * counter) {
      case 0: return 0
      case 1: return thresholds[random.below(thresholds.count, stream: s, counter: 2 * counter + 1)] + Int64(random.below(3, stream: s + 1, counter: counter)) - 1
      default: return Int64(exp(Double(random.unit(stream: s, counter: 2 * counter + 1)) * 18.4))
      }
    }
    var keys: [Int64] = [], queries: [Int64] = []
    for n in lengths {
      var t: Int64 = 1_600_000_000
      var sequence: [Int64] = []
      for _ in 0...n { sequence.append(t); t += max(0, gap()) }
      keys += sequence[0..<n]
      queries += sequence[1...n]
    }
    return (keys, queries)
  }

  // MARK: softmax attention (SASRec)

  /// The fused softmax attention against `CPUOps.softmaxAttention…` on the same bf16-rounded
  /// inputs; a head dim that is not a multiple of 16 is zero-padded on the GPU as the SASRec
  /// layer does.
  mutating func checkSoftmaxAttention(name: String, lengths: [Int], heads: Int, headDim d: Int, mask: AttentionMask) throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    var offsets = [0]
    for n in lengths { offsets.append(offsets.last! + n) }
    let total = offsets.last!, width = total * heads * d
    func bf(_ x: [Float]) -> [Float] { x.map { BFloat16($0).float } }
    let q = bf(randoms(width, scale: 1.5)), k = bf(randoms(width, scale: 1.5)), v = bf(randoms(width)), dOut = bf(randoms(width))
    var out = [Float](repeating: 0, count: width), lse = [Float](repeating: 0, count: total * heads)
    var dq = out, dk = out, dv = out
    offsets.withUnsafeBufferPointer { off in
      let shape = JaggedShape(offsets: off.baseAddress!, batch: lengths.count)
      CPUOps.softmaxAttentionForward(q: q, k: k, v: v, out: &out, logSumExp: &lse, shape: shape, heads: heads, headDim: d, mask: mask)
      CPUOps.softmaxAttentionBackward(dout: dOut, q: q, k: k, v: v, logSumExp: lse, dq: &dq, dk: &dk, dv: &dv, shape: shape,
                                      heads: heads, headDim: d, mask: mask)
    }
    let dp = CUDADevice.paddedHeadDim(d), padded = total * heads * dp
    func pad(_ x: [Float]) throws -> DeviceArray<BFloat16> {
      try device.array((0..<padded).map { i in i % dp < d ? BFloat16(x[(i / dp) * d + i % dp]) : BFloat16(0) })
    }
    func unpad(_ x: DeviceArray<Float>) throws -> [Float] {
      let h = try device.download(x)
      return (0..<width).map { i in h[(i / d) * dp + i % d] }
    }
    let shape = AttentionShape(batch: lengths.count, maxLength: lengths.max()!, heads: heads, dqk: dp, dv: dp, normalizer: .trueLength, mask: mask)
    let gq = try pad(q), gk = try pad(k), gv = try pad(v), gdo = try pad(dOut), goff = try device.array(offsets.map(Int32.init))
    let gout = try device.allocate(Float.self, count: padded), glse = try device.allocate(Float.self, count: total * heads)
    let gdq = try device.allocate(Float.self, count: padded), gdk = try device.allocate(Float.self, count: padded)
    let gdv = try device.allocate(Float.self, count: padded)
    for buffer in [gout, glse] { try device.fill(buffer, word: 0x7FC0_0000) }
    let scale = 1 / Float(d).squareRoot()
    try device.softmaxAttentionForward(shape, q: gq, k: gk, v: gv, offsets: goff, scale: scale, out: gout, logSumExp: glse)
    try device.synchronize()
    let label = "softmax attention [\(name)] d=\(d)"
    record("\(label) out", try unpad(gout), out, tolerance: 2e-2)
    record("\(label) lse", try device.download(glse), lse, tolerance: 1e-3)
    let kernels = device.attentionKernels(shape)
    for kernel in kernels {
      for buffer in [gdk, gdv] { try device.fill(buffer, word: 0x7FC0_0000) }
      try device.softmaxAttentionBackward(shape, q: gq, k: gk, v: gv, out: gout, dOut: gdo, logSumExp: glse, offsets: goff, scale: scale,
                                          dq: gdq, dk: gdk, dv: gdv, kernel: kernel)
      try device.synchronize()
      let suffix = kernels.count > 1 ? " (\(kernel))" : ""
      record("\(label) dq\(suffix)", try unpad(gdq), dq, tolerance: 2e-2)
      record("\(label) dk\(suffix)", try unpad(gdk), dk, tolerance: 2e-2)
      record("\(label) dv\(suffix)", try unpad(gdv), dv, tolerance: 2e-2)
    }
  }

  // MARK: LayerNorm, LayerNorm·U

  /// LayerNorm (plain, affine, or gated as in HSTU: y = SiLU(pre_u) ⊙ LayerNorm(x), with pre_u the
  /// first `dim` columns of a wider bf16 `pre`, and dL/dpre_u written into those columns of dPre);
  /// with `bf16Gradient` the backward takes dy in bf16 (the CPU the same bf16-exact values); with
  /// `dropout` the output goes through dropout (rate 0.2) and dy through the same mask.
  mutating func checkLayerNorm(affine: Bool, gated: Bool, bf16Gradient: Bool = false, bf16Input: Bool = false, dropout: Bool = false,
                               dim: Int) throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    let rows = 333, eps: Float = 1e-6, count = rows * dim, stride = dim + 4
    let x = randoms(count, scale: 2).map { bf16Input ? BFloat16($0).float : $0 }
    let dy = randoms(count).map { bf16Gradient ? BFloat16($0).float : $0 }
    let mask = dropout ? DropoutMask(rate: 0.2, seed: 77, stream: 7) : nil
    /// The CPU's dropout with `mask` (the identity without).
    func dropped(_ v: [Float]) -> [Float] {
      guard let mask else { return v }
      var out = v
      CPUOps.dropoutForward(v, &out, count: v.count, p: mask.rate, random: CounterRandom(seed: mask.seed), stream: mask.stream)
      return out
    }
    let dyKept = dropped(dy)
    let gamma = affine ? randoms(dim) : [], beta = affine ? randoms(dim) : []
    let pre = gated ? randoms(rows * stride, scale: 2).map { BFloat16($0).float } : []
    let preU = gated ? (0..<count).map { pre[($0 / dim) * stride + $0 % dim] } : []
    // CPU: LayerNorm, then (gated) the product with u = SiLU(pre_u), and dpre_u through SiLU.
    var n = [Float](repeating: 0, count: count), mean = [Float](repeating: 0, count: rows), rstd = mean
    var y = n, dx = n, du = n, dn = dyKept, u = n, dPreU = n
    var dg = [Float](repeating: 0, count: dim), db = dg
    CPUOps.layerNormForward(x, &n, mean: &mean, rstd: &rstd, gamma: affine ? gamma : nil, beta: affine ? beta : nil, rows: rows, dim: dim, eps: eps)
    if gated {
      CPUOps.siluForward(preU, &u, count: count)
      CPUOps.mulForward(u, n, &y, count: count)
      CPUOps.mulBackward(dyKept, u, n, &du, &dn, count: count)
      CPUOps.siluBackward(du, preU, &dPreU, count: count)
    } else {
      y = n
    }
    y = dropped(y)
    if affine {
      CPUOps.layerNormBackward(dn, x, mean: mean, rstd: rstd, gamma: gamma, &dx, dgamma: &dg, dbeta: &db, rows: rows, dim: dim)
    } else {
      CPUOps.layerNormBackward(dn, x, mean: mean, rstd: rstd, gamma: nil, &dx, dgamma: nil, dbeta: nil, rows: rows, dim: dim)
    }
    // GPU; dPre is NaN-poisoned, so its columns past the gate must stay untouched.
    let gxFloat = bf16Input ? nil : try device.array(x), gxHalf = bf16Input ? try device.array(x.map(BFloat16.init)) : nil
    let gg = affine ? try device.array(gamma) : nil, gb = affine ? try device.array(beta) : nil
    let gy = try device.allocate(Float.self, count: count), gdx = try device.allocate(Float.self, count: count)
    let gmean = try device.allocate(Float.self, count: rows), grstd = try device.allocate(Float.self, count: rows)
    let gdg = try device.array([Float](repeating: 0, count: dim)), gdb = try device.array([Float](repeating: 0, count: dim))
    var gate: SiLUGate?
    if gated {
      gate = SiLUGate(pre: try device.array(pre.map(BFloat16.init)), stride: stride, dPre: try device.allocate(BFloat16.self, count: rows * stride))
      try device.fill(gate!.dPre!, word: 0x7FC0_7FC0)
    }
    func run<X>(_ gx: DeviceArray<X>) throws {
      try device.layerNormForward(x: gx, gamma: gg, beta: gb, gate: gate, y: gy, dropout: mask, mean: gmean, rstd: grstd,
                                  rows: rows, dim: dim, eps: eps)
      func backward<DY>(_ gdy: DeviceArray<DY>) throws {
        try device.layerNormBackward(dy: gdy, x: gx, gamma: gg, beta: gb, gate: gate, dropout: mask, mean: gmean, rstd: grstd, dx: gdx,
                                     dGamma: affine ? gdg : nil, dBeta: affine ? gdb : nil, rows: rows, dim: dim)
      }
      if bf16Gradient { try backward(try device.array(dy.map(BFloat16.init))) } else { try backward(try device.array(dy)) }
    }
    if let gxHalf { try run(gxHalf) } else if let gxFloat { try run(gxFloat) }
    try device.synchronize()
    let label = (gated ? "LayerNorm(o)·SiLU(pre_u)" : (affine ? "LayerNorm affine" : "LayerNorm")) + " dim \(dim)"
      + (bf16Gradient ? ", bf16 dy" : "") + (bf16Input ? ", bf16 x" : "") + (dropout ? ", dropout 0.2" : "")
    record("\(label) forward", try device.download(gy), y, tolerance: 1e-5)
    record("\(label) dx", try device.download(gdx), dx, tolerance: 1e-4)
    if affine {
      record("\(label) dgamma", try device.download(gdg), dg, tolerance: 1e-4)
      record("\(label) dbeta", try device.download(gdb), db, tolerance: 1e-4)
    }
    if let dPre = gate?.dPre {
      let g = try device.download(dPre).map(\.float)
      record("\(label) dpre_u (bf16)", (0..<count).map { g[($0 / dim) * stride + $0 % dim] }, dPreU, tolerance: 4e-3)
      let written = (0..<rows * stride).filter { $0 % stride >= dim && !g[$0].isNaN }.count
      record("\(label) dPre past the gate untouched", [Float(written)], [0], tolerance: 0)
    }
  }

  // MARK: SiLU, dropout

  mutating func checkElementwise() throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    let count = 100_003
    let x = randoms(count, scale: 3), dy = randoms(count)
    var y = [Float](repeating: 0, count: count), dx = y, drop = y, ddrop = y
    CPUOps.siluForward(x, &y, count: count)
    CPUOps.siluBackward(dy, x, &dx, count: count)
    let rng = CounterRandom(seed: 77)
    CPUOps.dropoutForward(x, &drop, count: count, p: 0.2, random: rng, stream: 5)
    CPUOps.dropoutBackward(dy, &ddrop, count: count, p: 0.2, random: rng, stream: 5)
    let gx = try device.array(x), gdy = try device.array(dy)
    let gy = try device.allocate(Float.self, count: count), gdx = try device.allocate(Float.self, count: count)
    let gd = try device.allocate(Float.self, count: count), gdd = try device.allocate(Float.self, count: count)
    try device.siluForward(x: gx, y: gy)
    try device.siluBackward(x: gx, dy: gdy, dx: gdx)
    try device.dropout(gx, into: gd, mask: DropoutMask(rate: 0.2, seed: 77, stream: 5))
    try device.dropout(gdy, into: gdd, mask: DropoutMask(rate: 0.2, seed: 77, stream: 5))
    try device.synchronize()
    record("SiLU forward", try device.download(gy), y, tolerance: 1e-5)
    record("SiLU backward", try device.download(gdx), dx, tolerance: 1e-5)
    record("dropout p=0.2 forward (same counter RNG)", try device.download(gd), drop, tolerance: 1e-6)
    record("dropout p=0.2 backward", try device.download(gdd), ddrop, tolerance: 1e-6)
    // ReLU then dropout (SASRec's feed-forward), and its backward.
    var relu = y, reluDropped = y, dRelu = y
    CPUOps.reluForward(x, &relu, count: count)
    CPUOps.dropoutForward(relu, &reluDropped, count: count, p: 0.2, random: rng, stream: 6)
    CPUOps.dropoutBackward(dy, &dRelu, count: count, p: 0.2, random: rng, stream: 6)
    CPUOps.reluBackward(dRelu, relu, &dRelu, count: count)
    let gr = try device.array(x), grd = try device.allocate(BFloat16.self, count: count)
    let gdr = try device.allocate(Float.self, count: count), gdrh = try device.allocate(BFloat16.self, count: count)
    try device.reluDropoutForward(gr, dropped: grd, mask: DropoutMask(rate: 0.2, seed: 77, stream: 6))
    try device.reluDropoutBackward(gdy, y: gr, dx: gdr, dxBF16: gdrh, mask: DropoutMask(rate: 0.2, seed: 77, stream: 6))
    try device.synchronize()
    record("ReLU forward", try device.download(gr), relu, tolerance: 1e-6)
    record("ReLU + dropout forward (bf16)", try device.download(grd).map(\.float), reluDropped, tolerance: 4e-3)
    record("ReLU + dropout backward", try device.download(gdr), dRelu, tolerance: 1e-6)
  }

  // MARK: embedding

  mutating func checkEmbedding() throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    let vocabulary = 1000, dim = 96, rows = 5000, scale: Float = 3
    let table = randoms(vocabulary * dim)
    stream += 1
    let s = stream
    let ids = (0..<rows).map { Int32(random.below(vocabulary, stream: s, counter: UInt64($0))) }
    let dOut = randoms(rows * dim)
    var out = [Float](repeating: 0, count: rows * dim), dTable = [Float](repeating: 0, count: vocabulary * dim)
    CPUOps.embeddingForward(ids: ids, table: table, scale: scale, positionIndex: nil, positionTable: nil, &out, rows: rows, dim: dim)
    CPUOps.embeddingBackward(dOut, ids: ids, scale: scale, positionIndex: nil, dTable: &dTable, dPositionTable: nil, rows: rows, dim: dim)
    let gt = try device.array(table), gi = try device.array(ids), gdo = try device.array(dOut)
    let go = try device.allocate(Float.self, count: rows * dim), gdt = try device.array([Float](repeating: 0, count: vocabulary * dim))
    try device.embeddingGather(table: gt, ids: gi, out: go, dim: dim, scale: scale)
    try device.embeddingScatterAdd(dOut: gdo, ids: gi, dTable: gdt, dim: dim, scale: scale)
    try device.synchronize()
    record("embedding gather", try device.download(go), out, tolerance: 1e-6)
    record("embedding scatter-add", try device.download(gdt), dTable, tolerance: 1e-5)
    // With the input dropout fused in: the mask over the [rows × dim] output, forward and backward.
    let mask = DropoutMask(rate: 0.3, seed: 11, stream: 5), mixer = CounterRandom(seed: mask.seed)
    var outDropped = out, dOutDropped = dOut, dTableDropped = [Float](repeating: 0, count: vocabulary * dim)
    CPUOps.dropoutForward(out, &outDropped, count: out.count, p: mask.rate, random: mixer, stream: mask.stream)
    CPUOps.dropoutForward(dOut, &dOutDropped, count: dOut.count, p: mask.rate, random: mixer, stream: mask.stream)
    CPUOps.embeddingBackward(dOutDropped, ids: ids, scale: scale, positionIndex: nil, dTable: &dTableDropped, dPositionTable: nil,
                             rows: rows, dim: dim)
    try device.fill(gdt)
    try device.embeddingGather(table: gt, ids: gi, out: go, dim: dim, scale: scale, dropout: mask)
    try device.embeddingScatterAdd(dOut: gdo, ids: gi, dTable: gdt, dim: dim, scale: scale, dropout: mask)
    try device.synchronize()
    record("embedding gather + dropout", try device.download(go), outDropped, tolerance: 1e-6)
    record("embedding scatter-add + dropout", try device.download(gdt), dTableDropped, tolerance: 1e-5)
  }

  // MARK: GEMM

  mutating func checkGEMM() throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    let m = 300, k = 256, n = 520
    let x = randoms(m * k).map { BFloat16($0).float }, w = randoms(k * n).map { BFloat16($0).float }
    let bias = randoms(n), residual = randoms(m * n)
    var ref = [Float](repeating: 0, count: m * n)
    CPUOps.linearForward(x, weight: w, bias: bias, &ref, rows: m, inDim: k, outDim: n)
    CPUOps.addInPlace(&ref, residual, count: m * n)
    let gx = try device.array(x.map(BFloat16.init)), gw = try device.array(w.map(BFloat16.init))
    let gb = try device.array(bias), gd = try device.array(residual)
    try device.gemm(m: m, n: n, k: k, a: gx, b: gw, d: gd, bias: gb, residual: gd)
    try device.synchronize()
    record("GEMM bf16 (cuBLASLt) + bias + residual", try device.download(gd), ref, tolerance: 1e-3)
    // Transposed operands (the backward's dX = dY·Wᵀ and dW = Xᵀ·dY), fp32 operands.
    let dy = randoms(m * n)
    var dxRef = [Float](repeating: 0, count: m * k), dwRef = [Float](repeating: 0, count: k * n), dbRef = [Float](repeating: 0, count: n)
    CPUOps.linearBackward(dy, x, weight: w, &dxRef, dWeight: &dwRef, dBias: &dbRef, rows: m, inDim: k, outDim: n)
    let gdy = try device.array(dy), gx32 = try device.array(x), gw32 = try device.array(w)
    let gdx = try device.allocate(Float.self, count: m * k), gdw = try device.allocate(Float.self, count: k * n)
    try device.gemm(m: m, n: k, k: n, a: gdy, b: gw32, transB: true, d: gdx)
    try device.gemm(m: k, n: n, k: m, a: gx32, transA: true, b: gdy, d: gdw)
    try device.synchronize()
    record("GEMM fp32 dX = dY·Wᵀ (tf32 allowed)", try device.download(gdx), dxRef, tolerance: 1e-2)
    record("GEMM fp32 dW = Xᵀ·dY", try device.download(gdw), dwRef, tolerance: 1e-2)
    let gdb = try device.array([Float](repeating: 0, count: n))
    try device.biasGradient(gdy, into: gdb, rows: m, cols: n)
    try device.synchronize()
    record("bias gradient (column sum of dY)", try device.download(gdb), dbRef, tolerance: 1e-5)
    // From dY's bf16 copy (as the HSTU layer sums it): the CPU sums the same bf16-exact values.
    let dyBF16 = dy.map { BFloat16($0).float }
    let dbRefBF16 = Self.columnSums(dyBF16, rows: m, cols: n)
    let gdyh = try device.array(dyBF16.map(BFloat16.init)), gdbh = try device.array([Float](repeating: 0, count: n))
    try device.biasGradient(gdyh, into: gdbh, rows: m, cols: n)
    try device.synchronize()
    record("bias gradient (column sum of bf16 dY)", try device.download(gdbh), dbRefBF16, tolerance: 1e-5)
  }

  // MARK: sampled softmax

  mutating func checkSampledSoftmax(dim: Int) throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    let rows = 257, itemCount = 50, negatives = 40, temperature: Float = 0.05
    // The kernel reads the table in bf16: the CPU gets the same bf16-exact values.
    let user = randoms(rows * dim), items = randoms((itemCount + 1) * dim).map { BFloat16($0).float }
    stream += 1
    let s = stream
    let positives = (0..<rows).map { Int32(1 + random.below(itemCount, stream: s, counter: UInt64($0))) }
    let rng = CounterRandom(seed: 9)
    let negativeIds = (0..<rows).flatMap { r in
      (0..<negatives).map { Int32(CPUOps.sampledNegative(row: r, sample: $0, negatives: negatives, itemCount: itemCount, random: rng, stream: 3)) }
    }
    // CPU: L2-normalise, loss on the normalised embeddings, then back through the normalisation.
    var uh = user, un = [Float](repeating: 0, count: rows), ih = items, inorm = [Float](repeating: 0, count: itemCount + 1)
    CPUOps.l2NormalizeForward(user, &uh, norms: &un, rows: rows, dim: dim)
    CPUOps.l2NormalizeForward(items, &ih, norms: &inorm, rows: itemCount + 1, dim: dim)
    var duh = [Float](repeating: 0, count: rows * dim), dih = [Float](repeating: 0, count: (itemCount + 1) * dim)
    let loss = CPUOps.sampledSoftmaxLoss(user: uh, positives: positives, rows: rows, dim: dim, items: ih, itemCount: itemCount,
                                         negatives: negatives, temperature: temperature, random: rng, stream: 3, dUser: &duh, dItems: &dih)
    var du = duh, di = dih
    CPUOps.l2NormalizeBackward(duh, uh, norms: un, &du, rows: rows, dim: dim)
    CPUOps.l2NormalizeBackward(dih, ih, norms: inorm, &di, rows: itemCount + 1, dim: dim)
    // GPU: the fused kernel.
    let gu = try device.array(user), gi = try device.array(items.map(BFloat16.init)), gp = try device.array(positives), gn = try device.array(negativeIds)
    let gw = try device.array([Float](repeating: 1, count: rows)), gl = try device.allocate(Float.self, count: rows)
    let gdu = try device.allocate(Float.self, count: rows * dim), gdi = try device.allocate(Float.self, count: (itemCount + 1) * dim)
    try device.fill(gdi, word: 0x7FC0_0000)   // NaN: the kernel must overwrite every row, those without candidates with zeros
    try device.sampledSoftmaxLoss(user: gu, table: gi, positives: gp, negatives: gn, weights: gw, weightSum: Float(rows), loss: gl,
                                  dUser: gdu, dTable: gdi, rows: rows, dim: dim, numNegatives: negatives, temperature: temperature)
    try device.synchronize()
    let gpuLoss = try device.download(gl).reduce(0, +) / Float(rows)
    record("sampled softmax loss (L2-norm, T=0.05, hits masked, dim \(dim))", [gpuLoss], [loss], tolerance: 1e-4)
    record("sampled softmax d user (dim \(dim))", try device.download(gdu), du, tolerance: 1e-3)
    // The table gradient sums bf16 copies of the user rows (fp32 accumulation): 2e-3 at worst in 20
    // random draws of this shape (numpy), so the bf16 tolerance of the other checks.
    record("sampled softmax d items (bf16 user rows, dim \(dim))", try device.download(gdi), di, tolerance: 4e-3)
  }

  /// The bias gradient (column sums) on its own at widths that take the 16-byte kernels (several
  /// row lanes per block at 512, one at 1032 bf16 and 1024 fp32) and at widths that do not (50, and 1032 fp32), from
  /// fp32 and from bf16 dY, against double-precision CPU sums of the same values. Its inputs are
  /// `sideRandoms`, so the checks after it keep theirs.
  mutating func checkBiasGradient() throws {
    for (cols, tag) in [(512, UInt64(8)), (1032, 9), (1024, 10), (50, 11)] {
      let mark = device.arena.mark()
      defer { device.arena.release(to: mark) }
      let rows = 3001, dy = sideRandoms(rows * cols, tag: tag).map { BFloat16($0).float }
      let reference = Self.columnSums(dy, rows: rows, cols: cols)
      let prior = sideRandoms(cols, tag: tag + 100)
      let fp32 = try device.array(prior), bf16 = try device.array(prior)
      try device.biasGradient(try device.array(dy), into: fp32, rows: rows, cols: cols)
      try device.biasGradient(try device.array(dy.map(BFloat16.init)), into: bf16, rows: rows, cols: cols)
      try device.synchronize()
      let expected = zip(reference, prior).map { $0 + $1 }
      record("bias gradient, \(cols) columns, fp32 dY", try device.download(fp32), expected, tolerance: 1e-5)
      record("bias gradient, \(cols) columns, bf16 dY", try device.download(bf16), expected, tolerance: 1e-5)
    }
  }

  // MARK: AdamW

  /// AdamW at a count that takes the 4-wide kernel (with the bf16 shadow) and at one that does not.
  mutating func checkAdamW() throws {
    for count in [70_000, 70_001] {
      let mark = device.arena.mark()
      defer { device.arena.release(to: mark) }
      var p = randoms(count), m = randoms(count, scale: 0.1), v = randoms(count, scale: 0.1).map { $0 * $0 }
      let g = randoms(count)
      let gp = try device.array(p), gg = try device.array(g), gm = try device.array(m), gv = try device.array(v)
      let shadow = try device.allocate(BFloat16.self, count: count)
      CPUOps.adamW(parameters: &p, gradients: g, m: &m, v: &v, count: count, learningRate: 1e-3, beta1: 0.9, beta2: 0.98,
                   epsilon: 1e-8, weightDecay: 0.01, step: 7)
      try device.adamW(parameters: gp, gradients: gg, m: gm, v: gv, shadow: shadow, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8,
                       weightDecay: 0.01, step: 7)
      try device.synchronize()
      record("AdamW \(count) parameters", try device.download(gp), p, tolerance: 1e-5)
      record("AdamW \(count) first moment", try device.download(gm), m, tolerance: 1e-5)
      record("AdamW \(count) second moment", try device.download(gv), v, tolerance: 1e-5)
      record("AdamW \(count) bf16 shadow", try device.download(shadow).map(\.float), p.map { BFloat16($0).float }, tolerance: 4e-3)
    }
  }

  /// AdamW over a `[rows, dim]` table in two launches, the rows marked with the current stamp and
  /// the others (as a training step splits the item table's update), against one CPU AdamW over
  /// all rows; after the first launch the rows it did not select must be untouched. Its inputs are
  /// `sideRandoms`, so the checks after it keep theirs.
  mutating func checkAdamWRows() throws {
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    let rows = 1000, dim = 64, count = rows * dim, stamp: UInt32 = 5
    let p0 = sideRandoms(count, tag: 3), g = sideRandoms(count, tag: 4)
    let m0 = sideRandoms(count, scale: 0.1, tag: 5), v0 = sideRandoms(count, scale: 0.1, tag: 6).map { $0 * $0 }
    // Rows marked with this step's stamp, with an older one, or never (0).
    let stamps: [UInt32] = sideRandoms(rows, tag: 7).map { [stamp, stamp - 1, 0][Int(abs($0) * 2) % 3] }
    var p = p0, m = m0, v = v0
    CPUOps.adamW(parameters: &p, gradients: g, m: &m, v: &v, count: count, learningRate: 1e-3, beta1: 0.9, beta2: 0.98,
                 epsilon: 1e-8, weightDecay: 0.01, step: 7)
    let gp = try device.array(p0), gg = try device.array(g), gm = try device.array(m0), gv = try device.array(v0)
    let shadow = try device.allocate(BFloat16.self, count: count), gs = try device.array(stamps)
    try device.fill(shadow)
    for touched in [false, true] {
      try device.adamW(parameters: gp, gradients: gg, m: gm, v: gv, shadow: shadow,
                       rows: AdamWRows(stamps: gs, stamp: stamp, dim: dim, touched: touched),
                       lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01, step: 7)
      if !touched {
        let after = try device.download(gp)
        let marked = (0..<count).filter { stamps[$0 / dim] == stamp }
        record("AdamW unmarked rows leave the marked ones alone", marked.map { after[$0] }, marked.map { p0[$0] }, tolerance: 0)
      }
    }
    try device.synchronize()
    record("AdamW marked + unmarked rows: parameters", try device.download(gp), p, tolerance: 1e-5)
    record("AdamW marked + unmarked rows: second moment", try device.download(gv), v, tolerance: 1e-5)
    record("AdamW marked + unmarked rows: bf16 shadow", try device.download(shadow).map(\.float), p.map { BFloat16($0).float }, tolerance: 4e-3)
  }

  // MARK: loss sum

  /// The epoch's device-side loss total: a step's row losses added into an accumulator that
  /// already holds a value, at counts below, at and above one pass of the kernel's unrolled loop.
  /// Its inputs are `sideRandoms`, so the checks after it keep theirs.
  mutating func checkLossSum() throws {
    for count in [1000, 8192, 25_601] {
      let mark = device.arena.mark()
      defer { device.arena.release(to: mark) }
      let x = sideRandoms(count, tag: 2).map { abs($0) * 5 }, scale = 1 / Float(count), prior: Float = 2.5
      let gx = try device.array(x), acc = try device.array([prior])
      try device.accumulateSum(gx, scale: scale, into: acc)
      try device.synchronize()
      let cpu = Float(Double(prior) + x.reduce(0.0) { $0 + Double($1) } * Double(scale))
      record("loss sum of \(count) rows", try device.download(acc), [cpu], tolerance: 1e-5)
    }
  }
}
