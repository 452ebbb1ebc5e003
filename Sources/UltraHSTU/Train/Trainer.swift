import Foundation

/// One epoch's record.
public struct EpochRecord: Codable, Sendable {
  public var epoch: Int
  public var trainLoss: Double
  public var trainTokens: Int
  public var trainSeconds: Double
  public var validation: RankingMetrics
}

/// The trainer's resumable state (`state.json` of a checkpoint).
public struct TrainerState: Codable, Sendable {
  /// Epochs completed.
  public var epoch = 0
  public var bestEpoch = 0
  public var bestValidationNDCG10 = -1.0
  /// Test metrics of the best validation epoch.
  public var bestTest: RankingMetrics? = nil
  public var bestValidation: RankingMetrics? = nil
  public var epochsWithoutImprovement = 0
  public var history: [EpochRecord] = []
  /// Training seconds accumulated over all sessions of this run.
  public var wallSeconds = 0.0
  public var stopped = false
}

/// Trains a `RetrievalModel` on leave-one-out sequences with sampled softmax, validating every
/// epoch, early-stopping on validation NDCG@10 and reporting the test metrics of the best epoch.
/// Steps run on the CPU in this process, or on a `TrainingEngine` (a GPU) when one is set.
public final class Trainer {
  public let model: RetrievalModel
  public let train: TrainConfig
  public let data: UserSequences
  public let split: LeaveOneOutSplit
  public let presetName: String
  public let datasetName: String
  public var checkpoint: Checkpoint?
  /// Runs the steps and evaluations elsewhere (a GPU); nil: on the CPU, in this process.
  public var engine: TrainingEngine?
  /// Receives progress lines.
  public var log: (String) -> Void = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }
  public private(set) var state = TrainerState()
  private let loss = RetrievalLoss()
  /// Action buckets of every event, when the model's input uses actions.
  public let actions: ActionFeatures?
  private let random: CounterRandom
  /// Users with at least two training events (one input, one label).
  private let trainableUsers: [Int]

  public init(model: RetrievalModel, train: TrainConfig, data: UserSequences, presetName: String, datasetName: String) {
    self.model = model
    self.train = train
    self.data = data
    self.split = LeaveOneOutSplit(data)
    self.presetName = presetName
    self.datasetName = datasetName
    self.random = CounterRandom(seed: train.seed)
    actions = model.config.input == .itemsOnly ? nil : ActionFeatures(data, signals: model.config.actionSignals)
    let split = self.split
    trainableUsers = (0..<data.userCount).filter { split.trainEnd(user: $0) - data.offsets[$0] >= 2 }
  }

  var checkpointConfig: CheckpointConfig {
    CheckpointConfig(preset: presetName, model: model.config, train: train, itemCount: model.itemCount,
                     dataset: datasetName, originalItemIDs: data.originalItemIDs)
  }

  /// Continues from `checkpoint` when it holds a run of the same recipe and data.
  public func resume() throws {
    guard let checkpoint, checkpoint.exists else { return }
    let saved = try checkpoint.loadConfig()
    guard saved.model == model.config, saved.train.sameRecipe(as: train), saved.itemCount == model.itemCount,
          saved.dataset == datasetName else {
      throw CheckpointError.incompatible("\(checkpoint.directory) was written by another preset, recipe or dataset")
    }
    state = try checkpoint.loadState(TrainerState.self)
    try checkpoint.load(into: model.parameters, optimizer: true)
    try engine?.reload(from: model.parameters)
    log("resumed from \(checkpoint.directory) after epoch \(state.epoch) (step \(model.parameters.step))")
  }

  /// Tokens of every training user's sequence in an epoch before stochastic length:
  /// min(train events − 1, max length), twice that for interleaved input.
  public var trainingLengths: [Int] {
    let perEvent = model.config.input == .interleaved ? 2 : 1
    return trainableUsers.map { perEvent * min(split.trainEnd(user: $0) - data.offsets[$0] - 1, model.config.maxSequenceLength) }
  }

  /// Mean FLOPs per sample: a training sequence (forward + backward + loss, before stochastic
  /// length) and an inference request (encode the test history, score all items).
  public func flopsPerSample() -> (training: FLOPBreakdown, inference: FLOPBreakdown) {
    let config = model.config
    func tokens(_ events: Range<Int>, _ c: ModelConfig, _ filter: ChannelFilter) -> Int {
      let kept = events.filter { filter.accepts(data, event: $0) }.suffix(c.maxSequenceLength).count
      return kept * (c.input == .interleaved ? 2 : 1)
    }
    func costs(_ events: Range<Int>) -> (main: Int, channels: [Int]) {
      (tokens(events, config, .all), config.channels.map { tokens(events, $0.model, $0.filter) })
    }
    var train = FLOPBreakdown(), infer = FLOPBreakdown()
    for u in trainableUsers {
      let window = data.offsets[u]..<(split.trainEnd(user: u) - 1)
      let (n, channels) = costs(window)
      train = train + FLOPCount.modelTraining(config: config, tokens: n, channelTokens: channels, negatives: self.train.negatives)
    }
    for u in split.evaluationUsers {
      guard let history = split.history(user: u, stage: .test) else { continue }
      let (n, channels) = costs(history)
      infer = infer + FLOPCount.modelInference(config: config, tokens: n, channelTokens: channels, items: model.itemCount)
    }
    return (train.scaled(by: 1 / Double(max(1, trainableUsers.count))),
            infer.scaled(by: 1 / Double(max(1, split.evaluationUsers.count))))
  }

  /// Training tokens of one epoch.
  public var tokensPerEpoch: Int { trainingLengths.reduce(0, +) }

  /// Runs epochs until `train.epochs` or early stopping; returns the final state.
  @discardableResult
  public func run() throws -> TrainerState {
    while state.epoch < train.epochs && !state.stopped {
      let epoch = state.epoch + 1
      let started = Date()
      let (meanLoss, tokens) = try trainEpoch(epoch)
      let trainSeconds = Date().timeIntervalSince(started)
      let validation = try evaluate(.validation)
      let ndcg = validation.ndcg(at: 10) ?? 0
      state.epoch = epoch
      state.history.append(EpochRecord(epoch: epoch, trainLoss: meanLoss, trainTokens: tokens,
                                       trainSeconds: trainSeconds, validation: validation))
      if ndcg > state.bestValidationNDCG10 {
        state.bestValidationNDCG10 = ndcg
        state.bestEpoch = epoch
        state.bestValidation = validation
        state.bestTest = try evaluate(.test)
        state.epochsWithoutImprovement = 0
        if let checkpoint {
          try engine?.synchronize(into: model.parameters)
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
        try engine?.synchronize(into: model.parameters)
        try checkpoint.save(config: checkpointConfig, parameters: model.parameters, state: state)
      }
    }
    try engine?.synchronize(into: model.parameters)
    return state
  }

  /// Full-ranking metrics of `stage`, on the engine when there is one.
  public func evaluate(_ stage: LeaveOneOutSplit.Stage) throws -> RankingMetrics {
    if let engine { return try engine.evaluate(data, split: split, stage: stage, actions: actions) }
    return Evaluator.evaluate(model: model, data: data, split: split, stage: stage, actions: actions)
  }

  /// One pass over the training users in a seeded order; returns the mean loss and token count.
  func trainEpoch(_ epoch: Int) throws -> (Double, Int) {
    var lossSum = 0.0, tokens = 0, users = 0, steps = 0
    let started = Date()
    var lastReport = started
    let all = batches(epoch: epoch)
    for batch in all {
      if let engine {
        try engine.train(batch, step: UInt64(model.parameters.step + steps + 1))
      } else {
        lossSum += Double(step(batch))
      }
      tokens += batch.tokenCount
      users += batch.batchSize
      steps += 1
      if Date().timeIntervalSince(lastReport) > 10 {
        lastReport = Date()
        let loss = engine == nil ? String(format: "  loss %.4f", lossSum / Double(steps)) : ""
        log(String(format: "  epoch %d  %d/%d users%@  %.0f tokens/s", epoch, users, trainableUsers.count, loss,
                   Double(tokens) / lastReport.timeIntervalSince(started)))
      }
    }
    if let engine {
      lossSum = try engine.takeLossSum()
      model.parameters.step += steps
    }
    return (lossSum / Double(max(1, steps)), tokens)
  }

  /// One optimisation step on `batch`; returns its loss.
  public func step(_ batch: SequenceBatch) -> Float {
    let value = lossAndGradients(batch, step: UInt64(model.parameters.step + 1))
    model.parameters.adamWStep(train)
    return value
  }

  /// The training loss of `batch` with the dropout masks and negatives of step `step`; leaves the
  /// gradients of every parameter in the store.
  public func lossAndGradients(_ batch: SequenceBatch, step: UInt64) -> Float {
    model.parameters.zeroGradients()
    let encoded = model.forward(batch, training: true, random: random, step: step)
    let value = loss.forwardBackward(model: model, encoded: encoded, batch: batch, train: train, random: random,
                                     step: ForwardContext.negativeStream(step: step))
    model.backward(encoded.output)
    return value
  }

  /// The training batches of `epoch`, in the order the epoch visits them: each trainable user's
  /// last `maxSequenceLength` training events (cut further by stochastic length when configured),
  /// grouped by a seeded shuffle into `batchSize` users, or into token-budget batches.
  public func batches(epoch: Int) -> [SequenceBatch] {
    let maxEvents = model.config.maxSequenceLength
    let cut = train.stochasticLengthAlpha.map { StochasticLength(maxLength: maxEvents, alpha: $0, seed: train.seed) }
    let windows: [[Int]] = trainableUsers.map { u in
      let end = split.trainEnd(user: u) - 1
      let window = Array(max(data.offsets[u], end - maxEvents)..<end)
      guard let cut else { return window }
      return cut.keptPositions(length: window.count, epoch: epoch, user: u).map { window[$0] }
    }
    let groups: [[Int]]
    if let budget = train.tokenBudget {
      groups = TokenBudgetBatcher(budget: budget, seed: train.seed).batches(lengths: windows.map(\.count), epoch: epoch)
    } else {
      let order = random.permutation(trainableUsers.count, stream: 0xE90C << 32 | UInt64(epoch))
      groups = stride(from: 0, to: order.count, by: train.batchSize).map { Array(order[$0..<min($0 + train.batchSize, order.count)]) }
    }
    return groups.map { group in
      var batch = SequenceBatch()
      for o in group {
        let u = trainableUsers[o], target = split.trainEnd(user: u) - 1
        batch.append(user: u, events: windows[o], data: data, target: data.items[target],
                     targetTime: data.timestamps?[target], input: model.config.input, actionFeatures: actions)
      }
      return batch
    }
  }
}
