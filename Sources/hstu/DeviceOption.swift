import ArgumentParser
import Foundation
import UltraHSTU

/// `--device cpu|cuda`, shared by the commands that train or evaluate.
struct DeviceOption: ParsableArguments {
  @Option(help: "Compute device: cpu, or cuda (the first NVIDIA GPU).")
  var device = "cpu"

  func validate() throws {
    guard ["cpu", "cuda"].contains(device) else { throw ValidationError("unknown --device \(device); expected cpu or cuda") }
  }

  /// The engine for `model`: nil (train in this process on the CPU) or the first GPU.
  func engine(model: RetrievalModel, train: TrainConfig) throws -> TrainingEngine? {
    guard device == "cuda" else { return nil }
    let gpu = try CUDADevice(arenaBytes: 8 << 30)
    FileHandle.standardError.write("device: \(gpu.name)\n".data(using: .utf8)!)
    return try CUDAEngine(model: model, train: train, device: gpu)
  }
}
