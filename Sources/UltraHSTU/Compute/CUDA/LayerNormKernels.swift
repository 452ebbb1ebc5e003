/// LayerNorm over the last dimension (optionally affine), and the HSTU output gate
/// `y = Dropout(u ⊙ LayerNorm(o))`, forward and backward side by side. fp32 math; one warp per row.
///
///   x̂ = (x − mean) · rstd,  rstd = 1/sqrt(var + eps),  y = x̂ ⊙ γ + β  (γ = 1, β = 0 without affine)
///   dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)),  g = dy ⊙ γ;  dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy
/// For the gate, the LayerNorm's upstream gradient is dy ⊙ u, and du = dy ⊙ LayerNorm(o).
///
/// Fusions that save the model whole passes over its activations:
/// - the output may be written fp32, bf16 (the next GEMM's operand) or both;
/// - dropout (counter-based, element index row·dim + c, as `dropout_apply`) is applied to the
///   forward output, and to dy before the backward uses it (the same mask);
/// - the backward may add its dx into the existing dx (the residual branch) and also write a bf16
///   copy of the sum.
/// Each lane keeps its columns lane + 32·j (j < J, 32·J ≥ dim; J a compile-time instance) in
/// registers, so the inputs are read once and the dropout mask is computed once per element.
enum LayerNormKernels {
  static let source = CUDAPrelude.source + #"""
#define ROWS_PER_BLOCK 8

__device__ __forceinline__ float dropout_keep(float value, float rate, u64 seed, u64 stream, size_t index) {
  return rate > 0.f ? (counter_unit(seed, stream, (u64)index) >= rate ? value / (1.f - rate) : 0.f) : value;
}

/// Forward. gamma/beta may be null (no affine); u may be null (plain LayerNorm) or the gate;
/// y (fp32) and yh (bf16) may each be null.
template <int J>
__device__ __forceinline__ void layernorm_forward_rows(const float* __restrict__ x, const float* __restrict__ gamma,
    const float* __restrict__ beta, const float* __restrict__ u, float* __restrict__ y, bf16_t* __restrict__ yh,
    float* __restrict__ mean, float* __restrict__ rstd, int rows, int dim, float eps, float rate, u64 seed, u64 stream) {
  const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + (size_t)row * dim;
  float xv[J], s = 0.f;
  #pragma unroll
  for (int j = 0; j < J; ++j) { const int c = lane + 32 * j; xv[j] = c < dim ? xr[c] : 0.f; s += xv[j]; }
  const float mu = warp_sum(s) / dim;
  float v = 0.f;
  #pragma unroll
  for (int j = 0; j < J; ++j) if (lane + 32 * j < dim) { const float d = xv[j] - mu; v += d * d; }
  const float r = rsqrtf(warp_sum(v) / dim + eps);
  #pragma unroll
  for (int j = 0; j < J; ++j) {
    const int c = lane + 32 * j;
    if (c >= dim) break;
    const size_t i = (size_t)row * dim + c;
    float n = (xv[j] - mu) * r;
    if (gamma) n = n * gamma[c] + beta[c];
    const float out = dropout_keep(u ? u[i] * n : n, rate, seed, stream, i);
    if (y) y[i] = out;
    if (yh) yh[i] = float_to_bf16(out);
  }
  if (lane == 0) { mean[row] = mu; rstd[row] = r; }
}

/// Backward: dx overwritten (or, with accumulate, added to) and/or written as bf16 (dxh);
/// dgamma/dbeta (if affine) accumulated; du (if gated) overwritten. dy is taken through the
/// forward's dropout mask first.
template <int J>
__device__ __forceinline__ void layernorm_backward_rows(const float* __restrict__ dy, const float* __restrict__ x,
    const float* __restrict__ gamma, const float* __restrict__ beta, const float* __restrict__ u,
    const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ dx, bf16_t* __restrict__ dxh,
    int accumulate, float* __restrict__ dgamma, float* __restrict__ dbeta, float* __restrict__ du, int rows, int dim,
    float rate, u64 seed, u64 stream) {
  extern __shared__ float acc[];   // [2 * dim] block partial dgamma, dbeta
  if (gamma) for (int c = threadIdx.x; c < 2 * dim; c += blockDim.x) acc[c] = 0.f;
  __syncthreads();
  const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row < rows) {
    const float* xr = x + (size_t)row * dim;
    const size_t base = (size_t)row * dim;
    const float mu = mean[row], r = rstd[row];
    float xh[J], gg[J], sg = 0.f, sgx = 0.f;
    #pragma unroll
    for (int j = 0; j < J; ++j) {
      const int c = lane + 32 * j;
      xh[j] = 0.f; gg[j] = 0.f;
      if (c >= dim) continue;
      xh[j] = (xr[c] - mu) * r;
      const float d = dropout_keep(dy[base + c], rate, seed, stream, base + c);
      const float up = u ? d * u[base + c] : d;
      if (gamma) { atomicAdd(&acc[c], up * xh[j]); atomicAdd(&acc[dim + c], up); }
      if (u) du[base + c] = d * (gamma ? xh[j] * gamma[c] + beta[c] : xh[j]);
      gg[j] = gamma ? up * gamma[c] : up;
      sg += gg[j]; sgx += gg[j] * xh[j];
    }
    sg = warp_sum(sg) / dim; sgx = warp_sum(sgx) / dim;
    #pragma unroll
    for (int j = 0; j < J; ++j) {
      const int c = lane + 32 * j;
      if (c >= dim) break;
      float out = r * (gg[j] - sg - xh[j] * sgx);
      if (accumulate) out += dx[base + c];
      if (dx) dx[base + c] = out;
      if (dxh) dxh[base + c] = float_to_bf16(out);
    }
  }
  if (gamma) {
    __syncthreads();
    for (int c = threadIdx.x; c < dim; c += blockDim.x) { atomicAdd(&dgamma[c], acc[c]); atomicAdd(&dbeta[c], acc[dim + c]); }
  }
}

