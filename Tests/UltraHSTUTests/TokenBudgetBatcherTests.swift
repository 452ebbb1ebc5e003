import Testing
import UltraHSTU

private func lengths(_ users: Int, upTo maxLength: Int, seed: UInt64 = 4) -> [Int] {
  let random = CounterRandom(seed: seed)
  return (0..<users).map { random.below(maxLength + 1, stream: 2, counter: UInt64($0)) }
}

/// Checks the invariants and returns (max / min) batch cost over the batches within budget.
private func checkedSpread(_ batcher: TokenBudgetBatcher, lengths: [Int], epoch: Int) -> Double {
  let batches = batcher.batches(lengths: lengths, epoch: epoch)
  #expect(batches.flatMap { $0 }.sorted() == Array(lengths.indices))
  var costs: [Int] = []
  for batch in batches {
    let cost = batch.reduce(0) { $0 + batcher.cost(length: lengths[$1]) }
    if cost > batcher.budget {
      #expect(batch.count == 1)
    } else {
      costs.append(cost)
    }
  }
  return Double(costs.max()!) / Double(costs.min()!)
}

@Test func tokenBudgetBatchesAreBalanced() {
  let data = lengths(3000, upTo: 200)
  let batcher = TokenBudgetBatcher(budget: 10_000, seed: 1)
  for epoch in 0..<3 { #expect(checkedSpread(batcher, lengths: data, epoch: epoch) < 1.05) }
}

@Test func attentionCostBatchesAreBalanced() {
  let data = lengths(3000, upTo: 200)
  let batcher = TokenBudgetBatcher(budget: 1_000_000, cost: .attention, seed: 1)
  #expect(batcher.cost(length: 30) == 900)
  #expect(checkedSpread(batcher, lengths: data, epoch: 0) < 1.1)
}

@Test func tooLongSequenceGetsItsOwnBatch() {
  let batcher = TokenBudgetBatcher(budget: 10, seed: 0)
  let batches = batcher.batches(lengths: [5, 50, 3, 4, 10], epoch: 0)
  #expect(batches.contains([1]))
  #expect(batches.contains([4]))
  #expect(batches.flatMap { $0 }.sorted() == [0, 1, 2, 3, 4])
  #expect(batches.count == 4)  // [1], [4], and 5 + 3 + 4 = 12 > 10 needs two more
}

@Test func batchesAreDeterministicAndReshuffledPerEpoch() {
  let data = lengths(1000, upTo: 50)
  let batcher = TokenBudgetBatcher(budget: 2_000, seed: 8)
  let epoch0 = batcher.batches(lengths: data, epoch: 0)
  #expect(epoch0 == TokenBudgetBatcher(budget: 2_000, seed: 8).batches(lengths: data, epoch: 0))
  #expect(epoch0 != batcher.batches(lengths: data, epoch: 1))
  #expect(TokenBudgetBatcher(budget: 5, seed: 0).batches(lengths: [], epoch: 0).isEmpty)
}
