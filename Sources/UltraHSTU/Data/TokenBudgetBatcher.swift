/// Load-balanced batches (the batching half of ULTRA-HSTU's LBSL, spec/ultra-hstu-paper.md §3.2):
/// users are grouped so that every batch costs about the same and at most `budget`, instead of
/// every batch holding the same number of users.
///
/// Packing is longest-first onto the least loaded batch, with as few batches as that packing
/// allows; users of equal cost are taken in a seeded random order and the batches come out in a
/// seeded random order, both fresh each epoch. A user whose cost alone exceeds the budget gets a
/// batch of their own.
public struct TokenBudgetBatcher: Codable, Equatable, Sendable {
  /// What a sequence of n tokens costs.
  public enum Cost: String, Codable, Sendable {
    /// n: linear work (projections, embeddings, loss).
    case tokens
    /// n²: full attention work.
    case attention
  }

  /// The most a batch may cost.
  public var budget: Int
  public var cost: Cost
  public var seed: UInt64

  public init(budget: Int, cost: Cost = .tokens, seed: UInt64) {
    precondition(budget > 0)
    self.budget = budget
    self.cost = cost
    self.seed = seed
  }

  /// The cost of one sequence of `length` tokens.
  public func cost(length n: Int) -> Int {
    switch cost {
    case .tokens: return n
    case .attention: return n * n
    }
  }

  /// The users `0..<lengths.count` (with `lengths` their sequence lengths this epoch) grouped into
  /// batches for `epoch`; every user appears in exactly one batch, listed in ascending order.
  public func batches(lengths: [Int], epoch: Int) -> [[Int]] {
    let random = CounterRandom(seed: seed)
    let tieStream = CounterRandom.mix(0x4C42_534C_5449_4553 ^ UInt64(epoch))
    let costs = lengths.map { cost(length: $0) }
    let ties = lengths.indices.map { random.bits(stream: tieStream, counter: UInt64($0)) }
    // Most costly first; equal costs in a random order (ties of the random keys by user).
    let order = lengths.indices.sorted { (a: Int, b: Int) -> Bool in
      if costs[a] != costs[b] { return costs[a] > costs[b] }
      if ties[a] != ties[b] { return ties[a] < ties[b] }
      return a < b
    }

    var batches = order.filter { costs[$0] > budget }.map { [$0] }
    let fitting = order.filter { costs[$0] <= budget }
    if !fitting.isEmpty {
      let total = fitting.reduce(0) { $0 + costs[$1] }
      // At least total / budget batches, and one per user costing more than half the budget.
      var count = max((total + budget - 1) / budget, fitting.filter { 2 * costs[$0] > budget }.count, 1)
      while true {
        if let packed = pack(fitting, costs: costs, into: count) {
          batches += packed
          break
        }
        count += max(1, count / 32)
      }
    }

    let batchOrder = random.permutation(batches.count, stream: CounterRandom.mix(tieStream))
    return batchOrder.map { batches[$0].sorted() }
  }

  /// Longest-first onto the least loaded of `count` batches; nil when some user fits nowhere.
  private func pack(_ users: [Int], costs: [Int], into count: Int) -> [[Int]]? {
    var batches = Array(repeating: [Int](), count: count)
    var loads = LoadHeap(count: count)
    for user in users {
      let (batch, load) = loads.lightest
      guard load + costs[user] <= budget else { return nil }
      batches[batch].append(user)
      loads.addToLightest(costs[user])
    }
    return batches.filter { !$0.isEmpty }
  }
}

/// A binary min-heap of batch loads, for finding and growing the least loaded batch.
private struct LoadHeap {
  private var heap: [(load: Int, batch: Int)]

  init(count: Int) { heap = (0..<count).map { (0, $0) } }

  var lightest: (batch: Int, load: Int) { (heap[0].batch, heap[0].load) }

  /// Adds `amount` to the lightest batch and restores the heap order (sift down).
  mutating func addToLightest(_ amount: Int) {
    heap[0].load += amount
    var i = 0
    while true {
      let left = 2 * i + 1, right = left + 1
      var smallest = i
      if left < heap.count && less(left, smallest) { smallest = left }
      if right < heap.count && less(right, smallest) { smallest = right }
      if smallest == i { return }
      heap.swapAt(i, smallest)
      i = smallest
    }
  }

  /// Ties go to the lower batch index, so packing is deterministic.
  private func less(_ a: Int, _ b: Int) -> Bool {
    heap[a].load != heap[b].load ? heap[a].load < heap[b].load : heap[a].batch < heap[b].batch
  }
}
