import Foundation
import Testing
import UltraHSTU

/// Synthetic users whose next item follows a fixed rule (`next = current + stride(u) mod items`):
/// a sequential model can learn it, a popularity ranking cannot.
func patternSequences(users: Int, items: Int, length: Int, withTimestamps: Bool = false) -> UserSequences {
  var offsets = [0], seq: [Int32] = [], times: [Int64] = [], ratings: [Float] = []
  for u in 0..<users {
    let stride = 1 + u % 3
    var item = (u * 7) % items
    for e in 0..<length {
      seq.append(Int32(item + 1))
      ratings.append(Float(1 + (item + e) % 5))
      times.append(Int64(1_000_000 + u * 10_000 + e * (60 << (e % 4))))
      item = (item + stride) % items
    }
    offsets.append(seq.count)
  }
  return UserSequences(itemCount: items, offsets: offsets, items: seq, ratings: ratings,
                       timestamps: withTimestamps ? times : nil, userIDs: (0..<users).map(Int64.init),
                       originalItemIDs: [0] + (1...items).map(Int64.init))
}

func tinyConfig(_ kind: ModelKind, dropout: Float = 0, timeBias: Bool = false) -> ModelConfig {
  ModelConfig(kind: kind, embeddingDim: 8, layers: 2, heads: 2, attentionDim: 4, linearDim: 4, ffnDim: 8,
              maxSequenceLength: 12, inputDropout: dropout, linearDropout: dropout, normalizer: .fixed(13),
              positionBias: kind == .hstu, timeBias: timeBias)
}

@Suite struct ModelTests {
  /// Model variants whose whole-model gradients are checked.
  static let variants: [(String, ModelConfig)] = {
    var actionAware = tinyConfig(.hstu, timeBias: true)
    actionAware.input = .actionAware
    actionAware.actionSignals = [.rating, .timeGap]
    var interleaved = tinyConfig(.hstu)
    interleaved.input = .interleaved
    var ultra = tinyConfig(.hstu, timeBias: true)
    ultra.input = .actionAware
    ultra.mask = .semiLocalMeta(k1: 2, k2: 2)
    ultra.truncation = AttentionTruncation(layersBefore: 1, keepLast: 4)
    var mot = tinyConfig(.hstu)
    mot.input = .actionAware
    var high = tinyConfig(.hstu)
    high.layers = 1
    high.embeddingDim = 6
    high.truncation = AttentionTruncation(layersBefore: 0, keepLast: 3, supervisesDroppedRows: false)
    mot.channels = [TransducerChannel(name: "high", filter: .minimumRating(4), model: high)]
    var sharedTable = mot
    var sameWidth = tinyConfig(.hstu)
    sameWidth.layers = 1
    sharedTable.channels = [TransducerChannel(name: "high", filter: .minimumRating(4), model: sameWidth)]
    var keptRowsOnly = ultra
    keptRowsOnly.truncation?.supervisesDroppedRows = false
    var truncatedSASRec = tinyConfig(.sasrec)
    truncatedSASRec.truncation = AttentionTruncation(layersBefore: 1, keepLast: 3)
    return [("hstu", tinyConfig(.hstu, timeBias: true)), ("sasrec", tinyConfig(.sasrec)), ("action-aware", actionAware),
            ("interleaved", interleaved), ("sla+truncation", ultra), ("sla+truncation, kept rows only", keptRowsOnly),
            ("sasrec+truncation", truncatedSASRec), ("mixture-of-transducers", mot),
            ("mixture-of-transducers, shared item table", sharedTable)]
  }()

  /// Every parameter's gradient of the whole model + loss against central differences.
  @Test(arguments: variants.map(\.0)) func wholeModelGradient(variant: String) {
    let config = Self.variants.first { $0.0 == variant }!.1
    let data = patternSequences(users: 3, items: 10, length: 9, withTimestamps: true)
    var train = TrainConfig()
    train.negatives = 5
    train.temperature = 0.5
    let model = makeModel(config: config, data: data, seed: 3)
    let trainer = Trainer(model: model, train: train, data: data, presetName: "test", datasetName: "pattern")
    let batch = trainer.batches(epoch: 1)[0]
    _ = trainer.lossAndGradients(batch, step: 1)
    let p = model.parameters
    let analytic = p.gradients.array
    let values = p.values.array
    let error = finiteDifferenceError(values, analytic: analytic, h: 1e-3) { x in
      x.withUnsafeBufferPointer { p.values.pointer.update(from: $0.baseAddress!, count: x.count) }
      return Double(trainer.lossAndGradients(batch, step: 1))
    }
    #expect(error < 2e-2, "relative gradient error \(error)")
  }

