import ArgumentParser
import Foundation
import UltraHSTU

/// `hstu bench step` (also `hstu gpu-bench step`): time whole training steps (forward, loss,
/// backward, AdamW) of a synthetic HSTU on random full-length sequences; optionally dump weights,
/// batch, negatives, loss and gradients of one dropout-free step for `bench/gpu/torch_reference.py`.
/// MFU is reported against the cuBLASLt bf16 GEMM rate measured in the same process (`ReferenceGEMM`:
/// 8192³, random data) and against the H200's 989 TF/s dense bf16 datasheet peak.
extension AttentionKernel: ExpressibleByArgument {}

struct GPUStepBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "step",
    abstract: "Time HSTU training steps on the GPU: tokens/s, TFLOP/s and MFU against the bf16 GEMM rate measured in the same process.")

  @Option var dim = 256
  @Option var layers = 4
  @Option var heads = 4
  @Option(help: "Query/key and value width per head.")
  var headDim = 64
  @Option var length = 200
  @Option var batch = 128
  @Option(help: "Semi-local attention (Meta reading) K1 = K2 = this; 0 = full causal.")
  var semiLocal = 0
  @Flag(inversion: .prefixedNo,
        help: ArgumentHelp("The relative-position attention bias rab^p (research HSTU, as the presets train). --no-position-bias "
                           + "times the layer of the ULTRA-HSTU paper's Eq. 1–5 and of Meta's DLRMv3 HSTU (no attention bias; "
                           + "positions come from the input embedding), the model NVIDIA's HSTU training MFU is measured on."))
  var positionBias = true
  @Option var items = 100_000
  @Option var negatives = 128
  @Option var repeats = 10
  @Option(help: "Dropout of the timed steps (the dumped step always runs without dropout).")
  var dropout: Float = 0.2
  @Option(help: "Folder for weights.safetensors + step.safetensors (batch, negatives, loss, gradients).")
  var dump: String?
  @Option(help: "Size of the square bf16 GEMM whose rate is the MFU reference (0: skip).")
  var gemmSize = 8192
  @Flag(help: "Also time the forward alone, forward + loss + backward, AdamW, and the host's enqueue time of a step.")
  var breakdown = false
  @Option(help: "HSTU attention forward kernel: \(AttentionKernel.allCases.map(\.rawValue).joined(separator: ", ")).")
  var attentionForward: AttentionKernel = .automatic
  @Option(help: "Attention backward kernel: \(AttentionKernel.allCases.map(\.rawValue).joined(separator: ", ")).")
  var attentionBackward: AttentionKernel = .automatic
  @Flag(inversion: .prefixedNo,
        help: "Time cuBLASLt's candidate algorithms on each GEMM shape's first product and keep the fastest (the default), or take its heuristic's first choice.")
  var gemmTuning = true
  @Option(help: ArgumentHelp("GiB reserved for the CUDA arena (large for large --items; a profiler that replays kernels "
                             + "saves and restores all of it on every pass).", valueName: "GiB"))
  var gpuMemory = 100

  func validate() throws {
    try validateGPUMemory(gpuMemory)
  }

  func run() throws {
    var config = ModelConfig(kind: .hstu, embeddingDim: dim, layers: layers, heads: heads, attentionDim: headDim, linearDim: headDim,
                             ffnDim: 0, maxSequenceLength: length, inputDropout: 0, linearDropout: 0, normalizer: .fixed(length),
                             positionBias: positionBias, timeBias: false)
    let mask = semiLocal > 0 ? AttentionMask.semiLocalMeta(k1: semiLocal, k2: semiLocal) : .causal
    config.mask = mask
    var train = TrainConfig()
    train.negatives = negatives
    let device = try CUDADevice(arenaBytes: gpuMemory << 30)
    device.attentionForwardKernel = attentionForward
    device.attentionBackwardKernel = attentionBackward
    device.tunesGEMMs = gemmTuning
    device.tuningLog = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }
    let model = SequentialModel(config: config, itemCount: items, seed: 3)
    let random = CounterRandom(seed: 17)
    var sample = SequenceBatch()
    for b in 0..<batch {
      for p in 0..<length {
        let c = UInt64(sample.items.count)
        sample.items.append(Int32(1 + random.below(items, stream: 1, counter: c)))
        sample.positions.append(Int32(p))
        sample.nextItems.append(Int32(1 + random.below(items, stream: 2, counter: c)))
      }
      sample.offsets.append(sample.items.count)
      sample.users.append(b)
    }
    let gpu = try CUDAModel(model, device: device, maxTokens: sample.tokenCount, maxSequences: batch)
    try gpu.setBatch(sample)
    if let dump {
      try gpu.lossAndGradients(train: train, step: 1)
      let loss = try gpu.takeLossSum()
      let gradients = try device.download(gpu.gradients)
      let negs = try device.download(gpu.negatives).prefix(sample.tokenCount * negatives)
      try FileManager.default.createDirectory(atPath: dump, withIntermediateDirectories: true)
      try Checkpoint(directory: dump).saveWeights(model.parameters, name: "weights.safetensors", metadata: [:])
      var tensors: [(String, SafeTensors.Tensor)] = [
        ("items", .init(shape: [sample.tokenCount], values: sample.items.map(Float.init))),
        ("labels", .init(shape: [sample.tokenCount], values: sample.nextItems.map(Float.init))),
        ("negatives", .init(shape: [sample.tokenCount, negatives], values: negs.map(Float.init))),
        ("loss", .init(shape: [1], values: [loss])),
      ]
      for e in gpu.entries { tensors.append(("grad." + e.name, .init(shape: e.shape, values: Array(gradients[e.offset..<(e.offset + e.count)])))) }
      let meta = ["batch": "\(batch)", "length": "\(length)", "dim": "\(dim)", "layers": "\(layers)", "heads": "\(heads)",
                  "head_dim": "\(headDim)", "semi_local": "\(semiLocal)", "position_bias": positionBias ? "1" : "0", "items": "\(items)", "temperature": "\(train.temperature)"]
      try writeAtomically(SafeTensors.encode(tensors, metadata: meta), to: dump + "/step.safetensors")
    }
    config.inputDropout = dropout
    config.linearDropout = dropout
    let timed = try CUDAModel(SequentialModel(config: config, itemCount: items, seed: 3), device: device,
                              maxTokens: sample.tokenCount, maxSequences: batch)
    try timed.setBatch(sample)
    let ms = try device.time(warmup: 3, repeats: repeats) {
      try timed.trainingStep(train: train, step: UInt64(timed.step + 1))
    }.sorted()[repeats / 2]
    if breakdown {
      func median(_ body: () throws -> Void) throws -> Double { try device.time(warmup: 2, repeats: repeats, body).sorted()[repeats / 2] }
      let forward = try median { try timed.forward(training: true, seed: 1, step: 1) }
      let gradients = try median { try timed.lossAndGradients(train: train, step: 1) }
      let adam = try median { try timed.adamWStep(train) }
      try device.synchronize()
      let start = DispatchTime.now().uptimeNanoseconds
      try timed.trainingStep(train: train, step: 1)
      let enqueue = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
      try device.synchronize()
      print(String(format: "breakdown ms: forward %.3f, loss+gradients (incl. forward) %.3f, AdamW %.3f, host enqueue of one step %.3f",
                   forward, gradients, adam, enqueue))
    }
    let tokens = Double(sample.tokenCount)
    // Model FLOPs per step: the GEMMs (×3 for forward + backward) and the attention pairs the mask
    // keeps: two products forward, five backward (FlashAttention's count, which includes recomputing
    // QKᵀ); `mfu_excluding_recompute` counts four backward products (PaLM's MFU, no recomputation).
    let w = 2 * heads * 2 * headDim, hv = heads * headDim
    let gemm = 6 * tokens * Double(dim * w + hv * dim) * Double(layers)
    let pairs = Double(AttentionShape.keptPairs(lengths: [length], mask: mask)) * Double(batch * heads * layers)
    let product = pairs * 2 * Double(headDim)   // one L×L×d product over the kept pairs
    let attention = (2 + 5) * product, attentionWithoutRecompute = (2 + 4) * product
    let tflops = (gemm + attention) / (ms * 1e-3) / 1e12
    let tflopsWithoutRecompute = (gemm + attentionWithoutRecompute) / (ms * 1e-3) / 1e12
    let reference = gemmSize > 0 ? try ReferenceGEMM(device: device, size: gemmSize) : nil
    let gemmRate = reference?.best ?? .nan
    print(String(format: "{\"swift_cuda_ms_per_step\": %.3f, \"tokens_per_s\": %.0f, \"model_tflops_per_step\": %.4f, \"gemm_tflops_per_step\": %.4f, \"achieved_tflops\": %.1f, \"bf16_gemm_tflops\": %.1f, \"mfu_vs_measured_gemm\": %.4f, \"mfu_excluding_recompute\": %.4f, \"mfu_vs_989_bf16\": %.4f, \"d\": %d, \"layers\": %d, \"heads\": %d, \"head_dim\": %d, \"L\": %d, \"batch\": %d, \"semi_local\": %d, \"position_bias\": %@, \"attention_forward\": \"%@\", \"attention_backward\": \"%@\", \"gemm_tuning\": %@, \"bf16_gemm_tflops_heuristic\": %@, \"bf16_gemm_tflops_tuned\": %@}",
                 ms, tokens / (ms * 1e-3), (gemm + attention) / 1e12, gemm / 1e12, tflops, gemmRate, tflops / gemmRate,
                 tflopsWithoutRecompute / gemmRate, tflops / 989,
                 dim, layers, heads, headDim, length, batch, semiLocal, (positionBias ? "true" : "false") as NSString, attentionForward.rawValue as NSString,
                 attentionBackward.rawValue as NSString, (gemmTuning ? "true" : "false") as NSString,
                 jsonNumber(reference?.heuristic) as NSString, jsonNumber(reference?.tuned) as NSString))
  }

  /// `x` with one decimal, or null when not measured.
  func jsonNumber(_ x: Double?) -> String { x.map { String(format: "%.1f", $0) } ?? "null" }
}
