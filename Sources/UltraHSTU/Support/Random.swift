/// Counter-based random numbers: every draw is a pure function of (seed, stream, counter), so any
/// part of a run (dropout masks, negatives, shuffles) can be recomputed exactly, in any order and on
/// any thread, and a resumed run draws the same numbers as an uninterrupted one.
public struct CounterRandom: Sendable, Hashable, Codable {
  public var seed: UInt64

  public init(seed: UInt64) { self.seed = seed }

  /// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
  @inline(__always)
  static func mix(_ z0: UInt64) -> UInt64 {
    var z = z0 &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// 64 random bits for `counter` in `stream`.
  @inline(__always)
  public func bits(stream: UInt64, counter: UInt64) -> UInt64 {
    CounterRandom.mix(CounterRandom.mix(seed ^ CounterRandom.mix(stream)) &+ counter)
  }

  /// A uniform Float in [0, 1).
  @inline(__always)
  public func unit(stream: UInt64, counter: UInt64) -> Float {
    Float(bits(stream: stream, counter: counter) >> 40) * (1.0 / 16_777_216.0)
  }

  /// A uniform integer in `0..<bound` (bound > 0), by Lemire's multiply-shift (bias < 2⁻³²).
  @inline(__always)
  public func below(_ bound: Int, stream: UInt64, counter: UInt64) -> Int {
    let r = bits(stream: stream, counter: counter) >> 32
    return Int((r &* UInt64(bound)) >> 32)
  }

  /// A standard normal variate (Box–Muller on two uniforms).
  public func normal(stream: UInt64, counter: UInt64) -> Float {
    let u1 = max(Float.leastNormalMagnitude, unit(stream: stream, counter: 2 &* counter))
    let u2 = unit(stream: stream, counter: 2 &* counter &+ 1)
    return (-2 * _log(u1)).squareRoot() * _cos(2 * Float.pi * u2)
  }

  /// A seeded shuffle of `0..<count` (Fisher–Yates driven by the counter stream).
  public func permutation(_ count: Int, stream: UInt64) -> [Int] {
    var p = Array(0..<count)
    if count < 2 { return p }
    for i in stride(from: count - 1, to: 0, by: -1) {
      let j = below(i + 1, stream: stream, counter: UInt64(i))
      p.swapAt(i, j)
    }
    return p
  }
}

@inline(__always) func _log(_ x: Float) -> Float { Float(log(Double(x))) }
@inline(__always) func _cos(_ x: Float) -> Float { Float(cos(Double(x))) }
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
