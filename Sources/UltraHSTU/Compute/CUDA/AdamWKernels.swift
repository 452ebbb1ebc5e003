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
///
/// A launch may update only some rows of a `[rows, dim]` table (`AdamWRows`): those whose stamp
/// equals the current one (the rows the batch's inputs read, marked by `adamw_mark_rows`) or the
/// others. The two launches together make the same step as one over the whole table, so the rows
/// outside the batch can be updated as soon as their gradient is final.
enum AdamWKernels {
  static let source = CUDAPrelude.source + #"""
struct AdamWArgs { float lr, beta1, beta2, eps, weightDecay, bias1, bias2; };

__device__ __forceinline__ void adamw_update(float& p, float g, float& m, float& v, const AdamWArgs& a) {
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  p = p * (1.f - a.lr * a.weightDecay) - a.lr * (m / a.bias1) / (sqrtf(v / a.bias2) + a.eps);
}

/// The rows of a `[rows, dim]` block one launch updates: those with stamps[row] == stamp if
/// touched, the others if not; every value when stamps is null.
struct RowSelection {
  const u32* stamps; u32 stamp; int dim; int touched;
  __device__ __forceinline__ bool skips(long long value) const {
    return stamps && ((stamps[value / dim] == stamp) != (touched != 0));
  }
};

/// Values [V·i, V·i + V) for i in a grid-stride loop; count is a multiple of V (and V divides dim).
template <int V>
__device__ __forceinline__ void adamw_values(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, long long count, const AdamWArgs& a, bf16_t* __restrict__ shadow, const RowSelection& rows) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count / V; i += (long long)gridDim.x * blockDim.x) {
    if (rows.skips(V * i)) continue;
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
    float beta2, float eps, float weightDecay, float bias1, float bias2, bf16_t* shadow, const u32* stamps, u32 stamp, int dim, \
    int touched) { \
  grid_dependency_wait(); \
  adamw_values<V>(p, g, m, v, count, AdamWArgs{lr, beta1, beta2, eps, weightDecay, bias1, bias2}, shadow, \
                  RowSelection{stamps, stamp, dim, touched}); \
}
ADAMW_INSTANCE(1)
ADAMW_INSTANCE(4)

/// stamps[ids[i]] = stamp for i < n: the table rows a batch's inputs read.
extern "C" __global__ void adamw_mark_rows(const int* __restrict__ ids, int n, u32* __restrict__ stamps, u32 stamp) {
  grid_dependency_wait();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) stamps[ids[i]] = stamp;
}
"""#
}

/// The rows of a `[rows, dim]` parameter table that one AdamW launch updates: those marked with
/// `stamp` in `stamps` (one entry per row) when `touched`, the others when not.
public struct AdamWRows {
  public let stamps: DeviceArray<UInt32>
  public let stamp: UInt32
  public let dim: Int
  public let touched: Bool

  public init(stamps: DeviceArray<UInt32>, stamp: UInt32, dim: Int, touched: Bool) {
    self.stamps = stamps
    self.stamp = stamp
    self.dim = dim
    self.touched = touched
  }
}

extension CUDADevice {
  /// One AdamW step at `step` (1-based) over `parameters.count` values, or over the rows of them
  /// that `rows` selects; `shadow` (optional) receives the updated parameters in bf16. Four values
  /// per access when the count, the row width and the arrays' alignment allow it.
  public func adamW(parameters: DeviceArray<Float>, gradients: DeviceArray<Float>, m: DeviceArray<Float>, v: DeviceArray<Float>,
                    shadow: DeviceArray<BFloat16>? = nil, rows: AdamWRows? = nil,
                    lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float, step: Int) throws {
    let bias1 = 1 - Float(pow(Double(beta1), Double(step)))
    let bias2 = 1 - Float(pow(Double(beta2), Double(step)))
    let count = parameters.count
    if let rows { precondition(rows.stamps.count * rows.dim == count, "one stamp per row of the parameters") }
    let vector = count % 4 == 0 && (rows?.dim ?? 4) % 4 == 0
      && [parameters.address, gradients.address, m.address, v.address].allSatisfy { $0 % 16 == 0 }
      && (shadow?.address ?? 0) % 8 == 0 ? 4 : 1
    // On the side stream one vector per thread: each block holds its SM only briefly, so the
    // main stream's blocks find room as soon as they are launched.
    let blocks = (count / vector + 255) / 256
    try launch(module("adamw", source: AdamWKernels.source).function("adamw_step_\(vector)"),
               grid: (max(1, stream == mainStream ? min(blocks, Int(multiprocessors) * 16) : blocks), 1, 1), block: (256, 1, 1),
               [.pointer(parameters.address), .pointer(gradients.address), .pointer(m.address), .pointer(v.address),
                .uint64(UInt64(count)), .float(lr), .float(beta1), .float(beta2), .float(eps), .float(weightDecay),
                .float(bias1), .float(bias2), .pointer(shadow?.address ?? 0), .pointer(rows?.stamps.address ?? 0),
                .int(Int32(bitPattern: rows?.stamp ?? 0)), .int(Int32(rows?.dim ?? 1)), .int(rows?.touched == true ? 1 : 0)])
  }

  /// stamps[ids[i]] = stamp for every id: marks the table rows a batch's inputs read.
  public func markRows(ids: DeviceArray<Int32>, stamps: DeviceArray<UInt32>, stamp: UInt32) throws {
    guard ids.count > 0 else { return }
    try launch(module("adamw", source: AdamWKernels.source).function("adamw_mark_rows"),
               grid: (min((ids.count + 255) / 256, Int(multiprocessors) * 8), 1, 1), block: (256, 1, 1),
               [.pointer(ids.address), .int(Int32(ids.count)), .pointer(stamps.address), .int(Int32(bitPattern: stamp))])
  }
}
