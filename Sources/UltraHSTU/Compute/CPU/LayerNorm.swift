import Foundation

extension CPUOps {
  /// Row-wise LayerNorm `out = (x − μ) / σ · γ + β` over `dim` columns, with optional affine
  /// parameters (HSTU uses none). Saves `mean` and `rstd` per row for the backward.
  public static func layerNormForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                                      mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                                      gamma: UnsafePointer<Float>?, beta: UnsafePointer<Float>?,
                                      rows: Int, dim: Int, eps: Float = 1e-6) {
    Parallel.forChunks(rows, minimumPerWorker: 256) { r in
      for row in r {
        let xr = x + row * dim, o = out + row * dim
        var m: Float = 0
        for c in 0..<dim { m += xr[c] }
        m /= Float(dim)
        var v: Float = 0
        for c in 0..<dim { let d = xr[c] - m; v += d * d }
        v /= Float(dim)
        let s = 1 / (v + eps).squareRoot()
        mean[row] = m; rstd[row] = s
        if let gamma, let beta {
          for c in 0..<dim { o[c] = (xr[c] - m) * s * gamma[c] + beta[c] }
        } else {
          for c in 0..<dim { o[c] = (xr[c] - m) * s }
        }
      }
    }
  }

  /// LayerNorm backward: `dx` is overwritten; `dgamma`/`dbeta` are accumulated (+=).
  /// `dx = σ⁻¹ (g − mean(g) − x̂ · mean(g · x̂))` with `g = dout · γ`.
  public static func layerNormBackward(_ dout: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                                       mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                       gamma: UnsafePointer<Float>?, _ dx: UnsafeMutablePointer<Float>,
                                       dgamma: UnsafeMutablePointer<Float>?, dbeta: UnsafeMutablePointer<Float>?,
                                       rows: Int, dim: Int) {
    // Affine parameter gradients need a reduction over rows: per-worker partial sums.
    let partials = gamma == nil ? 0 : Parallel.workers
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, partials * 2 * dim))
    scratch.initialize(repeating: 0, count: max(1, partials * 2 * dim))
    defer { scratch.deallocate() }
    let chunks = min(Parallel.workers, max(1, rows / 256))
    DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
      let g = UnsafeMutablePointer<Float>.allocate(capacity: dim)
      defer { g.deallocate() }
      let dg = scratch + chunk * 2 * dim, db = dg + dim
      for row in (rows * chunk / chunks)..<(rows * (chunk + 1) / chunks) {
        let xr = x + row * dim, gr = dout + row * dim, dxr = dx + row * dim
        let m = mean[row], s = rstd[row]
        var sumG: Float = 0, sumGX: Float = 0
        for c in 0..<dim {
          let xhat = (xr[c] - m) * s
          let gc = gamma.map { gr[c] * $0[c] } ?? gr[c]
          if gamma != nil { dg[c] += gr[c] * xhat; db[c] += gr[c] }
          g[c] = gc; sumG += gc; sumGX += gc * xhat
        }
        let meanG = sumG / Float(dim), meanGX = sumGX / Float(dim)
        for c in 0..<dim { dxr[c] = s * (g[c] - meanG - (xr[c] - m) * s * meanGX) }
      }
    }
    if let dgamma, let dbeta {
      for w in 0..<chunks {
        for c in 0..<dim { dgamma[c] += scratch[w * 2 * dim + c]; dbeta[c] += scratch[w * 2 * dim + dim + c] }
      }
    }
  }
}
