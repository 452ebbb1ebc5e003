/// Small vector kernels. Float reductions are not auto-vectorised (their order is fixed by IEEE
/// semantics), so these use explicit SIMD accumulators.
enum VectorMath {
  /// `Σ a[i]·b[i]` over `n` elements.
  @inline(__always)
  static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 16 <= n {
      acc0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
      acc1 += ra.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
      i += 16
    }
    if i + 8 <= n {
      acc0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
      i += 8
    }
    var s = (acc0 + acc1).sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
  }

  /// `eˣ` for 8 lanes: x = k·ln2 + r with |r| ≤ ln2/2, eʳ by its degree-6 Taylor polynomial
  /// (relative error below 2·10⁻⁷ in [−87, 88]), 2ᵏ built in the exponent bits.
  @inline(__always)
  static func exp(_ x0: SIMD8<Float>) -> SIMD8<Float> {
    // Below −87.3 the result is flushed to 0 (so −∞ inputs give 0, as for masked logits).
    let x = x0.clamped(lowerBound: SIMD8(repeating: -87.3), upperBound: SIMD8(repeating: 88.7))
    // k = round(x·log₂e) without a float→int conversion: adding 1.5·2²³ leaves k in the low
    // mantissa bits (round to nearest even), read back through the bit pattern.
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let shifted = x * 1.442_695_04 + magic
    let k = shifted - magic
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6
    var p = SIMD8<Float>(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let kBits = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
    let result = p * unsafeBitCast((kBits &+ 127) &<< 23, to: SIMD8<Float>.self)
    return result.replacing(with: 0, where: x0 .< -87.3)
  }

  /// `eˣ` of one value through the 8-lane kernel (so scalar tails round like vector bodies).
  @inline(__always)
  static func exp(_ x: Float) -> Float { exp(SIMD8<Float>(repeating: x))[0] }

  /// `out[i] = x[i]·σ(x[i])` over `n` elements (`out` may alias `x`).
  @inline(__always)
  static func silu(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    let rx = UnsafeRawPointer(x), ro = UnsafeMutableRawPointer(out)
    while i + 8 <= n {
      let v = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
      ro.storeBytes(of: v / (1 + exp(-v)), toByteOffset: i * 4, as: SIMD8<Float>.self)
      i += 8
    }
    while i < n { let v = x[i]; out[i] = v / (1 + exp(-v)); i += 1 }
  }

  /// `dx[i] = dout[i]·σ(x[i])(1 + x[i](1 − σ(x[i])))` over `n` elements (`dx` may alias `dout`).
  @inline(__always)
  static func siluBackward(_ dout: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    let rg = UnsafeRawPointer(dout), rx = UnsafeRawPointer(x), rd = UnsafeMutableRawPointer(dx)
    while i + 8 <= n {
      let v = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
      let g = rg.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
      let s = 1 / (1 + exp(-v))
      rd.storeBytes(of: g * s * (1 + v * (1 - s)), toByteOffset: i * 4, as: SIMD8<Float>.self)
      i += 8
    }
    while i < n {
      let v = x[i], s = 1 / (1 + exp(-v))
      dx[i] = dout[i] * s * (1 + v * (1 - s))
      i += 1
    }
  }

  /// In place over `n` scores `x` and their incoming gradients `g`: `x ← SiLU(x)·scale` and
  /// `g ← g·SiLU'(x)·scale` (the attention backward's recomputed P and dS).
  @inline(__always)
  static func siluWithGradient(_ x: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ n: Int, scale: Float) {
    var i = 0
    let rx = UnsafeMutableRawPointer(x), rg = UnsafeMutableRawPointer(g)
    while i + 8 <= n {
      let v = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
      let d = rg.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
      let s = 1 / (1 + exp(-v))
      rx.storeBytes(of: v * s * scale, toByteOffset: i * 4, as: SIMD8<Float>.self)
      rg.storeBytes(of: d * s * (1 + v * (1 - s)) * scale, toByteOffset: i * 4, as: SIMD8<Float>.self)
      i += 8
    }
    while i < n {
      let v = x[i], s = 1 / (1 + exp(-v))
      x[i] = v * s * scale
      g[i] = g[i] * s * (1 + v * (1 - s)) * scale
      i += 1
    }
  }

  /// In place `x[i] ← e^{x[i] − shift}` over `n` elements; returns their sum (−∞ entries give 0).
  @inline(__always)
  static func expShifted(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
    var acc = SIMD8<Float>()
    var i = 0
    let rx = UnsafeMutableRawPointer(x)
    while i + 8 <= n {
      let e = exp(rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - shift)
      rx.storeBytes(of: e, toByteOffset: i * 4, as: SIMD8<Float>.self)
      acc += e
      i += 8
    }
    var s = acc.sum()
    while i < n { x[i] = exp(x[i] - shift); s += x[i]; i += 1 }
    return s
  }

  /// `Σ a[i]` over `n` elements.
  @inline(__always)
  static func sum(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>()
    var i = 0
    let ra = UnsafeRawPointer(a)
    while i + 8 <= n { acc += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self); i += 8 }
    var s = acc.sum()
    while i < n { s += a[i]; i += 1 }
    return s
  }
}
