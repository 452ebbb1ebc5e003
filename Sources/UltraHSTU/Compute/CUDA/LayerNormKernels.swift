/// LayerNorm over the last dimension (optionally affine), and the HSTU output gate
/// `y = u ⊙ LayerNorm(o)`, forward and backward side by side. fp32 storage; one warp per row.
///
///   x̂ = (x − mean) · rstd,  rstd = 1/sqrt(var + eps),  y = x̂ ⊙ γ + β  (γ = 1, β = 0 without affine)
///   dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)),  g = dy ⊙ γ;  dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy
/// For the gate, the LayerNorm's upstream gradient is dy ⊙ u, and du = dy ⊙ LayerNorm(o).
enum LayerNormKernels {
  static let source = CUDAPrelude.source + #"""
#define ROWS_PER_BLOCK 8

/// Forward. gamma/beta may be null (no affine); u may be null (plain LayerNorm) or the gate.
extern "C" __global__ void layernorm_forward(const float* __restrict__ x, const float* __restrict__ gamma,
    const float* __restrict__ beta, const float* __restrict__ u, float* __restrict__ y,
    float* __restrict__ mean, float* __restrict__ rstd, int rows, int dim, float eps) {
  const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + (size_t)row * dim;
  float s = 0.f;
  for (int c = lane; c < dim; c += 32) s += xr[c];
  const float mu = warp_sum(s) / dim;
  float v = 0.f;
  for (int c = lane; c < dim; c += 32) { float d = xr[c] - mu; v += d * d; }
  const float r = rsqrtf(warp_sum(v) / dim + eps);
  float* yr = y + (size_t)row * dim;
  for (int c = lane; c < dim; c += 32) {
    float n = (xr[c] - mu) * r;
    if (gamma) n = n * gamma[c] + beta[c];
    yr[c] = u ? u[(size_t)row * dim + c] * n : n;
  }
  if (lane == 0) { mean[row] = mu; rstd[row] = r; }
}

/// Backward: dx overwritten; dgamma/dbeta (if affine) and du (if gated) accumulated/overwritten
/// as documented in the Swift launcher.
extern "C" __global__ void layernorm_backward(const float* __restrict__ dy, const float* __restrict__ x,
    const float* __restrict__ gamma, const float* __restrict__ beta, const float* __restrict__ u,
    const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ dx,
    float* __restrict__ dgamma, float* __restrict__ dbeta, float* __restrict__ du, int rows, int dim) {
  extern __shared__ float acc[];   // [2 * dim] block partial dgamma, dbeta
  if (gamma) for (int c = threadIdx.x; c < 2 * dim; c += blockDim.x) acc[c] = 0.f;
  __syncthreads();
  const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row < rows) {
    const float* xr = x + (size_t)row * dim;
    const float* dyr = dy + (size_t)row * dim;
    const float mu = mean[row], r = rstd[row];
    float sg = 0.f, sgx = 0.f;
    for (int c = lane; c < dim; c += 32) {
      const float xh = (xr[c] - mu) * r;
      float up = u ? dyr[c] * u[(size_t)row * dim + c] : dyr[c];
      if (gamma) { atomicAdd(&acc[c], up * xh); atomicAdd(&acc[dim + c], up); }
      if (u) du[(size_t)row * dim + c] = dyr[c] * (gamma ? xh * gamma[c] + beta[c] : xh);
      const float gg = gamma ? up * gamma[c] : up;
      sg += gg; sgx += gg * xh;
    }
    sg = warp_sum(sg) / dim; sgx = warp_sum(sgx) / dim;
    for (int c = lane; c < dim; c += 32) {
      const float xh = (xr[c] - mu) * r;
      float up = u ? dyr[c] * u[(size_t)row * dim + c] : dyr[c];
      const float gg = gamma ? up * gamma[c] : up;
      dx[(size_t)row * dim + c] = r * (gg - sg - xh * sgx);
    }
  }
  if (gamma) {
    __syncthreads();
    for (int c = threadIdx.x; c < dim; c += blockDim.x) { atomicAdd(&dgamma[c], acc[c]); atomicAdd(&dbeta[c], acc[dim + c]); }
  }
}
"""#
}

extension CUDADevice {
  private func layerNormModule() throws -> CUDAModule { try module("layernorm", source: LayerNormKernels.source) }

  /// y = LayerNorm(x) [⊙ γ + β] [then ⊙ u]. `mean` and `rstd` (one per row) are saved for backward.
  public func layerNormForward(x: DeviceArray<Float>, gamma: DeviceArray<Float>? = nil, beta: DeviceArray<Float>? = nil,
                               gate u: DeviceArray<Float>? = nil, y: DeviceArray<Float>, mean: DeviceArray<Float>,
                               rstd: DeviceArray<Float>, rows: Int, dim: Int, eps: Float) throws {
    try launch(layerNormModule().function("layernorm_forward"), grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1),
               [.pointer(x.address), .pointer(gamma?.address ?? 0), .pointer(beta?.address ?? 0), .pointer(u?.address ?? 0),
                .pointer(y.address), .pointer(mean.address), .pointer(rstd.address), .int(Int32(rows)), .int(Int32(dim)), .float(eps)])
  }

  /// Backward of `layerNormForward`: dx overwritten; dγ, dβ accumulated (+=); du overwritten.
  public func layerNormBackward(dy: DeviceArray<Float>, x: DeviceArray<Float>, gamma: DeviceArray<Float>? = nil,
                                beta: DeviceArray<Float>? = nil, gate u: DeviceArray<Float>? = nil,
                                mean: DeviceArray<Float>, rstd: DeviceArray<Float>, dx: DeviceArray<Float>,
                                dGamma: DeviceArray<Float>? = nil, dBeta: DeviceArray<Float>? = nil, dGate: DeviceArray<Float>? = nil,
                                rows: Int, dim: Int) throws {
    try launch(layerNormModule().function("layernorm_backward"), grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1),
               sharedBytes: gamma == nil ? 0 : 8 * dim,
               [.pointer(dy.address), .pointer(x.address), .pointer(gamma?.address ?? 0), .pointer(beta?.address ?? 0),
                .pointer(u?.address ?? 0), .pointer(mean.address), .pointer(rstd.address), .pointer(dx.address),
                .pointer(dGamma?.address ?? 0), .pointer(dBeta?.address ?? 0), .pointer(dGate?.address ?? 0),
                .int(Int32(rows)), .int(Int32(dim))])
  }
}
