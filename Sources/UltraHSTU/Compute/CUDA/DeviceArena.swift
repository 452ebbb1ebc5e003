/// One device allocation carved up by a bump pointer: parameters, gradients, optimizer state,
/// activations and scratch all come from here, so a training step makes no cuMemAlloc calls.
///
/// `mark()` and `release(to:)` give stack-like scratch: take a mark, allocate temporaries for
/// one op, release back to the mark.
public struct DeviceArena {
  public let base: CUdeviceptr
  public let capacity: Int
  public private(set) var used: Int = 0
  /// Every allocation starts on this boundary (enough for 16-byte vector loads and TMA).
  public static let alignment = 256

  init(base: CUdeviceptr, capacity: Int) {
    self.base = base
    self.capacity = capacity
  }

  /// Reserves `count` elements of `Element`, aligned; throws when the arena is full.
  public mutating func allocate<Element>(_ type: Element.Type, count: Int) throws -> DeviceArray<Element> {
    let bytes = max(1, count) * MemoryLayout<Element>.stride
    let start = (used + Self.alignment - 1) / Self.alignment * Self.alignment
    guard start + bytes <= capacity else {
      throw CUDAError.arenaExhausted(requested: bytes, used: used, capacity: capacity)
    }
    used = start + bytes
    return DeviceArray(address: base + CUdeviceptr(start), count: count)
  }

  /// The current fill level, to return to with `release(to:)`.
  public func mark() -> Int { used }

  /// Frees everything allocated after `mark`.
  public mutating func release(to mark: Int) {
    precondition(mark <= used, "arena mark from the future")
    used = mark
  }
}

/// A typed view of device memory: `count` elements of `Element` at `address`.
public struct DeviceArray<Element> {
  public let address: CUdeviceptr
  public let count: Int
  public var bytes: Int { count * MemoryLayout<Element>.stride }
}

/// bfloat16 as stored on the device: the upper half of an IEEE float.
public struct BFloat16: Equatable, Sendable {
  public var bits: UInt16

  /// Round to nearest even (NaN stays NaN).
  public init(_ x: Float) {
    let u = x.bitPattern
    if x.isNaN { bits = 0x7FC0; return }
    let rounding = 0x7FFF + ((u >> 16) & 1)
    bits = UInt16(truncatingIfNeeded: (u &+ rounding) >> 16)
  }

  public var float: Float { Float(bitPattern: UInt32(bits) << 16) }
}
