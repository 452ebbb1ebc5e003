import Testing
import UltraHSTU

/// The mask of a sequence as 0/1 rows, from `keyIntervals`; checked against `allows` on the way.
private func matrix(_ mask: AttentionMask, length n: Int, targets t: Int = 0) -> [[Int]] {
  (0..<n).map { i in
    let (prefix, band) = mask.keyIntervals(query: i, length: n, targets: t)
    return (0..<n).map { j in
      let inIntervals = prefix.contains(j) || band.contains(j)
      #expect(inIntervals == mask.allows(query: i, key: j, length: n, targets: t))
      return inIntervals ? 1 : 0
    }
  }
}

@Test func fullCausal() {
  #expect(matrix(.causal, length: 4) == [
    [1, 0, 0, 0],
    [1, 1, 0, 0],
    [1, 1, 1, 0],
    [1, 1, 1, 1],
  ])
  #expect(AttentionMask.causal.keyCount(length: 4) == 10)
}

/// spec §3.3 Reading A, L = 6, max_attn_len = K1 = 2, full_attn_size = K2 = 2 (Meta's unit test).
@Test func semiLocalReadingA() {
  let mask = AttentionMask.semiLocalMeta(k1: 2, k2: 2)
  #expect(matrix(mask, length: 6) == [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [0, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1],
  ])
  #expect(mask.keyCount(length: 6) == 1 + 2 + 3 + 3 + 5 + 6)
}

/// spec §3.3 Reading B, L = 6, sla_k1 = 2, sla_k2 = 2 (TorchEasyRec).
@Test func semiLocalReadingB() {
  let mask = AttentionMask.semiLocalPrefix(k1: 2, k2: 2)
  #expect(matrix(mask, length: 6) == [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 0, 1, 1, 0],
    [1, 1, 0, 0, 1, 1],
  ])
  #expect(mask.keyCount(length: 6) == 1 + 2 + 3 + 4 + 4 + 4)
}

@Test func windowOnly() {
  let mask = AttentionMask(localWindow: 1)
  #expect(!mask.isFullCausal)
  #expect(matrix(mask, length: 5) == [
    [1, 0, 0, 0, 0],
    [1, 1, 0, 0, 0],
    [0, 1, 1, 0, 0],
    [0, 0, 1, 1, 0],
    [0, 0, 0, 1, 1],
  ])
  #expect(mask.keyCount(length: 5) == 9)
}

/// Two contextual tokens: full causal rows and global columns, under either reading.
@Test func contextualPrefix() {
  let a = AttentionMask.semiLocalMeta(k1: 1, k2: 1, contextualPrefix: 2)
  #expect(matrix(a, length: 7) == [
    [1, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0],
    [1, 1, 1, 1, 0, 0, 0],
    [1, 1, 0, 1, 1, 0, 0],
    [1, 1, 0, 0, 1, 1, 0],
    [1, 1, 1, 1, 1, 1, 1],
  ])
  // Reading B with k2 = 1 < 2 contextual tokens: the contextual tokens are the global columns.
  let b = AttentionMask.semiLocalPrefix(k1: 1, k2: 1, contextualPrefix: 2)
  #expect(matrix(b, length: 6) == [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 0, 1, 0, 0],
    [1, 1, 0, 0, 1, 0],
    [1, 1, 0, 0, 0, 1],
  ])
}

/// Candidates see the whole history and themselves, never another candidate.
@Test func targets() {
  #expect(matrix(.causal, length: 5, targets: 2) == [
    [1, 0, 0, 0, 0],
    [1, 1, 0, 0, 0],
    [1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0],
    [1, 1, 1, 0, 1],
  ])
  // Reading A: the window does not apply to targets; tail rows count history rows only.
  #expect(matrix(.semiLocalMeta(k1: 1, k2: 1), length: 6, targets: 2) == [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [0, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 0, 1],
  ])
  // Reading B (TorchEasyRec's encoding): targets do not see themselves.
  #expect(matrix(.semiLocalPrefix(k1: 2, k2: 1), length: 6, targets: 2) == [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 0, 1, 1, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0, 0],
  ])
}

@Test func blockKeyRangesOfBothReadings() {
  let mask = AttentionMask.semiLocalMeta(k1: 2, k2: 2)
  // Rows 2..<4 need keys 0..<4 (row 2's window reaches back to key 0): one band.
  #expect(mask.blockKeyRanges(rows: 2..<4, length: 6) == (0..<0, 0..<4))
  // A long sequence: rows 10..<12 see keys 8..<12 only.
  #expect(mask.blockKeyRanges(rows: 10..<12, length: 20) == (0..<0, 8..<12))
  let b = AttentionMask.semiLocalPrefix(k1: 2, k2: 2)
  #expect(b.blockKeyRanges(rows: 10..<12, length: 20) == (0..<2, 9..<12))
}

/// On random settings: the intervals are disjoint and ordered, membership equals `allows`, the
/// key count equals the number of allowed pairs, and block ranges cover every allowed pair.
@Test func intervalsMatchRulesOnRandomSettings() {
  let random = CounterRandom(seed: 7)
  for trial in 0..<400 {
    var draw = UInt64(0)
    func next(_ bound: Int) -> Int {
      draw += 1
      return random.below(bound, stream: UInt64(trial), counter: draw)
    }
    let n = 1 + next(24)
    let t = next(min(n, 4) + 1)
    let mask = AttentionMask(localWindow: next(4) == 0 ? nil : next(8) - 1, globalTailRows: next(4),
                             globalPrefixColumns: next(4), contextualPrefix: next(3),
                             targetsSeeThemselves: next(2) == 0)
    var allowed = 0
    for i in 0..<n {
      let (prefix, band) = mask.keyIntervals(query: i, length: n, targets: t)
      #expect(prefix.lowerBound == 0 && prefix.upperBound <= band.lowerBound && band.upperBound <= n)
      for j in 0..<n where mask.allows(query: i, key: j, length: n, targets: t) { allowed += 1 }
      for j in 0..<n {
        #expect((prefix.contains(j) || band.contains(j)) == mask.allows(query: i, key: j, length: n, targets: t),
                "\(mask) n=\(n) t=\(t) i=\(i) j=\(j)")
      }
    }
    #expect(mask.keyCount(length: n, targets: t) == allowed)
    let blockSize = 1 + next(5)
    for start in stride(from: 0, to: n, by: blockSize) {
      let rows = start..<min(n, start + blockSize)
      let (prefix, band) = mask.blockKeyRanges(rows: rows, length: n, targets: t)
      #expect(prefix.lowerBound == 0 && prefix.upperBound <= band.lowerBound && band.upperBound <= n)
      for i in rows {
        for j in 0..<n where mask.allows(query: i, key: j, length: n, targets: t) {
          #expect(prefix.contains(j) || band.contains(j), "\(mask) n=\(n) t=\(t) rows=\(rows) i=\(i) j=\(j)")
        }
      }
    }
  }
}
