import CZlib
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a plain or gzip-compressed text file in large chunks and hands out its lines as byte slices,
/// without creating a String per line.
final class LineReader {
  let path: String
  /// 1-based number of the line most recently returned (0 before the first).
  private(set) var lineNumber = 0
  private let file: gzFile
  private var buffer: UnsafeMutableBufferPointer<UInt8>
  private var start = 0
  private var end = 0
  private var atEnd = false

  /// Opens `path`; gzip data is decompressed transparently, other files are read as they are.
  init(path: String, chunkSize: Int = 1 << 20) throws {
    self.path = path
    guard let file = gzopen(path, "rb") else {
      throw DatasetError(file: path, .unreadable(String(cString: strerror(errno))))
    }
    gzbuffer(file, 256 << 10)
    self.file = file
    buffer = .allocate(capacity: max(chunkSize, 64))
  }

  deinit {
    gzclose(file)
    buffer.deallocate()
  }

  /// The next line without its terminator or a trailing carriage return, or nil at the end of the
  /// file. The bytes are valid only until the next call.
  func nextLine() throws -> UnsafeBufferPointer<UInt8>? {
    while true {
      let pending = end - start
      if pending > 0, let base = buffer.baseAddress,
        let newline = memchr(base + start, 0x0A, pending)
      {
        let stop = base.distance(to: newline.assumingMemoryBound(to: UInt8.self))
        defer { start = stop + 1 }
        return line(start, stop)
      }
      if atEnd {
        if pending == 0 { return nil }
        defer { start = end }
        return line(start, end)
      }
      try refill()
    }
  }

  private func line(_ from: Int, _ to: Int) -> UnsafeBufferPointer<UInt8> {
    lineNumber += 1
    var to = to
    if to > from, buffer[to - 1] == 0x0D { to -= 1 }
    return UnsafeBufferPointer(rebasing: buffer[from..<to])
  }

  /// Moves the unfinished line to the front (growing the buffer if it fills it) and reads more.
  private func refill() throws {
    let pending = end - start
    if pending == buffer.count {
      let larger = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: buffer.count * 2)
      _ = larger.initialize(from: buffer)
      buffer.deallocate()
      buffer = larger
    } else if start > 0, let base = buffer.baseAddress {
      memmove(base, base + start, pending)
    }
    start = 0
    end = pending
    let room = UInt32(clamping: buffer.count - end)
    let got = gzread(file, buffer.baseAddress.map { $0 + end }, room)
    var code: Int32 = Z_OK
    let message = gzerror(file, &code).map { String(cString: $0) } ?? "unknown zlib error"
    if got < 0 || code == Z_BUF_ERROR || code == Z_DATA_ERROR {
      let line = lineNumber + 1
      if code == Z_ERRNO { throw DatasetError(file: path, line: line, .unreadable(message)) }
      throw DatasetError(file: path, line: line, .corruptGzip(message))
    }
    if got == 0 { atEnd = true }
    end += Int(got)
  }
}
