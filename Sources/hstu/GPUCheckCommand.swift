import ArgumentParser
import Foundation
import UltraHSTU

/// `hstu gpu-check`: every CUDA op against the CPU op (CPUOps) on the same random inputs.
struct GPUCheck: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "gpu-check",
    abstract: "Compare every CUDA op with the CPU op on random inputs (max relative error, pass/fail).")

  @Flag(help: "Only compile all kernels with NVRTC (no GPU needed) and print their resource usage.")
  var compileOnly = false

  @Option(help: "Seed of the random inputs.")
  var seed: UInt64 = 1

  func run() throws {
    if compileOnly {
      print("NVRTC \(try CUDAKernelCatalog.nvrtcVersion())")
      for (module, log) in try CUDAKernelCatalog.compileAll(attentionDims: [(128, 128), (64, 64), (32, 32)]) {
        print("== \(module)")
        print(log.split(separator: "\n").filter { $0.contains("registers") || $0.contains("spill") || $0.contains("Compiling entry") || $0.contains("arning") }.joined(separator: "\n"))
      }
      return
    }
    try BLAS.check()   // the CPU ops every CUDA op is checked against
    let device = try CUDADevice(arenaBytes: 2 << 30)
    print("device: \(device.name) (\(device.architecture), \(device.multiprocessors) SMs)")
    var checker = ParityChecker(device: device, random: CounterRandom(seed: seed))
    try checker.runAll()
    print(checker.summary())
    if checker.failures > 0 { throw ExitCode(1) }
  }
}
