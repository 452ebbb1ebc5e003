import Foundation

/// `Trainer` with the steps and the evaluation on a GPU: the same epochs, batch order, dropout
/// masks, negatives, AdamW, validation-based model selection, early stopping, checkpoints and
/// `TrainerState`. The host builds the batches (through a CPU `Trainer`, so the order is the CPU's)
/// and reads back one loss per epoch and one rank per evaluated user.
public final class CUDATrainer {
  /// The CPU model: its parameter store is the layout, the initial weights and the checkpoint staging area.
  public let model: SequentialModel
  public let gpu: CUDAModel
  public let train: TrainConfig
  public let data: UserSequences
  public var checkpoint: Checkpoint? {
    get { batches.checkpoint }
    set { batches.checkpoint = newValue }
  }
  /// Receives progress lines.
  public var log: (String) -> Void = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }
  public private(set) var state = TrainerState()
  /// Provides the batches, split and checkpoint config exactly as the CPU trainer would.
  let batches: Trainer
  let evaluator: CUDAEvaluator

  /// Mirrors `model` (weights as initialised or loaded) onto `device`, sized for `train.batchSize`
  /// training sequences and `Evaluator.batchSize` evaluation sequences of `maxSequenceLength` tokens.
  public init(model: SequentialModel, train: TrainConfig, data: UserSequences, presetName: String, datasetName: String,
              device: CUDADevice) throws {
    self.model = model
    self.train = train
    self.data = data
    batches = Trainer(model: model, train: train, data: data, presetName: presetName, datasetName: datasetName)
    let sequences = max(train.batchSize, Evaluator.batchSize)
    gpu = try CUDAModel(model, device: device, maxTokens: sequences * model.config.maxSequenceLength, maxSequences: sequences)
    evaluator = try CUDAEvaluator(model: gpu)
  }

  /// Continues from `checkpoint` when it holds a run of the same recipe and data (as `Trainer.resume`).
  public func resume() throws {
    guard let checkpoint, checkpoint.exists else { return }
    try batches.resume()
    state = try checkpoint.loadState(TrainerState.self)
    try gpu.load(from: model.parameters)
  }

  /// Training tokens of one epoch.
  public var tokensPerEpoch: Int { batches.tokensPerEpoch }
  /// Sequence length of every training user in an epoch.
  public var trainingLengths: [Int] { batches.trainingLengths }

  /// Runs epochs until `train.epochs` or early stopping; returns the final state.
  @discardableResult
  public func run() throws -> TrainerState {
    let split = batches.split
    while state.epoch < train.epochs && !state.stopped {
      let epoch = state.epoch + 1
      let started = Date()
      var tokens = 0, steps = 0
      for batch in batches.batches(epoch: epoch) {
        try gpu.setBatch(batch)
        try gpu.lossAndGradients(train: train, step: UInt64(gpu.step + 1))
        try gpu.adamWStep(train)
        tokens += batch.tokenCount
        steps += 1
      }
      let meanLoss = Double(try gpu.takeLossSum()) / Double(max(1, steps))
      let trainSeconds = Date().timeIntervalSince(started)
      let validation = try evaluator.evaluate(data: data, split: split, stage: .validation)
      let ndcg = validation.ndcg(at: 10) ?? 0
      state.epoch = epoch
      state.history.append(EpochRecord(epoch: epoch, trainLoss: meanLoss, trainTokens: tokens, trainSeconds: trainSeconds,
                                       validation: validation))
      if ndcg > state.bestValidationNDCG10 {
        state.bestValidationNDCG10 = ndcg
        state.bestEpoch = epoch
        state.bestValidation = validation
        state.bestTest = try evaluator.evaluate(data: data, split: split, stage: .test)
        state.epochsWithoutImprovement = 0
        if let checkpoint {
          try gpu.save(to: model.parameters)
          try checkpoint.saveWeights(model.parameters, name: "best.safetensors", metadata: ["epoch": String(epoch)])
        }
      } else {
        state.epochsWithoutImprovement += 1
        if train.patience > 0 && state.epochsWithoutImprovement >= train.patience { state.stopped = true }
      }
      state.wallSeconds += Date().timeIntervalSince(started)
      log(String(format: "epoch %d  loss %.4f  %.0f tokens/s  val HR@10 %.4f NDCG@10 %.4f  best epoch %d%@",
                 epoch, meanLoss, Double(tokens) / trainSeconds, validation.hitRate(at: 10) ?? 0, ndcg, state.bestEpoch,
                 state.stopped ? "  (early stop)" : ""))
      if let checkpoint {
        try gpu.save(to: model.parameters)
        try checkpoint.save(config: batches.checkpointConfig, parameters: model.parameters, state: state)
      }
    }
    return state
  }
}
