#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A binary copy of the `UserSequences` parsed from one source file, so that a second load skips
/// parsing. Layout (little-endian): magic `UHSTUSEQ`, version, the key (format, absolute source path,
/// its size and modification time), the counts, the arrays, and a checksum of everything before it.
/// A file whose magic, version, key, structure or checksum does not match is ignored.
struct SequenceCache {
  /// Identifies the exact source file a cache was built from.
  struct Key: Equatable {
    var format: DatasetFormat
    var path: String
    var size: Int64
    var modifiedSeconds: Int64
    var modifiedNanoseconds: Int64
  }

  static let magic = Array("UHSTUSEQ".utf8)
  static let version: UInt32 = 1

  let directory: String

  /// The cache file for `key`: the source's base name plus a hash of its path and format.
  func file(for key: Key) -> String {
    let base = key.path.split(separator: "/").last.map(String.init) ?? "data"
    let safe = String(base.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
    let hash = Checksum.of(Array((key.path + "\u{0}" + key.format.rawValue).utf8))
    return directory + "/" + safe + "-" + String(hash, radix: 16) + ".cache.bin"
  }

  /// The cached sequences for `key`, or nil when there is no valid cache for exactly that source.
  func read(_ key: Key) -> UserSequences? {
    guard let bytes = Self.contents(of: file(for: key)), bytes.count >= 8 else { return nil }
    let body = bytes.count - 8
    var trailer = BinaryReader(bytes: bytes, position: body)
    guard let stored = trailer.scalar(UInt64.self), stored == Checksum.of(bytes, count: body) else { return nil }
    var reader = BinaryReader(bytes: bytes, end: body)
    guard reader.bytes(Self.magic.count) == Self.magic, reader.scalar(UInt32.self) == Self.version,
      reader.readKey() == key,
      let userCount = reader.count(), let eventCount = reader.count(), let itemCount = reader.count(),
      let flags = reader.scalar(UInt8.self),
      let offsets64: [Int64] = reader.array(userCount + 1),
      let items: [Int32] = reader.array(eventCount)
    else { return nil }
    let ratings: [Float]? = flags & 1 != 0 ? reader.array(eventCount) : nil
    let timestamps: [Int64]? = flags & 2 != 0 ? reader.array(eventCount) : nil
    guard (flags & 1 == 0) == (ratings == nil), (flags & 2 == 0) == (timestamps == nil),
      let userIDs: [Int64] = reader.array(userCount),
      let itemIDs: [Int64] = reader.array(itemCount + 1),
      reader.atEnd
    else { return nil }
    let offsets = offsets64.map { Int($0) }
    let monotone = offsets.first == 0 && offsets.last == eventCount
      && zip(offsets.dropLast(), offsets.dropFirst()).allSatisfy { $0 <= $1 }
    guard monotone, items.allSatisfy({ $0 >= 1 && Int($0) <= itemCount }) else { return nil }
    return UserSequences(itemCount: itemCount, offsets: offsets, items: items, ratings: ratings,
                         timestamps: timestamps, userIDs: userIDs, originalItemIDs: itemIDs)
  }

  /// Writes `sequences` for `key` atomically (a temporary file renamed into place). Failures are
  /// ignored: the cache only saves time.
  func write(_ sequences: UserSequences, for key: Key) {
    var w = BinaryWriter()
    w.bytes(Self.magic)
    w.scalar(Self.version)
    w.key(key)
    w.scalar(Int64(sequences.userCount))
    w.scalar(Int64(sequences.eventCount))
    w.scalar(Int64(sequences.itemCount))
    w.scalar(UInt8((sequences.ratings == nil ? 0 : 1) | (sequences.timestamps == nil ? 0 : 2)))
    w.array(sequences.offsets.map { Int64($0) })
    w.array(sequences.items)
    if let ratings = sequences.ratings { w.array(ratings) }
    if let timestamps = sequences.timestamps { w.array(timestamps) }
    w.array(sequences.userIDs)
    w.array(sequences.originalItemIDs)
    w.scalar(Checksum.of(w.data))

    guard Self.makeDirectory(directory) else { return }
    let target = file(for: key)
    let temporary = target + ".tmp.\(getpid())"
    guard Self.write(w.data, to: temporary) else {
      unlink(temporary)
      return
    }
    if rename(temporary, target) != 0 { unlink(temporary) }
  }

  // MARK: - Files

  static func contents(of path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    guard fseek(f, 0, SEEK_END) == 0 else { return nil }
    let size = ftell(f)
    guard size >= 0, fseek(f, 0, SEEK_SET) == 0 else { return nil }
    var bytes = [UInt8](repeating: 0, count: size)
    let got = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, size, f) }
    return got == size ? bytes : nil
  }

  static func write(_ bytes: [UInt8], to path: String) -> Bool {
    guard let f = fopen(path, "wb") else { return false }
    let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
    return fclose(f) == 0 && written == bytes.count
  }

  /// Creates `path` and its parents; true when it exists afterwards.
  static func makeDirectory(_ path: String) -> Bool {
    var prefix = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
      prefix += "/" + part
      mkdir(prefix, 0o755)
    }
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
  }
}

