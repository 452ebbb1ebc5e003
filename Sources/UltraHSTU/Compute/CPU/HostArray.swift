/// A growable host array of plain values (indices, offsets, buckets) with a stable pointer, for
/// handing batch metadata to ops without copying per call.
public final class HostArray<Element>: @unchecked Sendable {
  public private(set) var pointer: UnsafeMutablePointer<Element>
  public private(set) var capacity: Int
  public private(set) var count = 0

  public init() {
    capacity = 16
    pointer = .allocate(capacity: capacity)
  }

  deinit { pointer.deallocate() }

  /// Makes room for `n` elements and sets `count`; contents are unspecified after growth.
  @discardableResult
  public func reserve(_ n: Int) -> UnsafeMutablePointer<Element> {
    if n > capacity {
      pointer.deallocate()
      capacity = n + n / 4
      pointer = .allocate(capacity: capacity)
    }
    count = n
    return pointer
  }

  /// Replaces the contents with `values`.
  public func assign(_ values: [Element]) {
    let p = reserve(values.count)
    values.withUnsafeBufferPointer { if let base = $0.baseAddress { p.update(from: base, count: values.count) } }
  }

  @inline(__always) public subscript(i: Int) -> Element {
    get { pointer[i] }
    set { pointer[i] = newValue }
  }
}
