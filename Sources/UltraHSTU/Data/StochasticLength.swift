#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// HSTU's Stochastic Length (spec/ultra-hstu-paper.md §2.4): long histories are shortened at
/// random, so that attention cost grows like `N_c^α` rather than `N_c²`.
///
/// With `maxLength` N_c and `alpha` α ∈ (1, 2], a history of n events is kept whole when
/// n ≤ N_c^{α/2}; otherwise it is subsampled to `sampledLength` = ⌊N_c^{α/2}⌋ events with
/// probability 1 − N_c^α / n², else kept whole. Draws are a pure function of (seed, epoch, user).
public struct StochasticLength: Codable, Equatable, Sendable {
  /// How a subsampled history is chosen.
  public enum Subsampling: String, Codable, Sendable {
    /// The most recent `sampledLength` events (ULTRA-HSTU's LBSL, spec §3.2).
    case mostRecent
    /// A uniformly random subset of `sampledLength` events, in their original order.
    case uniform
  }

  /// N_c, the maximum sequence length.
  public var maxLength: Int
  /// α ∈ (1, 2]; 2 never subsamples a history of at most N_c events.
  public var alpha: Double
  public var subsampling: Subsampling
  public var seed: UInt64

  public init(maxLength: Int, alpha: Double, subsampling: Subsampling = .mostRecent, seed: UInt64) {
    precondition(maxLength > 0 && alpha > 1 && alpha <= 2)
    self.maxLength = maxLength
    self.alpha = alpha
    self.subsampling = subsampling
    self.seed = seed
  }

  /// ⌊N_c^{α/2}⌋: the length of a subsampled history, and the longest one never subsampled.
  public var sampledLength: Int {
    Int((pow(Double(maxLength), alpha / 2) + 1e-9).rounded(.down))
  }

  /// The probability that a history of `length` events is subsampled: 1 − N_c^α / n² above
  /// `sampledLength`, else 0.
  public func subsampleProbability(length n: Int) -> Double {
    guard n > sampledLength else { return 0 }
    return max(0, 1 - pow(Double(maxLength), alpha) / (Double(n) * Double(n)))
  }

  /// The number of events of `user`'s history of `length` events kept in `epoch`.
  public func keptLength(length n: Int, epoch: Int, user: Int) -> Int {
    let p = subsampleProbability(length: n)
    guard p > 0 else { return n }
    let u = Double(random.bits(stream: decisionStream(epoch: epoch), counter: UInt64(user)) >> 11) * 0x1p-53
    return u < p ? sampledLength : n
  }

  /// The positions (ascending indices into the history, oldest first) of `user`'s events kept in
  /// `epoch`.
  public func keptPositions(length n: Int, epoch: Int, user: Int) -> [Int] {
    let k = keptLength(length: n, epoch: epoch, user: user)
    if k == n { return Array(0..<n) }
    switch subsampling {
    case .mostRecent:
      return Array((n - k)..<n)
    case .uniform:
      // Selection sampling (Knuth's Algorithm S): position i is taken with probability
      // (still needed) / (still left), which yields exactly k positions, each k-subset equally likely.
      let stream = CounterRandom.mix(decisionStream(epoch: epoch) &+ UInt64(user))
      var kept: [Int] = []
      kept.reserveCapacity(k)
      for i in 0..<n where random.below(n - i, stream: stream, counter: UInt64(i)) < k - kept.count {
        kept.append(i)
      }
      return kept
    }
  }

  private var random: CounterRandom { CounterRandom(seed: seed) }

  /// The stream of an epoch's keep-or-subsample decisions (counter: user).
  private func decisionStream(epoch: Int) -> UInt64 {
    CounterRandom.mix(0x5354_4F43_4841_5354 ^ UInt64(epoch))
  }
}