/// A 64-bit checksum over 8-byte words (multiply–xorshift), fast enough to verify large caches.
enum Checksum {
  static func of(_ bytes: [UInt8], count: Int? = nil) -> UInt64 {
    let n = min(count ?? bytes.count, bytes.count)
    return bytes.withUnsafeBytes { raw in
      var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(n)
      var i = 0
      while i + 8 <= n {
        h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        i += 8
      }
      while i < n {
        h = (h ^ UInt64(raw[i])) &* 0x100_0000_01B3
        i += 1
      }
      return CounterRandom.mix(h)
    }
  }
}

/// Appends little-endian scalars and raw arrays to a byte buffer.
struct BinaryWriter {
  var data: [UInt8] = []

  mutating func bytes(_ b: [UInt8]) { data += b }

  mutating func scalar<T: FixedWidthInteger>(_ value: T) {
    withUnsafeBytes(of: value.littleEndian) { data += $0 }
  }

  mutating func string(_ s: String) {
    let utf8 = Array(s.utf8)
    scalar(Int64(utf8.count))
    bytes(utf8)
  }

  mutating func array<T: BitwiseCopyable>(_ values: [T]) {
    values.withUnsafeBytes { data += $0 }
  }

  mutating func key(_ key: SequenceCache.Key) {
    string(key.format.rawValue)
    string(key.path)
    scalar(key.size)
    scalar(key.modifiedSeconds)
    scalar(key.modifiedNanoseconds)
  }
}

/// Reads what `BinaryWriter` wrote from `bytes[position..<end]`; every read returns nil instead of
/// running past `end`.
struct BinaryReader {
  let bytes: [UInt8]
  let end: Int
  var position: Int

  init(bytes: [UInt8], position: Int = 0, end: Int? = nil) {
    self.bytes = bytes
    self.end = min(end ?? bytes.count, bytes.count)
    self.position = position
  }

  var atEnd: Bool { position == end }

  mutating func bytes(_ n: Int) -> [UInt8]? {
    guard n >= 0, n <= end - position else { return nil }
    defer { position += n }
    return Array(bytes[position..<position + n])
  }

  mutating func scalar<T: FixedWidthInteger>(_: T.Type) -> T? {
    let size = MemoryLayout<T>.size
    guard size <= end - position else { return nil }
    defer { position += size }
    return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: T.self)) }
  }

  /// A non-negative count that fits in memory.
  mutating func count() -> Int? {
    guard let n = scalar(Int64.self), n >= 0, n <= Int64(end) else { return nil }
    return Int(n)
  }

  mutating func string() -> String? {
    guard let n = count(), let utf8 = bytes(n) else { return nil }
    return String(decoding: utf8, as: UTF8.self)
  }

  mutating func array<T: BitwiseCopyable>(_ count: Int) -> [T]? {
    let size = count * MemoryLayout<T>.stride
    guard count >= 0, size <= end - position else { return nil }
    let start = position
    position += size
    return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
      bytes.withUnsafeBytes { raw in
        UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[start..<start + size]))
      }
      initialized = count
    }
  }

  mutating func readKey() -> SequenceCache.Key? {
    guard let name = string(), let format = DatasetFormat(rawValue: name), let path = string(),
      let size = scalar(Int64.self), let seconds = scalar(Int64.self), let nanoseconds = scalar(Int64.self)
    else { return nil }
    return SequenceCache.Key(format: format, path: path, size: size, modifiedSeconds: seconds,
                             modifiedNanoseconds: nanoseconds)
  }
}
