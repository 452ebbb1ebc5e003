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

  public init(preset: String, dataset: String, state: TrainerState, model: ModelConfig, train: TrainConfig,
              lengths: [Int], itemCount: Int) {
    self.preset = preset
    self.dataset = dataset
    epochs = state.epoch
    bestEpoch = state.bestEpoch
    validation = state.bestValidation?.dictionary ?? [:]
    test = state.bestTest?.dictionary ?? [:]
    wallSeconds = state.wallSeconds
    let tokens = state.history.reduce(0) { $0 + $1.trainTokens }
    let seconds = state.history.reduce(0) { $0 + $1.trainSeconds }
    trainTokensPerSecond = seconds > 0 ? Double(tokens) / seconds : 0
    let perToken = FLOPBreakdown.average(lengths: lengths) { n in
      FLOPCount.training(model: model, length: n, negatives: train.negatives)
    }.perToken
    trainFLOPsPerToken = perToken.total
  }

  public func json() throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return try encoder.encode(self)
  }
}
