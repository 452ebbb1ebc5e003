import ArgumentParser
import Foundation
import UltraHSTU

struct FLOPs: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "flops",
    abstract: "Training and inference FLOPs per sample of a preset on a dataset, split by part.")

  @OptionGroup var dataOptions: DataOptions

  func run() throws {
    let preset = try dataOptions.resolvedPreset()
    let (data, name) = try dataOptions.load()
    let model = makeModel(config: preset.model, data: data, seed: 0)
    let trainer = Trainer(model: model, train: preset.train, data: data, presetName: preset.name, datasetName: name)
    let (train, infer) = trainer.flopsPerSample()
    print("\(preset.name) on \(name): \(model.parameters.count) parameters (1 multiply-add = 2 FLOPs; training = 3 × forward)")
    print("part          training/sample   inference/sample")
    for part in FLOPPart.allCases where train[part] > 0 || infer[part] > 0 {
      print(String(format: "%-12@ %16.4e %18.4e", part.rawValue as NSString, train[part], infer[part]))
    }
    print(String(format: "%-12@ %16.4e %18.4e", "total" as NSString, train.total, infer.total))
  }
}
