extension CPUOps {
  /// `out[rows, outDim] = x[rows, inDim] · W[inDim, outDim] (+ bias)`, through BLAS.
  public static func linearForward(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                   _ out: UnsafeMutablePointer<Float>, rows: Int, inDim: Int, outDim: Int) {
    if let bias {
      Parallel.forChunks(rows, minimumPerWorker: 512) { r in
        for row in r { (out + row * outDim).update(from: bias, count: outDim) }
      }
    }
    BLAS.shared.sgemm(m: rows, n: outDim, k: inDim, a: x, lda: inDim, b: weight, ldb: outDim,
                      beta: bias == nil ? 0 : 1, c: out, ldc: outDim)
  }

  /// Linear backward: `dx = dout · Wᵀ` (overwritten, or accumulated when `accumulateInput`),
  /// `dW += xᵀ · dout`, `dbias += Σ_rows dout`.
  public static func linearBackward(_ dout: UnsafePointer<Float>, _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                    _ dx: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>,
                                    dBias: UnsafeMutablePointer<Float>?, rows: Int, inDim: Int, outDim: Int,
                                    accumulateInput: Bool = false) {
    if let dx {
      BLAS.shared.sgemm(transB: true, m: rows, n: inDim, k: outDim, a: dout, lda: outDim, b: weight, ldb: outDim,
                        beta: accumulateInput ? 1 : 0, c: dx, ldc: inDim)
    }
    BLAS.shared.sgemm(transA: true, m: inDim, n: outDim, k: rows, a: x, lda: inDim, b: dout, ldb: outDim,
                      beta: 1, c: dWeight, ldc: outDim)
    if let dBias {
      for row in 0..<rows {
        let g = dout + row * outDim
        for c in 0..<outDim { dBias[c] += g[c] }
      }
    }
  }
}
