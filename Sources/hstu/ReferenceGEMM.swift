import UltraHSTU

/// The bf16 GEMM rate GPU benchmarks compare against (MFU, the attention kernels' share of it): a
/// size³ cuBLASLt product (fp32 accumulation, bf16 out) on random data, the median of `repeats`
/// runs, once with cuBLASLt's heuristic algorithm and, when the device tunes GEMMs, once with the
/// tuned one. The reference is the faster: a tuned pick that loses under sustained load (it is
/// timed in a short burst) never lowers it.
struct ReferenceGEMM {
  let size: Int
  /// TF/s with the heuristic's algorithm, and with the tuned one (nil when the device does not tune).
  let heuristic: Double
  let tuned: Double?

  var best: Double { max(heuristic, tuned ?? 0) }
  /// Milliseconds per product at the best rate.
  var milliseconds: Double { 2 * Double(size) * Double(size) * Double(size) / (best * 1e12) * 1e3 }

  init(device: CUDADevice, size: Int = 8192, repeats: Int = 10) throws {
    self.size = size
    let random = CounterRandom(seed: 5)
    let mark = device.arena.mark()
    defer { device.arena.release(to: mark) }
    func noise(_ stream: UInt64) -> [BFloat16] {
      (0..<(size * size)).map { BFloat16(random.unit(stream: stream, counter: UInt64($0)) - 0.5) }
    }
    let a = try device.array(noise(1)), b = try device.array(noise(2)), c = try device.allocate(BFloat16.self, count: size * size)
    func rate(tuning: Bool) throws -> Double {
      let setting = device.tunesGEMMs
      device.tunesGEMMs = tuning
      defer { device.tunesGEMMs = setting }
      let ms = try device.time(warmup: 3, repeats: repeats) { try device.gemm(m: size, n: size, k: size, a: a, b: b, d: c) }
        .sorted()[repeats / 2]
      return 2 * Double(size) * Double(size) * Double(size) / (ms * 1e-3) / 1e12
    }
    heuristic = try rate(tuning: false)
    tuned = device.tunesGEMMs ? try rate(tuning: true) : nil
  }
}
