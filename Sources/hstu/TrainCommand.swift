import ArgumentParser
import Foundation
import UltraHSTU

/// Options shared by commands that read a dataset and pick a preset.
struct DataOptions: ParsableArguments {
  @Option(help: "Interaction log to read (gzip or plain). Default: the embedded MovieLens ml-latest-small.")
  var data: String?

  @Option(help: "Format of --data: \(DatasetFormat.allCases.map(\.rawValue).joined(separator: ", ")).")
  var format: String = DatasetFormat.auto.rawValue

  @Option(help: "Model preset: \(Preset.all.map(\.name).joined(separator: ", ")).")
  var preset: String = "hstu"

  func load() throws -> (UserSequences, String) {
    guard let fmt = DatasetFormat(rawValue: format) else {
      throw ValidationError("unknown --format \(format); expected one of \(DatasetFormat.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    let path = try data ?? EmbeddedDataset.mlLatestSmallRatingsPath()
    let started = Date()
    let sequences = try DatasetLoader.load(path: path, format: fmt)
    FileHandle.standardError.write(String(format: "loaded %@: %d users, %d items, %d events (%.2f s)\n", path,
                                          sequences.userCount, sequences.itemCount, sequences.eventCount,
                                          Date().timeIntervalSince(started)).data(using: .utf8)!)
    return (sequences, data == nil ? "ml-latest-small (embedded)" : (path as NSString).lastPathComponent)
  }

  func resolvedPreset() throws -> Preset {
    guard let p = Preset.named(preset) else {
      throw ValidationError("unknown --preset \(preset); expected one of \(Preset.all.map(\.name).joined(separator: ", "))")
    }
    return p
  }
}

/// Parses `causal`, `meta:K1:K2` or `prefix:K1:K2`.
func parseMask(_ text: String) throws -> AttentionMask {
  let parts = text.split(separator: ":").map(String.init)
  if parts == ["causal"] { return .causal }
  guard parts.count == 3, let k1 = Int(parts[1]), let k2 = Int(parts[2]), k1 >= 0, k2 >= 0 else {
    throw ValidationError("--mask \(text): expected causal, meta:K1:K2 or prefix:K1:K2 with non-negative K1, K2")
  }
  switch parts[0] {
  case "meta": return .semiLocalMeta(k1: k1, k2: k2)
  case "prefix": return .semiLocalPrefix(k1: k1, k2: k2)
  default: throw ValidationError("--mask \(text): unknown kind \(parts[0]); expected meta or prefix")
  }
}

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a model with leave-one-out validation and early stopping; print and save test metrics.")

  @OptionGroup var dataOptions: DataOptions

  @OptionGroup var deviceOption: DeviceOption

  @Option(help: "Override the preset's attention mask: causal, or semi-local `meta:K1:K2` (Meta's global tail rows) or `prefix:K1:K2` (global prefix columns).")
  var mask: String?

  @Flag(inversion: .prefixedNo, help: "Override the preset's learned time-gap attention bias rab^t (HSTU; needs timestamps in the data).")
  var timeBias: Bool?

  @Option(help: "Maximum epochs (default: the preset's).")
  var epochs: Int?

  @Option(help: "Stop after this many epochs without a better validation NDCG@10 (0 = never).")
  var patience: Int?

  @Option(help: "Random seed.")
  var seed: UInt64?

  @Option(help: "Checkpoint folder (safetensors weights + JSON config, written atomically every epoch).")
  var checkpoint: String?

  @Flag(help: "Continue the run saved in --checkpoint.")
  var resume = false

  @Option(help: "Write the final report (validation-selected test metrics) as JSON here.")
  var output: String?

  func run() throws {
    var preset = try dataOptions.resolvedPreset()
    if let mask { preset.model.mask = try parseMask(mask) }
    if let timeBias {
      guard !timeBias || preset.model.kind == .hstu else {
        throw ValidationError("--time-bias: rab^t is an HSTU attention bias; preset \(preset.name) is \(preset.model.kind.rawValue)")
      }
      preset.model.timeBias = timeBias
    }
    var train = preset.train
    if let epochs { guard epochs > 0 else { throw ValidationError("--epochs must be positive") }; train.epochs = epochs }
    if let patience { guard patience >= 0 else { throw ValidationError("--patience must be >= 0") }; train.patience = patience }
    if let seed { train.seed = seed }
    if resume && checkpoint == nil { throw ValidationError("--resume needs --checkpoint") }
    let (data, name) = try dataOptions.load()
    if preset.model.timeBias && preset.model.kind == .hstu && data.timestamps == nil {
      FileHandle.standardError.write("note: \(name) has no timestamps, so the time bias rab^t of \(preset.name) stays off\n".data(using: .utf8)!)
    }
    let model = makeModel(config: preset.model, data: data, seed: train.seed)
    let trainer = Trainer(model: model, train: train, data: data, presetName: preset.name, datasetName: name)
    trainer.engine = try deviceOption.engine(model: model, train: train)
    if let checkpoint {
      trainer.checkpoint = Checkpoint(directory: checkpoint)
      if !resume && trainer.checkpoint!.exists {
        throw ValidationError("\(checkpoint) already holds a run; pass --resume to continue it or choose another folder")
      }
      if resume { try trainer.resume() }
    }
    FileHandle.standardError.write("training \(preset.name) (\(model.parameters.count) parameters) on \(name): \(trainer.tokensPerEpoch) tokens/epoch, up to \(train.epochs) epochs\n".data(using: .utf8)!)
    try trainer.run()
    let report = TrainingReport(trainer: trainer)
    let json = try report.json()
    print(String(decoding: json, as: UTF8.self))
    if let output { try writeAtomically(json, to: output) }
  }
}
