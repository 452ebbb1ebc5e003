/// Which keys each query of a sequence may attend to, as data.
///
/// One description serves every model in the package: full causal attention, a local window,
/// semi-local attention in both published readings, a contextual prefix and target (candidate)
/// tokens. For every query the visible keys form at most two intervals, `[0, a)` (a global
/// prefix) and `[b, c)` (the local band ending at the query), which is what lets kernels skip key
/// blocks instead of materialising an L×L mask.
///
/// Sequence layout: `[contextual | history | targets]` with `length` tokens of which the last
/// `targets` are candidates.
public struct AttentionMask: Codable, Equatable, Sendable {
  /// A query at position i sees keys j with `i - j <= localWindow` (self plus `localWindow`
  /// predecessors). `nil` means unlimited (full causal).
  public var localWindow: Int?
  /// Meta's reading of semi-local attention: the last `globalTailRows` history rows attend to
  /// every earlier key regardless of the window.
  public var globalTailRows: Int
  /// TorchEasyRec's reading: every row also sees the first `globalPrefixColumns` keys.
  public var globalPrefixColumns: Int
  /// Number of leading contextual tokens; they are always global columns.
  public var contextualPrefix: Int

  public init(localWindow: Int? = nil, globalTailRows: Int = 0, globalPrefixColumns: Int = 0, contextualPrefix: Int = 0) {
    self.localWindow = localWindow
    self.globalTailRows = globalTailRows
    self.globalPrefixColumns = globalPrefixColumns
    self.contextualPrefix = contextualPrefix
  }

  /// Full causal attention.
  public static let causal = AttentionMask()

  /// True when every query sees every earlier key.
  public var isFullCausal: Bool { localWindow == nil }

  /// The keys visible to `query` as two disjoint intervals `prefix = [0, a)` and `band = [b, c)` with
  /// `a <= b`; either may be empty. `targets` is the number of candidate tokens at the end.
  @inline(__always)
  public func keyIntervals(query i: Int, length n: Int, targets t: Int = 0) -> (prefix: Range<Int>, band: Range<Int>) {
    let history = n - t
    if i >= history {
      // A target sees the whole history and itself, never another target.
      return (0..<history, i..<(i + 1))
    }
    // Full causal rows: no window, contextual tokens, and Meta's global tail rows.
    guard let w = localWindow, i >= contextualPrefix, i < history - globalTailRows else {
      return (0..<0, 0..<(i + 1))
    }
    let start = max(0, i - w)
    let globalColumns = min(max(globalPrefixColumns, contextualPrefix), start)
    return (0..<globalColumns, start..<(i + 1))
  }

  /// Whether `query` may attend to `key` (the element-wise form of `keyIntervals`, used by tests
  /// and reference code).
  public func allows(query i: Int, key j: Int, length n: Int, targets t: Int = 0) -> Bool {
    let (p, b) = keyIntervals(query: i, length: n, targets: t)
    return p.contains(j) || b.contains(j)
  }
}