  /// Truncation that supervises the dropped rows outputs every token: a dropped row is the token's
  /// state after the layers before the truncation (the same as a model of only those layers), a
  /// kept row went through all layers.
  @Test func droppedRowsExitAfterTheLayersBeforeTruncation() {
    let data = patternSequences(users: 3, items: 10, length: 9)
    var truncated = tinyConfig(.hstu)
    truncated.truncation = AttentionTruncation(layersBefore: 1, keepLast: 3)
    var shallow = tinyConfig(.hstu)
    shallow.layers = 1
    func outputs(_ config: ModelConfig) -> (rows: [[Float]], offsets: [Int]) {
      let model = SequentialModel(config: config, itemCount: data.itemCount, seed: 4)
      let trainer = Trainer(model: model, train: TrainConfig(), data: data, presetName: "t", datasetName: "p")
      let batch = trainer.batches(epoch: 1)[0]
      let e = model.forward(batch, training: false, random: CounterRandom(seed: 1), step: 1)
      let d = config.embeddingDim
      return ((0..<e.rows).map { Array(UnsafeBufferPointer(start: e.output + $0 * d, count: d)) },
              Array(UnsafeBufferPointer(start: e.offsets, count: batch.batchSize + 1)))
    }
    let (deep, offsets) = outputs(truncated), (early, _) = outputs(shallow)
    #expect(deep.count == early.count)
    for b in 0..<(offsets.count - 1) {
      for r in offsets[b]..<offsets[b + 1] {
        let dropped = r < offsets[b + 1] - 3
        #expect((deep[r] == early[r]) == dropped, "sequence \(b) row \(r)")
      }
    }
  }

  /// A channel of the main width reads and trains the main item table; a narrower one has its own.
  @Test func transducerChannelsShareTheItemTableWhenTheyCan() throws {
    let data = patternSequences(users: 3, items: 10, length: 9)
    let config = try #require(Self.variants.first { $0.0 == "mixture-of-transducers, shared item table" }?.1)
    let shared = makeModel(config: config, data: data, seed: 1).parameters.entries.map(\.name)
    #expect(shared.filter { $0.hasSuffix("item_embedding") } == ["item_embedding"])
    let own = try #require(Self.variants.first { $0.0 == "mixture-of-transducers" }?.1)
    let names = makeModel(config: own, data: data, seed: 1).parameters.entries.map(\.name)
    #expect(names.filter { $0.hasSuffix("item_embedding") } == ["item_embedding", "channels.high.item_embedding"])
  }

