import ArgumentParser
import Foundation
import UltraHSTU

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Evaluate a checkpoint: full-ranking validation and test metrics on its dataset, as JSON.")

  @Option(help: "Checkpoint folder written by `hstu train --checkpoint`.")
  var checkpoint: String

  @Option(help: "Weights file inside the folder.")
  var weights = "best.safetensors"

  @Option(help: "Interaction log the model was trained on (default: the embedded ml-latest-small).")
  var data: String?

  @Option(help: "Format of --data.")
  var format = DatasetFormat.auto.rawValue

  @OptionGroup var deviceOption: DeviceOption

  func run() throws {
    let folder = Checkpoint(directory: checkpoint)
    let saved = try folder.loadConfig()
    var options = try DataOptions.parse(["--format", format] + (data.map { ["--data", $0] } ?? []))
    options.preset = saved.preset
    let (sequences, _) = try options.load()
    guard sequences.originalItemIDs == saved.originalItemIDs else {
      throw ValidationError("\(checkpoint) was trained on other items (\(saved.itemCount) items, dataset \(saved.dataset)) than --data holds (\(sequences.itemCount))")
    }
    let model = makeModel(config: saved.model, data: sequences, seed: saved.train.seed)
    try folder.load(into: model.parameters, weights: weights, optimizer: false)
    let trainer = Trainer(model: model, train: saved.train, data: sequences, presetName: saved.preset, datasetName: saved.dataset)
    trainer.engine = try deviceOption.engine(model: model, train: saved.train)
    var report: [String: [String: Double]] = [:]
    for stage in LeaveOneOutSplit.Stage.allCases {
      report[stage.rawValue] = try trainer.evaluate(stage).dictionary
    }
    let json = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: json, as: UTF8.self))
  }
}
