import Foundation

/// One named parameter tensor inside a `ParameterStore`.
public struct ParameterEntry: Sendable, Equatable {
  public var name: String
  public var shape: [Int]
  /// Offset of the first element in the flat storage.
  public var offset: Int
  public var count: Int { shape.reduce(1, *) }
}

/// How a parameter is initialised.
public enum ParameterInit: Sendable {
  case zeros
  case ones
  /// N(0, std²), truncated at ±2·std.
  case truncatedNormal(std: Float)
  case normal(std: Float)
  /// U(−a, a) with a = √(6 / (fanIn + fanOut)).
  case xavierUniform(fanIn: Int, fanOut: Int)
  /// N(0, 2 / (fanIn + fanOut)).
  case xavierNormal(fanIn: Int, fanOut: Int)
  /// U(−1/√fanIn, 1/√fanIn), PyTorch's default for a linear layer's bias.
  case uniformFanIn(Int)
}

/// All parameters of a model in one flat allocation, with their gradients and AdamW moments in
/// three more of the same layout; tensors are addressed by name or by entry.
public final class ParameterStore: @unchecked Sendable {
  public private(set) var entries: [ParameterEntry] = []
  private var inits: [ParameterInit] = []
  private var index: [String: Int] = [:]
  public let values = HostBuffer(), gradients = HostBuffer(), firstMoment = HostBuffer(), secondMoment = HostBuffer()
  /// Number of AdamW steps taken.
  public var step = 0

  public init() {}

  /// Total number of scalars.
  public var count: Int { entries.last.map { $0.offset + $0.count } ?? 0 }

  /// Declares a tensor; returns its entry. Storage is laid out by `allocate(seed:)`.
  @discardableResult
  public func declare(_ name: String, _ shape: [Int], _ initializer: ParameterInit) -> ParameterEntry {
    precondition(index[name] == nil, "parameter \(name) declared twice")
    let entry = ParameterEntry(name: name, shape: shape, offset: count)
    index[name] = entries.count
    entries.append(entry)
    inits.append(initializer)
    return entry
  }

  /// Allocates storage and initialises every tensor from `seed` (each tensor its own random stream).
  public func allocate(seed: UInt64) {
    let n = count
    values.reserve(n); gradients.reserve(n); firstMoment.reserve(n); secondMoment.reserve(n)
    gradients.zero(); firstMoment.zero(); secondMoment.zero()
    let random = CounterRandom(seed: seed)
    for (t, entry) in entries.enumerated() {
      let p = values.pointer + entry.offset, stream = UInt64(t) &+ 0x5EED_0000
      for i in 0..<entry.count {
        let c = UInt64(i)
        switch inits[t] {
        case .zeros: p[i] = 0
        case .ones: p[i] = 1
        case .normal(let std): p[i] = std * random.normal(stream: stream, counter: c)
        case .truncatedNormal(let std):
          var z = random.normal(stream: stream, counter: c), k: UInt64 = 1
          while abs(z) > 2 { z = random.normal(stream: stream, counter: c &+ k << 40); k += 1 }
          p[i] = std * z
        case .xavierUniform(let fi, let fo):
          let a = (6 / Float(fi + fo)).squareRoot()
          p[i] = (2 * random.unit(stream: stream, counter: c) - 1) * a
        case .xavierNormal(let fi, let fo):
          p[i] = (2 / Float(fi + fo)).squareRoot() * random.normal(stream: stream, counter: c)
        case .uniformFanIn(let fi):
          p[i] = (2 * random.unit(stream: stream, counter: c) - 1) / Float(fi).squareRoot()
        }
      }
    }
  }

  public func entry(_ name: String) -> ParameterEntry? { index[name].map { entries[$0] } }

  @inline(__always) public func value(_ e: ParameterEntry) -> UnsafeMutablePointer<Float> { values.pointer + e.offset }
  @inline(__always) public func gradient(_ e: ParameterEntry) -> UnsafeMutablePointer<Float> { gradients.pointer + e.offset }

  public func zeroGradients() { gradients.zero() }

  /// One AdamW step over every parameter.
  public func adamWStep(_ c: TrainConfig) {
    step += 1
    CPUOps.adamW(parameters: values.pointer, gradients: gradients.pointer, m: firstMoment.pointer,
                 v: secondMoment.pointer, count: count, learningRate: c.learningRate, beta1: c.beta1, beta2: c.beta2,
                 epsilon: c.epsilon, weightDecay: c.weightDecay, step: step)
  }
}
