import ArgumentParser
import Foundation
import UltraHSTU

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure training throughput, attention scaling and (on a GPU) the training step's MFU; results go to bench/results/.",
    subcommands: [BenchTrain.self, BenchAttention.self, GPUStepBench.self], defaultSubcommand: BenchTrain.self)
}

/// Times `body` `repeats` times after one warm-up; returns the median seconds.
func medianSeconds(repeats: Int, _ body: () -> Void) -> Double {
  body()
  var times: [Double] = []
  for _ in 0..<repeats {
    let t0 = DispatchTime.now().uptimeNanoseconds
    body()
    times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
  }
  return times.sorted()[times.count / 2]
}

/// OpenBLAS sgemm GFLOP/s on an m×k · k×n product.
func sgemmGFLOPs(m: Int, n: Int, k: Int) -> Double {
  let a = HostBuffer(count: m * k), b = HostBuffer(count: k * n), c = HostBuffer(count: m * n)
  for i in 0..<(m * k) { a[i] = Float(i % 7) * 0.1 }
  for i in 0..<(k * n) { b[i] = Float(i % 5) * 0.1 }
  let s = medianSeconds(repeats: 5) {
    BLAS.shared.sgemm(m: m, n: n, k: k, a: a.pointer, lda: k, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
  }
  return 2 * Double(m * n * k) / s / 1e9
}

func writeResult(_ object: [String: Any], to path: String) throws {
  let json = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
  try writeAtomically(json, to: path)
  FileHandle.standardError.write("wrote \(path)\n".data(using: .utf8)!)
}

struct BenchTrain: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train",
    abstract: "Training tokens/s and GFLOP/s of a preset: on the CPU next to OpenBLAS sgemm GFLOP/s in the same run, or on a GPU.")

  @OptionGroup var dataOptions: DataOptions

  @OptionGroup var deviceOption: DeviceOption

  @Option(help: "Timed training steps (after two warm-up steps).")
  var steps = 30

  @Option(help: "Output JSON (default bench/results/<device>-train-<preset>.json, device cpu or gpu).")
  var output: String?

  func run() throws {
    let preset = try dataOptions.resolvedPreset()
    let (data, name) = try dataOptions.load()
    let info = RunInfo.current()
    let model = makeModel(config: preset.model, data: data, seed: preset.train.seed)
    let trainer = Trainer(model: model, train: preset.train, data: data, presetName: preset.name, datasetName: name)
    let batches = trainer.batches(epoch: 1)
    guard !batches.isEmpty else { throw ValidationError("the dataset has no training sequences") }
    let lengths = trainer.trainingLengths
    let flopsPerToken = trainer.flopsPerSample().training.total * Double(lengths.count) / Double(max(1, lengths.reduce(0, +)))
    if let engine = try deviceOption.engine(model: model, train: preset.train) {
      trainer.engine = engine
      try benchEngine(trainer, engine, batches, flopsPerToken: flopsPerToken, datasetName: name, info: info)
      return
    }
    let tokensPerSecond = try timeSteps(trainer, batches)
    let evalSeconds = medianSeconds(repeats: 1) {
      _ = Evaluator.evaluate(model: model, data: data, split: trainer.split, stage: .validation)
    }
    let achieved = tokensPerSecond * flopsPerToken / 1e9
    let rows = batches[0].tokenCount, d = preset.model.embeddingDim
    let projectionShape = sgemmGFLOPs(m: rows, n: 2 * preset.model.heads * (preset.model.linearDim + preset.model.attentionDim), k: d)
    let square = sgemmGFLOPs(m: 1024, n: 1024, k: 1024)
    let epochSeconds = Double(trainer.tokensPerEpoch) / tokensPerSecond + evalSeconds
    var lines = [
      "preset \(preset.name) on \(name), \(Parallel.workers) threads, OpenBLAS core \(BLAS.shared.coreName)",
      String(format: "training: %.0f tokens/s, %.0f FLOPs/token -> %.1f GFLOP/s", tokensPerSecond, flopsPerToken, achieved),
      String(format: "OpenBLAS sgemm: %.1f GFLOP/s (1024^3), %.1f GFLOP/s (%dx%dx%d, the projection's shape)",
             square, projectionShape, rows, 2 * preset.model.heads * (preset.model.linearDim + preset.model.attentionDim), d),
      String(format: "training efficiency: %.0f%% of square sgemm", 100 * achieved / square),
      String(format: "one validation pass: %.2f s; projected 101 epochs (train + validation each epoch): %.1f min",
             evalSeconds, 101 * epochSeconds / 60),
    ]
    // Selective rematerialisation: the same steps with recomputed activations.
    var remat: [String: Any] = [:]
    if preset.model.kind == .hstu, preset.model.channels.isEmpty, let plain = model as? SequentialModel {
      var config = preset.model
      config.rematerialize = true
      let rematModel = SequentialModel(config: config, itemCount: data.itemCount, seed: preset.train.seed)
      let rematTrainer = Trainer(model: rematModel, train: preset.train, data: data, presetName: preset.name, datasetName: name)
      let rematSpeed = try timeSteps(rematTrainer, batches)
      remat = ["activation_bytes": plain.activationBytes, "activation_bytes_rematerialized": rematModel.activationBytes,
               "tokens_per_second_rematerialized": rematSpeed]
      lines.append(String(format: "selective rematerialisation: kept activations %.1f MB -> %.1f MB (%.0f%% less), %.0f tokens/s (%.1f%% slower)",
                          Double(plain.activationBytes) / 1e6, Double(rematModel.activationBytes) / 1e6,
                          100 * (1 - Double(rematModel.activationBytes) / Double(plain.activationBytes)), rematSpeed,
                          100 * (1 - rematSpeed / tokensPerSecond)))
    }
    lines.forEach { print($0) }
    try writeResult(remat.merging([
      "preset": preset.name, "dataset": name, "threads": Parallel.workers, "openblas_core": BLAS.shared.coreName,
      "train_tokens_per_second": tokensPerSecond, "train_flops_per_token": flopsPerToken, "train_gflops": achieved,
      "sgemm_gflops_square_1024": square, "sgemm_gflops_projection_shape": projectionShape,
      "validation_seconds": evalSeconds, "tokens_per_epoch": trainer.tokensPerEpoch,
      "projected_101_epochs_minutes": 101 * epochSeconds / 60, "timed_steps": steps,
      "date": info.date, "commit": info.commit, "machine": info.machine,
    ]) { a, _ in a }, to: output ?? "bench/results/cpu-train-\(preset.name).json")
  }

  /// Tokens/s over `steps` training steps after two warm-up steps, on the trainer's engine when it
  /// has one (the loss read at the end waits for the queued GPU work).
  func timeSteps(_ trainer: Trainer, _ batches: [SequenceBatch]) throws -> Double {
    func step(_ i: Int) throws {
      let b = batches[i % batches.count]
      if let engine = trainer.engine { try engine.train(b, step: UInt64(i + 1)) } else { _ = trainer.step(b) }
    }
    for i in 0..<2 { try step(i) }
    _ = try trainer.engine?.takeLossSum()
    var tokens = 0
    let t0 = Date()
    for i in 2..<(steps + 2) {
      try step(i)
      tokens += batches[i % batches.count].tokenCount
    }
    _ = try trainer.engine?.takeLossSum()
    return Double(tokens) / Date().timeIntervalSince(t0)
  }

  /// The GPU form: training tokens/s and TFLOP/s of the preset's real batches, one validation pass.
  func benchEngine(_ trainer: Trainer, _ engine: TrainingEngine, _ batches: [SequenceBatch], flopsPerToken: Double,
                   datasetName name: String, info: RunInfo) throws {
    let tokensPerSecond = try timeSteps(trainer, batches)
    let t0 = Date()
    _ = try engine.evaluate(trainer.data, split: trainer.split, stage: .validation, actions: trainer.actions)
    let evalSeconds = Date().timeIntervalSince(t0)
    let epochSeconds = Double(trainer.tokensPerEpoch) / tokensPerSecond + evalSeconds
    let gpu = (engine as? CUDAEngine)?.gpu.device.name ?? "gpu"
    print("preset \(trainer.presetName) on \(name), \(gpu)")
    print(String(format: "training: %.0f tokens/s, %.0f FLOPs/token -> %.2f TFLOP/s", tokensPerSecond, flopsPerToken,
                 tokensPerSecond * flopsPerToken / 1e12))
    print(String(format: "one validation pass: %.3f s; projected 101 epochs (train + validation each epoch): %.1f s",
                 evalSeconds, 101 * epochSeconds))
    try writeResult([
      "preset": trainer.presetName, "dataset": name, "device": gpu, "train_tokens_per_second": tokensPerSecond,
      "train_flops_per_token": flopsPerToken, "train_tflops": tokensPerSecond * flopsPerToken / 1e12,
      "validation_seconds": evalSeconds, "tokens_per_epoch": trainer.tokensPerEpoch,
      "projected_101_epochs_seconds": 101 * epochSeconds, "timed_steps": steps,
      "date": info.date, "commit": info.commit, "machine": info.machine,
    ], to: output ?? "bench/results/gpu-train-\(trainer.presetName).json")
  }
}

