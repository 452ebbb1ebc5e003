extension CPUOps {
  /// Row-wise `out = x / max(‖x‖, eps)`; saves the clamped norm per row.
  public static func l2NormalizeForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                                        norms: UnsafeMutablePointer<Float>, rows: Int, dim: Int, eps: Float = 1e-6) {
    Parallel.forChunks(rows, minimumPerWorker: 512) { r in
      for row in r {
        let xr = x + row * dim, o = out + row * dim
        var ss: Float = 0
        for c in 0..<dim { ss += xr[c] * xr[c] }
        let norm = max(ss.squareRoot(), eps)
        norms[row] = norm
        let inv = 1 / norm
        for c in 0..<dim { o[c] = xr[c] * inv }
      }
    }
  }

  /// `dx = (dout − y (y·dout)) / ‖x‖` where the norm was not clamped, else `dout / eps`.
  /// With `accumulate`, adds into `dx` instead of overwriting.
  public static func l2NormalizeBackward(_ dout: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                         norms: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                         rows: Int, dim: Int, eps: Float = 1e-6, accumulate: Bool = false) {
    Parallel.forChunks(rows, minimumPerWorker: 512) { r in
      for row in r {
        let g = dout + row * dim, yr = y + row * dim, d = dx + row * dim
        let norm = norms[row], inv = 1 / norm
        var dot: Float = 0
        if norm > eps { for c in 0..<dim { dot += yr[c] * g[c] } }
        if accumulate {
          for c in 0..<dim { d[c] += (g[c] - yr[c] * dot) * inv }
        } else {
          for c in 0..<dim { d[c] = (g[c] - yr[c] * dot) * inv }
        }
      }
    }
  }
}