  /// Configurations saved before truncation supervised dropped rows and channels shared the item
  /// table load with the behaviour they were trained with.
  @Test func olderConfigurationsKeepTheirBehaviour() throws {
    let current = try JSONEncoder().encode(AttentionTruncation(layersBefore: 1, keepLast: 4))
    var object = try #require(JSONSerialization.jsonObject(with: current) as? [String: Any])
    object.removeValue(forKey: "supervisesDroppedRows")
    let old = try JSONDecoder().decode(AttentionTruncation.self, from: JSONSerialization.data(withJSONObject: object))
    #expect(!old.supervisesDroppedRows && old.keepLast == 4)
    var channel = try #require(JSONSerialization.jsonObject(
      with: JSONEncoder().encode(TransducerChannel(name: "c", filter: .all, model: tinyConfig(.hstu)))) as? [String: Any])
    channel.removeValue(forKey: "sharesItemEmbedding")
    #expect(try !JSONDecoder().decode(TransducerChannel.self, from: JSONSerialization.data(withJSONObject: channel)).sharesItemEmbedding)
  }

  /// Selective rematerialisation recomputes activations instead of keeping them: same gradients.
  @Test func rematerialisationGivesTheSameGradients() {
    let data = patternSequences(users: 4, items: 10, length: 9)
    var config = tinyConfig(.hstu, dropout: 0.2)
    config.layers = 3
    func gradients(_ remat: Bool) -> [Float] {
      var c = config
      c.rematerialize = remat
      let model = SequentialModel(config: c, itemCount: data.itemCount, seed: 8)
      let trainer = Trainer(model: model, train: TrainConfig(), data: data, presetName: "t", datasetName: "p")
      _ = trainer.lossAndGradients(trainer.batches(epoch: 1)[0], step: 3)
      return model.parameters.gradients.array
    }
    #expect(gradients(true) == gradients(false))
  }

  @Test func trainingLearnsAPatternAndBeatsMostPopular() throws {
    let data = patternSequences(users: 90, items: 60, length: 16)
    var train = TrainConfig()
    train.epochs = 40
    train.batchSize = 16
    train.negatives = 10
    train.learningRate = 5e-3
    let model = SequentialModel(config: tinyConfig(.hstu), itemCount: data.itemCount, seed: 1)
    let trainer = Trainer(model: model, train: train, data: data, presetName: "test", datasetName: "pattern")
    trainer.log = { _ in }
    let state = try trainer.run()
    #expect(state.history.last!.trainLoss < 0.7 * state.history.first!.trainLoss)
    let split = LeaveOneOutSplit(data)
    let popular = MostPopular(data, split: split).evaluate(data, split: split, stage: .test)
    let hr = try #require(state.bestTest?.hitRate(at: 10))
    #expect(hr > (popular.hitRate(at: 10) ?? 1) + 0.2, "model HR@10 \(hr) vs most-popular \(popular.hitRate(at: 10) ?? 0)")
  }

  @Test func resumedRunEqualsUninterruptedRun() throws {
    let data = patternSequences(users: 20, items: 12, length: 10)
    var train = TrainConfig()
    train.epochs = 4
    train.batchSize = 8
    train.negatives = 6
    func trainer(_ epochs: Int, directory: String?) -> Trainer {
      var t = train
      t.epochs = epochs
      let model = SequentialModel(config: tinyConfig(.hstu, dropout: 0.2), itemCount: data.itemCount, seed: 5)
      let trainer = Trainer(model: model, train: t, data: data, presetName: "test", datasetName: "pattern")
      trainer.log = { _ in }
      trainer.checkpoint = directory.map(Checkpoint.init)
      return trainer
    }
    let straight = trainer(4, directory: nil)
    try straight.run()

    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hstu-resume-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try trainer(2, directory: dir).run()
    // A new process would start here: rebuild everything from the checkpoint and continue.
    let resumed = trainer(4, directory: dir)
    try resumed.resume()
    try resumed.run()
    #expect(resumed.model.parameters.values.array == straight.model.parameters.values.array)
    #expect(resumed.state.bestTest == straight.state.bestTest)
    #expect(resumed.state.epoch == 4)
  }

  @Test func checkpointRoundTripsThroughSafetensors() throws {
    let model = SequentialModel(config: tinyConfig(.sasrec), itemCount: 7, seed: 2)
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hstu-ckpt-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let ckpt = Checkpoint(directory: dir)
    try ckpt.saveWeights(model.parameters, name: "w.safetensors", metadata: [:])
    let other = SequentialModel(config: tinyConfig(.sasrec), itemCount: 7, seed: 99)
    #expect(other.parameters.values.array != model.parameters.values.array)
    try ckpt.load(into: other.parameters, weights: "w.safetensors", optimizer: false)
    #expect(other.parameters.values.array == model.parameters.values.array)
    // A model of another shape is refused with the tensor named.
    let wrong = SequentialModel(config: tinyConfig(.sasrec), itemCount: 8, seed: 2)
    #expect(throws: SafeTensorsError.self) { try ckpt.load(into: wrong.parameters, weights: "w.safetensors", optimizer: false) }
  }
}

/// Causality of the whole model: changing a later event never changes an earlier output.
@Suite struct CausalityTests {
  @Test(arguments: ModelTests.variants.map(\.0)) func outputsIgnoreLaterEvents(variant: String) {
    var config = ModelTests.variants.first { $0.0 == variant }!.1
    config.mask = .causal  // windows only ever drop keys; full causal is the strictest check
    var data = patternSequences(users: 2, items: 10, length: 12, withTimestamps: true)
    let model = makeModel(config: config, data: data, seed: 4)
    func outputs(_ data: UserSequences) -> [Float] {
      let trainer = Trainer(model: model, train: TrainConfig(), data: data, presetName: "t", datasetName: "p")
      var batch = SequenceBatch()
      batch.append(user: 0, events: Array(0..<8), data: data, target: 0, targetTime: nil, input: config.input,
                   actionFeatures: trainer.actions)
      let encoded = model.forward(batch, training: false, random: CounterRandom(seed: 1), step: 1)
      return Array(UnsafeBufferPointer(start: encoded.output, count: encoded.rows * config.embeddingDim))
    }
    let before = outputs(data)
    // Change the last event of the window: its item and rating. (Its time stays: the row before
    // it legitimately knows when the next request comes, rab^t uses that query time.)
    data.items[7] = data.items[7] % 10 + 1
    data.ratings![7] = data.ratings![7] >= 4 ? 1 : 5
    let after = outputs(data)
    let perRow = config.embeddingDim * (config.input == .interleaved ? 2 : 1)
    let rows = before.count / perRow
    // Every row but the last event's must be unchanged.
    #expect(Array(before[0..<((rows - 1) * perRow)]) == Array(after[0..<((rows - 1) * perRow)]))
    #expect(before != after)
  }
}
