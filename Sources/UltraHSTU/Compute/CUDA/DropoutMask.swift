/// A counter-based dropout mask: element `i` of the tensor is kept when
/// `unit(seed, stream, i) ≥ rate` (the CPU model's `CPUOps.dropoutForward`).
public struct DropoutMask: Sendable {
  public var rate: Float
  public var seed: UInt64
  public var stream: UInt64
  public init(rate: Float, seed: UInt64, stream: UInt64) {
    self.rate = rate
    self.seed = seed
    self.stream = stream
  }
}

extension DropoutMask {
  /// The (rate, seed, stream) kernel arguments of `mask`; rate 0 (keep everything) when nil.
  static func arguments(_ mask: DropoutMask?) -> [KernelArgument] {
    [.float(mask?.rate ?? 0), .uint64(mask?.seed ?? 0), .uint64(mask?.stream ?? 0)]
  }
}
