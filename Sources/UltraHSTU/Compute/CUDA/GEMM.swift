/// Dense products through cuBLASLt (see `CuBLASLt`), row-major, fp32 accumulation, with the bias
/// and residual epilogues fused.
extension CUDADevice {
  /// `d[m,n] = op(a)·op(b) (+ bias[n]) (+ residual)`; `a`, `b` bf16 or fp32 (both the same), `d` fp32 or bf16.
  public func gemm<A, D>(m: Int, n: Int, k: Int, a: DeviceArray<A>, transA: Bool = false, b: DeviceArray<A>, transB: Bool = false,
                         d: DeviceArray<D>, bias: DeviceArray<Float>? = nil, residual: DeviceArray<D>? = nil) throws {
    func type<T>(_: T.Type) throws -> CuBLASLt.DataType {
      if T.self == Float.self { return .f32 }
      if T.self == BFloat16.self { return .bf16 }
      throw CUDAError.unsupported("GEMM element type \(T.self)")
    }
    let (blas, workspace) = try blas()
    try blas.matmul(m: m, n: n, k: k, a: a.address, transA: transA, aType: type(A.self), b: b.address, transB: transB,
                    bType: type(A.self), d: d.address, dType: type(D.self), bias: bias?.address, residual: residual?.address,
                    workspace: workspace.address, workspaceSize: workspace.bytes, stream: stream)
  }
}
