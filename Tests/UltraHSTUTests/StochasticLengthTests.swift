import Testing
import UltraHSTU

#if canImport(Glibc)
import Glibc
#endif

/// Synthetic history lengths 1...400.
private func syntheticLengths(_ users: Int, seed: UInt64 = 3) -> [Int] {
  let random = CounterRandom(seed: seed)
  return (0..<users).map { 1 + random.below(400, stream: 1, counter: UInt64($0)) }
}

@Test func sampledLengthMatchesPaper() {
  // spec §2.4: α = 1.6 on length-4096 histories reduces them to ~776 tokens (4096^0.8 = 776.05).
  #expect(StochasticLength(maxLength: 4096, alpha: 1.6, seed: 0).sampledLength == 776)
  #expect(StochasticLength(maxLength: 200, alpha: 2, seed: 0).sampledLength == 200)
  #expect(StochasticLength(maxLength: 200, alpha: 2, seed: 0).subsampleProbability(length: 200) == 0)
}

/// With α = 1.6 and N_c = 200 (so histories above ⌊200^0.8⌋ = 69 may be cut to 69), the observed
/// fraction subsampled and mean kept length match the formula's expectation within 5 standard errors.
@Test func statisticsMatchFormula() {
  let sl = StochasticLength(maxLength: 200, alpha: 1.6, seed: 11)
  #expect(sl.sampledLength == 69)
  let lengths = syntheticLengths(20_000)
  var expectedCut = 0.0, cutVariance = 0.0, expectedKept = 0.0, keptVariance = 0.0
  var observedCut = 0, observedKept = 0
  for (user, n) in lengths.enumerated() {
    let p = n <= 69 ? 0 : 1 - pow(200, 1.6) / Double(n * n)
    #expect(abs(sl.subsampleProbability(length: n) - p) < 1e-12)
    expectedCut += p
    cutVariance += p * (1 - p)
    expectedKept += Double(n) - p * Double(n - 69)
    keptVariance += p * (1 - p) * Double((n - 69) * (n - 69))
    let kept = sl.keptLength(length: n, epoch: 0, user: user)
    #expect(kept == n || kept == 69)
    if kept != n { observedCut += 1 }
    observedKept += kept
  }
  #expect(abs(Double(observedCut) - expectedCut) < 5 * cutVariance.squareRoot())
  #expect(abs(Double(observedKept) - expectedKept) < 5 * keptVariance.squareRoot())
}

@Test func deterministicPerEpochAndUser() {
  let a = StochasticLength(maxLength: 50, alpha: 1.5, subsampling: .uniform, seed: 5)
  let b = StochasticLength(maxLength: 50, alpha: 1.5, subsampling: .uniform, seed: 5)
  let lengths = syntheticLengths(500)
  let epoch0 = lengths.enumerated().map { a.keptPositions(length: $1, epoch: 0, user: $0) }
  #expect(epoch0 == lengths.enumerated().map { b.keptPositions(length: $1, epoch: 0, user: $0) })
  #expect(epoch0 != lengths.enumerated().map { a.keptPositions(length: $1, epoch: 1, user: $0) })
  let otherSeed = StochasticLength(maxLength: 50, alpha: 1.5, subsampling: .uniform, seed: 6)
  #expect(epoch0 != lengths.enumerated().map { otherSeed.keptPositions(length: $1, epoch: 0, user: $0) })
}

@Test func mostRecentKeepsTheTail() {
  let sl = StochasticLength(maxLength: 4, alpha: 2, seed: 1)  // sampledLength 4, p(40) = 0.99
  for user in 0..<100 {
    let kept = sl.keptPositions(length: 40, epoch: 2, user: user)
    #expect(kept == Array(36..<40) || kept == Array(0..<40))
    #expect(kept.count == sl.keptLength(length: 40, epoch: 2, user: user))
  }
  #expect(sl.keptPositions(length: 3, epoch: 0, user: 0) == [0, 1, 2])
}

/// Uniform subsets are ordered, of the right size, and take every position about equally often.
@Test func uniformSubsetIsOrderedAndUnbiased() {
  let sl = StochasticLength(maxLength: 4, alpha: 2, subsampling: .uniform, seed: 9)
  let users = 4000, n = 40
  var taken = Array(repeating: 0, count: n)
  for user in 0..<users {
    let kept = sl.keptPositions(length: n, epoch: 0, user: user)
    #expect(kept.count == sl.keptLength(length: n, epoch: 0, user: user))
    #expect(zip(kept, kept.dropFirst()).allSatisfy { $0 < $1 })
    for i in kept { taken[i] += 1 }
  }
  let p = sl.subsampleProbability(length: n)
  let inclusion = p * 4 / Double(n) + (1 - p)
  let standardError = (Double(users) * inclusion * (1 - inclusion)).squareRoot()
  for count in taken { #expect(abs(Double(count) - Double(users) * inclusion) < 5 * standardError) }
}
