#if canImport(Glibc)
import Glibc
#endif

/// AdamW (PyTorch's form, decoupled weight decay), one fused pass over parameters, gradients and
/// both moments (fp32):
///   p ← p (1 − lr·wd);  m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
///   p ← p − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + eps)
/// and, in the same pass, the bf16 copy of p that the model's tensor-core GEMMs read (if asked).
/// `adamw_step_4` moves four values per 16-byte access (all arrays 16-byte aligned, the shadow
/// 8-byte aligned); `adamw_step_1` takes any alignment. Both do the same arithmetic per value.
enum AdamWKernels {
  static let source = CUDAPrelude.source + #"""
struct AdamWArgs { float lr, beta1, beta2, eps, weightDecay, bias1, bias2; };

__device__ __forceinline__ void adamw_update(float& p, float g, float& m, float& v, const AdamWArgs& a) {
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  p = p * (1.f - a.lr * a.weightDecay) - a.lr * (m / a.bias1) / (sqrtf(v / a.bias2) + a.eps);
}

/// Values [V·i, V·i + V) for i in a grid-stride loop; count is a multiple of V.
template <int V>
__device__ __forceinline__ void adamw_values(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, long long count, const AdamWArgs& a, bf16_t* __restrict__ shadow) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count / V; i += (long long)gridDim.x * blockDim.x) {
    float pv[V], gv[V], mv[V], vv[V];
    load_vec(p + V * i, pv); load_vec(g + V * i, gv); load_vec(m + V * i, mv); load_vec(v + V * i, vv);
    #pragma unroll
    for (int e = 0; e < V; ++e) adamw_update(pv[e], gv[e], mv[e], vv[e], a);
    store_vec(p + V * i, pv); store_vec(m + V * i, mv); store_vec(v + V * i, vv);
    if (shadow) {
      if constexpr (V == 4) *(uint2*)(shadow + V * i) = make_uint2(pack_bf16x2(pv[0], pv[1]), pack_bf16x2(pv[2], pv[3]));
      else shadow[i] = float_to_bf16(pv[0]);
    }
  }
}

#define ADAMW_INSTANCE(V) \
extern "C" __global__ void adamw_step_##V(float* p, const float* g, float* m, float* v, long long count, float lr, float beta1, \
    float beta2, float eps, float weightDecay, float bias1, float bias2, bf16_t* shadow) { \
  grid_dependency_wait(); \
  adamw_values<V>(p, g, m, v, count, AdamWArgs{lr, beta1, beta2, eps, weightDecay, bias1, bias2}, shadow); \
}
ADAMW_INSTANCE(1)
ADAMW_INSTANCE(4)
"""#
}

extension CUDADevice {
  /// One AdamW step at `step` (1-based) over `parameters.count` values; `shadow` (optional)
  /// receives the updated parameters in bf16. Four values per access when the count and the
  /// arrays' alignment allow it.
  public func adamW(parameters: DeviceArray<Float>, gradients: DeviceArray<Float>, m: DeviceArray<Float>, v: DeviceArray<Float>,
                    shadow: DeviceArray<BFloat16>? = nil,
                    lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float, step: Int) throws {
    let bias1 = 1 - Float(pow(Double(beta1), Double(step)))
    let bias2 = 1 - Float(pow(Double(beta2), Double(step)))
    let count = parameters.count
    let vector = count % 4 == 0 && [parameters.address, gradients.address, m.address, v.address].allSatisfy { $0 % 16 == 0 }
      && (shadow?.address ?? 0) % 8 == 0 ? 4 : 1
    try launch(module("adamw", source: AdamWKernels.source).function("adamw_step_\(vector)"),
               grid: (max(1, min((count / vector + 255) / 256, Int(multiprocessors) * 16)), 1, 1), block: (256, 1, 1),
               [.pointer(parameters.address), .pointer(gradients.address), .pointer(m.address), .pointer(v.address),
                .uint64(UInt64(count)), .float(lr), .float(beta1), .float(beta2), .float(eps), .float(weightDecay),
                .float(bias1), .float(bias2), .pointer(shadow?.address ?? 0)])
  }
}
