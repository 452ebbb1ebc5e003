/// Sampled-softmax retrieval loss with L2-normalised embeddings, forward and backward.
///
/// Row r with weight w_r (0 = not supervised): û = u_r/‖u_r‖, ê_c = E[c]/‖E[c]‖ (norms clamped to
/// at least eps), logits z_0 = û·ê_pos / T and z_k = û·ê_neg_k / T, where a negative equal to the
/// positive gets z_k = −5·10⁴ (accidental hit); loss_r = logsumexp(z) − z_0. E is the bf16 copy of
/// the item table that AdamW rewrites each step (what autocast would feed these products), so a
/// candidate row costs 2·dim bytes.
/// Loss = Σ w_r loss_r / Σ w_r. Gradients with g_rk = (softmax(z_r)_k − [k = 0]) · w_r / (T Σ w)
/// (0 for accidental hits):
///   dû_r = Σ_k g_rk ê_k,   du_r = (dû_r − û_r (û_r·dû_r)) / ‖u_r‖,
///   dE[c] += (S_c − ê_c (ê_c·S_c)) / ‖E[c]‖  with  S_c = Σ_{(r,k): candidate(r,k) = c} g_rk û_r
/// (the normalisation's backward is linear in dê, so it is applied once per item to the sum S_c).
///
/// Six launches after zeroing the counts, no floating-point atomics (the order in which a bucket
/// is filled, and so the order of its sum, varies from run to run, as the atomics did):
///  1. `loss_item_norms`: 1/‖E[c]‖ of every item, so no candidate row is reduced twice.
///  2. `loss_rows` (one block per row): reads each candidate row of the table once, the next few
///     always in flight; an online softmax per warp keeps Σ e^{z−m} ê in registers, so loss, du and
///     the coefficients g_rk / ‖u_r‖ come out of that single read; it also counts how often each
///     item is a candidate, and writes a bf16 copy of u_r.
///  3–4. `loss_scan_tiles`, `loss_scan_offsets`: exclusive prefix sum of the counts (CSR offsets).
///  5. `loss_scatter`: each (row, candidate) pair, with its coefficient, into its item's bucket.
///  6. `loss_table_gradient` (one warp per item): S_c from its bucket's user rows (the bf16 copy:
///     each row is read once per candidate it has, about 129 times, so its bytes count most), then
///     the projection, written into dTable[c] (each row by one warp; zeros for an item without
///     candidates, so the table's gradient needs no zeroing before the loss). fp32 accumulation; the
///     bf16 rows are what PyTorch's autocast would feed this product too.
///
/// Compile-time constants (`-D`): LOSS_DIM (the embedding dim) and LOSS_VEC (columns per chunk,
/// chosen by the host from dim and pointer alignment).
enum SampledSoftmaxKernels {
  static let source = CUDAPrelude.source + #"""
#ifndef LOSS_DIM
#define LOSS_DIM 256
#endif
#ifndef LOSS_VEC
#define LOSS_VEC 4
#endif
constexpr int D = LOSS_DIM, V = LOSS_VEC;
constexpr int ROW_WARPS = 4;        // warps per block of loss_rows
constexpr int SCAN_THREADS = 1024;  // threads per scan block; each scans 4 counts
constexpr int SCAN_TILE = 4 * SCAN_THREADS;

/// A row of D values spread over a warp: lane l holds the V-column chunks l, l + 32, … (V = 8 makes
/// a bf16 chunk one 16-byte access). fp32 rows load as floats; bf16 rows stay packed, two values
/// to a 32-bit word, until `unpack`, so a row in flight takes half the registers.
struct Row {
  static constexpr int chunks = D / V, J = (chunks + 31) / 32, W = (V + 1) / 2;
  /// Whether chunk j of `lane` exists (constant-folded when D/V is a multiple of 32).
  static __device__ __forceinline__ bool has(int lane, int j) { return chunks % 32 == 0 || lane + 32 * j < chunks; }
  static __device__ __forceinline__ int column(int lane, int j) { return (lane + 32 * j) * V; }
  static __device__ __forceinline__ void load(const float* row, int lane, float (&f)[J][V]) {
    #pragma unroll
    for (int j = 0; j < J; ++j) {
      if (has(lane, j)) load_vec(row + column(lane, j), f[j]);
      else {
        #pragma unroll
        for (int i = 0; i < V; ++i) f[j][i] = 0.f;
      }
    }
  }
  /// The same chunks of a bf16 row, packed (one access per chunk).
  static __device__ __forceinline__ void load(const bf16_t* row, int lane, u32 (&h)[J][W]) {
    #pragma unroll
    for (int j = 0; j < J; ++j) {
      const bf16_t* p = row + column(lane, j);
      if (!has(lane, j)) {
        #pragma unroll
        for (int w = 0; w < W; ++w) h[j][w] = 0u;
      } else if constexpr (V == 8) {
        const uint4 t = *(const uint4*)p; h[j][0] = t.x; h[j][1] = t.y; h[j][2] = t.z; h[j][3] = t.w;
      } else if constexpr (V == 4) {
        const uint2 t = *(const uint2*)p; h[j][0] = t.x; h[j][1] = t.y;
      } else if constexpr (V == 2) {
        h[j][0] = *(const u32*)p;
      } else {
        h[j][0] = *p;
      }
    }
  }
  /// Value i of chunk j of a packed bf16 row, as a float.
  static __device__ __forceinline__ float unpack(const u32 (&h)[J][W], int j, int i) {
    const u32 w = h[j][i >> 1];
    return __uint_as_float(i & 1 ? w & 0xffff0000u : w << 16);
  }
  template <typename F> static __device__ __forceinline__ float reduce(F term) {
    float s = 0.f;
    #pragma unroll
    for (int j = 0; j < J; ++j)
      #pragma unroll
      for (int i = 0; i < V; ++i) s += term(j, i);
    return s;
  }
};
constexpr int J = Row::J, W = Row::W;
constexpr int clamp_rows(int n) { return n < 1 ? 1 : (n > 8 ? 8 : n); }
/// Table rows in flight per warp in loss_rows (about 32 registers of packed rows), and user rows
/// in flight per warp in loss_table_gradient (about 48, within its 128-register bound).
constexpr int ROW_G = clamp_rows(32 / (J * W)), ITEM_G = clamp_rows(48 / (J * W));

/// invNorm[c] = 1 / max(‖E[c]‖, eps) for every row c of the bf16 table, one warp per row.
extern "C" __global__ void loss_item_norms(const bf16_t* __restrict__ table, float* __restrict__ invNorm, int n, float eps) {
  grid_dependency_wait();
  const int lane = threadIdx.x & 31, c = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (c >= n) return;
  u32 h[J][W];
  Row::load(table + (size_t)c * D, lane, h);
  const float ss = warp_sum(Row::reduce([&](int j, int i) { const float x = Row::unpack(h, j, i); return x * x; }));
  if (lane == 0) invNorm[c] = 1.f / fmaxf(sqrtf(ss), eps);
}

/// Pass 1, one block of ROW_WARPS warps per row r. The block first puts the row's candidates in
/// shared memory (cand[0] = the positive, then the negatives) and counts them (counts[c] += 1).
/// Warp w takes the candidates k ≡ w (mod ROW_WARPS) in order, with the next G table rows
/// always in flight (slot g is refilled as soon as it is used), and keeps its own online softmax:
/// m (running max of z), s = Σ e^{z_k − m}, a = Σ e^{z_k − m} ê_k (registers; rescaled only when
/// m grows). The warps' (m, s, a) are merged in shared memory; then loss_r = M + log S − z_0,
/// dû = scale (A / S − ê_0), du = (dû − û(û·dû))/‖u‖, and coef[r, k] = g_rk / ‖u_r‖ (so that
/// g_rk û_r = coef · u_r). userh[r] = u_r in bf16 (every row, supervised or not).
/// Shared: the warps' a [ROW_WARPS·D], û [D], ê_0 [D], m and s [ROW_WARPS each], 32 scratch,
/// z [R + 1], cand [R + 1].
extern "C" __global__ void __launch_bounds__(ROW_WARPS * 32)
loss_rows(const float* __restrict__ user, const bf16_t* __restrict__ table, const float* __restrict__ invNorm,
    const int* __restrict__ positives, const int* __restrict__ negatives, const float* __restrict__ weights,
    float* __restrict__ loss, float* __restrict__ duser, float* __restrict__ coef, int* __restrict__ counts,
    bf16_t* __restrict__ userh, int R, float temperature, float eps, float gradScale) {
  grid_dependency_wait();
  constexpr int G = ROW_G;
  extern __shared__ __align__(16) float sh[];
  float* wacc = sh;                       // [ROW_WARPS][D]
  float* uhs = wacc + ROW_WARPS * D;      // [D]
  float* e0s = uhs + D;                   // [D]
  float* wm = e0s + D;                    // [ROW_WARPS]
  float* ws = wm + ROW_WARPS;             // [ROW_WARPS]
  float* red = ws + ROW_WARPS;            // [32]
  float* z = red + 32;                    // [R + 1]
  int* cand = (int*)(z + R + 1);          // [R + 1]
  const int r = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const float w = weights[r];
  float* coefRow = coef + (size_t)r * (R + 1);
  for (int c = threadIdx.x; c < D; c += blockDim.x) userh[(size_t)r * D + c] = float_to_bf16(user[(size_t)r * D + c]);
  if (w == 0.f) {
    for (int c = threadIdx.x; c < D; c += blockDim.x) duser[(size_t)r * D + c] = 0.f;
    for (int k = threadIdx.x; k <= R; k += blockDim.x) coefRow[k] = 0.f;
    if (threadIdx.x == 0) loss[r] = 0.f;
    return;
  }
  const int pos = positives[r];
  for (int k = threadIdx.x; k <= R; k += blockDim.x) {
    const int c = k == 0 ? pos : negatives[(size_t)r * R + k - 1];
    cand[k] = c;
    atomicAdd(&counts[c], 1);
  }
  float uh[J][V];
  Row::load(user + (size_t)r * D, lane, uh);
  const float unorm = fmaxf(sqrtf(warp_sum(Row::reduce([&](int j, int i) { return uh[j][i] * uh[j][i]; }))), eps);
  #pragma unroll
  for (int j = 0; j < J; ++j)
    #pragma unroll
    for (int i = 0; i < V; ++i) uh[j][i] /= unorm;
  __syncthreads();   // cand

  u32 e[G][J][W];
  float inv[G];
  auto issue = [&](int g, int k) {   // slot g <- candidate k's table row and inverse norm
    if (k > R) return;
    const int c = cand[k];
    inv[g] = invNorm[c];
    Row::load(table + (size_t)c * D, lane, e[g]);
  };
  #pragma unroll
  for (int g = 0; g < G; ++g) issue(g, warp + ROW_WARPS * g);
  const float neg_inf = __int_as_float(0xff800000u);
  float m = neg_inf, s = 0.f, acc[J][V];
  #pragma unroll
  for (int j = 0; j < J; ++j)
    #pragma unroll
    for (int i = 0; i < V; ++i) acc[j][i] = 0.f;
  for (int k0 = warp; k0 <= R; k0 += ROW_WARPS * G) {
    #pragma unroll
    for (int g = 0; g < G; ++g) {
      const int k = k0 + ROW_WARPS * g;
      if (k > R) break;
      const float dot = warp_sum(Row::reduce([&](int j, int i) { return uh[j][i] * Row::unpack(e[g], j, i); }));
      const float zk = k > 0 && cand[k] == pos ? -5e4f : dot * inv[g] / temperature;
      if (lane == 0) z[k] = zk;
      if (zk > m) {   // warp-uniform: the running sums move to the new maximum (on the first row, f = 0)
        const float f = __expf(m - zk);
        s *= f;
        #pragma unroll
        for (int j = 0; j < J; ++j)
          #pragma unroll
          for (int i = 0; i < V; ++i) acc[j][i] *= f;
        m = zk;
      }
      const float p = __expf(zk - m), pe = p * inv[g];
      s += p;
      #pragma unroll
      for (int j = 0; j < J; ++j)
        #pragma unroll
        for (int i = 0; i < V; ++i) acc[j][i] += pe * Row::unpack(e[g], j, i);
      if (k == 0) {   // the positive (warp 0's first row): keep û and ê_0 for the merge
        #pragma unroll
        for (int j = 0; j < J; ++j)
          if (Row::has(lane, j))
            #pragma unroll
            for (int i = 0; i < V; ++i) {
              uhs[Row::column(lane, j) + i] = uh[j][i];
              e0s[Row::column(lane, j) + i] = Row::unpack(e[g], j, i) * inv[g];
            }
      }
      issue(g, k + ROW_WARPS * G);
    }
  }
  #pragma unroll
  for (int j = 0; j < J; ++j)
    if (Row::has(lane, j))
      #pragma unroll
      for (int i = 0; i < V; ++i) wacc[warp * D + Row::column(lane, j) + i] = acc[j][i];
  if (lane == 0) { wm[warp] = m; ws[warp] = s; }
  __syncthreads();

  float M = wm[0];
  #pragma unroll
  for (int v = 1; v < ROW_WARPS; ++v) M = fmaxf(M, wm[v]);
  float fw[ROW_WARPS], S = 0.f;
  #pragma unroll
  for (int v = 0; v < ROW_WARPS; ++v) { fw[v] = __expf(wm[v] - M); S += ws[v] * fw[v]; }
  if (threadIdx.x == 0) loss[r] = (M + logf(S)) - z[0];
  const float scale = w * gradScale / temperature;
  float part = 0.f;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float a = 0.f;
    #pragma unroll
    for (int v = 0; v < ROW_WARPS; ++v) a += wacc[v * D + c] * fw[v];
    const float du = scale * (a / S - e0s[c]);
    wacc[c] = du;   // column c is read and written by this thread only
    part += du * uhs[c];
  }
  const float dd = block_sum(part, red);
  for (int c = threadIdx.x; c < D; c += blockDim.x) duser[(size_t)r * D + c] = (wacc[c] - uhs[c] * dd) / unorm;
  for (int k = threadIdx.x; k <= R; k += blockDim.x) {
    const bool hit = k > 0 && cand[k] == pos;   // masked: constant logit, no gradient
    coefRow[k] = hit ? 0.f : (__expf(z[k] - M) / S - (k == 0 ? 1.f : 0.f)) * scale / unorm;
  }
}

