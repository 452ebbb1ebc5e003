/// LayerNorm over the last dimension (optionally affine), and the HSTU output gate
/// `y = Dropout(u ⊙ LayerNorm(o))`, forward and backward side by side. fp32 math; one warp per row.
///
///   x̂ = (x − mean) · rstd,  rstd = 1/sqrt(var + eps),  y = x̂ ⊙ γ + β  (γ = 1, β = 0 without affine)
///   dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)),  g = dy ⊙ γ;  dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy
/// For the gate, the LayerNorm's upstream gradient is dy ⊙ u, and du = dy ⊙ LayerNorm(o). The gate
/// is u = SiLU(pre_u), read from the bf16 GEMM output `pre` (its first `dim` columns, row stride
/// `gateStride`) rather than from a stored u, and the backward writes dpre_u = du ⊙ SiLU'(pre_u)
/// (bf16) straight into those columns of dpre: u and du never pass through memory.
///
/// Fusions that save the model whole passes over its activations:
/// - the output may be written fp32, bf16 (the next GEMM's operand) or both;
/// - dropout (counter-based, element index row·dim + c, as `dropout_apply`) is applied to the
///   forward output, and to dy before the backward uses it (the same mask);
/// - the backward may add its dx into the existing dx (the residual branch) and also write a bf16
///   copy of the sum;
/// - the backward's dy may be bf16 (`layernorm_backward_bf16_J_V`), as the data-gradient GEMMs
///   before it can write it: half the bytes of the largest input;
/// - x may be bf16 in both directions (`…_bf16x_J_V`): the HSTU gate's LayerNorm reads the
///   attention output, which the attention forward writes in bf16.
/// Each lane keeps its V-column chunks lane + 32·j (j < J, 32·J·V ≥ dim; J and V compile-time
/// instances, V = 4 for 16-byte accesses) in registers, so the inputs are read once and the dropout
/// mask is computed once per element.
enum LayerNormKernels {
  static let source = CUDAPrelude.source + #"""
#define ROWS_PER_BLOCK 8


/// V floats as bf16 (one 8-byte store for V = 4; p aligned to 2·V bytes).
template <int V> __device__ __forceinline__ void store_bf16_vec(bf16_t* p, const float (&o)[V]) {
  if constexpr (V == 4) *(uint2*)p = make_uint2(pack_bf16x2(o[0], o[1]), pack_bf16x2(o[2], o[3]));
  else *p = float_to_bf16(o[0]);
}

/// Forward. gamma/beta may be null (no affine); gate may be null (plain LayerNorm) or pre (the gate
/// is SiLU of its columns); y (fp32) and yh (bf16) may each be null. Lane l holds the V-column
/// chunks l + 32·j (j < J). X is float or bf16_t.
template <int J, int V, typename X>
__device__ __forceinline__ void layernorm_forward_rows(const X* __restrict__ x, const float* __restrict__ gamma,
    const float* __restrict__ beta, const bf16_t* __restrict__ gate, int gateStride, float* __restrict__ y, bf16_t* __restrict__ yh,
    float* __restrict__ mean, float* __restrict__ rstd, int rows, int dim, float eps, float rate, u64 seed, u64 stream) {
  const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const size_t base = (size_t)row * dim;
  const Dropout drop(rate, seed, stream);
  float xv[J][V], s = 0.f;
  #pragma unroll
  for (int j = 0; j < J; ++j) {
    const int c = (lane + 32 * j) * V;
    if (c < dim) load_floats(x + base + c, xv[j]);
    else {
      #pragma unroll
      for (int i = 0; i < V; ++i) xv[j][i] = 0.f;
    }
    #pragma unroll
    for (int i = 0; i < V; ++i) s += xv[j][i];
  }
  const float mu = warp_sum(s) / dim;
  float v = 0.f;
  #pragma unroll
  for (int j = 0; j < J; ++j)
    if ((lane + 32 * j) * V < dim) {
      #pragma unroll
      for (int i = 0; i < V; ++i) { const float d = xv[j][i] - mu; v += d * d; }
    }
  const float r = rsqrtf(warp_sum(v) / dim + eps);
  #pragma unroll
  for (int j = 0; j < J; ++j) {
    const int c = (lane + 32 * j) * V;
    if (c >= dim) break;
    float g[V], b[V], uv[V], out[V];
    if (gamma) { load_vec(gamma + c, g); load_vec(beta + c, b); }
    if (gate) load_bf16_vec(gate + (size_t)row * gateStride + c, uv);
    #pragma unroll
    for (int i = 0; i < V; ++i) {
      float n = (xv[j][i] - mu) * r;
      if (gamma) n = n * g[i] + b[i];
      out[i] = drop(gate ? silu_exact(uv[i]) * n : n, base + c + i);
    }
    if (y) store_vec(y + base + c, out);
    if (yh) store_bf16_vec(yh + base + c, out);
  }
  if (lane == 0) { mean[row] = mu; rstd[row] = r; }
}

/// Backward: dx overwritten (or, with accumulate, added to) and/or written as bf16 (dxh);
/// dgamma/dbeta (if affine) accumulated; with a gate, dgate (bf16, the gate's columns of dpre, row
/// stride gateStride) overwritten with du ⊙ SiLU'(pre). dy is taken through the forward's dropout
/// mask first. DY and X are float or bf16_t.
template <int J, int V, typename DY, typename X>
__device__ __forceinline__ void layernorm_backward_rows(const DY* __restrict__ dy, const X* __restrict__ x,
    const float* __restrict__ gamma, const float* __restrict__ beta, const bf16_t* __restrict__ gate, int gateStride,
    const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ dx, bf16_t* __restrict__ dxh,
    int accumulate, float* __restrict__ dgamma, float* __restrict__ dbeta, bf16_t* __restrict__ dgate, int rows, int dim,
    float rate, u64 seed, u64 stream) {
  extern __shared__ float acc[];   // [2 * dim] block partial dgamma, dbeta
  if (gamma) for (int c = threadIdx.x; c < 2 * dim; c += blockDim.x) acc[c] = 0.f;
  __syncthreads();
  const int row = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row < rows) {
    const size_t base = (size_t)row * dim;
    const float mu = mean[row], r = rstd[row];
    const Dropout drop(rate, seed, stream);
    float xh[J][V], gg[J][V], sg = 0.f, sgx = 0.f;
    #pragma unroll
    for (int j = 0; j < J; ++j) {
      const int c = (lane + 32 * j) * V;
      #pragma unroll
      for (int i = 0; i < V; ++i) { xh[j][i] = 0.f; gg[j][i] = 0.f; }
      if (c >= dim) continue;
      float xv[V], dyv[V], pv[V], g[V], b[V], duv[V];
      load_floats(x + base + c, xv);
      load_floats(dy + base + c, dyv);
      if (gate) load_bf16_vec(gate + (size_t)row * gateStride + c, pv);
      if (gamma) { load_vec(gamma + c, g); load_vec(beta + c, b); }
      #pragma unroll
      for (int i = 0; i < V; ++i) {
        xh[j][i] = (xv[i] - mu) * r;
        const float d = drop(dyv[i], base + c + i);
        const float sig = gate ? sigmoidf_exact(pv[i]) : 0.f;   // u = pv·σ, u' = σ(1 + pv(1 − σ))
        const float up = gate ? d * (pv[i] * sig) : d;
        if (gamma) { atomicAdd(&acc[c + i], up * xh[j][i]); atomicAdd(&acc[dim + c + i], up); }
        if (gate) duv[i] = d * (gamma ? xh[j][i] * g[i] + b[i] : xh[j][i]) * (sig * (1.f + pv[i] * (1.f - sig)));
        gg[j][i] = gamma ? up * g[i] : up;
        sg += gg[j][i]; sgx += gg[j][i] * xh[j][i];
      }
      if (gate) store_bf16_vec(dgate + (size_t)row * gateStride + c, duv);
    }
    sg = warp_sum(sg) / dim; sgx = warp_sum(sgx) / dim;
    #pragma unroll
    for (int j = 0; j < J; ++j) {
      const int c = (lane + 32 * j) * V;
      if (c >= dim) break;
      float out[V], prior[V];
      if (accumulate) load_vec(dx + base + c, prior);
      #pragma unroll
      for (int i = 0; i < V; ++i) out[i] = r * (gg[j][i] - sg - xh[j][i] * sgx) + (accumulate ? prior[i] : 0.f);
      if (dx) store_vec(dx + base + c, out);
      if (dxh) store_bf16_vec(dxh + base + c, out);
    }
  }
  if (gamma) {
    __syncthreads();
    for (int c = threadIdx.x; c < dim; c += blockDim.x) { atomicAdd(&dgamma[c], acc[c]); atomicAdd(&dbeta[c], acc[dim + c]); }
  }
}

