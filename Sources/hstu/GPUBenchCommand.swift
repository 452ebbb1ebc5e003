import ArgumentParser
import Foundation
import UltraHSTU

/// `hstu gpu-bench`: the GPU benchmarks, `attention` (the default) and `step`. The group has no
/// options of its own: a parent's option takes its name from every subcommand (`gpu-bench step
/// --heads 8` would have set the attention table's heads and left the step's at 4).
struct GPUBench: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "gpu-bench", abstract: "Benchmark the CUDA kernels and training step.",
                                                  subcommands: [GPUAttentionBench.self, GPUStepBench.self],
                                                  defaultSubcommand: GPUAttentionBench.self)
}

/// `hstu gpu-bench [attention]`: HSTU attention forward/backward TFLOP/s (FLOPs the mask keeps) for
/// L = 1k…16k, head dim 128, next to the cuBLASLt bf16 GEMM rate measured in the same run; and
/// semi-local (K1 = K2 = 256 unless `--windows` says otherwise) and local-window time per token vs
/// L. Writes gpu-attention.json and gpu-attention.md.
struct GPUAttentionBench: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "attention", abstract: "Benchmark the CUDA HSTU attention against cuBLASLt.")

  @Option(help: "Folder for gpu-attention.json and gpu-attention.md.")
  var out: String = "bench/results"

  @Option(help: "Commit recorded with the results.")
  var commit: String = "unknown"

  @Option(help: "Tokens per call (batch = tokens / L).")
  var tokens: Int = 32768

  @Option(help: "Heads.")
  var heads: Int = 4

  @Option(help: "Timed repeats (median reported).")
  var repeats: Int = 10

  @Option(parsing: .upToNextOption, help: "Sequence lengths L.")
  var lengths: [Int] = [1024, 2048, 4096, 8192, 16384]

  @Option(help: "Head dim of q, k and v.")
  var attentionHeadDim = 128

  @Option(parsing: .upToNextOption, help: "Masks to time: causal, semi-local, local.")
  var masks: [BenchMask] = [.causal, .semiLocal]

  @Option(parsing: .upToNextOption,
          help: "K1 = K2 of the semi-local mask (local window K1, the last K2 rows global), K1 of the local one; several values time each.")
  var windows: [Int] = [256]

  @Flag(help: "Add the relative-position bias rab^p (L entries) to the scores, and its gradient to the backward, as HSTU layers do.")
  var positionBias = false

  func validate() throws {
    guard windows.allSatisfy({ $0 > 0 }) else { throw ValidationError("--windows takes positive sizes, got \(windows)") }
  }

  func run() throws {
    let device = try CUDADevice(arenaBytes: 24 << 30)
    let random = CounterRandom(seed: 5)
    func median(_ t: [Double]) -> Double { t.sorted()[t.count / 2] }
    func noise(_ count: Int, _ stream: UInt64) -> [BFloat16] {
      (0..<count).map { BFloat16(random.unit(stream: stream, counter: UInt64($0)) - 0.5) }
    }

    let reference = try ReferenceGEMM(device: device, repeats: repeats)
    let gemmTF = reference.best
    print(String(format: "device %@: cuBLASLt bf16 GEMM 8192^3: %.3f ms, %.1f TFLOP/s (heuristic algorithm %.1f, tuned %.1f)",
                 device.name, reference.milliseconds, gemmTF, reference.heuristic, reference.tuned ?? .nan))

    /// `pairsPerToken`: the (query, key) pairs the mask keeps per token, what the TF/s count; a mask whose
    /// pairs per token grow with L (the first rows' shorter windows, semi-local's global rows) costs more per token.
    struct Row: Codable { var mask: String; var L: Int; var batch: Int; var pairsPerToken: Double; var forwardMs: Double; var backwardMs: Double
      var forwardTFLOPs: Double; var backwardTFLOPs: Double; var forwardOfGEMM: Double; var nsPerTokenForward: Double; var nsPerTokenBackward: Double
      /// The kernels that ran (wgmma where the shape allows it), and the mma.sync kernels' times on the same inputs.
      var forwardKernel: String; var forwardMmaSyncMs: Double; var forwardMmaSyncTFLOPs: Double
      var backwardMmaSyncMs: Double; var backwardMmaSyncTFLOPs: Double }
    var rows: [Row] = []
    let d = attentionHeadDim
    for (maskName, mask) in masks.flatMap({ $0.variants(windows: windows) }) {
      for L in lengths {
        let batch = max(1, tokens / L), total = batch * L
        let mark = device.arena.mark()
        defer { device.arena.release(to: mark) }
        let shape = AttentionShape(batch: batch, maxLength: L, heads: heads, dqk: d, dv: d, normalizer: .fixed(L), mask: mask)
        let q = try device.array(noise(total * heads * d, 10)), k = try device.array(noise(total * heads * d, 11))
        let v = try device.array(noise(total * heads * d, 12)), dO = try device.array(noise(total * heads * d, 13))
        let offsets = try device.array((0...batch).map { Int32($0 * L) })
        let o = try device.allocate(Float.self, count: total * heads * d)
        let dq = try device.allocate(Float.self, count: total * heads * d), dk = try device.allocate(Float.self, count: total * heads * d)
        let dv = try device.allocate(Float.self, count: total * heads * d)
        let pos = positionBias ? try device.array((0..<L).map { Float(random.unit(stream: 14, counter: UInt64($0)) - 0.5) * 0.1 }) : nil
        let dPos = positionBias ? try device.allocate(Float.self, count: L) : nil
        let kernel = device.attentionKernels(shape)[0]
        let fwd = median(try device.time(repeats: repeats) { try device.hstuAttentionForward(shape, q: q, k: k, v: v, offsets: offsets, pos: pos, out: o, kernel: kernel) })
        let fwdMma = median(try device.time(repeats: repeats) {
          try device.hstuAttentionForward(shape, q: q, k: k, v: v, offsets: offsets, pos: pos, out: o, kernel: .mmaSync)
        })
        func backward(_ kernel: AttentionKernel) throws -> Double {
          median(try device.time(repeats: repeats) {
            try device.hstuAttentionBackward(shape, q: q, k: k, v: v, dOut: dO, offsets: offsets, pos: pos, dq: dq,
                                             keys: .separate(dk: dk, dv: dv), dPos: dPos, kernel: kernel)
          })
        }
        let bwd = try backward(kernel), bwdMma = try backward(.mmaSync)
        // TFLOP/s of `ms` at 2 · `macsPerPair` FLOPs per kept pair: forward 2·d, backward 5·d.
        let kept = Double(AttentionShape.keptPairs(lengths: [L], mask: mask)) * Double(batch * heads)
        func tflops(_ ms: Double, macsPerPair: Int) -> Double { 2 * kept * Double(macsPerPair) / (ms * 1e-3) / 1e12 }
        let fwdTF = tflops(fwd, macsPerPair: 2 * d), fwdMmaTF = tflops(fwdMma, macsPerPair: 2 * d)
        let bwdTF = tflops(bwd, macsPerPair: 5 * d), bwdMmaTF = tflops(bwdMma, macsPerPair: 5 * d)
        let row = Row(mask: maskName, L: L, batch: batch, pairsPerToken: kept / Double(total * heads), forwardMs: fwd, backwardMs: bwd, forwardTFLOPs: fwdTF, backwardTFLOPs: bwdTF,
                      forwardOfGEMM: fwdTF / gemmTF, nsPerTokenForward: fwd * 1e6 / Double(total), nsPerTokenBackward: bwd * 1e6 / Double(total),
                      forwardKernel: kernel.rawValue, forwardMmaSyncMs: fwdMma, forwardMmaSyncTFLOPs: fwdMmaTF,
                      backwardMmaSyncMs: bwdMma, backwardMmaSyncTFLOPs: bwdMmaTF)
        rows.append(row)
        print(String(format: "%-22@ L=%5d B=%3d  fwd (%@) %8.3f ms %6.1f TF/s (%4.1f%% of GEMM), mma.sync %6.1f TF/s  bwd %8.3f ms %6.1f TF/s, mma.sync %6.1f TF/s  fwd %.2f bwd %.2f ns/token  %.1f pairs/token",
                     maskName as NSString, L, batch, kernel.rawValue as NSString, fwd, fwdTF, 100 * fwdTF / gemmTF, fwdMmaTF, bwd, bwdTF, bwdMmaTF,
                     row.nsPerTokenForward, row.nsPerTokenBackward, row.pairsPerToken))
      }
    }

    struct Report: Codable { var date: String; var commit: String; var device: String; var heads: Int; var headDim: Int
      var positionBias: Bool; var tokensPerCall: Int; var gemmBF16TFLOPs: Double; var gemmShape: String; var rows: [Row] }
    let date = ISO8601DateFormatter().string(from: Date())
    let report = Report(date: date, commit: commit, device: device.name, heads: heads, headDim: d, positionBias: positionBias, tokensPerCall: tokens,
                        gemmBF16TFLOPs: gemmTF, gemmShape: "8192x8192x8192 bf16, fp32 accumulate", rows: rows)
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(report).write(to: URL(fileURLWithPath: out + "/gpu-attention.json"))
    var md = "# HSTU attention on \(device.name)\n\n\(date), commit \(commit). bf16 q/k/v/dO, fp32 accumulation and outputs, "
    md += "\(heads) heads × head dim \(d), \(tokens) tokens per call\(positionBias ? ", with the position bias rab^p and its gradient" : ""); TFLOP/s count only the (query, key) pairs the mask keeps "
    md += "(forward 4·d per pair, backward 10·d). cuBLASLt bf16 GEMM 8192³ in the same run: \(String(format: "%.1f", gemmTF)) TFLOP/s.\n\n"
    md += "| mask | L | batch | kernel | fwd ms | fwd TFLOP/s | fwd % of GEMM | mma.sync fwd TFLOP/s | bwd ms | bwd TFLOP/s | mma.sync bwd TFLOP/s | fwd ns/token | bwd ns/token | kept pairs/token |\n"
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows {
      md += String(format: "| %@ | %d | %d | %@ | %.3f | %.1f | %.1f%% | %.1f | %.3f | %.1f | %.1f | %.2f | %.2f | %.1f |\n", r.mask as NSString, r.L, r.batch,
                   r.forwardKernel as NSString, r.forwardMs, r.forwardTFLOPs, 100 * r.forwardOfGEMM, r.forwardMmaSyncTFLOPs,
                   r.backwardMs, r.backwardTFLOPs, r.backwardMmaSyncTFLOPs, r.nsPerTokenForward, r.nsPerTokenBackward, r.pairsPerToken)
    }
    try md.write(toFile: out + "/gpu-attention.md", atomically: true, encoding: .utf8)
  }
}

/// The attention masks `gpu-bench` times.
enum BenchMask: String, ExpressibleByArgument, CaseIterable {
  case causal, semiLocal = "semi-local", local

  /// The titled masks to time: causal once; semi-local once per K1 = K2 = size (a local window of
  /// `size` keys, the last `size` rows global); local once per K1 = size (the window alone, whose
  /// kept pairs per token grow with L only through the first `size` rows' shorter windows).
  func variants(windows: [Int]) -> [(title: String, mask: AttentionMask)] {
    switch self {
    case .causal: return [("causal", .causal)]
    case .semiLocal: return windows.map { ("semi-local K1=K2=\($0)", .semiLocalMeta(k1: $0, k2: $0)) }
    case .local: return windows.map { ("local K1=\($0)", .semiLocalMeta(k1: $0, k2: 0)) }
    }
  }
}
