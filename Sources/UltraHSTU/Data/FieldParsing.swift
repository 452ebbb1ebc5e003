/// How the fields of a line are separated.
enum FieldSeparator: Sendable, Equatable {
  /// One byte (tab or comma); every occurrence splits, so empty fields are possible.
  case byte(UInt8)
  /// The two bytes `::` of MovieLens `.dat` files.
  case doubleColon
  /// Runs of spaces and tabs; leading and trailing whitespace is ignored.
  case whitespace
}

/// Byte-level splitting of lines into fields and parsing of numbers, without creating Strings.
enum FieldParsing {
  static let tab: UInt8 = 0x09
  static let space: UInt8 = 0x20
  static let comma: UInt8 = 0x2C
  static let colon: UInt8 = 0x3A

  /// Replaces `fields` with the ranges of `line`'s fields.
  static func split(_ line: UnsafeBufferPointer<UInt8>, by separator: FieldSeparator, into fields: inout [Range<Int>]) {
    fields.removeAll(keepingCapacity: true)
    let n = line.count
    switch separator {
    case .byte(let sep):
      var from = 0
      for i in 0..<n where line[i] == sep {
        fields.append(from..<i)
        from = i + 1
      }
      fields.append(from..<n)
    case .doubleColon:
      var from = 0
      var i = 0
      while i + 1 < n {
        if line[i] == colon && line[i + 1] == colon {
          fields.append(from..<i)
          i += 2
          from = i
        } else {
          i += 1
        }
      }
      fields.append(from..<n)
    case .whitespace:
      var i = 0
      while i < n {
        while i < n && isBlank(line[i]) { i += 1 }
        if i == n { break }
        let from = i
        while i < n && !isBlank(line[i]) { i += 1 }
        fields.append(from..<i)
      }
    }
  }

  @inline(__always) static func isBlank(_ b: UInt8) -> Bool { b == space || b == tab }

  /// True when the line has nothing but spaces and tabs.
  static func isBlankLine(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
    line.allSatisfy(isBlank)
  }

  /// `range` without surrounding spaces and tabs.
  @inline(__always)
  static func trimmed(_ line: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int> {
    var lo = range.lowerBound
    var hi = range.upperBound
    while lo < hi && isBlank(line[lo]) { lo += 1 }
    while hi > lo && isBlank(line[hi - 1]) { hi -= 1 }
    return lo..<hi
  }

  /// A decimal integer with an optional leading minus sign, or nil (empty, other bytes, overflow).
  @inline(__always)
  static func integer(_ line: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int64? {
    let r = trimmed(line, range)
    var i = r.lowerBound
    let negative = i < r.upperBound && line[i] == 0x2D
    if negative { i += 1 }
    guard i < r.upperBound, r.upperBound - i <= 18 else { return nil }
    var value: Int64 = 0
    while i < r.upperBound {
      let digit = line[i] &- 0x30
      guard digit < 10 else { return nil }
      value = value * 10 + Int64(digit)
      i += 1
    }
    return negative ? -value : value
  }

  /// A non-negative decimal integer, or nil.
  @inline(__always)
  static func nonNegativeInteger(_ line: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int64? {
    guard let value = integer(line, range), value >= 0 else { return nil }
    return value
  }

  /// A decimal number `[-]digits[.digits]` (at least one digit), or nil.
  static func decimal(_ line: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Double? {
    let r = trimmed(line, range)
    var i = r.lowerBound
    let negative = i < r.upperBound && line[i] == 0x2D
    if negative { i += 1 }
    var mantissa = 0.0
    var divisor = 1.0
    var digits = 0
    var seenPoint = false
    while i < r.upperBound {
      let b = line[i]
      if b == 0x2E, !seenPoint {
        seenPoint = true
      } else {
        let digit = b &- 0x30
        guard digit < 10, digits < 18 else { return nil }
        mantissa = mantissa * 10 + Double(digit)
        if seenPoint { divisor *= 10 }
        digits += 1
      }
      i += 1
    }
    guard digits > 0 else { return nil }
    return (negative ? -mantissa : mantissa) / divisor
  }

  /// The bytes of `range` as text, shortened for error messages.
  static func text(_ line: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
    let shown = range.lowerBound..<min(range.upperBound, range.lowerBound + 40)
    let s = String(decoding: UnsafeBufferPointer(rebasing: line[shown]), as: UTF8.self)
    return shown.count < range.count ? s + "…" : s
  }
}
