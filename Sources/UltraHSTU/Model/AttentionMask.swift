/// Which keys each query of a sequence may attend to, as data.
///
/// One description serves every model in the package: full causal attention, a local window,
/// semi-local attention (SLA) in both published readings, a contextual prefix and target
/// (candidate) tokens. For every query the visible keys form at most two intervals, `[0, a)` (a
/// global prefix) and `[b, c)` (the local band ending at the query), which is what lets kernels
/// skip key blocks instead of materialising an L×L mask.
///
/// Sequence layout: `[contextual | history | targets]` with `length` tokens of which the last
/// `targets` are candidates; positions are chronological (oldest first).
///
/// The rules, in the order they apply (`allows` states them element by element):
/// - a target sees every history key and, if `targetsSeeThemselves`, itself; never another target;
/// - a history query never sees a later key (causal);
/// - contextual queries and the last `globalTailRows` history queries see every earlier key;
/// - any other history query sees the keys at most `localWindow` positions back, plus the first
///   `max(globalPrefixColumns, contextualPrefix)` keys.
///
/// The two readings of SLA (spec/ultra-hstu-paper.md §3.3) are `semiLocalMeta` (Reading A) and
/// `semiLocalPrefix` (Reading B).
public struct AttentionMask: Codable, Equatable, Sendable {
  /// A history query at position i sees keys j with `i - j <= localWindow`, i.e. itself plus
  /// `localWindow` predecessors (-1: none, not even itself). `nil` means unlimited (full causal).
  public var localWindow: Int?
  /// Meta's reading of semi-local attention: the last `globalTailRows` history rows attend to
  /// every earlier key regardless of the window.
  public var globalTailRows: Int
  /// TorchEasyRec's reading: every windowed row also sees the first `globalPrefixColumns` keys.
  public var globalPrefixColumns: Int
  /// Number of leading contextual tokens; they are full causal rows and global columns.
  public var contextualPrefix: Int
  /// Whether a target attends to itself as well as to the history (M-FALCON, Meta's masks) or
  /// only to the history (TorchEasyRec's CUTLASS encoding).
  public var targetsSeeThemselves: Bool

  public init(localWindow: Int? = nil, globalTailRows: Int = 0, globalPrefixColumns: Int = 0, contextualPrefix: Int = 0,
              targetsSeeThemselves: Bool = true) {
    precondition((localWindow ?? 0) >= -1 && globalTailRows >= 0 && globalPrefixColumns >= 0 && contextualPrefix >= 0)
    self.localWindow = localWindow
    self.globalTailRows = globalTailRows
    self.globalPrefixColumns = globalPrefixColumns
    self.contextualPrefix = contextualPrefix
    self.targetsSeeThemselves = targetsSeeThemselves
  }

  /// Full causal attention.
  public static let causal = AttentionMask()

  /// Semi-local attention, Reading A (Meta's HSTU-Ultra code): each history query sees itself and
  /// its `k1` predecessors; the last `k2` history queries see every earlier key; targets see the
  /// whole history and themselves, not other targets.
  public static func semiLocalMeta(k1: Int, k2: Int, contextualPrefix: Int = 0) -> AttentionMask {
    precondition(k1 >= 0 && k2 >= 0)
    return AttentionMask(localWindow: k1, globalTailRows: k2, contextualPrefix: contextualPrefix)
  }

  /// Semi-local attention, Reading B (TorchEasyRec): each history query sees its `k1` most recent
  /// keys including itself plus the first `k2` keys (at least the contextual tokens); targets see
  /// the whole history but neither other targets nor themselves.
  public static func semiLocalPrefix(k1: Int, k2: Int, contextualPrefix: Int = 0) -> AttentionMask {
    precondition(k1 >= 0 && k2 >= 0)
    return AttentionMask(localWindow: k1 - 1, globalPrefixColumns: k2, contextualPrefix: contextualPrefix,
                         targetsSeeThemselves: false)
  }

  /// True when every query sees every earlier key.
  public var isFullCausal: Bool { localWindow == nil }

  /// The keys visible to `query` as two disjoint intervals `prefix = [0, a)` and `band = [b, c)` with
  /// `a <= b`; either may be empty. `targets` is the number of candidate tokens at the end.
  @inline(__always)
  public func keyIntervals(query i: Int, length n: Int, targets t: Int = 0) -> (prefix: Range<Int>, band: Range<Int>) {
    let history = n - t
    if i >= history {
      let end = targetsSeeThemselves ? i + 1 : i
      return (0..<history, i..<end)
    }
    // Full causal rows: no window, contextual tokens, and Meta's global tail rows.
    guard let w = localWindow, i >= contextualPrefix, i < history - globalTailRows else {
      return (0..<0, 0..<(i + 1))
    }
    let start = max(0, i - w)
    let globalColumns = min(max(globalPrefixColumns, contextualPrefix), start)
    return (0..<globalColumns, start..<(i + 1))
  }

  /// Whether `query` may attend to `key`: the rules of the type's documentation written element by
  /// element, independently of `keyIntervals` (the reference that tests hold the intervals to).
  public func allows(query i: Int, key j: Int, length n: Int, targets t: Int = 0) -> Bool {
    let history = n - t
    if i >= history { return j < history || (j == i && targetsSeeThemselves) }
    if j > i { return false }
    guard let w = localWindow else { return true }
    if i < contextualPrefix || i >= history - globalTailRows { return true }
    return i - j <= w || j < max(globalPrefixColumns, contextualPrefix)
  }

  /// Number of visible (query, key) pairs in a sequence of `length` tokens, `targets` of them
  /// candidates: the work of one attention product, for FLOP counting.
  public func keyCount(length n: Int, targets t: Int = 0) -> Int {
    var count = 0
    for i in 0..<n {
      let (prefix, band) = keyIntervals(query: i, length: n, targets: t)
      count += prefix.count + band.count
    }
    return count
  }

  /// The keys a block of queries `rows` needs, as at most two disjoint intervals `prefix = [0, a)`
  /// and `band = [b, c)` with `a <= b` that together contain every key visible to any row of the
  /// block (possibly a few more). Block-skipping kernels loop over these and apply the exact mask
  /// inside; when the rows' prefixes reach into the band, everything is returned as one band.
  public func blockKeyRanges(rows: Range<Int>, length n: Int, targets t: Int = 0) -> (prefix: Range<Int>, band: Range<Int>) {
    var prefixEnd = 0
    var bandStart = Int.max
    var bandEnd = 0
    for i in rows {
      let (prefix, band) = keyIntervals(query: i, length: n, targets: t)
      prefixEnd = max(prefixEnd, prefix.upperBound)
      if !band.isEmpty {
        bandStart = min(bandStart, band.lowerBound)
        bandEnd = max(bandEnd, band.upperBound)
      }
    }
    if bandStart == Int.max { return (0..<prefixEnd, prefixEnd..<prefixEnd) }
    if prefixEnd >= bandStart { return (0..<0, 0..<max(prefixEnd, bandEnd)) }
    return (0..<prefixEnd, bandStart..<bandEnd)
  }
}