struct BenchAttention: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "attention",
    abstract: "Forward+backward time per token of the CPU HSTU attention op: semi-local vs full causal, L = 256 … 8192.")

  @Option(help: "Local window K1.") var k1 = 64
  @Option(help: "Global rows/columns K2.") var k2 = 64
  @Option(help: "Heads.") var heads = 2
  @Option(help: "Head dimension.") var headDim = 32
  @Option(help: "Tokens per measurement (sequences of length L are batched up to this).") var tokens = 8192
  @Option(help: "Comma-separated lengths.") var lengths = "256,512,1024,2048,4096,8192"
  @Option(help: "Output JSON.") var output = "bench/results/sla-scaling.json"

  func run() throws {
    let ls = lengths.split(separator: ",").compactMap { Int($0) }
    guard !ls.isEmpty, ls.allSatisfy({ $0 > 0 }) else { throw ValidationError("--lengths must be positive integers") }
    try BLAS.check()
    let info = RunInfo.current()
    let masks: [(String, AttentionMask)] = [("causal", .causal), ("sla-meta", .semiLocalMeta(k1: k1, k2: k2)),
                                            ("sla-prefix", .semiLocalPrefix(k1: k1, k2: k2))]
    var rows: [[String: Any]] = []
    print("mask        L      s/token (fwd+bwd)")
    for l in ls {
      let batch = max(1, tokens / l), t = batch * l, width = heads * headDim
      let q = HostBuffer(count: t * width), k = HostBuffer(count: t * width), v = HostBuffer(count: t * width)
      let r = CounterRandom(seed: 1)
      for i in 0..<(t * width) {
        q[i] = 0.1 * r.normal(stream: 1, counter: UInt64(i)); k[i] = 0.1 * r.normal(stream: 2, counter: UInt64(i))
        v[i] = r.normal(stream: 3, counter: UInt64(i))
      }
      let out = HostBuffer(count: t * width), dq = HostBuffer(count: t * width), dk = HostBuffer(count: t * width)
      let dv = HostBuffer(count: t * width)
      let offsets = HostArray<Int>()
      offsets.assign((0...batch).map { $0 * l })
      let shape = JaggedShape(offsets: offsets.pointer, batch: batch)
      for (name, mask) in masks {
        let s = medianSeconds(repeats: 3) {
          CPUOps.hstuAttentionForward(q: q.pointer, k: k.pointer, v: v.pointer, out: out.pointer, shape: shape, heads: heads,
                                      attentionDim: headDim, linearDim: headDim, mask: mask, normalizer: .fixed(l), bias: .none)
          CPUOps.hstuAttentionBackward(dout: v.pointer, q: q.pointer, k: k.pointer, v: v.pointer, dq: dq.pointer, dk: dk.pointer,
                                       dv: dv.pointer, shape: shape, heads: heads, attentionDim: headDim, linearDim: headDim,
                                       mask: mask, normalizer: .fixed(l), bias: .none, biasGradient: .init())
        }
        let perToken = s / Double(t)
        print(String(format: "%-10@ %5d  %.3e", name as NSString, l, perToken))
        rows.append(["mask": name, "L": l, "K1": mask.isFullCausal ? 0 : k1, "K2": mask.isFullCausal ? 0 : k2,
                     "heads": heads, "head_dim": headDim, "seconds_per_token": perToken,
                     "kept_pairs_per_token": Double(mask.keyCount(length: l)) / Double(l),
                     "date": info.date, "commit": info.commit, "machine": info.machine])
      }
    }
    let json = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys])
    try writeAtomically(json, to: output)
    FileHandle.standardError.write("wrote \(output)\n".data(using: .utf8)!)
  }
}
