#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The result of loading a dataset file: the sequences plus how they were obtained.
public struct LoadedDataset: Sendable {
  public var sequences: UserSequences
  /// The format actually used (what `auto` detected, or the one asked for).
  public var format: DatasetFormat
  /// True when `format` was detected rather than given.
  public var detected: Bool
  /// True when the sequences came from the binary cache instead of parsing the file.
  public var fromCache: Bool
}

/// Loads interaction files (plain or gzip) into `UserSequences`, with a binary cache.
public enum DatasetLoader {
  /// `$HSTU_CACHE_DIR` if set (an empty value disables the cache), else `$HOME/.cache/ultrahstu`,
  /// else nil (no cache).
  public static var defaultCacheDirectory: String? {
    if let dir = getenv("HSTU_CACHE_DIR").map({ String(cString: $0) }) { return dir.isEmpty ? nil : dir }
    guard let home = getenv("HOME").map({ String(cString: $0) }), !home.isEmpty else { return nil }
    return home + "/.cache/ultrahstu"
  }

  /// Reads `path` as `format` into per-user chronological sequences (see `InteractionLog.userSequences()`).
  /// With a `cacheDirectory`, a valid cache of the same file (same path, size, modification time and
  /// format) is used instead of parsing, and a fresh one is written after parsing.
  /// - Throws: `DatasetError` naming the file and line.
  public static func load(path: String, format: DatasetFormat = .auto,
                          cacheDirectory: String? = DatasetLoader.defaultCacheDirectory) throws -> UserSequences {
    try loadDataset(path: path, format: format, cacheDirectory: cacheDirectory).sequences
  }

  /// `load(path:format:cacheDirectory:)`, also telling which format was used and whether the cache served it.
  public static func loadDataset(path: String, format: DatasetFormat = .auto,
                                 cacheDirectory: String? = DatasetLoader.defaultCacheDirectory) throws -> LoadedDataset {
    let key = try cacheKey(path: path, format: format == .auto ? detectFormat(path: path) : format)
    let cache = cacheDirectory.map { SequenceCache(directory: $0) }
    if let cached = cache?.read(key) {
      return LoadedDataset(sequences: cached, format: key.format, detected: format == .auto, fromCache: true)
    }
    let sequences = try DatasetParser.parse(path: path, format: key.format).userSequences()
    cache?.write(sequences, for: key)
    return LoadedDataset(sequences: sequences, format: key.format, detected: format == .auto, fromCache: false)
  }

  /// The format `auto` picks for `path`, from its name and first non-blank line
  /// (see `DatasetFormat.detect(fileName:firstLine:)`).
  /// - Throws: `DatasetError` when the file cannot be read, is empty, or fits no format.
  public static func detectFormat(path: String) throws -> DatasetFormat {
    let reader = try LineReader(path: path, chunkSize: 64 << 10)
    while let line = try reader.nextLine() {
      if FieldParsing.isBlankLine(line) { continue }
      let text = String(decoding: line, as: UTF8.self)
      guard let format = DatasetFormat.detect(fileName: path, firstLine: text) else {
        throw DatasetError(file: path, line: reader.lineNumber, .undetectableFormat)
      }
      return format
    }
    throw DatasetError(file: path, .empty)
  }

  /// Identifies the source file; fails when it is missing or not a regular file.
  static func cacheKey(path: String, format: DatasetFormat) throws -> SequenceCache.Key {
    var info = stat()
    guard stat(path, &info) == 0 else { throw DatasetError(file: path, .unreadable(String(cString: strerror(errno)))) }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw DatasetError(file: path, .unreadable("not a regular file")) }
    let absolute = realpath(path, nil).map { p in defer { free(p) }; return String(cString: p) } ?? path
    #if canImport(Darwin)
    let modified = info.st_mtimespec
    #else
    let modified = info.st_mtim
    #endif
    return SequenceCache.Key(format: format, path: absolute, size: Int64(info.st_size),
                             modifiedSeconds: Int64(modified.tv_sec), modifiedNanoseconds: Int64(modified.tv_nsec))
  }
}
