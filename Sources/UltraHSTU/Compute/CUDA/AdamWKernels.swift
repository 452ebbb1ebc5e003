#if canImport(Glibc)
import Glibc
#endif

/// AdamW (PyTorch's form, decoupled weight decay), one fused pass over parameters, gradients and
/// both moments (fp32):
///   p ← p (1 − lr·wd);  m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
///   p ← p − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + eps)
/// and, in the same pass, the bf16 copy of p that the model's tensor-core GEMMs read (if asked).
enum AdamWKernels {
  static let source = CUDAPrelude.source + #"""
extern "C" __global__ void adamw_step(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, long long count, float lr, float beta1, float beta2, float eps, float weightDecay,
    float bias1, float bias2, bf16_t* __restrict__ shadow) {
  grid_dependency_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const float gi = g[i];
    const float mi = beta1 * m[i] + (1.f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
    m[i] = mi; v[i] = vi;
    const float pi = p[i] * (1.f - lr * weightDecay) - lr * (mi / bias1) / (sqrtf(vi / bias2) + eps);
    p[i] = pi;
    if (shadow) shadow[i] = float_to_bf16(pi);
  }
}
"""#
}

extension CUDADevice {
  /// One AdamW step at `step` (1-based) over `parameters.count` values; `shadow` (optional)
  /// receives the updated parameters in bf16.
  public func adamW(parameters: DeviceArray<Float>, gradients: DeviceArray<Float>, m: DeviceArray<Float>, v: DeviceArray<Float>,
                    shadow: DeviceArray<BFloat16>? = nil,
                    lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float, step: Int) throws {
    let bias1 = 1 - Float(pow(Double(beta1), Double(step)))
    let bias2 = 1 - Float(pow(Double(beta2), Double(step)))
    let count = parameters.count
    try launch(module("adamw", source: AdamWKernels.source).function("adamw_step"),
               grid: (max(1, min((count + 255) / 256, Int(multiprocessors) * 16)), 1, 1), block: (256, 1, 1),
               [.pointer(parameters.address), .pointer(gradients.address), .pointer(m.address), .pointer(v.address),
                .uint64(UInt64(count)), .float(lr), .float(beta1), .float(beta2), .float(eps), .float(weightDecay),
                .float(bias1), .float(bias2), .pointer(shadow?.address ?? 0)])
  }
}
