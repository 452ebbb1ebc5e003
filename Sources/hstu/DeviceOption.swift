import ArgumentParser
import Foundation
import UltraHSTU

/// `--device cpu|cuda` and `--gpu-memory`, shared by the commands that train or evaluate.
struct DeviceOption: ParsableArguments {
  @Option(help: "Compute device: cpu, or cuda (the first NVIDIA GPU).")
  var device = "cpu"

  @Option(help: ArgumentHelp("GiB of GPU memory reserved for the CUDA arena (--device cuda): parameters, optimizer state, "
                             + "activations and scratch live in it.", valueName: "GiB"))
  var gpuMemory = 8

  func validate() throws {
    guard ["cpu", "cuda"].contains(device) else { throw ValidationError("unknown --device \(device); expected cpu or cuda") }
    try validateGPUMemory(gpuMemory)
  }

  /// The engine for `model`: nil (train in this process on the CPU, once OpenBLAS has loaded) or the first GPU.
  func engine(model: RetrievalModel, train: TrainConfig) throws -> TrainingEngine? {
    guard device == "cuda" else {
      try BLAS.check()
      return nil
    }
    let gpu = try CUDADevice(arenaBytes: gpuMemory << 30)
    FileHandle.standardError.write("device: \(gpu.name)\n".data(using: .utf8)!)
    gpu.compileLog = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }
    gpu.tuningLog = gpu.compileLog
    return try CUDAEngine(model: model, train: train, device: gpu)
  }
}

/// The check of every `--gpu-memory GiB` option (the arena size in GiB).
func validateGPUMemory(_ gib: Int) throws {
  guard gib >= 1 else { throw ValidationError("--gpu-memory must be at least 1 GiB, got \(gib)") }
}
