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
