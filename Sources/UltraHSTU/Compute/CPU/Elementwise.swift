import Foundation

/// CPU reference and production ops. Every op is a forward function with its backward beside it;
/// arrays are row-major, and "rows" are tokens of a jagged batch.
public enum CPUOps {}

// MARK: - SiLU

extension CPUOps {
  /// `out = x * sigmoid(x)`.
  public static func siluForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forChunks(count, minimumPerWorker: 1 << 14) { r in
      VectorMath.silu(x + r.lowerBound, out + r.lowerBound, r.count)
    }
  }

  /// `dx = dout * silu'(x)`, `silu'(x) = σ(x)(1 + x(1 − σ(x)))`.
  public static func siluBackward(_ dout: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                                  _ dx: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forChunks(count, minimumPerWorker: 1 << 14) { r in
      VectorMath.siluBackward(dout + r.lowerBound, x + r.lowerBound, dx + r.lowerBound, r.count)
    }
  }
}

// MARK: - ReLU

extension CPUOps {
  /// `out = max(x, 0)`.
  public static func reluForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forChunks(count, minimumPerWorker: 1 << 15) { r in for i in r { out[i] = max(x[i], 0) } }
  }

  /// `dx = dout * [x > 0]` (uses the forward output or input: both are positive on the same set).
  public static func reluBackward(_ dout: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                  _ dx: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forChunks(count, minimumPerWorker: 1 << 15) { r in for i in r { dx[i] = y[i] > 0 ? dout[i] : 0 } }
  }
}

// MARK: - Dropout

extension CPUOps {
  /// Inverted dropout: keeps each element with probability `1 − p` and scales it by `1/(1 − p)`.
  /// The keep decision is a pure function of (`random`, `stream`, element index), so the backward
  /// recomputes it instead of storing a mask.
  public static func dropoutForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int,
                                    p: Float, random: CounterRandom, stream: UInt64) {
    dropoutApply(x, out, count: count, p: p, random: random, stream: stream)
  }

  /// `dx = dout * mask / (1 − p)` with the forward's mask.
  public static func dropoutBackward(_ dout: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int,
                                     p: Float, random: CounterRandom, stream: UInt64) {
    dropoutApply(dout, dx, count: count, p: p, random: random, stream: stream)
  }

  @inline(__always)
  static func dropoutApply(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int,
                           p: Float, random: CounterRandom, stream: UInt64) {
    if p <= 0 {
      if UnsafePointer(out) != x { out.update(from: x, count: count) }
      return
    }
    let scale = 1 / (1 - p)
    Parallel.forChunks(count, minimumPerWorker: 1 << 14) { r in
      for i in r { out[i] = random.unit(stream: stream, counter: UInt64(i)) < p ? 0 : x[i] * scale }
    }
  }
}

// MARK: - Elementwise product and sum

extension CPUOps {
  /// `out = a * b`.
  public static func mulForward(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                _ out: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forChunks(count, minimumPerWorker: 1 << 15) { r in for i in r { out[i] = a[i] * b[i] } }
  }

  /// `da = dout * b`, `db = dout * a`.
  public static func mulBackward(_ dout: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                                 _ da: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forChunks(count, minimumPerWorker: 1 << 15) { r in
      for i in r { let g = dout[i]; da[i] = g * b[i]; db[i] = g * a[i] }
    }
  }

  /// `y += x` (residual connection; its backward is the identity on both branches).
  public static func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    Parallel.forChunks(count, minimumPerWorker: 1 << 15) { r in for i in r { y[i] += x[i] } }
  }
}
