/// Sampled-softmax retrieval loss with L2-normalised embeddings, forward and backward in one pass
/// (the probabilities the backward needs are at hand in the forward, as in llm.c's classifier).
///
/// Row r with weight w_r (0 = not supervised): û = u_r/‖u_r‖, ê_c = E[c]/‖E[c]‖ (norms clamped to
/// at least eps), logits z_0 = û·ê_pos / T and z_k = û·ê_neg_k / T, where a negative equal to the
/// positive gets z_k = −5·10⁴ (accidental hit); loss_r = logsumexp(z) − z_0.
/// Loss = Σ w_r loss_r / Σ w_r. Gradients with g_k = (softmax(z)_k − [k = 0]) · w_r / (T Σ w):
///   dû = Σ_k g_k ê_k,   dê_k += g_k û,   and through the normalisation dx = (dx̂ − x̂ (x̂·dx̂)) / ‖x‖.
///
/// The kernel reads every candidate's row twice (logits, then gradients) and adds into dTable with
/// atomics; it is bound by memory latency (ncu on the H200: 47 % of a d=256 training step with one
/// candidate row in flight per warp). When dim is a multiple of 4 and at most 512, each warp works
/// on 4 candidates at once (all their float4 loads issued before any use), keeps dû in registers,
/// reuses the norms and ê·û of the first pass from shared memory, and adds into dTable with one
/// 16-byte vector atomic (`red.global.add.v4.f32`, sm_90) per 4 columns.
enum SampledSoftmaxKernels {
  static let source = CUDAPrelude.source + #"""
#define VEC_MAX_DIM 512   // vector path: a lane holds float4 columns lane + 32 j, j < 4
#define VJ (VEC_MAX_DIM / 128)
#define GROUP 4           // vector path: candidates per warp at once

/// dst[0..3] += v (one vector reduction; dst 16-byte aligned). No memory clobber: the kernel never
/// reads dTable, so loads may move across it.
__device__ __forceinline__ void red_add_v4(float* dst, float4 v) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" :: "l"(dst), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w));
}
__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }

/// One block per row; blockDim.x = 128. Shared: û, dû (dim each), logits, norms, ê·û (1 + R each).
extern "C" __global__ void sampled_softmax_forward_backward(const float* __restrict__ user, const float* __restrict__ table,
    const int* __restrict__ positives, const int* __restrict__ negatives, const float* __restrict__ weights,
    float* __restrict__ loss, float* __restrict__ duser, float* __restrict__ dtable,
    int rows, int dim, int numNegatives, float temperature, float eps, float gradScale) {
  extern __shared__ __align__(16) float sh[];
  float* uh = sh;                      // [dim]
  float* du = uh + dim;                // [dim]
  float* red = du + dim;               // [32]
  float* z = red + 32;                 // [1 + R] logits
  float* en = z + 1 + numNegatives;    // [1 + R] ‖E[c]‖ (clamped)
  float* ed = en + 1 + numNegatives;   // [1 + R] ê·û
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
  const int* negs = negatives + (size_t)r * numNegatives;
  auto candidate = [&](int k) { return k == 0 ? pos : negs[k - 1]; };
  const bool vec = (dim & 3) == 0 && dim <= VEC_MAX_DIM;
  const int d4 = dim / 4;
  const float4* uh4 = (const float4*)uh;

  // Pass 1: logit, norm and ê·û of every candidate.
  if (vec) {
    for (int k0 = warp * GROUP; k0 <= numNegatives; k0 += warps * GROUP) {
      float4 e[GROUP][VJ];
      #pragma unroll
      for (int u = 0; u < GROUP; ++u) {
        const int k = k0 + u;
        const float4* er = (const float4*)(table + (size_t)(k <= numNegatives ? candidate(k) : pos) * dim);
        #pragma unroll
        for (int j = 0; j < VJ; ++j) e[u][j] = lane + 32 * j < d4 ? er[lane + 32 * j] : make_float4(0.f, 0.f, 0.f, 0.f);
      }
      float d[GROUP], n[GROUP];
      #pragma unroll
      for (int u = 0; u < GROUP; ++u) {
        d[u] = 0.f; n[u] = 0.f;
        #pragma unroll
        for (int j = 0; j < VJ; ++j) {
          const float4 uu = lane + 32 * j < d4 ? uh4[lane + 32 * j] : make_float4(0.f, 0.f, 0.f, 0.f);
          d[u] += dot4(uu, e[u][j]); n[u] += dot4(e[u][j], e[u][j]);
        }
        d[u] = warp_sum(d[u]); n[u] = warp_sum(n[u]);
      }
      if (lane == 0) {
        #pragma unroll
        for (int u = 0; u < GROUP; ++u) {
          const int k = k0 + u;
          if (k > numNegatives) break;
          const float norm = fmaxf(sqrtf(n[u]), eps);
          en[k] = norm; ed[k] = d[u] / norm;
          z[k] = (k > 0 && candidate(k) == pos) ? -5e4f : d[u] / (norm * temperature);
        }
      }
    }
  } else {
    for (int k = warp; k <= numNegatives; k += warps) {
      const float* er = table + (size_t)candidate(k) * dim;
      float d = 0.f, n = 0.f;
      for (int c = lane; c < dim; c += 32) { d += uh[c] * er[c]; n += er[c] * er[c]; }
      d = warp_sum(d); n = warp_sum(n);
      if (lane == 0) {
        const float norm = fmaxf(sqrtf(n), eps);
        en[k] = norm; ed[k] = d / norm;
        z[k] = (k > 0 && candidate(k) == pos) ? -5e4f : d / (norm * temperature);
      }
    }
  }
  __syncthreads();
  float mx = -3.0e38f;
  for (int k = 0; k <= numNegatives; ++k) mx = fmaxf(mx, z[k]);
  float se = 0.f;
  for (int k = 0; k <= numNegatives; ++k) se += __expf(z[k] - mx);
  if (threadIdx.x == 0) loss[r] = (mx + logf(se)) - z[0];
  const float scale = w * gradScale / temperature;
  // g_k = (p_k − [k=0]) · scale; masked logits (accidental hits) are constants: no gradient.
  auto gradient = [&](int k) {
    return (k > numNegatives || (k > 0 && candidate(k) == pos)) ? 0.f : (__expf(z[k] - mx) / se - (k == 0 ? 1.f : 0.f)) * scale;
  };

  // Pass 2: dê_k = g_k (û − ê_k (ê_k·û)) / ‖E_k‖ into dTable;  dû += g_k ê_k.
  if (vec) {
    float4 acc[VJ];
    #pragma unroll
    for (int j = 0; j < VJ; ++j) acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k0 = warp * GROUP; k0 <= numNegatives; k0 += warps * GROUP) {
      float4 e[GROUP][VJ];
      float g[GROUP];
      #pragma unroll
      for (int u = 0; u < GROUP; ++u) {
        const int k = k0 + u;
        g[u] = gradient(k);
        const float4* er = (const float4*)(table + (size_t)(g[u] != 0.f ? candidate(k) : pos) * dim);
        #pragma unroll
        for (int j = 0; j < VJ; ++j) e[u][j] = g[u] != 0.f && lane + 32 * j < d4 ? er[lane + 32 * j] : make_float4(0.f, 0.f, 0.f, 0.f);
      }
      #pragma unroll
      for (int u = 0; u < GROUP; ++u) {
        if (g[u] == 0.f) continue;
        const int k = k0 + u;
        const float inv = 1.f / en[k], dotE = ed[k], ge = g[u] * inv;
        float* dr = dtable + (size_t)candidate(k) * dim;
        #pragma unroll
        for (int j = 0; j < VJ; ++j) {
          const int c = lane + 32 * j;
          if (c >= d4) break;
          const float4 uu = uh4[c];
          const float4 eh = make_float4(e[u][j].x * inv, e[u][j].y * inv, e[u][j].z * inv, e[u][j].w * inv);
          acc[j].x += g[u] * eh.x; acc[j].y += g[u] * eh.y; acc[j].z += g[u] * eh.z; acc[j].w += g[u] * eh.w;
          red_add_v4(dr + 4 * c, make_float4(ge * (uu.x - eh.x * dotE), ge * (uu.y - eh.y * dotE),
                                             ge * (uu.z - eh.z * dotE), ge * (uu.w - eh.w * dotE)));
        }
      }
    }
    #pragma unroll
    for (int j = 0; j < VJ; ++j) {
      const int c = lane + 32 * j;
      if (c >= d4) break;
      atomicAdd(&du[4 * c], acc[j].x); atomicAdd(&du[4 * c + 1], acc[j].y);
      atomicAdd(&du[4 * c + 2], acc[j].z); atomicAdd(&du[4 * c + 3], acc[j].w);
    }
  } else {
    for (int k = warp; k <= numNegatives; k += warps) {
      const float g = gradient(k);
      if (g == 0.f) continue;
      const float* er = table + (size_t)candidate(k) * dim;
      float* dr = dtable + (size_t)candidate(k) * dim;
      const float inv = 1.f / en[k], dotE = ed[k], ge = g * inv;
      for (int c = lane; c < dim; c += 32) {
        const float eh = er[c] * inv;
        atomicAdd(&du[c], g * eh);
        atomicAdd(dr + c, ge * (uh[c] - eh * dotE));
      }
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
    let shared = 4 * (2 * dim + 32 + 3 * (1 + numNegatives))
    try launch(module("sampled_softmax", source: SampledSoftmaxKernels.source).function("sampled_softmax_forward_backward"),
               grid: (rows, 1, 1), block: (128, 1, 1), sharedBytes: shared,
               [.pointer(user.address), .pointer(table.address), .pointer(positives.address), .pointer(negatives.address),
                .pointer(weights.address), .pointer(loss.address), .pointer(dUser.address), .pointer(dTable.address),
                .int(Int32(rows)), .int(Int32(dim)), .int(Int32(numNegatives)), .float(temperature), .float(eps),
                .float(1 / max(weightSum, 1e-12))])
  }
}