/// The instances: layernorm_forward_J / layernorm_backward_J for rows of at most 32·J columns.
#define LAYERNORM_INSTANCE(J) \
extern "C" __global__ void layernorm_forward_##J(const float* x, const float* gamma, const float* beta, const float* u, \
    float* y, bf16_t* yh, float* mean, float* rstd, int rows, int dim, float eps, float rate, u64 seed, u64 stream) { \
  layernorm_forward_rows<J>(x, gamma, beta, u, y, yh, mean, rstd, rows, dim, eps, rate, seed, stream); \
} \
extern "C" __global__ void layernorm_backward_##J(const float* dy, const float* x, const float* gamma, const float* beta, \
    const float* u, const float* mean, const float* rstd, float* dx, bf16_t* dxh, int accumulate, float* dgamma, \
    float* dbeta, float* du, int rows, int dim, float rate, u64 seed, u64 stream) { \
  layernorm_backward_rows<J>(dy, x, gamma, beta, u, mean, rstd, dx, dxh, accumulate, dgamma, dbeta, du, rows, dim, rate, seed, stream); \
}
LAYERNORM_INSTANCE(2)
LAYERNORM_INSTANCE(4)
LAYERNORM_INSTANCE(8)
LAYERNORM_INSTANCE(16)
LAYERNORM_INSTANCE(32)
LAYERNORM_INSTANCE(64)
"""#
}

/// A counter-based dropout mask: element `i` of the tensor is kept when
/// `unit(seed, stream, i) ≥ rate` (the CPU model's `CPUOps.dropoutForward`).
public struct DropoutMask: Sendable {
  public var rate: Float
  public var seed: UInt64
  public var stream: UInt64
  public init(rate: Float, seed: UInt64, stream: UInt64) {
    self.rate = rate
    self.seed = seed
    self.stream = stream
  }
}

extension CUDADevice {
  /// The instance of `name` (layernorm_forward or layernorm_backward) whose lanes hold `dim` columns.
  private func layerNormKernel(_ name: String, dim: Int) throws -> CUDAFunction {
    guard let j = [2, 4, 8, 16, 32, 64].first(where: { 32 * $0 >= dim }) else {
      throw CUDAError.unsupported("LayerNorm over \(dim) > 2048 columns")
    }
    return try module("layernorm", source: LayerNormKernels.source).function("\(name)_\(j)")
  }

  private func dropoutArguments(_ mask: DropoutMask?) -> [KernelArgument] {
    [.float(mask?.rate ?? 0), .uint64(mask?.seed ?? 0), .uint64(mask?.stream ?? 0)]
  }

  /// y = Dropout(LayerNorm(x) [⊙ γ + β] [⊙ u]) into `y` (fp32) and/or `yBF16`. `mean` and `rstd`
  /// (one per row) are saved for backward.
  public func layerNormForward(x: DeviceArray<Float>, gamma: DeviceArray<Float>? = nil, beta: DeviceArray<Float>? = nil,
                               gate u: DeviceArray<Float>? = nil, y: DeviceArray<Float>? = nil, yBF16: DeviceArray<BFloat16>? = nil,
                               dropout: DropoutMask? = nil, mean: DeviceArray<Float>, rstd: DeviceArray<Float>,
                               rows: Int, dim: Int, eps: Float) throws {
    try launch(layerNormKernel("layernorm_forward", dim: dim), grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1),
               [.pointer(x.address), .pointer(gamma?.address ?? 0), .pointer(beta?.address ?? 0), .pointer(u?.address ?? 0),
                .pointer(y?.address ?? 0), .pointer(yBF16?.address ?? 0), .pointer(mean.address), .pointer(rstd.address),
                .int(Int32(rows)), .int(Int32(dim)), .float(eps)] + dropoutArguments(dropout))
  }

  /// Backward of `layerNormForward` (with the same `dropout`): dx overwritten, or added to when
  /// `accumulate`, and/or written as bf16 into `dxBF16`; dγ, dβ accumulated (+=); du overwritten.
  public func layerNormBackward(dy: DeviceArray<Float>, x: DeviceArray<Float>, gamma: DeviceArray<Float>? = nil,
                                beta: DeviceArray<Float>? = nil, gate u: DeviceArray<Float>? = nil, dropout: DropoutMask? = nil,
                                mean: DeviceArray<Float>, rstd: DeviceArray<Float>, dx: DeviceArray<Float>? = nil,
                                dxBF16: DeviceArray<BFloat16>? = nil, accumulate: Bool = false,
                                dGamma: DeviceArray<Float>? = nil, dBeta: DeviceArray<Float>? = nil, dGate: DeviceArray<Float>? = nil,
                                rows: Int, dim: Int) throws {
    guard !accumulate || dx != nil else { throw CUDAError.unsupported("layerNormBackward: accumulate needs dx") }
    try launch(layerNormKernel("layernorm_backward", dim: dim), grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1),
               sharedBytes: gamma == nil ? 0 : 8 * dim,
               [.pointer(dy.address), .pointer(x.address), .pointer(gamma?.address ?? 0), .pointer(beta?.address ?? 0),
                .pointer(u?.address ?? 0), .pointer(mean.address), .pointer(rstd.address), .pointer(dx?.address ?? 0),
                .pointer(dxBF16?.address ?? 0), .int(accumulate ? 1 : 0),
                .pointer(dGamma?.address ?? 0), .pointer(dBeta?.address ?? 0), .pointer(dGate?.address ?? 0),
                .int(Int32(rows)), .int(Int32(dim))] + dropoutArguments(dropout))
  }
}
