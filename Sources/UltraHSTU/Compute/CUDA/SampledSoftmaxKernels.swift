/// Sampled-softmax retrieval loss with L2-normalised embeddings, forward and backward in one pass
/// (the probabilities the backward needs are at hand in the forward, as in llm.c's classifier).
///
/// Row r with weight w_r (0 = not supervised): û = u_r/‖u_r‖, ê_c = E[c]/‖E[c]‖ (norms clamped to
/// at least eps), logits z_0 = û·ê_pos / T and z_k = û·ê_neg_k / T, where a negative equal to the
/// positive gets z_k = −5·10⁴ (accidental hit); loss_r = logsumexp(z) − z_0.
/// Loss = Σ w_r loss_r / Σ w_r. Gradients with g_k = (softmax(z)_k − [k = 0]) · w_r / (T Σ w):
///   dû = Σ_k g_k ê_k,   dê_k += g_k û,   and through the normalisation dx = (dx̂ − x̂ (x̂·dx̂)) / ‖x‖.
/// The kernel is bound by reading the candidates' rows (twice) and by the dTable atomics: when dim
/// is a multiple of 4 (at most 512) it reads rows as float4 and adds to dTable with one 16-byte vector atomic
/// (`red.global.add.v4.f32`, sm_90) per 4 columns.
enum SampledSoftmaxKernels {
  static let source = CUDAPrelude.source + #"""
#define MAX_DIM 1024
#define VEC_MAX_DIM 512   // the vector path keeps dû in 4 float4 registers per lane
/// dst[0..3] += v (one vector reduction; dst 16-byte aligned).
__device__ __forceinline__ void red_add_v4(float* dst, float4 v) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" :: "l"(dst), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w) : "memory");
}

