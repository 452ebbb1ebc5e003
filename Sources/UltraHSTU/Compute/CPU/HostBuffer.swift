/// A growable, 64-byte aligned buffer of Floats on the host.
///
/// Activations and scratch of a training step live in these; `reserve` only reallocates when a
/// batch is larger than any seen before, so steady-state steps allocate nothing.
public final class HostBuffer: @unchecked Sendable {
  public private(set) var pointer: UnsafeMutablePointer<Float>
  public private(set) var capacity: Int
  /// Number of valid elements.
  public private(set) var count: Int

  public init(count: Int = 0) {
    capacity = max(count, 16)
    pointer = HostBuffer.allocate(capacity)
    self.count = count
    pointer.initialize(repeating: 0, count: capacity)
  }

  public convenience init(_ values: [Float]) {
    self.init(count: values.count)
    values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
  }

  deinit { pointer.deallocate() }

  private static func allocate(_ n: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<Float>.stride, alignment: 64)
      .bindMemory(to: Float.self, capacity: n)
  }

  /// Makes room for `n` elements and sets `count`; contents are unspecified after growth.
  @discardableResult
  public func reserve(_ n: Int) -> UnsafeMutablePointer<Float> {
    if n > capacity {
      pointer.deallocate()
      capacity = n + n / 4
      pointer = HostBuffer.allocate(capacity)
      pointer.initialize(repeating: 0, count: capacity)
    }
    count = n
    return pointer
  }

  /// Sets all valid elements to zero.
  public func zero() { pointer.update(repeating: 0, count: count) }

  /// The valid elements as an array (for tests and serialisation).
  public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

  @inline(__always) public subscript(i: Int) -> Float {
    get { pointer[i] }
    set { pointer[i] = newValue }
  }
}
