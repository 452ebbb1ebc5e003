import Testing
import UltraHSTU

@Suite struct TrainerBatchingTests {
  func trainer(_ configure: (inout TrainConfig) -> Void, input: InputMode = .itemsOnly) -> Trainer {
    let data = patternSequences(users: 40, items: 30, length: 25, withTimestamps: true)
    var train = TrainConfig()
    configure(&train)
    var config = tinyConfig(.hstu)
    config.maxSequenceLength = 20
    config.input = input
    return Trainer(model: SequentialModel(config: config, itemCount: data.itemCount, seed: 1), train: train, data: data,
                   presetName: "t", datasetName: "p")
  }

  @Test func everyUserOncePerEpochWithLabelsOfTheNextEvent() {
    let t = trainer { $0.batchSize = 7 }
    let batches = t.batches(epoch: 3)
    #expect(batches.flatMap(\.users).sorted() == Array(0..<40))
    for b in batches {
      for s in 0..<b.batchSize {
        let tokens = b.offsets[s]..<b.offsets[s + 1]
        #expect(tokens.dropLast().allSatisfy { b.nextItems[$0] == b.items[$0 + 1] && b.events[$0 + 1] == b.events[$0] + 1 })
        #expect(b.nextItems[tokens.last!] != 0)
      }
    }
    // Window: the last 20 training events (25 events − validation − test − the target).
    #expect(batches.allSatisfy { b in (0..<b.batchSize).allSatisfy { b.offsets[$0 + 1] - b.offsets[$0] == 20 } })
  }

  @Test func interleavedInputHasTwoTokensPerEventAndLabelsOnActionTokens() {
    let b = trainer({ $0.batchSize = 40 }, input: .interleaved).batches(epoch: 1)[0]
    #expect(b.offsets[1] - b.offsets[0] == 40)
    #expect(stride(from: 0, to: b.tokenCount, by: 2).allSatisfy { b.nextItems[$0] == 0 && b.items[$0] != 0 })
    #expect(stride(from: 1, to: b.tokenCount, by: 2).allSatisfy { b.nextItems[$0] != 0 && b.items[$0] == 0 })
  }

  @Test func stochasticLengthCutsAndTokenBudgetBalances() {
    let plain = trainer { _ in }.batches(epoch: 1).reduce(0) { $0 + $1.tokenCount }
    let cut = trainer { $0.stochasticLengthAlpha = 1.2 }
    let cutTokens = cut.batches(epoch: 1).reduce(0) { $0 + $1.tokenCount }
    #expect(cutTokens < plain)  // 20^0.6 = 6 events kept with probability 1 − 20^1.2/400 ≈ 0.82
    let budgeted = trainer { $0.tokenBudget = 100 }.batches(epoch: 2)
    #expect(budgeted.allSatisfy { $0.tokenCount <= 100 })
    #expect(budgeted.flatMap(\.users).sorted() == Array(0..<40))
  }
}