/// One block per row; blockDim.x = 128. Shared: û (dim), logits (1 + R).
extern "C" __global__ void sampled_softmax_forward_backward(const float* __restrict__ user, const float* __restrict__ table,
    const int* __restrict__ positives, const int* __restrict__ negatives, const float* __restrict__ weights,
    float* __restrict__ loss, float* __restrict__ duser, float* __restrict__ dtable,
    int rows, int dim, int numNegatives, float temperature, float eps, float gradScale) {
  extern __shared__ __align__(16) float sh[];
  float* uh = sh;                      // [dim]
  float* z = sh + dim;                 // [1 + R]
  float* du = z + 1 + numNegatives;    // [dim]
  float* red = du + dim;               // [32]
  const int r = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const float w = weights[r];
  if (w == 0.f) {
    for (int c = threadIdx.x; c < dim; c += blockDim.x) duser[(size_t)r * dim + c] = 0.f;
    if (threadIdx.x == 0) loss[r] = 0.f;
    return;
  }
  const float* ur = user + (size_t)r * dim;
  float s = 0.f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) s += ur[c] * ur[c];
  const float unorm = fmaxf(sqrtf(block_sum(s, red)), eps);
  for (int c = threadIdx.x; c < dim; c += blockDim.x) { uh[c] = ur[c] / unorm; du[c] = 0.f; }
  __syncthreads();
  const int pos = positives[r];
  const bool vec = (dim & 3) == 0 && dim <= VEC_MAX_DIM;
  const float4* uh4 = (const float4*)uh;
  // One warp per candidate: logit = û·E[c] / (‖E[c]‖ T).
  for (int k = warp; k <= numNegatives; k += warps) {
    const int id = k == 0 ? pos : negatives[(size_t)r * numNegatives + k - 1];
    const float* er = table + (size_t)id * dim;
    float d = 0.f, n = 0.f;
    if (vec) {
      for (int c = lane; c < dim / 4; c += 32) {
        const float4 e = ((const float4*)er)[c], u = uh4[c];
        d += u.x * e.x + u.y * e.y + u.z * e.z + u.w * e.w;
        n += e.x * e.x + e.y * e.y + e.z * e.z + e.w * e.w;
      }
    } else {
      for (int c = lane; c < dim; c += 32) { d += uh[c] * er[c]; n += er[c] * er[c]; }
    }
    d = warp_sum(d); n = warp_sum(n);
    if (lane == 0) z[k] = (k > 0 && id == pos) ? -5e4f : d / (fmaxf(sqrtf(n), eps) * temperature);
  }
  __syncthreads();
  float mx = -3.0e38f;
  for (int k = 0; k <= numNegatives; ++k) mx = fmaxf(mx, z[k]);
  float se = 0.f;
  for (int k = 0; k <= numNegatives; ++k) se += __expf(z[k] - mx);
  if (threadIdx.x == 0) loss[r] = (mx + logf(se)) - z[0];
  const float scale = w * gradScale / temperature;
  // Gradients: per candidate k, g_k = (p_k − [k=0]) · scale; dê_k = g_k û, dû += g_k ê_k
  // (vector path: dû in registers per warp, lane owning float4 columns lane + 32 j, then shared).
  float4 acc[VEC_MAX_DIM / 128];
  #pragma unroll
  for (int j = 0; j < VEC_MAX_DIM / 128; ++j) acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int k = warp; k <= numNegatives; k += warps) {
    const int id = k == 0 ? pos : negatives[(size_t)r * numNegatives + k - 1];
    if (k > 0 && id == pos) continue;   // masked logit: constant, no gradient
    const float g = (__expf(z[k] - mx) / se - (k == 0 ? 1.f : 0.f)) * scale;
    const float* er = table + (size_t)id * dim;
    float* dr = dtable + (size_t)id * dim;
    float n = 0.f, dotE = 0.f;
    if (vec) {
      for (int c = lane; c < dim / 4; c += 32) {
        const float4 e = ((const float4*)er)[c], u = uh4[c];
        n += e.x * e.x + e.y * e.y + e.z * e.z + e.w * e.w;
        dotE += u.x * e.x + u.y * e.y + u.z * e.z + u.w * e.w;
      }
    } else {
      for (int c = lane; c < dim; c += 32) { n += er[c] * er[c]; dotE += er[c] * uh[c]; }
    }
    const float enorm = fmaxf(sqrtf(warp_sum(n)), eps);
    dotE = warp_sum(dotE) / enorm;   // ê·û
    const float ge = g / enorm;
    if (vec) {
      #pragma unroll
      for (int j = 0; j < VEC_MAX_DIM / 128; ++j) {
        const int c = lane + 32 * j;
        if (c >= dim / 4) break;
        const float4 e = ((const float4*)er)[c], u = uh4[c];
        const float4 eh = make_float4(e.x / enorm, e.y / enorm, e.z / enorm, e.w / enorm);
        acc[j].x += g * eh.x; acc[j].y += g * eh.y; acc[j].z += g * eh.z; acc[j].w += g * eh.w;
        red_add_v4(dr + 4 * c, make_float4(ge * (u.x - eh.x * dotE), ge * (u.y - eh.y * dotE),
                                           ge * (u.z - eh.z * dotE), ge * (u.w - eh.w * dotE)));
      }
    } else {
      for (int c = lane; c < dim; c += 32) {
        const float eh = er[c] / enorm;
        atomicAdd(&du[c], g * eh);
        atomicAdd(dr + c, ge * (uh[c] - eh * dotE));
      }
    }
  }
  if (vec) {
    #pragma unroll
    for (int j = 0; j < VEC_MAX_DIM / 128; ++j) {
      const int c = lane + 32 * j;
      if (c >= dim / 4) break;
      atomicAdd(&du[4 * c], acc[j].x); atomicAdd(&du[4 * c + 1], acc[j].y);
      atomicAdd(&du[4 * c + 2], acc[j].z); atomicAdd(&du[4 * c + 3], acc[j].w);
    }
  }
  __syncthreads();
  float dd = 0.f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) dd += du[c] * uh[c];
  dd = block_sum(dd, red);
  for (int c = threadIdx.x; c < dim; c += blockDim.x) duser[(size_t)r * dim + c] = (du[c] - uh[c] * dd) / unorm;
}
"""#
}

extension CUDADevice {
  /// Per-row losses (`loss[r]`, 0 where weight is 0), dUser (overwritten) and dTable (accumulated).
  /// The returned gradients are those of Σ w_r loss_r / Σ w_r; pass that `weightSum`.
  public func sampledSoftmaxLoss(user: DeviceArray<Float>, table: DeviceArray<Float>, positives: DeviceArray<Int32>,
                                 negatives: DeviceArray<Int32>, weights: DeviceArray<Float>, weightSum: Float,
                                 loss: DeviceArray<Float>, dUser: DeviceArray<Float>, dTable: DeviceArray<Float>,
                                 rows: Int, dim: Int, numNegatives: Int, temperature: Float, eps: Float = 1e-6) throws {
    guard dim <= 1024 else { throw CUDAError.unsupported("sampled softmax dim \(dim) > 1024") }
    let shared = 4 * (2 * dim + 1 + numNegatives + 32)
    try launch(module("sampled_softmax", source: SampledSoftmaxKernels.source).function("sampled_softmax_forward_backward"),
               grid: (rows, 1, 1), block: (128, 1, 1), sharedBytes: shared,
               [.pointer(user.address), .pointer(table.address), .pointer(positives.address), .pointer(negatives.address),
                .pointer(weights.address), .pointer(loss.address), .pointer(dUser.address), .pointer(dTable.address),
                .int(Int32(rows)), .int(Int32(dim)), .int(Int32(numNegatives)), .float(temperature), .float(eps),
                .float(1 / max(weightSum, 1e-12))])
  }
}