/// Exclusive scan of one int per thread over the block (SCAN_THREADS threads); `total` gets the block's sum.
__device__ __forceinline__ int block_exclusive_scan(int x, int* scratch32, int& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = x;
  #pragma unroll
  for (int o = 1; o < 32; o <<= 1) { const int y = __shfl_up_sync(0xffffffffu, incl, o); if (lane >= o) incl += y; }
  if (lane == 31) scratch32[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int t = scratch32[lane], ti = t;
    #pragma unroll
    for (int o = 1; o < 32; o <<= 1) { const int y = __shfl_up_sync(0xffffffffu, ti, o); if (lane >= o) ti += y; }
    scratch32[lane] = ti - t;   // exclusive prefix of warp totals
    if (lane == 31) scratch32[32] = ti;
  }
  __syncthreads();
  total = scratch32[32];
  return scratch32[warp] + incl - x;
}

/// tileSums[b] = Σ counts over tile b (SCAN_TILE items).
extern "C" __global__ void loss_scan_tiles(const int* __restrict__ counts, int* __restrict__ tileSums, int n) {
  grid_dependency_wait();
  __shared__ int red[32];
  const int base = blockIdx.x * SCAN_TILE + 4 * threadIdx.x;
  int x = 0;
  #pragma unroll
  for (int i = 0; i < 4; ++i) if (base + i < n) x += counts[base + i];
  const int total = block_sum(x, red);
  if (threadIdx.x == 0) tileSums[blockIdx.x] = total;
}

