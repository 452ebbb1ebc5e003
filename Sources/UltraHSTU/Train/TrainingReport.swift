import Foundation

/// The summary of a finished run: validation-selected test metrics, speed and cost.
public struct TrainingReport: Codable, Sendable {
  public var preset: String
  public var dataset: String
  public var epochs: Int
  public var bestEpoch: Int
  public var validation: [String: Double]
  public var test: [String: Double]
  public var wallSeconds: Double
  public var trainTokensPerSecond: Double
  /// Training FLOPs per token (forward + backward, mask-kept attention pairs only; see FLOPCount).
  public var trainFLOPsPerToken: Double
  /// Mean training FLOPs per user sequence.
  public var trainFLOPsPerSample: Double
  /// Mean FLOPs of one retrieval request (encode the history, score every item).
  public var inferenceFLOPsPerSample: Double

  public init(trainer: Trainer) {
    let state = trainer.state
    preset = trainer.presetName
    dataset = trainer.datasetName
    epochs = state.epoch
    bestEpoch = state.bestEpoch
    validation = state.bestValidation?.dictionary ?? [:]
    test = state.bestTest?.dictionary ?? [:]
    wallSeconds = state.wallSeconds
    let tokens = state.history.reduce(0) { $0 + $1.trainTokens }
    let seconds = state.history.reduce(0) { $0 + $1.trainSeconds }
    trainTokensPerSecond = seconds > 0 ? Double(tokens) / seconds : 0
    let flops = trainer.flopsPerSample()
    let lengths = trainer.trainingLengths
    trainFLOPsPerSample = flops.training.total
    inferenceFLOPsPerSample = flops.inference.total
    trainFLOPsPerToken = trainFLOPsPerSample * Double(lengths.count) / Double(max(1, lengths.reduce(0, +)))
  }

  public func json() throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return try encoder.encode(self)
  }
}
