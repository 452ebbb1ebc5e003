/// A `Trainer`'s steps and evaluations on one GPU: `CUDAModel` for forward, loss, backward and
/// AdamW, `CUDAEvaluator` for full ranking. Batches, dropout streams and negatives are the CPU
/// trainer's, so the run follows the same path as on the CPU. Runs SASRec and HSTU stacks with any
/// input layout, mask, attention bias and truncation, alone or as a mixture of transducers.
public final class CUDAEngine: TrainingEngine {
  public let gpu: CUDAModel
  let evaluator: CUDAEvaluator
  let train: TrainConfig

  /// Mirrors `model` (as initialised or loaded) onto `device`, sized for `train.batchSize`
  /// training sequences and `Evaluator.batchSize` evaluation sequences of full length.
  public init(model: RetrievalModel, train: TrainConfig, device: CUDADevice) throws {
    guard train.negatives <= CUDAModel.maxNegatives else {
      throw CUDAError.unsupported("the GPU loss supports at most \(CUDAModel.maxNegatives) negatives (asked \(train.negatives))")
    }
    let sequences = max(train.batchSize, Evaluator.batchSize)
    gpu = try CUDAModel(model, device: device, maxTokens: sequences * model.config.maxTokens, maxSequences: sequences)
    evaluator = try CUDAEvaluator(model: gpu)
    self.train = train
  }

  public func train(_ batch: SequenceBatch, step: UInt64) throws {
    try gpu.setBatch(batch)
    try gpu.trainingStep(train: train, step: step)
  }

  public func takeLossSum() throws -> Double { Double(try gpu.takeLossSum()) }

  public func evaluate(_ data: UserSequences, split: LeaveOneOutSplit, stage: LeaveOneOutSplit.Stage,
                       actions: ActionFeatures?) throws -> RankingMetrics {
    try evaluator.evaluate(data: data, split: split, stage: stage, actions: actions)
  }

  public func synchronize(into parameters: ParameterStore) throws { try gpu.save(to: parameters) }

  public func reload(from parameters: ParameterStore) throws { try gpu.load(from: parameters) }
}
