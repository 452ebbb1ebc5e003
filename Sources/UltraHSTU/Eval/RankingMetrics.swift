import Foundation

/// Full-ranking accuracy accumulated over users from the 1-based rank of each user's target:
/// HR@K (target ranked within the top K), NDCG@K (`1 / log2(rank + 1)` when rank <= K, else 0) and
/// MRR (`1 / rank`), averaged over users. Accumulators merge, so evaluation can run in parallel.
///
/// Encodes as the flat object of `dictionary`; decoding restores the sums from the averages.
public struct RankingMetrics: Codable, Sendable, Equatable {
  /// Cut-offs of the hit rate.
  public static let hitRateCutoffs = [1, 10, 50, 200]
  /// Cut-offs of NDCG.
  public static let ndcgCutoffs = [10, 50, 200]

  /// Number of ranks added.
  public private(set) var count = 0
  private var hits = [Double](repeating: 0, count: 4)
  private var gains = [Double](repeating: 0, count: 3)
  private var reciprocalRanks = 0.0

  public init() {}

  /// Adds one user's target rank (1 = best; values below 1 count as 1).
  public mutating func add(rank: Int) {
    let rank = max(1, rank)
    count += 1
    for (i, k) in Self.hitRateCutoffs.enumerated() where rank <= k { hits[i] += 1 }
    let gain = 1 / log2(Double(rank) + 1)
    for (i, k) in Self.ndcgCutoffs.enumerated() where rank <= k { gains[i] += gain }
    reciprocalRanks += 1 / Double(rank)
  }

  /// Adds every rank accumulated in `other`.
  public mutating func merge(_ other: RankingMetrics) {
    count += other.count
    for i in hits.indices { hits[i] += other.hits[i] }
    for i in gains.indices { gains[i] += other.gains[i] }
    reciprocalRanks += other.reciprocalRanks
  }

  /// HR@k for k in `hitRateCutoffs` (0 with no users; nil for another k).
  public func hitRate(at k: Int) -> Double? {
    Self.hitRateCutoffs.firstIndex(of: k).map { mean(hits[$0]) }
  }

  /// NDCG@k for k in `ndcgCutoffs` (0 with no users; nil for another k).
  public func ndcg(at k: Int) -> Double? {
    Self.ndcgCutoffs.firstIndex(of: k).map { mean(gains[$0]) }
  }

  /// Mean reciprocal rank.
  public var mrr: Double { mean(reciprocalRanks) }

  /// `HR@1, HR@10, HR@50, HR@200, NDCG@10, NDCG@50, NDCG@200, MRR` as averages, and `users`.
  public var dictionary: [String: Double] {
    var d: [String: Double] = ["MRR": mrr, "users": Double(count)]
    for (i, k) in Self.hitRateCutoffs.enumerated() { d["HR@\(k)"] = mean(hits[i]) }
    for (i, k) in Self.ndcgCutoffs.enumerated() { d["NDCG@\(k)"] = mean(gains[i]) }
    return d
  }

  private func mean(_ sum: Double) -> Double { count == 0 ? 0 : sum / Double(count) }

  private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  public func encode(to encoder: Encoder) throws {
    var container = encoder.container(keyedBy: Key.self)
    for (name, value) in dictionary.sorted(by: { $0.key < $1.key }) {
      if name == "users" { try container.encode(count, forKey: Key(name)) } else { try container.encode(value, forKey: Key(name)) }
    }
  }

  public init(from decoder: Decoder) throws {
    let container = try decoder.container(keyedBy: Key.self)
    count = try container.decode(Int.self, forKey: Key("users"))
    let n = Double(count)
    for (i, k) in Self.hitRateCutoffs.enumerated() {
      hits[i] = (try container.decode(Double.self, forKey: Key("HR@\(k)")) * n).rounded()
    }
    for (i, k) in Self.ndcgCutoffs.enumerated() { gains[i] = try container.decode(Double.self, forKey: Key("NDCG@\(k)")) * n }
    reciprocalRanks = try container.decode(Double.self, forKey: Key("MRR")) * n
  }

  /// The 1-based rank of `target` among the items of `scores` (indexed by dense item; index 0 is
  /// padding and never ranked): 1 + the number of items, other than `target` and those in
  /// `excluding` (the user's history), that rank above it. The target itself is never excluded.
  ///
  /// Ties are broken deterministically and pessimistically: an item with the same score ranks above
  /// the target when its index is lower. A NaN score ranks above the target, and every item ranks
  /// above a NaN target. A target outside `1..<scores.count` gets rank `scores.count`, worse than
  /// any real rank. O(items + history), no sorting.
  public static func rank(of target: Int, scores: UnsafeBufferPointer<Float>, excluding: some Collection<Int32>) -> Int {
    let n = scores.count
    guard target >= 1, target < n else { return n }
    let t = scores[target]
    func above(_ j: Int) -> Bool { j < target ? !(scores[j] < t) : !(scores[j] <= t) }
    var count = 0
    for j in 1..<target where !(scores[j] < t) { count += 1 }
    for j in (target + 1)..<n where !(scores[j] <= t) { count += 1 }
    var excludedAbove = Set<Int>()
    for item in excluding {
      let j = Int(item)
      if j >= 1, j < n, j != target, above(j) { excludedAbove.insert(j) }
    }
    return 1 + count - excludedAbove.count
  }
}