/// start[i] = Σ_{j<i} counts[j] (i ≤ n), and counts reset to 0 for use as fill cursors.
extern "C" __global__ void loss_scan_offsets(int* __restrict__ counts, const int* __restrict__ tileSums, int* __restrict__ start, int n) {
  grid_dependency_wait();
  __shared__ int scratch[33];
  __shared__ int red[32];
  int before = 0;
  for (int b = threadIdx.x; b < blockIdx.x; b += blockDim.x) before += tileSums[b];
  const int carry = block_sum(before, red);
  const int base = blockIdx.x * SCAN_TILE + 4 * threadIdx.x;
  int x[4], sum = 0;
  #pragma unroll
  for (int i = 0; i < 4; ++i) { x[i] = base + i < n ? counts[base + i] : 0; sum += x[i]; }
  int total;
  int running = carry + block_exclusive_scan(sum, scratch, total);
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (base + i < n) { start[base + i] = running; counts[base + i] = 0; }
    running += x[i];
    if (base + i == n - 1) start[n] = running;
  }
}

/// Puts each (row, candidate) pair of a supervised row into its item's bucket: bucket[slot] = (r, coef[r, k]).
extern "C" __global__ void loss_scatter(const int* __restrict__ positives, const int* __restrict__ negatives,
    const float* __restrict__ weights, const float* __restrict__ coef, const int* __restrict__ start, int* __restrict__ fill,
    int2* __restrict__ bucket, int rows, int R) {
  grid_dependency_wait();
  const size_t entry = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (entry >= (size_t)rows * (R + 1)) return;
  const int r = (int)(entry / (R + 1)), k = (int)(entry % (R + 1));
  if (weights[r] == 0.f) return;
  const int c = k == 0 ? positives[r] : negatives[(size_t)r * R + k - 1];
  const int slot = start[c] + atomicAdd(&fill[c], 1);
  bucket[slot] = make_int2(r, __float_as_int(coef[entry]));
}

