/// A dataset file that cannot be read or parsed, with the file, the 1-based line and the reason.
public struct DatasetError: Error, CustomStringConvertible, Equatable, Sendable {
  /// What went wrong.
  public enum Kind: Equatable, Sendable {
    /// The file is missing, not a regular file, or cannot be read (the system's reason).
    case unreadable(String)
    /// The gzip stream is damaged or truncated (zlib's reason).
    case corruptGzip(String)
    /// The file holds no data lines.
    case empty
    /// A format name that is not one of `DatasetFormat`'s raw values.
    case unknownFormat(String)
    /// `auto` could not recognise the file from its name and first line.
    case undetectableFormat
    /// The header line does not name the columns the format expects.
    case badHeader(expected: String, found: String)
    /// A line has the wrong number of fields.
    case wrongFieldCount(expected: String, found: Int)
    /// A user or item id that is not a non-negative integer.
    case nonNumericID(column: String, text: String)
    /// A rating that is not a finite decimal number.
    case badRating(String)
    /// A timestamp that is not an integer number of seconds.
    case badTimestamp(String)
    /// A sequence position that is not a non-negative integer.
    case badSequencePosition(String)
  }

  /// The file, or nil when the error is about an argument rather than a file.
  public var file: String?
  /// The 1-based line number, or nil when the error concerns the whole file.
  public var line: Int?
  public var kind: Kind

  public init(file: String?, line: Int? = nil, _ kind: Kind) {
    self.file = file
    self.line = line
    self.kind = kind
  }

  public var description: String {
    var place = ""
    if let file { place = file + (line.map { ":\($0)" } ?? "") + ": " }
    return place + reason
  }

  private var reason: String {
    switch kind {
    case .unreadable(let why): return "cannot read file: \(why)"
    case .corruptGzip(let why): return "corrupt or truncated gzip data: \(why)"
    case .empty: return "no data lines"
    case .unknownFormat(let name):
      let known = DatasetFormat.allCases.map(\.rawValue).joined(separator: ", ")
      return "unknown dataset format '\(name)' (known: \(known))"
    case .undetectableFormat:
      return "cannot detect the dataset format from the file name and first line; pass a format explicitly"
    case .badHeader(let expected, let found): return "header '\(found)' does not match the expected '\(expected)'"
    case .wrongFieldCount(let expected, let found): return "expected \(expected) fields, found \(found)"
    case .nonNumericID(let column, let text): return "\(column) '\(text)' is not a non-negative integer"
    case .badRating(let text): return "rating '\(text)' is not a decimal number"
    case .badTimestamp(let text): return "timestamp '\(text)' is not an integer (Unix seconds)"
    case .badSequencePosition(let text): return "sequence position '\(text)' is not a non-negative integer"
    }
  }
}