/// The instances: layernorm_forward[_bf16x]_J_V and layernorm_backward[_bf16][_bf16x]_J_V (_bf16:
/// dy bf16, _bf16x: x bf16) for rows of at most 32·J·V columns, V columns per access (V = 4 needs
/// dim % 4 == 0, 16-byte aligned fp32 rows and 8-byte aligned bf16 rows).
#define LAYERNORM_BACKWARD_INSTANCE(NAME, DY, X, J, V) \
extern "C" __global__ void NAME##_##J##_##V(const DY* dy, const X* x, const float* gamma, const float* beta, \
    const bf16_t* gate, int gateStride, const float* mean, const float* rstd, float* dx, bf16_t* dxh, int accumulate, float* dgamma, \
    float* dbeta, bf16_t* dgate, int rows, int dim, float rate, u64 seed, u64 stream) { \
  grid_dependency_wait(); \
  layernorm_backward_rows<J, V, DY, X>(dy, x, gamma, beta, gate, gateStride, mean, rstd, dx, dxh, accumulate, dgamma, dbeta, dgate, \
                                       rows, dim, rate, seed, stream); \
}
#define LAYERNORM_FORWARD_INSTANCE(NAME, X, J, V) \
extern "C" __global__ void NAME##_##J##_##V(const X* x, const float* gamma, const float* beta, const bf16_t* gate, \
    int gateStride, float* y, bf16_t* yh, float* mean, float* rstd, int rows, int dim, float eps, float rate, u64 seed, u64 stream) { \
  grid_dependency_wait(); \
  layernorm_forward_rows<J, V, X>(x, gamma, beta, gate, gateStride, y, yh, mean, rstd, rows, dim, eps, rate, seed, stream); \
}
#define LAYERNORM_INSTANCE(J, V) \
LAYERNORM_FORWARD_INSTANCE(layernorm_forward, float, J, V) \
LAYERNORM_FORWARD_INSTANCE(layernorm_forward_bf16x, bf16_t, J, V) \
LAYERNORM_BACKWARD_INSTANCE(layernorm_backward, float, float, J, V) \
LAYERNORM_BACKWARD_INSTANCE(layernorm_backward_bf16, bf16_t, float, J, V) \
LAYERNORM_BACKWARD_INSTANCE(layernorm_backward_bf16x, float, bf16_t, J, V) \
LAYERNORM_BACKWARD_INSTANCE(layernorm_backward_bf16_bf16x, bf16_t, bf16_t, J, V)
LAYERNORM_INSTANCE(2, 1)
LAYERNORM_INSTANCE(4, 1)
LAYERNORM_INSTANCE(8, 1)
LAYERNORM_INSTANCE(16, 1)
LAYERNORM_INSTANCE(32, 1)
LAYERNORM_INSTANCE(64, 1)
LAYERNORM_INSTANCE(1, 4)
LAYERNORM_INSTANCE(2, 4)
LAYERNORM_INSTANCE(4, 4)
LAYERNORM_INSTANCE(8, 4)
LAYERNORM_INSTANCE(16, 4)
"""#
}

/// The HSTU output gate of `layerNormForward` and `layerNormBackward`: u = SiLU of the first `dim`
/// columns of each row of `pre` (bf16, row stride `stride` elements); the backward writes
/// dL/dpre = du ⊙ SiLU'(pre) into the same columns of `dPre`.
public struct SiLUGate {
  public var pre: DeviceArray<BFloat16>
  public var stride: Int
  public var dPre: DeviceArray<BFloat16>?

  public init(pre: DeviceArray<BFloat16>, stride: Int, dPre: DeviceArray<BFloat16>? = nil) {
    self.pre = pre
    self.stride = stride
    self.dPre = dPre
  }

  /// Whether four consecutive gate columns can be read (and written) as one 8-byte access.
  var allowsVectors: Bool { stride % 4 == 0 && pre.address % 8 == 0 && (dPre?.address ?? 0) % 8 == 0 }
  var arguments: [KernelArgument] { [.pointer(pre.address), .int(Int32(stride))] }
  static let absent: [KernelArgument] = [.pointer(0), .int(0)]
}

extension CUDADevice {
  /// The instance of `name` (layernorm_forward…, layernorm_backward…) whose lanes hold `dim`
  /// columns: 16-byte accesses when `dim` is a multiple of 4, every fp32 array is 16-byte aligned,
  /// every bf16 array 8-byte aligned and the gate allows 8-byte accesses.
  private func layerNormKernel(_ name: String, dim: Int, _ arrays: [DeviceArray<Float>?], bf16 halves: [DeviceArray<BFloat16>?],
                               gate: SiLUGate?) throws -> CUDAFunction {
    let aligned = arrays.allSatisfy { ($0?.address ?? 0) % 16 == 0 } && halves.allSatisfy { ($0?.address ?? 0) % 8 == 0 }
      && (gate?.allowsVectors ?? true)
    let vector = dim % 4 == 0 && aligned ? 4 : 1
    let chunks = vector == 4 ? [1, 2, 4, 8, 16] : [2, 4, 8, 16, 32, 64]
    guard let j = chunks.first(where: { 32 * $0 * vector >= dim }) else {
      throw CUDAError.unsupported("LayerNorm over \(dim) > 2048 columns")
    }
    return try module("layernorm", source: LayerNormKernels.source).function("\(name)_\(j)_\(vector)")
  }

  /// `array` as the fp32 or the bf16 input of a LayerNorm kernel (the other nil).
  private static func layerNormInput<T>(_ array: DeviceArray<T>) throws -> (DeviceArray<Float>?, DeviceArray<BFloat16>?) {
    switch array {
    case let a as DeviceArray<Float>: return (a, nil)
    case let a as DeviceArray<BFloat16>: return (nil, a)
    default: throw CUDAError.unsupported("LayerNorm input of type \(T.self)")
    }
  }

  /// y = Dropout(LayerNorm(x) [⊙ γ + β] [⊙ SiLU(gate)]) into `y` (fp32) and/or `yBF16`; x fp32 or
  /// bf16. `mean` and `rstd` (one per row) are saved for backward.
  public func layerNormForward<X>(x: DeviceArray<X>, gamma: DeviceArray<Float>? = nil, beta: DeviceArray<Float>? = nil,
                                  gate: SiLUGate? = nil, y: DeviceArray<Float>? = nil, yBF16: DeviceArray<BFloat16>? = nil,
                                  dropout: DropoutMask? = nil, mean: DeviceArray<Float>, rstd: DeviceArray<Float>,
                                  rows: Int, dim: Int, eps: Float) throws {
    let (xFloat, xHalf) = try Self.layerNormInput(x)
    try launch(layerNormKernel("layernorm_forward" + (xHalf == nil ? "" : "_bf16x"), dim: dim, [xFloat, gamma, beta, y],
                               bf16: [yBF16, xHalf], gate: gate),
               grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1),
               [.pointer(x.address), .pointer(gamma?.address ?? 0), .pointer(beta?.address ?? 0)] + (gate?.arguments ?? SiLUGate.absent)
               + [.pointer(y?.address ?? 0), .pointer(yBF16?.address ?? 0), .pointer(mean.address), .pointer(rstd.address),
                  .int(Int32(rows)), .int(Int32(dim)), .float(eps)] + DropoutMask.arguments(dropout))
  }

  /// Backward of `layerNormForward` (with the same `dropout` and gate): dx overwritten, or added to
  /// when `accumulate`, and/or written as bf16 into `dxBF16`; dγ, dβ accumulated (+=); with a gate,
  /// its `dPre` columns overwritten. `dy` and `x` are each fp32 or bf16.
  public func layerNormBackward<DY, X>(dy: DeviceArray<DY>, x: DeviceArray<X>, gamma: DeviceArray<Float>? = nil,
                                beta: DeviceArray<Float>? = nil, gate: SiLUGate? = nil, dropout: DropoutMask? = nil,
                                mean: DeviceArray<Float>, rstd: DeviceArray<Float>, dx: DeviceArray<Float>? = nil,
                                dxBF16: DeviceArray<BFloat16>? = nil, accumulate: Bool = false,
                                dGamma: DeviceArray<Float>? = nil, dBeta: DeviceArray<Float>? = nil,
                                rows: Int, dim: Int) throws {
    guard !accumulate || dx != nil else { throw CUDAError.unsupported("layerNormBackward: accumulate needs dx") }
    guard gate == nil || gate?.dPre != nil else { throw CUDAError.unsupported("layerNormBackward: a gate needs dPre") }
    let (dyFloat, dyHalf) = try Self.layerNormInput(dy), (xFloat, xHalf) = try Self.layerNormInput(x)
    let name = "layernorm_backward" + (dyHalf == nil ? "" : "_bf16") + (xHalf == nil ? "" : "_bf16x")
    let kernel = try layerNormKernel(name, dim: dim, [dyFloat, xFloat, gamma, beta, dx], bf16: [dyHalf, xHalf, dxBF16], gate: gate)
    try launch(kernel,
               grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1), sharedBytes: gamma == nil ? 0 : 8 * dim,
               [.pointer(dy.address), .pointer(x.address), .pointer(gamma?.address ?? 0), .pointer(beta?.address ?? 0)]
               + (gate?.arguments ?? SiLUGate.absent)
               + [.pointer(mean.address), .pointer(rstd.address), .pointer(dx?.address ?? 0),
                  .pointer(dxBF16?.address ?? 0), .int(accumulate ? 1 : 0),
                  .pointer(dGamma?.address ?? 0), .pointer(dBeta?.address ?? 0), .pointer(gate?.dPre?.address ?? 0),
                  .int(Int32(rows)), .int(Int32(dim))] + DropoutMask.arguments(dropout))
  }
}