/// One warp per item c: S_c = Σ_bucket coef · u_r (the bf16 user rows, G in flight), then
/// dtable[c] = (S_c − ê_c (ê_c·S_c)) · invNorm[c], or 0 for an item without candidates: every row
/// is written, so dtable needs no zeroing first. 8 warps per block.
extern "C" __global__ void __launch_bounds__(256, 2)
loss_table_gradient(const bf16_t* __restrict__ user, const bf16_t* __restrict__ table, const float* __restrict__ invNorm,
    const int* __restrict__ start, const int2* __restrict__ bucket, float* __restrict__ dtable, int n) {
  grid_dependency_wait();
  constexpr int G = ITEM_G;
  const int lane = threadIdx.x & 31, c = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (c >= n) return;
  const int b0 = start[c], b1 = start[c + 1];
  float* dr = dtable + (size_t)c * D;
  if (b0 == b1) {
    const float zero[V] = {};
    #pragma unroll
    for (int j = 0; j < J; ++j)
      if (Row::has(lane, j)) store_vec(dr + Row::column(lane, j), zero);
    return;
  }
  float S[J][V];
  #pragma unroll
  for (int j = 0; j < J; ++j)
    #pragma unroll
    for (int i = 0; i < V; ++i) S[j][i] = 0.f;
  for (int base = b0; base < b1; base += 32) {
    const int count = min(32, b1 - base);
    const int2 mine = lane < count ? bucket[base + lane] : make_int2(0, 0);
    for (int q0 = 0; q0 < count; q0 += G) {
      u32 u[G][J][W];
      float a[G];
      #pragma unroll
      for (int g = 0; g < G; ++g) {
        const int row = __shfl_sync(0xffffffffu, mine.x, (q0 + g) & 31);
        a[g] = __int_as_float(__shfl_sync(0xffffffffu, mine.y, (q0 + g) & 31));
        if (q0 + g < count) Row::load(user + (size_t)row * D, lane, u[g]);
      }
      #pragma unroll
      for (int g = 0; g < G; ++g) {
        if (q0 + g >= count) break;
        #pragma unroll
        for (int j = 0; j < J; ++j)
          #pragma unroll
          for (int i = 0; i < V; ++i) S[j][i] += a[g] * Row::unpack(u[g], j, i);
      }
    }
  }
  u32 e[J][W];
  Row::load(table + (size_t)c * D, lane, e);
  const float inv = invNorm[c];
  const float proj = warp_sum(Row::reduce([&](int j, int i) { return Row::unpack(e, j, i) * inv * S[j][i]; }));
  #pragma unroll
  for (int j = 0; j < J; ++j) {
    if (!Row::has(lane, j)) continue;
    float out[V];
    #pragma unroll
    for (int i = 0; i < V; ++i) out[i] = (S[j][i] - Row::unpack(e, j, i) * inv * proj) * inv;
    store_vec(dr + Row::column(lane, j), out);
  }
}
"""#
}

extension CUDADevice {
  /// The widest chunk (8, 4, 2 or 1 columns) that divides `dim` and whose accesses every address
  /// allows: `bf16s` aligned to 2·v bytes, `floats` to 4·min(v, 4) (8 floats are two 16-byte accesses).
  static func lossVectorWidth(dim: Int, floats: [CUdeviceptr], bf16s: [CUdeviceptr]) -> Int {
    var v = 8
    while v > 1 && (dim % v != 0 || floats.contains { $0 % CUdeviceptr(4 * min(v, 4)) != 0 }
                    || bf16s.contains { $0 % CUdeviceptr(2 * v) != 0 }) {
      v /= 2
    }
    return v
  }

  /// Per-row losses (`loss[r]`, 0 where weight is 0), dUser and dTable (fp32), both overwritten.
  /// `table` is the bf16 copy of the item embeddings. The returned gradients are those of
  /// Σ w_r loss_r / Σ w_r; pass that `weightSum`.
  /// Scratch (coefficients, buckets, counts, item norms, the bf16 user rows: about 12·rows·(1 + R) +
  /// 2·rows·dim + 12·items bytes) comes from the arena and is released before returning.
  /// With `tableGradientOnSideStream` the last kernel, dTable's (which only the item-table
  /// gradient and its AdamW step wait for), is forked onto the side stream and the returned work
  /// must be joined (`join`) before dTable or `table` are touched again; the scratch is released
  /// at the join.
  @discardableResult
  public func sampledSoftmaxLoss(user: DeviceArray<Float>, table: DeviceArray<BFloat16>, positives: DeviceArray<Int32>,
                                 negatives: DeviceArray<Int32>, weights: DeviceArray<Float>, weightSum: Float,
                                 loss: DeviceArray<Float>, dUser: DeviceArray<Float>, dTable: DeviceArray<Float>,
                                 rows: Int, dim: Int, numNegatives: Int, temperature: Float, eps: Float = 1e-6,
                                 tableGradientOnSideStream: Bool = false) throws -> SideStreamWork? {
    guard dim <= 1024 else { throw CUDAError.unsupported("sampled softmax dim \(dim) > 1024") }
    guard rows > 0 else {
      try fill(dTable)
      return nil
    }
    let items = table.count / dim, entries = rows * (1 + numNegatives)
    let mark = arena.mark()
    var forked: SideStreamWork? = nil
    defer { if forked == nil { arena.release(to: mark) } }
    let coef = try allocate(Float.self, count: entries), counts = try allocate(Int32.self, count: items)
    let tiles = (items + 4095) / 4096
    let tileSums = try allocate(Int32.self, count: tiles), start = try allocate(Int32.self, count: items + 1)
    let bucket = try allocate(Int32.self, count: 2 * entries), userBF16 = try allocate(BFloat16.self, count: rows * dim)
    let invNorm = try allocate(Float.self, count: items)

    let vector = Self.lossVectorWidth(dim: dim, floats: [user.address, dTable.address], bf16s: [table.address])
    let m = try module("sampled_softmax", source: SampledSoftmaxKernels.source, defines: ["LOSS_DIM": dim, "LOSS_VEC": vector])
    try fill(counts)
    try launch(try m.function("loss_item_norms"), grid: ((items + 7) / 8, 1, 1), block: (256, 1, 1),
               [.pointer(table.address), .pointer(invNorm.address), .int(Int32(items)), .float(eps)])
    let rowShared = 4 * (6 * dim + 8 + 32 + 2 * (1 + numNegatives))
    try launch(try m.function("loss_rows"), grid: (rows, 1, 1), block: (128, 1, 1), sharedBytes: rowShared,
               [.pointer(user.address), .pointer(table.address), .pointer(invNorm.address), .pointer(positives.address),
                .pointer(negatives.address), .pointer(weights.address), .pointer(loss.address), .pointer(dUser.address),
                .pointer(coef.address), .pointer(counts.address), .pointer(userBF16.address), .int(Int32(numNegatives)),
                .float(temperature), .float(eps),
                .float(1 / max(weightSum, 1e-12))])
    try launch(try m.function("loss_scan_tiles"), grid: (tiles, 1, 1), block: (1024, 1, 1),
               [.pointer(counts.address), .pointer(tileSums.address), .int(Int32(items))])
    try launch(try m.function("loss_scan_offsets"), grid: (tiles, 1, 1), block: (1024, 1, 1),
               [.pointer(counts.address), .pointer(tileSums.address), .pointer(start.address), .int(Int32(items))])
    try launch(try m.function("loss_scatter"), grid: ((entries + 255) / 256, 1, 1), block: (256, 1, 1),
               [.pointer(positives.address), .pointer(negatives.address), .pointer(weights.address), .pointer(coef.address),
                .pointer(start.address), .pointer(counts.address), .pointer(bucket.address), .int(Int32(rows)), .int(Int32(numNegatives))])
    func tableGradient() throws {
      try launch(try m.function("loss_table_gradient"), grid: ((items + 7) / 8, 1, 1), block: (256, 1, 1),
                 [.pointer(userBF16.address), .pointer(table.address), .pointer(invNorm.address), .pointer(start.address),
                  .pointer(bucket.address), .pointer(dTable.address), .int(Int32(items))])
    }
    guard tableGradientOnSideStream else {
      try tableGradient()
      return nil
    }
    forked = try fork(arenaMark: mark, tableGradient)
    return forked
  }
}
