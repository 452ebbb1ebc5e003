/// Fused jagged HSTU attention, forward and backward, on tensor cores (mma.sync m16n8k16, bf16
/// operands, fp32 accumulators).
///
/// Per sequence b (tokens offsets[b]..<offsets[b+1], n of them) and head h:
///   S[i,j] = q_i·k_j + pos[i-j] + time[bucket(τq_i − τk_j)],  P[i,j] = mask(i,j) · SiLU(S[i,j]) / N,
///   out_i = Σ_j P[i,j] v_j
/// (N is a constant, or each sequence's history length n − t.)
///   dV = Pᵀ dO, dP = dO Vᵀ, dS = dP ⊙ mask ⊙ SiLU'(S) / N, dQ = dS K, dK = dSᵀ Q,
///   dPos[i-j] += Σ_h dS, dTime[bucket] += Σ_h dS
/// with SiLU'(s) = σ(s)(1 + s(1 − σ(s))). The position bias (rab^p) is compiled in with POS_BIAS=1.
/// The time bias (rab^t, compiled in with TIME_BIAS=1) reads each token's key time τk and query
/// time τq (the next event's) and research HSTU's log bucket.
///
/// SOFTMAX=1 compiles the same kernels as SASRec's softmax attention (no bias terms):
///   P[i,j] = mask(i,j) · exp(S[i,j]·scale − lse_i),  out_i = Σ_j P[i,j] v_j,
///   dS = P ⊙ (dP − Δ_i) · scale with Δ_i = dO_i · out_i (a pre-pass, `softmax_attention_delta`).
/// The forward keeps a running row maximum and sum over the key tiles (online softmax, in base 2)
/// and saves lse (natural log, [T, H]) for the backward, which recomputes P from it.
///
/// The L×L matrices are never stored: the forward walks key tiles of each query tile, the backward
/// walks query tiles of each key tile (dQ by fp32 atomics). These are the mma.sync kernels, for
/// every head dim and GPU; `AttentionWGMMAKernels` holds the Hopper forward and backward.
/// The mask is `AttentionMask`: each query sees at most the key intervals [0,a) and [b,c); a small
/// pre-pass stores their extremes per 64-query tile, and both kernels visit only the key tiles those
/// intervals touch (O((K1+K2)·L) work for semi-local masks) and mask element-wise only on tiles that
/// are not entirely visible.
///
/// Split keys (forward, SiLU only): a query tile whose visible key tiles outnumber `splitTiles` (the global
/// tail rows of a semi-local mask see all L keys) is shared by several CTAs, each walking one run of
/// `splitTiles` key tiles and adding its partial output with atomics into the zeroed output,
/// so no CTA walks more than `splitTiles` tiles and time per token stays flat in L.
///
/// Layouts: q, k bf16 [T, H·DQK]; v, dO bf16 [T, H·DV]; out fp32 or bf16 (`outBF16`, the HSTU
/// layer's: what its LayerNorm reads, half the bytes); dq, dk, dv fp32 (row-major, head h in
/// columns h·d..<(h+1)·d), or dk and dv merged through SiLU' into the HSTU block's bf16 dPre
/// (`KeyGradientOutput`). DQK and DV are compile-time constants (multiples of 16, at most 128).
enum AttentionKernels {
  static let source = CUDAPrelude.source + #"""
#ifndef DQK
#define DQK 128
#endif
#ifndef DV
#define DV 128
#endif
#define FWD_WARPS 8
#define BM (16 * FWD_WARPS)   // forward: query rows per block (16 per warp)
// Forward blocks per SM the registers must allow: 2 for head dims ≤ 64 (128 registers), else 1.
#define FWD_MIN_BLOCKS (DQK <= 64 && DV <= 64 ? 2 : 1)
#define BN 64                  // forward: keys per tile; backward: keys per block
#define BWD_WARPS 4
// Backward blocks per SM the registers must allow: 3 for head dims ≤ 64 (168 registers, no
// spills; the 64-row shared tiles of 3 blocks fit), else 2.
#define BWD_MIN_BLOCKS (DQK <= 64 && DV <= 64 ? 3 : 2)
#define QT 64                  // backward: queries per tile; also the bounds-table granularity
#define SQK (DQK + 8)          // shared row strides in bf16 elements (+16 bytes: conflict-free ldmatrix)
#define SV (DV + 8)
#define SDS (QT + 8)
#define WARP_DIAGONALS (QT + 15)   // backward: diagonals of a warp's 16 keys × QT queries
#define BIG 0x3fffffff
#ifndef TIME_BIAS
#define TIME_BIAS 0
#endif
#ifndef SOFTMAX
#define SOFTMAX 0
#endif
#ifndef POS_BIAS
#define POS_BIAS 0   // rab^p compiled in: the launcher passes pos exactly when set
#endif
#if SOFTMAX && POS_BIAS
#error "softmax attention (SASRec) has no rab^p"
#endif
#define NEG_INF __int_as_float(0xff800000)
#define LOG2E 1.4426950408889634f

/// 2^x in one MUFU op (ex2.approx; 2^-inf = 0).
__device__ __forceinline__ float exp2_fast(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
/// Maximum over the four threads of a quad (the threads that share an mma accumulator row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

/// hstuTimeBucket: clamp(trunc(ln(max(|dt|, 1)) / 0.301), 0, buckets), exactly: the fast log
/// gives a bucket at most one off, which the host's integer thresholds (thr[b] = the least |dt|
/// in bucket b or above) correct.
__device__ __forceinline__ int time_bucket(long long dt, const long long* __restrict__ thr, int buckets) {
  const long long a = max(dt < 0 ? -dt : dt, 1ll);
  int b = min(max((int)(__logf((float)a) * (1.f / 0.301f)), 0), buckets);
  if (b < buckets && a >= thr[b + 1]) ++b;
  else if (b > 0 && a < thr[b]) --b;
  return b;
}

/// The time bias's inputs (unused unless TIME_BIAS): per-token key and query times, the table
/// (buckets + 1 entries) and the bucket thresholds.
struct TimeBiasArgs { const long long* keyTimes; const long long* queryTimes; const float* table; const long long* thresholds; int buckets; };

struct MaskArgs { int window, tail, prefix, contextual; };

/// AttentionMask.keyIntervals: query i of a sequence of n tokens whose last t are targets sees
/// keys [0,a) and [b,c).
__device__ __forceinline__ void key_intervals(int i, int n, int t, MaskArgs m, int& a, int& b, int& c) {
  int history = n - t;
  if (i >= history) { a = history; b = i; c = i + 1; return; }
  if (m.window < 0 || i < m.contextual || i >= history - m.tail) { a = 0; b = 0; c = i + 1; return; }
  int start = max(0, i - m.window);
  a = min(max(m.prefix, m.contextual), start); b = start; c = i + 1;
}
__device__ __forceinline__ bool allowed(int j, int a, int b, int c) { return j < a || (j >= b && j < c); }

/// Per sequence and 64-query tile: {max a, min b, max c, min a, max b, min c} over its valid rows.
extern "C" __global__ void hstu_attention_bounds(const int* __restrict__ offsets, const int* __restrict__ targets,
    int* __restrict__ bounds, int tilesPerSequence, int window, int tail, int prefix, int contextual) {
  grid_dependency_wait();
  __shared__ int r[6];
  MaskArgs m = {window, tail, prefix, contextual};
  int b = blockIdx.y, tile = blockIdx.x;
  int n = offsets[b + 1] - offsets[b], t = targets ? targets[b] : 0;
  if (threadIdx.x == 0) { r[0] = 0; r[1] = BIG; r[2] = 0; r[3] = BIG; r[4] = 0; r[5] = BIG; }
  __syncthreads();
  int i = tile * QT + threadIdx.x;
  if (i < n) {
    int a, bb, c; key_intervals(i, n, t, m, a, bb, c);
    atomicMax(&r[0], a); atomicMin(&r[1], bb); atomicMax(&r[2], c);
    atomicMin(&r[3], a); atomicMax(&r[4], bb); atomicMin(&r[5], c);
  }
  __syncthreads();
  if (threadIdx.x < 8) {
    int v = threadIdx.x < 6 ? r[threadIdx.x] : 0;
    if (tile * QT >= n) v = 0;  // an empty tile sees nothing
    bounds[((size_t)b * tilesPerSequence + tile) * 8 + threadIdx.x] = v;
  }
}

/// Zeroes the output rows that the forward's split CTAs add into: per sequence (grid y), the rows
/// of its last `splitQueryTiles` query tiles of `rows` (counted from its end, as `forward_block`
/// does), `rowBytes` each (a multiple of 16). Every other row takes plain stores.
extern "C" __global__ void hstu_attention_zero_split_rows(void* __restrict__ out, const int* __restrict__ offsets,
    int splitQueryTiles, int rows, int rowBytes) {
  grid_dependency_wait();
  const int start = offsets[blockIdx.y], n = offsets[blockIdx.y + 1] - start;
  const int first = max(0, (n + rows - 1) / rows - splitQueryTiles) * rows;
  uint4* base = (uint4*)((char*)out + (size_t)(start + first) * rowBytes);
  const size_t count = (size_t)(n - first) * (rowBytes / 16);
  for (size_t x = (size_t)blockIdx.x * blockDim.x + threadIdx.x; x < count; x += (size_t)gridDim.x * blockDim.x)
    base[x] = make_uint4(0u, 0u, 0u, 0u);
}

/// The key tiles (of BN keys) that queries with these bounds can see: [0, e1) then [s2, e2).
__device__ __forceinline__ void key_tile_ranges(int amax, int bmin, int cmax, int& e1, int& s2, int& e2) {
  e1 = (amax + BN - 1) / BN;
  s2 = max(bmin / BN, e1);
  e2 = max((cmax + BN - 1) / BN, s2);
}

/// The union and intersection bounds {max a, min b, max c, min a, max b, min c} of the QT-query
/// bound tiles that a block of `rows` queries from q0 covers.
__device__ __forceinline__ void block_bounds(const int* __restrict__ bounds, int b, int tilesPerSequence, int q0, int rows, int n, int (&e)[6]) {
  e[0] = 0; e[1] = BIG; e[2] = 0; e[3] = BIG; e[4] = 0; e[5] = BIG;
  for (int s = 0; s < rows / QT; ++s) {
    const int tile = q0 / QT + s;
    if (tile * QT >= n) break;
    const int* x = bounds + ((size_t)b * tilesPerSequence + tile) * 8;
    e[0] = max(e[0], x[0]); e[1] = min(e[1], x[1]); e[2] = max(e[2], x[2]);
    e[3] = min(e[3], x[3]); e[4] = max(e[4], x[4]); e[5] = min(e[5], x[5]);
  }
}

/// This CTA's (x, y, z) in the launch grid. With `blockGroup` = G > 0 the grid's (head, sequence)
/// pairs are taken G at a time, and inside such a chunk x is slowest: CTAs start in the linear order
/// of x, then y, then z, so this takes tile x of the chunk's G heads and sequences before any tile
/// x + 1. Under a mask without a window the walks shrink (backward) or grow (forward, whose x
/// counts from the last rows) with x by up to L/64 tiles, and the default order starts one
/// sequence's longest walks only after the previous sequences' CTAs; G bounds the heads and
/// sequences whose operands the resident CTAs share the L2 cache over.
__device__ __forceinline__ int3 grid_position(int blockGroup) {
  if (blockGroup <= 0) return make_int3(blockIdx.x, blockIdx.y, blockIdx.z);
  const int tiles = gridDim.x, pairs = gridDim.y * gridDim.z;
  const int id = blockIdx.x + tiles * (blockIdx.y + gridDim.y * blockIdx.z);
  const int first = id / (tiles * blockGroup) * blockGroup, size = min(blockGroup, pairs - first);
  const int r = id - first * tiles, pair = first + r % size;
  return make_int3(r / size, pair % gridDim.y, pair / gridDim.y);
}

/// What a forward CTA of `rows` queries works on: sequence b, head h (its tokens start..<start + n,
/// t of them targets), the block's first query q0, its bound-table extremes bb, the visible key
/// tiles ([0, e1) then from s2 on) and its run [itBegin, itEnd) of them; when the block's tiles are
/// split over CTAs, every run adds its output atomically. False for a CTA with nothing to do (past
/// its sequence's rows, or an empty split).
///
/// Grid x: the first `queryTiles` CTAs take run 0 of every query tile (longest rows first); then
/// come runs 1 … splits − 1 of only the last `splitQueryTiles` query tiles of each sequence, the
/// ones whose rows can see more than `splitTiles` key tiles (a semi-local mask's global tail), so
/// no CTA is launched for the runs that window rows never have. Any other tile's CTA walks all its
/// key tiles, so the launcher's choice of `splitQueryTiles` affects speed, never results.
struct ForwardBlock { int b, h, start, n, t, q0, e1, s2, itBegin, itEnd; float invN; bool atomicOut; int bb[6]; };

__device__ __forceinline__ bool forward_block(ForwardBlock& f, const int* __restrict__ offsets, const int* __restrict__ targets,
    const int* __restrict__ bounds, int tilesPerSequence, float invNConst, int splitTiles, int queryTiles, int splitQueryTiles, int rows,
    int blockGroup) {
  const int3 at = grid_position(blockGroup);
  f.b = at.z; f.h = at.y;
  int x = at.x, split = 0;
  if (x >= queryTiles) { x -= queryTiles; split = 1 + x / splitQueryTiles; x %= splitQueryTiles; }
  f.start = offsets[f.b]; f.n = offsets[f.b + 1] - f.start;
  const int qTile = (f.n + rows - 1) / rows - 1 - x;   // longest rows first
  if (qTile < 0) return false;
  f.t = targets ? targets[f.b] : 0;
  f.invN = invNConst > 0.f ? invNConst : 1.0f / (float)max(1, f.n - f.t);
  f.q0 = qTile * rows;
  block_bounds(bounds, f.b, tilesPerSequence, f.q0, rows, f.n, f.bb);
  int e2; key_tile_ranges(f.bb[0], f.bb[1], f.bb[2], f.e1, f.s2, e2);
  const int tiles = f.e1 + (e2 - f.s2);
  // A tile outside the split ones has no other runs: its CTA walks all of its key tiles.
  const bool splittable = x < splitQueryTiles;
  f.itBegin = split * splitTiles; f.itEnd = splittable ? min(tiles, f.itBegin + splitTiles) : tiles;
  if (split > 0 && f.itBegin >= tiles) return false;
  f.atomicOut = splittable && tiles > splitTiles;
  return true;
}

/// The two query rows a thread owns in an accumulator fragment (row0 and row0 + 8 of the mma.sync
/// m16n8 and wgmma m64nN layouts alike), their key intervals and, with the time bias, query times.
struct QueryRows { int row0, row1, a0, b0, c0, a1, b1, c1; long long qt0, qt1; };

__device__ __forceinline__ QueryRows query_rows(int row0, int n, int t, MaskArgs m, const long long* __restrict__ queryTimes) {
  QueryRows r = {row0, row0 + 8, 0, 0, 0, 0, 0, 0, 0, 0};
  if (r.row0 < n) key_intervals(r.row0, n, t, m, r.a0, r.b0, r.c0);
  if (r.row1 < n) key_intervals(r.row1, n, t, m, r.a1, r.b1, r.c1);
#if TIME_BIAS
  r.qt0 = r.row0 < n ? queryTimes[r.row0] : 0;
  r.qt1 = r.row1 < n ? queryTimes[r.row1] : 0;
#endif
  return r;
}

/// The index of diagonal d = i − j in the rab^p table, clamped into it (masked pairs read an edge entry).
__device__ __forceinline__ int pos_index(int d, int posLength) { return min(max(d, 0), posLength - 1); }

/// rab^p by diagonal for both attention directions, in pairs, halved: padded[x] = (entry of
/// diagonal d − 1, entry of d) / 2 for d = x − pad, each clamped into the table as `pos_index`
/// does, for `length` pairs. Halved because the SiLU kernels work on h = S/2 (`silu_of_half`): a
/// score then takes its bias in the one FFMA that halves it. The kernels read the pair of diagonal
/// d at padded[pad + d] with no clamp: a thread's entries of a tile are then 8-byte loads at
/// constant offsets from one address. pad covers the
/// most negative diagonal read (the forward's: a CTA's rows past its keys, at most 127 for 128-row
/// CTAs; the backward's is −70), length − pad the largest (a sequence's last row, plus the rows of
/// its last tile past it).
extern "C" __global__ void hstu_position_bias_padded(const float* __restrict__ pos, int posLength, float2* __restrict__ padded,
    int pad, int length) {
  grid_dependency_wait();
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  if (x < length) padded[x] = make_float2(0.5f * pos[pos_index(x - pad - 1, posLength)], 0.5f * pos[pos_index(x - pad, posLength)]);
}

/// SiLU(x) = x·σ(x) given h = x/2: σ(x) = (1 + tanh h) / 2, so SiLU(x) = h·(1 + tanh h), one MUFU
/// op and one FFMA.
__device__ __forceinline__ float silu_of_half(float h) { return fmaf(h, tanh_approx(h), h); }

/// `silu_scores` for one case: MASK (the tile is not entirely visible) and POS (a position bias)
/// are compile-time, so a full tile without biases costs only the SiLU itself: h = S/2 (one FMUL,
/// or with rab^p one FFMA against its halved entry), tanh, one FFMA.
template <int NT, bool MASK, bool POS>
__device__ __forceinline__ void silu_tile(const float (&s)[NT][4], u32 (&pf)[NT / 2][4], const QueryRows& r, int k0, int tq,
    const float2* __restrict__ pos, const TimeBiasArgs& time, const long long* __restrict__ keyTime) {
  // rab^p (`pos` indexed by diagonal, in pairs of diagonals d − 1, d: `hstu_position_bias_padded`):
  // row1 = row0 + 8, so (nt, row1) lies on the diagonal i − j of (nt − 1, row0) and a thread
  // reads NT + 1 pairs rather than 4·NT entries, all at constant offsets from pos + d0.
  const int d0 = r.row0 - k0 - 2 * tq;   // i − j of (nt = 0, row0, e = 0)
  float pos0[2] = {0.f, 0.f}, pos1[2] = {0.f, 0.f};   // row0's and row1's entries of this nt
  if (POS) { const float2 e = pos[d0 + 8]; pos1[0] = e.y; pos1[1] = e.x; }
  #pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    float p[4];
    if (POS) { const float2 e = pos[d0 - nt * 8]; pos0[0] = e.y; pos0[1] = e.x; }
    #pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = k0 + nt * 8 + 2 * tq + (e & 1);
      const bool ok = !MASK || (e < 2 ? allowed(j, r.a0, r.b0, r.c0) : allowed(j, r.a1, r.b1, r.c1));
      float h = POS ? fmaf(s[nt][e], 0.5f, e < 2 ? pos0[e] : pos1[e - 2]) : 0.5f * s[nt][e];
#if TIME_BIAS
      if (ok) h = fmaf(0.5f, time.table[time_bucket((e < 2 ? r.qt0 : r.qt1) - keyTime[j], time.thresholds, time.buckets)], h);
#endif
      p[e] = ok ? silu_of_half(h) : 0.f;
    }
    pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0], p[1]);
    pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2], p[3]);
    if (POS) { pos1[0] = pos0[0]; pos1[1] = pos0[1]; }
  }
}

/// P = mask ⊙ SiLU(S + pos + time) for a thread's two rows and the NT·8 keys from k0 (an
/// accumulator fragment), packed straight into bf16 A fragments (mma.sync's and wgmma's agree).
/// P leaves out 1/N: the forwards scale O once when they store it. `full`: the tile is entirely
/// visible to these rows, so the mask is skipped. rab^p is compile-time (POS_BIAS), so a kernel
/// holds two copies of this code, not four.
template <int NT>
__device__ __forceinline__ void silu_scores(const float (&s)[NT][4], u32 (&pf)[NT / 2][4], const QueryRows& r, int k0, int tq,
    bool full, const float2* __restrict__ pos, const TimeBiasArgs& time, const long long* __restrict__ keyTime) {
  if (full) silu_tile<NT, false, POS_BIAS>(s, pf, r, k0, tq, pos, time, keyTime);
  else silu_tile<NT, true, POS_BIAS>(s, pf, r, k0, tq, pos, time, keyTime);
}

/// *p += (lo, hi) as one bf16 pair (sm_90's vector reduction).
__device__ __forceinline__ void red_add_bf16x2(bf16_t* p, float lo, float hi) {
  asm volatile("red.global.add.noftz.bf16x2 [%0], %1;" :: "l"(p), "r"(pack_bf16x2(lo, hi)) : "memory");
}

/// Writes a thread's two rows of an fp32 accumulator fragment (NT·8 columns) times `scale` to out
/// (float or bf16_t, row stride ld), or adds them atomically when several CTAs share the rows
/// (split keys).
template <int NT, typename O>
__device__ __forceinline__ void store_rows(const float (&o)[NT][4], O* out, size_t ld, const QueryRows& r, int n, int tq, bool atomic,
    float scale) {
  #pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int col = nt * 8 + 2 * tq;
    O* p0 = out + (size_t)r.row0 * ld + col;
    O* p1 = out + (size_t)r.row1 * ld + col;
    const float a = o[nt][0] * scale, b = o[nt][1] * scale, c = o[nt][2] * scale, d = o[nt][3] * scale;
    if constexpr (sizeof(O) == 2) {
      if (atomic) {
        if (r.row0 < n) red_add_bf16x2(p0, a, b);
        if (r.row1 < n) red_add_bf16x2(p1, c, d);
      } else {
        if (r.row0 < n) *(u32*)p0 = pack_bf16x2(a, b);
        if (r.row1 < n) *(u32*)p1 = pack_bf16x2(c, d);
      }
    } else if (atomic) {
      if (r.row0 < n) { atomicAdd(p0, a); atomicAdd(p0 + 1, b); }
      if (r.row1 < n) { atomicAdd(p1, c); atomicAdd(p1 + 1, d); }
    } else {
      if (r.row0 < n) *(float2*)p0 = make_float2(a, b);
      if (r.row1 < n) *(float2*)p1 = make_float2(c, d);
    }
  }
}

/// `store_rows` into the forward's output, fp32 or (`outBF16`) bf16, from element `offset` on.
template <int NT>
__device__ __forceinline__ void store_output(const float (&o)[NT][4], void* out, int outBF16, size_t offset, size_t ld, const QueryRows& r,
    int n, int tq, bool atomic, float scale) {
  if (outBF16) store_rows<NT>(o, (bf16_t*)out + offset, ld, r, n, tq, atomic, scale);
  else store_rows<NT>(o, (float*)out + offset, ld, r, n, tq, atomic, scale);
}

/// Loads `rows` x D bf16 (row stride ld elements in global) into shared memory with cp.async;
/// rows at or past `valid` are zero-filled.
template <int D, int S, int THREADS>
__device__ __forceinline__ void load_tile(bf16_t* smem, const bf16_t* g, size_t ld, int rows, int valid) {
  constexpr int CHUNKS = D / 8;
  for (int x = threadIdx.x; x < rows * CHUNKS; x += THREADS) {
    int r = x / CHUNKS, c = x % CHUNKS;
    bool ok = r < valid;
    cp_async_16(smem + r * S + c * 8, ok ? (const void*)(g + (size_t)r * ld + c * 8) : (const void*)g, ok);
  }
}

/// The parameters of both attention forwards, in the order `CUDADevice.attentionForward` passes them;
/// `pos` points at diagonal 0 of the padded rab^p pairs (`hstu_position_bias_padded`).
#define ATTENTION_FORWARD_PARAMS \
    const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v, \
    const int* __restrict__ offsets, const int* __restrict__ targets, const int* __restrict__ bounds, \
    const float2* __restrict__ pos, \
    const long long* __restrict__ keyTimes, const long long* __restrict__ queryTimes, \
    const float* __restrict__ timeTable, const long long* __restrict__ timeThresholds, int timeBuckets, void* __restrict__ out, int outBF16, \
    float* __restrict__ lse, float scoreScale, int heads, int tilesPerSequence, float invNConst, int splitTiles, int queryTiles, int splitQueryTiles, \
    int window, int tail, int prefix, int contextual, int blockGroup

extern "C" __global__ void __launch_bounds__(FWD_WARPS * 32, FWD_MIN_BLOCKS)
hstu_attention_forward(ATTENTION_FORWARD_PARAMS) {
  grid_dependency_wait();
  extern __shared__ __align__(16) unsigned char shared[];
  bf16_t* sQ = (bf16_t*)shared;
  bf16_t* sK = sQ + BM * SQK;            // [2][BN][SQK]
  bf16_t* sV = sK + 2 * BN * SQK;        // [2][BN][SV]
  MaskArgs m = {window, tail, prefix, contextual};
  const TimeBiasArgs time = {keyTimes, queryTimes, timeTable, timeThresholds, timeBuckets};

  ForwardBlock f;
  if (!forward_block(f, offsets, targets, bounds, tilesPerSequence, invNConst, splitTiles, queryTiles, splitQueryTiles, BM, blockGroup)) return;
  const int h = f.h, start = f.start, n = f.n, t = f.t, q0 = f.q0, e1 = f.e1, s2 = f.s2, itBegin = f.itBegin, itEnd = f.itEnd;
  const int* bb = f.bb;
  const bool atomicOut = f.atomicOut;
#if SOFTMAX
  const float outScale = 1.f;   // O /= l below
#else
  const float outScale = f.invN;   // P leaves out 1/N (`silu_scores`)
#endif
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;

  const QueryRows r = query_rows(q0 + warp * 16 + g, n, t, m, TIME_BIAS ? time.queryTimes + start : nullptr);

  const size_t ldqk = (size_t)heads * DQK, ldv = (size_t)heads * DV;
  const bf16_t* kBase = k + (size_t)start * ldqk + h * DQK;
  const bf16_t* vBase = v + (size_t)start * ldv + h * DV;
  load_tile<DQK, SQK, FWD_WARPS * 32>(sQ, q + (size_t)(start + q0) * ldqk + h * DQK, ldqk, BM, n - q0);
  if (itBegin < itEnd) {
    int k0 = (itBegin < e1 ? itBegin : s2 + (itBegin - e1)) * BN;
    load_tile<DQK, SQK, FWD_WARPS * 32>(sK, kBase + (size_t)k0 * ldqk, ldqk, BN, n - k0);
    load_tile<DV, SV, FWD_WARPS * 32>(sV, vBase + (size_t)k0 * ldv, ldv, BN, n - k0);
  }
  cp_async_commit();

  float o[DV / 8][4];
  #pragma unroll
  for (int x = 0; x < DV / 8; ++x) o[x][0] = o[x][1] = o[x][2] = o[x][3] = 0.f;
  u32 qf[DQK / 16][4];
#if SOFTMAX
  // Running maximum (base-2 scaled scores) and sum of this thread's two rows.
  float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.f, l1 = 0.f;
  const float scale2 = scoreScale * LOG2E;
#endif

  for (int it = itBegin; it < itEnd; ++it) {
    const int kt = it < e1 ? it : s2 + (it - e1);
    const int k0 = kt * BN, stage = (it - itBegin) & 1;
    if (it + 1 < itEnd) {
      const int nk0 = (it + 1 < e1 ? it + 1 : s2 + (it + 1 - e1)) * BN;
      load_tile<DQK, SQK, FWD_WARPS * 32>(sK + (stage ^ 1) * BN * SQK, kBase + (size_t)nk0 * ldqk, ldqk, BN, n - nk0);
      load_tile<DV, SV, FWD_WARPS * 32>(sV + (stage ^ 1) * BN * SV, vBase + (size_t)nk0 * ldv, ldv, BN, n - nk0);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (it == itBegin) {
      #pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk)
        ldmatrix_x4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], sQ + (warp * 16 + (lane & 15)) * SQK + kk * 16 + (lane >> 4) * 8);
    }
    const bf16_t* cK = sK + stage * BN * SQK;
    const bf16_t* cV = sV + stage * BN * SV;

    // S = Q Kᵀ for this warp's 16 rows and the tile's 64 keys.
    float s[BN / 8][4];
    #pragma unroll
    for (int x = 0; x < BN / 8; ++x) s[x][0] = s[x][1] = s[x][2] = s[x][3] = 0.f;
    #pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
      #pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        u32 r0, r1, r2, r3;
        const int mi = lane >> 3;
        ldmatrix_x4(r0, r1, r2, r3, cK + (np * 16 + (lane & 7) + (mi >> 1) * 8) * SQK + kk * 16 + (mi & 1) * 8);
        mma_bf16_16816(s[2 * np], qf[kk], r0, r1);
        mma_bf16_16816(s[2 * np + 1], qf[kk], r2, r3);
      }
    }

    const bool full = (k0 + BN <= bb[3]) || (k0 >= bb[4] && k0 + BN <= bb[5]);
    u32 pf[BN / 16][4];
#if SOFTMAX
    // P = mask ⊙ 2^(S·scale·log2 e − m): the new row maxima rescale the running sums and O.
    float tileMax0 = NEG_INF, tileMax1 = NEG_INF;
    #pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      #pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + nt * 8 + 2 * tq + (e & 1);
        const bool ok = full || (e < 2 ? allowed(j, r.a0, r.b0, r.c0) : allowed(j, r.a1, r.b1, r.c1));
        s[nt][e] = ok ? s[nt][e] * scale2 : NEG_INF;
        if (e < 2) tileMax0 = fmaxf(tileMax0, s[nt][e]); else tileMax1 = fmaxf(tileMax1, s[nt][e]);
      }
    }
    const float new0 = fmaxf(m0, quad_max(tileMax0)), new1 = fmaxf(m1, quad_max(tileMax1));
    const float ref0 = new0 == NEG_INF ? 0.f : new0, ref1 = new1 == NEG_INF ? 0.f : new1;   // rows with no key yet
    const float corr0 = exp2_fast(m0 - ref0), corr1 = exp2_fast(m1 - ref1);
    m0 = new0; m1 = new1; l0 *= corr0; l1 *= corr1;
    #pragma unroll
    for (int x = 0; x < DV / 8; ++x) { o[x][0] *= corr0; o[x][1] *= corr0; o[x][2] *= corr1; o[x][3] *= corr1; }
    #pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      float p[4];
      #pragma unroll
      for (int e = 0; e < 4; ++e) p[e] = exp2_fast(s[nt][e] - (e < 2 ? ref0 : ref1));
      l0 += p[0] + p[1]; l1 += p[2] + p[3];
      pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0], p[1]);
      pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2], p[3]);
    }
#else
    silu_scores<BN / 8>(s, pf, r, k0, tq, full, pos, time, TIME_BIAS ? time.keyTimes + start : nullptr);
#endif

    // O += P V.
    #pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      #pragma unroll
      for (int dp = 0; dp < DV / 16; ++dp) {
        u32 r0, r1, r2, r3;
        const int mi = lane >> 3;
        ldmatrix_x4_trans(r0, r1, r2, r3, cV + (kk * 16 + (lane & 7) + (mi & 1) * 8) * SV + dp * 16 + (mi >> 1) * 8);
        mma_bf16_16816(o[2 * dp], pf[kk], r0, r1);
        mma_bf16_16816(o[2 * dp + 1], pf[kk], r2, r3);
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

#if SOFTMAX
  // O /= l, and lse = ln Σ exp(S·scale) = (m + log2 l) · ln 2 (rows that saw no key: O = 0, lse = 0).
  l0 = quad_sum(l0); l1 = quad_sum(l1);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  #pragma unroll
  for (int x = 0; x < DV / 8; ++x) { o[x][0] *= inv0; o[x][1] *= inv0; o[x][2] *= inv1; o[x][3] *= inv1; }
  if (tq == 0 && r.row0 < n) lse[(size_t)(start + r.row0) * heads + h] = l0 > 0.f ? (m0 + __log2f(l0)) / LOG2E : 0.f;
  if (tq == 0 && r.row1 < n) lse[(size_t)(start + r.row1) * heads + h] = l1 > 0.f ? (m1 + __log2f(l1)) / LOG2E : 0.f;
#endif
  store_output<DV / 8>(o, out, outBF16, (size_t)start * ldv + h * DV, ldv, r, n, tq, atomicOut, outScale);
}

/// dPos of a backward tile by diagonal, summed per warp without atomics. A thread holds two keys
/// (rows g, g + 8 of the warp's 16) and two query columns per 8 (2tq, 2tq + 1); its dS partial
/// sums arrive slot by slot, slot s (0 … QT/8) covering the warp diagonals (query column − key
/// row) 8(s − 1) + 2tq + e − g for e = 0, 1. Shuffles leave each of the QT + 15 diagonals with
/// one owner lane, which stores its sum in `out[diagonal + 15]`:
///  A. lane (g + 1, tq)'s e = 1 lies on lane (g, tq)'s e = 0 diagonal;
///  B. lanes (g + 2k, tq + k) then share a diagonal: each chain sums into its head (tq = 0 or g < 2);
///  C. e = 1 of the g = 0 lanes (taken by no lane in A) goes to head (1, tq + 1), lane 3's to the
///     next slot's head (1, 0);
///  D. heads with 2tq − g in 1 … 6 lie on the next slot's head (8 − (2tq − g), 0), which owns the sum;
///     the last slot's heads keep theirs.
struct WarpDiagonals {
  float* out;
  int lane, g, tq, source;   // source: the head that step D brings to this lane
  float arriving = 0.f;      // the previous slot's sums that this lane owns now (C and D)

  __device__ __forceinline__ WarpDiagonals(float* out, int lane) : out(out), lane(lane), g(lane >> 2), tq(lane & 3) {
    source = tq == 0 && g >= 2 ? (g % 2 == 0 ? (8 - g) / 2 : 4 + (9 - g) / 2) : lane;
  }

  __device__ __forceinline__ void slot(int s, float e0, float e1, bool last) {
    const unsigned all = 0xffffffffu;
    float t = __shfl_down_sync(all, e1, 4);
    float v = e0 + (g < 7 ? t : 0.f);                              // A
    t = __shfl_down_sync(all, v, 9);
    v += tq < 3 && g < 6 ? t : 0.f;                                // B
    t = __shfl_down_sync(all, v, 18);
    v += tq < 2 && g < 4 ? t : 0.f;
    t = __shfl_up_sync(all, e1, 5);
    v += g == 1 && tq > 0 ? t : 0.f;                               // C, same slot
    v += arriving;
    if (tq == 0) out[8 * (s - 1) - g + 15] = v;
    if (!last) {
      const float fromLane3 = __shfl_up_sync(all, e1, 1);          // C, next slot
      const float head = __shfl_sync(all, v, source);              // D
      arriving = (lane == 4 ? fromLane3 : 0.f) + (tq == 0 && g >= 2 ? head : 0.f);
    } else {
      if (g < 2 && tq > 0) out[8 * (s - 1) + 2 * tq - g + 15] = v;
      if (lane == 3) out[8 * (s - 1) + 7 + 15] = e1;
    }
  }
};

/// The inputs of a warp's rab^p diagonal sums: slot s's (e0, e1) of `WarpDiagonals::slot`.
typedef float DiagonalSlots[QT / 8 + 1][2];

/// This warp's diagonal sums of a backward tile from its slots (`backward_scores`) into its row of
/// `s.diag`: callers run it once the tile's dV and dK products are on the tensor cores, so the
/// shuffles overlap them instead of delaying their issue.
__device__ __forceinline__ void sum_warp_diagonals(const DiagonalSlots& slots, float* diag) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  WarpDiagonals diagonals(diag + warp * WARP_DIAGONALS, lane);
  #pragma unroll
  for (int x = 0; x <= QT / 8; ++x) diagonals.slot(x, slots[x][0], slots[x][1], x == QT / 8);
}

/// The parameters of both attention backwards, in the order `CUDADevice.attentionBackward` passes them;
/// `pos` points at diagonal 0 of the padded rab^p pairs (`hstu_position_bias_padded`), `posLength`
/// is the table's own length (dpos's).
#define ATTENTION_BACKWARD_PARAMS \
    const bf16_t* __restrict__ q, const bf16_t* __restrict__ k, const bf16_t* __restrict__ v, \
    const bf16_t* __restrict__ dout, const int* __restrict__ offsets, const int* __restrict__ targets, \
    const int* __restrict__ bounds, const float2* __restrict__ pos, int posLength, \
    const long long* __restrict__ keyTimes, const long long* __restrict__ queryTimes, \
    const float* __restrict__ timeTable, const long long* __restrict__ timeThresholds, int timeBuckets, \
    const float* __restrict__ lse, const float* __restrict__ delta, float scoreScale, \
    float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, \
    const bf16_t* __restrict__ pre, bf16_t* __restrict__ dpre, int preStride, int preV, int preK, \
    float* __restrict__ dpos, float* __restrict__ dtime, \
    int heads, int tilesPerSequence, float invNConst, int window, int tail, int prefix, int contextual, int blockGroup

/// What a backward CTA works on: sequence b (tokens start..<start + n, t of them targets), head h,
/// and the BN keys from k0 (this thread's two, key0 and key1 = key0 + 8, rows g and g + 8 of its
/// warp's 16).
struct BackwardBlock {
  int b, h, start, n, t, k0, nTiles, key0, key1;
  float invN;
  const int* bounds;
  int tilesPerSequence;

  /// The bound-table entry {max a, min b, max c, min a, max b, min c} of query tile `tile`.
  __device__ __forceinline__ const int* entry(int tile) const { return bounds + ((size_t)b * tilesPerSequence + tile) * 8; }
};

/// The block of this CTA (grid: key blocks × heads × sequences); false past its sequence's end.
__device__ __forceinline__ bool backward_block(BackwardBlock& B, const int* __restrict__ offsets, const int* __restrict__ targets,
    const int* __restrict__ bounds, int tilesPerSequence, float invNConst, int blockGroup) {
  const int3 at = grid_position(blockGroup);
  B.b = at.z; B.h = at.y;
  B.start = offsets[B.b]; B.n = offsets[B.b + 1] - B.start;
  B.k0 = at.x * BN;
  if (B.k0 >= B.n) return false;
  B.t = targets ? targets[B.b] : 0;
  B.invN = invNConst > 0.f ? invNConst : 1.0f / (float)max(1, B.n - B.t);
  B.nTiles = (B.n + QT - 1) / QT;
  B.key0 = B.k0 + (threadIdx.x >> 5) * 16 + ((threadIdx.x & 31) >> 2);
  B.key1 = B.key0 + 8;
  B.bounds = bounds; B.tilesPerSequence = tilesPerSequence;
  return true;
}

/// A backward CTA's scratch in shared memory (after its operand tiles): the query tiles it walks;
/// per query tile, each query's key intervals a, b, c and each warp's dPos sums by diagonal;
/// SOFTMAX: lse · log2 e and Δ (in the dPos space: softmax has no rab^p); TIME_BIAS: query times
/// and the block's dTime sums.
struct BackwardScratch {
  int* interval;          // [3][QT]
  int* tileCount;         // [1] the length of `tiles`
  unsigned short* tiles;  // [tilesPerSequence rounded up to even] (`backward_tile_list`), 2 bytes per tile
  float* diag;            // [BWD_WARPS][WARP_DIAGONALS]
  float* lse;             // [QT]
  float* delta;           // [QT]
  long long* queryTime;   // [QT]
  float* dTime;           // [buckets + 1]

  __device__ __forceinline__ BackwardScratch(void* base, int tilesPerSequence) {
    interval = (int*)base;
    tileCount = interval + 3 * QT;
    tiles = (unsigned short*)(tileCount + 1);
    diag = (float*)(tiles + ((tilesPerSequence + 1) & ~1));
    lse = diag;
    delta = diag + QT;
    queryTime = (long long*)(((size_t)(diag + BWD_WARPS * WARP_DIAGONALS) + 7) & ~(size_t)7);
    dTime = (float*)(queryTime + QT);
  }
  /// The i-th query tile of the list, and whether every query of it sees every key of the block.
  __device__ __forceinline__ int tile(int i) const { return tiles[i] & 0x7fff; }
  __device__ __forceinline__ bool full(int i) const { return tiles[i] >> 15; }
};

/// The first query tile that sees the block's keys: every mask lets query i see only keys j ≤ i
/// and its own key, so no query tile before the block's own.
__device__ __forceinline__ int first_backward_tile(const BackwardBlock& B) { return B.k0 / QT; }

/// The query tiles that see the block's keys, in order, into `s.tiles` (their count into
/// `s.tileCount`), with bit 15 set where every query of the tile sees every key of the block (no
/// element-wise mask; never a tile with rows past the sequence, whose Q and dO rows may belong to
/// the next sequence). The list starts with `first_backward_tile`; only candidate tiles are tested
/// against the bounds table: without a window, or for keys under the global prefix columns or the
/// contextual prefix, every tile from there on; otherwise the window's rows k0 … k0 + BN − 1 +
/// window, then (keys of the history) the global tail rows and the targets, which see every key of
/// the history. So a windowed block tests a few tiles at any L (a walk over every later tile cost a
/// block a latency per 32 tiles and made the backward's time per token grow with L at a fixed
/// window). Warp 0 tests 32 candidates per ballot, the loads of AHEAD ballots in flight at once;
/// readers wait for a barrier. The loop then finds its next tile in shared memory.
__device__ __forceinline__ void backward_tile_list(const BackwardScratch& s, const BackwardBlock& B, MaskArgs m) {
  constexpr int AHEAD = 8;
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x, first = first_backward_tile(B);
  // Candidates: tiles first … windowEnd − 1, then globalStart … nTiles − 1.
  int windowEnd = B.nTiles, globalStart = B.nTiles;
  if (m.window >= 0 && B.k0 >= max(m.prefix, m.contextual)) {
    const int history = B.n - B.t;
    windowEnd = min(B.nTiles, (B.k0 + BN - 1 + m.window) / QT + 1);
    globalStart = max(windowEnd, B.k0 < history ? max(0, history - m.tail) / QT : B.nTiles);
  }
  const int candidates = (windowEnd - first) + (B.nTiles - globalStart);
  int count = 0;
  for (int base = 0; base < candidates; base += 32 * AHEAD) {
    int tile[AHEAD];
    bool sees[AHEAD], full[AHEAD];
    #pragma unroll
    for (int r = 0; r < AHEAD; ++r) {
      const int c = base + 32 * r + lane;
      tile[r] = c < windowEnd - first ? first + c : globalStart + (c - (windowEnd - first));
      sees[r] = full[r] = false;
      if (c < candidates) {
        const int* entry = B.entry(tile[r]);
        const int4 e = *(const int4*)entry;         // max a, min b, max c, min a
        const int2 f = *(const int2*)(entry + 4);   // max b, min c
        sees[r] = B.k0 < e.x || (B.k0 + BN > e.y && B.k0 < e.z);
        full[r] = (tile[r] + 1) * QT <= B.n && ((B.k0 + BN <= e.w) || (B.k0 >= f.x && B.k0 + BN <= f.y));
      }
    }
    #pragma unroll
    for (int r = 0; r < AHEAD; ++r) {
      const unsigned hit = __ballot_sync(0xffffffffu, sees[r]);
      if (sees[r]) s.tiles[count + __popc(hit & ((1u << lane) - 1))] = (unsigned short)(tile[r] | (full[r] ? 0x8000 : 0));
      count += __popc(hit);
    }
  }
  if (lane == 0) *s.tileCount = count;
}

/// The scratch of query tile q0: key intervals, lse and Δ (SOFTMAX), query times (TIME_BIAS).
__device__ __forceinline__ void backward_tile_queries(const BackwardScratch& s, const BackwardBlock& B, int q0, MaskArgs m,
    const float* __restrict__ lse, const float* __restrict__ delta, int heads, const TimeBiasArgs& time) {
  for (int x = threadIdx.x; x < QT; x += BWD_WARPS * 32) {
    const bool valid = q0 + x < B.n;
    int a = 0, bb = 0, c = 0;
    if (valid) key_intervals(q0 + x, B.n, B.t, m, a, bb, c);
    s.interval[x] = a; s.interval[QT + x] = bb; s.interval[2 * QT + x] = c;
#if SOFTMAX
    s.lse[x] = valid ? lse[(size_t)(B.start + q0 + x) * heads + B.h] * LOG2E : 0.f;
    s.delta[x] = valid ? delta[(size_t)(B.start + q0 + x) * heads + B.h] : 0.f;
#endif
#if TIME_BIAS
    s.queryTime[x] = valid ? time.queryTimes[B.start + q0 + x] : 0;
#endif
  }
}

/// acc = A Bᵀ on mma.sync for this warp's 16 key rows of A (warp · 16 …, D columns) and the QT
/// query rows of B, both bf16 in shared memory with row stride S: the backward's Sᵀ = K Qᵀ
/// (A = K, B = Q) and dPᵀ = V dOᵀ (A = V, B = dO), in the accumulator layout.
template <int D, int S>
__device__ __forceinline__ void warp_keys_times_queries(float (&acc)[QT / 8][4], const bf16_t* a, const bf16_t* b, int warp, int lane) {
  const int mi = lane >> 3;
  #pragma unroll
  for (int x = 0; x < QT / 8; ++x) acc[x][0] = acc[x][1] = acc[x][2] = acc[x][3] = 0.f;
  #pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    u32 af[4];
    ldmatrix_x4(af[0], af[1], af[2], af[3], a + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);
    #pragma unroll
    for (int np = 0; np < QT / 16; ++np) {
      u32 r0, r1, r2, r3;
      ldmatrix_x4(r0, r1, r2, r3, b + (np * 16 + (lane & 7) + (mi >> 1) * 8) * S + kk * 16 + (mi & 1) * 8);
      mma_bf16_16816(acc[2 * np], af, r0, r1);
      mma_bf16_16816(acc[2 * np + 1], af, r2, r3);
    }
  }
}

/// Pᵀ and dSᵀ of a backward tile from this warp's Sᵀ = K Qᵀ and dPᵀ = V dOᵀ (its 16 keys × the
/// tile's QT queries, in the mma accumulator layout), packed into bf16 A fragments (`pf`, `df`);
/// dSᵀ also goes to shared memory for dQ through `ds_at(row, unit)` (the element at key row `row`
/// of the block, query column 8 · unit); rab^t's gradient is summed, and rab^p's dS partial sums
/// go to `slots` for `sum_warp_diagonals`. SiLU's P
/// leaves out 1/N, which `store_key_gradients` applies to dV once: P = SiLU(x) = h + h·t with
/// h = x/2 and t = tanh(h), dS = dP · σ(x)(1 + x(1 − σ(x))) / N = dP · (σ + P(1 − σ)) / N with
/// σ = (1 + t)/2, six FP32 ops and one MUFU op per element (with rab^p too: its entries come
/// halved, so h takes them in the FFMA that halves x). MASK (the tile is not entirely visible to
/// the block's keys) and POS (rab^p, `pos[d]` the halved entries of diagonals d − 1 and d = i − j:
/// `hstu_position_bias_padded`) are compile-time, so a full tile without biases costs
/// only that. Element (nt, e2 + 2) of a thread (key1 = key0 + 8) lies on the diagonal i − j of its
/// (nt − 1, e2): the two share one rab^p entry and one dPos partial sum.
template <bool MASK, bool POS, typename DSAt>
__device__ __forceinline__ void backward_scores_tile(const float (&st)[QT / 8][4], const float (&dpt)[QT / 8][4],
    u32 (&pf)[QT / 16][4], u32 (&df)[QT / 16][4], DiagonalSlots& slots, const BackwardScratch& s, const BackwardBlock& B,
    int q0, const float2* __restrict__ pos, float scoreScale, const TimeBiasArgs& time, long long kt0, long long kt1, DSAt ds_at) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int* sInt = s.interval;
#if SOFTMAX
  const float scale2 = scoreScale * LOG2E;
#else
  const float halfInvN = 0.5f * B.invN;
#endif
  const int d0 = q0 + 2 * tq - B.key0;   // i − j of (nt = 0, e2 = 0)
  float carry0 = 0.f, carry1 = 0.f;      // ds of (nt − 1, e2 = 0, 1)
  float posLo[2] = {0.f, 0.f}, posHi[2] = {0.f, 0.f};   // rab^p of (nt, e2 < 2) and (nt, e2 ≥ 2)
  if (POS) { const float2 e = pos[d0 - 7]; posHi[0] = e.x; posHi[1] = e.y; }
  #pragma unroll
  for (int nt = 0; nt < QT / 8; ++nt) {
    float p[4], ds[4];
    if (POS) { const float2 e = pos[d0 + nt * 8 + 1]; posLo[0] = e.x; posLo[1] = e.y; }
    #pragma unroll
    for (int e2 = 0; e2 < 4; ++e2) {
      const int j = e2 < 2 ? B.key0 : B.key1;
      const int il = nt * 8 + 2 * tq + (e2 & 1);
      const bool ok = !MASK || allowed(j, sInt[il], sInt[QT + il], sInt[2 * QT + il]);
#if TIME_BIAS
      const int bucket = ok ? time_bucket(s.queryTime[il] - (e2 < 2 ? kt0 : kt1), time.thresholds, time.buckets) : 0;
#endif
#if SOFTMAX
      float x = st[nt][e2];   // (softmax attention has no rab^p)
#if TIME_BIAS
      if (ok) x += time.table[bucket];
#endif
      p[e2] = ok ? exp2_fast(x * scale2 - s.lse[il]) : 0.f;
      ds[e2] = p[e2] * (dpt[nt][e2] - s.delta[il]) * scoreScale;
#else
      // h = x/2: one FFMA with rab^p's halved entry (`hstu_position_bias_padded`).
      float h = POS ? fmaf(st[nt][e2], 0.5f, e2 < 2 ? posLo[e2] : posHi[e2 - 2]) : 0.5f * st[nt][e2];
#if TIME_BIAS
      if (ok) h = fmaf(0.5f, time.table[bucket], h);
#endif
      const float t = tanh_approx(h);
      // dS = dP · (σ + P(1 − σ)) / N = dP · (σ' + P(1/N − σ')) with σ' = σ/N = (1 + t) / 2N.
      const float silu = fmaf(h, t, h), sgN = fmaf(halfInvN, t, halfInvN);
      p[e2] = ok ? silu : 0.f;
      ds[e2] = ok ? dpt[nt][e2] * fmaf(silu, B.invN - sgN, sgN) : 0.f;
#endif
#if TIME_BIAS
      if (ds[e2] != 0.f) atomicAdd(&s.dTime[bucket], ds[e2]);
#endif
    }
    if (POS) {
      slots[nt][0] = ds[2] + carry0;
      slots[nt][1] = ds[3] + carry1;
      carry0 = ds[0]; carry1 = ds[1];
      posHi[0] = posLo[0]; posHi[1] = posLo[1];
    }
    pf[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(p[0], p[1]);
    pf[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(p[2], p[3]);
    df[nt >> 1][(nt & 1) * 2 + 0] = pack_bf16x2(ds[0], ds[1]);
    df[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16x2(ds[2], ds[3]);
    *(u32*)(ds_at(warp * 16 + g, nt) + 2 * tq) = df[nt >> 1][(nt & 1) * 2 + 0];
    *(u32*)(ds_at(warp * 16 + g + 8, nt) + 2 * tq) = df[nt >> 1][(nt & 1) * 2 + 1];
  }
  if (POS) { slots[QT / 8][0] = carry0; slots[QT / 8][1] = carry1; }
}

/// `backward_scores_tile` for a tile that is `full` (every query sees every key of the block) or
/// not; with POS_BIAS, rab^p read from the padded pairs `pos`.
template <typename DSAt>
__device__ __forceinline__ void backward_scores(const float (&st)[QT / 8][4], const float (&dpt)[QT / 8][4],
    u32 (&pf)[QT / 16][4], u32 (&df)[QT / 16][4], DiagonalSlots& slots, const BackwardScratch& s, const BackwardBlock& B,
    int q0, bool full, const float2* __restrict__ pos, float scoreScale, const TimeBiasArgs& time, long long kt0, long long kt1,
    DSAt ds_at) {
  if (full) backward_scores_tile<false, POS_BIAS>(st, dpt, pf, df, slots, s, B, q0, pos, scoreScale, time, kt0, kt1, ds_at);
  else backward_scores_tile<true, POS_BIAS>(st, dpt, pf, df, slots, s, B, q0, pos, scoreScale, time, kt0, kt1, ds_at);
}

/// rab^p's gradient of a backward CTA. Query tile q0 holds the block's diagonals q0 − k0 − (BN − 1)
/// … q0 − k0 + QT − 1 (query − key), each summed over the warps' rows of `s.diag` (warp w's
/// diagonal x − (BN − 1) + 16w). Thread t owns the tile's diagonal d ≡ t (mod QT + BN) and keeps
/// its sum in a register while the tiles that follow still hold d: consecutive query tiles share
/// BN − 1 diagonals, so a CTA walking them issues one global atomic per diagonal it saw, not one
/// per diagonal and tile. Any walk is summed correctly: a diagonal the next tile lacks is flushed.
struct PositionGradient {
  static_assert(BWD_WARPS * 32 == QT + BN && ((QT + BN) & (QT + BN - 1)) == 0, "a thread per diagonal of a tile, plus one");
  int d = -1;        // the diagonal this thread sums (negative diagonals are masked under every mask: never flushed)
  float sum = 0.f;

  /// Adds tile q0's diagonal sums (after a barrier past every warp's `sum_warp_diagonals`).
  __device__ __forceinline__ void add_tile(const BackwardScratch& s, const BackwardBlock& B, int q0, float* __restrict__ dpos, int posLength) {
    const int first = q0 - B.k0 - (BN - 1), x = ((int)threadIdx.x - first) & (QT + BN - 1);
    if (first + x != d) {
      flush(dpos, posLength);
      d = first + x;
      sum = 0.f;
    }
    if (x < QT + BN - 1) {
      #pragma unroll
      for (int w = 0; w < BWD_WARPS; ++w) {
        const int own = x - (BN - 1) + 16 * w;
        if (own >= -15 && own < QT) sum += s.diag[w * WARP_DIAGONALS + own + 15];
      }
    }
  }
  /// Adds this thread's sum into dpos (after the last tile, and whenever its diagonal leaves the walk).
  __device__ __forceinline__ void flush(float* __restrict__ dpos, int posLength) const {
    if (d >= 0 && d < posLength && sum != 0.f) atomicAdd(dpos + d, sum);
  }
};

/// dst[0..1] += (x, y): an 8-byte vector reduction (sm_90; dst 8-byte aligned). No memory clobber:
/// the kernel never reads dq.
__device__ __forceinline__ void red_add_v2(float* dst, float x, float y) {
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(dst), "f"(x), "f"(y));
}

/// dQ rows qr0 and qr0 + 8 += acc (NT accumulator tiles of 8 columns from `dqBase`; the thread holds
/// columns 8·nt + 2tq, +1 of both rows).
template <int NT>
__device__ __forceinline__ void add_query_gradient(const float (&acc)[NT][4], float* dqBase, int qr0, int n, size_t ld, int tq) {
  #pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    if (qr0 < n) red_add_v2(dqBase + (size_t)qr0 * ld + nt * 8 + 2 * tq, acc[nt][0], acc[nt][1]);
    if (qr0 + 8 < n) red_add_v2(dqBase + (size_t)(qr0 + 8) * ld + nt * 8 + 2 * tq, acc[nt][2], acc[nt][3]);
  }
}

/// Where a backward CTA's dK and dV go: fp32 `dk` and `dv` in the attention's head layout or, when
/// `dpre` is set, straight into the v and k columns of the HSTU block's dPre as dK, dV ⊙ SiLU'(pre)
/// (bf16; `uvqk_merge_silu_backward` then handles only the q columns). pre and dpre rows are
/// `stride` elements apart, head h's v columns start at `v + h·DV`, its k columns at `k + h·DQK`.
struct KeyGradientOutput {
  float* dk;
  float* dv;
  const bf16_t* pre;
  bf16_t* dpre;
  int stride, v, k;
};

/// Rows key0 and key1 of one accumulator (NT 8-column fragments, times `scale`) into dpre's columns
/// from `column`, each times SiLU'(pre) of its element.
template <int NT>
__device__ __forceinline__ void store_silu_merged(const float (&acc)[NT][4], float scale, const KeyGradientOutput& out,
    int column, const BackwardBlock& B, int tq) {
  #pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int key = half ? B.key1 : B.key0;
    if (key >= B.n) continue;
    const size_t row = (size_t)(B.start + key) * out.stride + column + 2 * tq;
    #pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const u32 x = *(const u32*)(out.pre + row + nt * 8);
      const float x0 = __uint_as_float(x << 16), x1 = __uint_as_float(x & 0xffff0000u);
      *(u32*)(out.dpre + row + nt * 8) = pack_bf16x2(acc[nt][2 * half] * scale * silu_grad(x0),
                                                     acc[nt][2 * half + 1] * scale * silu_grad(x1));
    }
  }
}

/// The block's dK and dV rows (this thread's key0 and key1; dV takes SiLU's 1/N here), and its dTime sums.
__device__ __forceinline__ void store_key_gradients(const float (&accK)[DQK / 8][4], const float (&accV)[DV / 8][4],
    const BackwardBlock& B, const BackwardScratch& s, const KeyGradientOutput& out, float* __restrict__ dtime,
    int heads, int timeBuckets) {
  const int tq = threadIdx.x & 3;
  const size_t ldqk = (size_t)heads * DQK, ldv = (size_t)heads * DV;
#if TIME_BIAS
  __syncthreads();
  for (int x = threadIdx.x; x <= timeBuckets; x += BWD_WARPS * 32)
    if (s.dTime[x] != 0.f) atomicAdd(dtime + x, s.dTime[x]);
#endif
#if SOFTMAX
  const float pScale = 1.f;
#else
  const float pScale = B.invN;   // `backward_scores_tile`'s P leaves out 1/N
#endif
  if (out.dpre != nullptr) {
    store_silu_merged<DQK / 8>(accK, 1.f, out, out.k + B.h * DQK, B, tq);
    store_silu_merged<DV / 8>(accV, pScale, out, out.v + B.h * DV, B, tq);
    return;
  }
  float* dkBase = out.dk + (size_t)B.start * ldqk + B.h * DQK;
  float* dvBase = out.dv + (size_t)B.start * ldv + B.h * DV;
  #pragma unroll
  for (int nt = 0; nt < DQK / 8; ++nt) {
    const int col = nt * 8 + 2 * tq;
    if (B.key0 < B.n) *(float2*)(dkBase + (size_t)B.key0 * ldqk + col) = make_float2(accK[nt][0], accK[nt][1]);
    if (B.key1 < B.n) *(float2*)(dkBase + (size_t)B.key1 * ldqk + col) = make_float2(accK[nt][2], accK[nt][3]);
  }
  #pragma unroll
  for (int nt = 0; nt < DV / 8; ++nt) {
    const int col = nt * 8 + 2 * tq;
    if (B.key0 < B.n) *(float2*)(dvBase + (size_t)B.key0 * ldv + col) = make_float2(accV[nt][0] * pScale, accV[nt][1] * pScale);
    if (B.key1 < B.n) *(float2*)(dvBase + (size_t)B.key1 * ldv + col) = make_float2(accV[nt][2] * pScale, accV[nt][3] * pScale);
  }
}

/// Zeroes a backward CTA's accumulators and dTime sums; the thread's key times (TIME_BIAS).
__device__ __forceinline__ void backward_begin(float (&accK)[DQK / 8][4], float (&accV)[DV / 8][4], const BackwardBlock& B,
    const BackwardScratch& s, const TimeBiasArgs& time, long long& kt0, long long& kt1) {
  #pragma unroll
  for (int x = 0; x < DQK / 8; ++x) accK[x][0] = accK[x][1] = accK[x][2] = accK[x][3] = 0.f;
  #pragma unroll
  for (int x = 0; x < DV / 8; ++x) accV[x][0] = accV[x][1] = accV[x][2] = accV[x][3] = 0.f;
  kt0 = kt1 = 0;
#if TIME_BIAS
  kt0 = B.key0 < B.n ? time.keyTimes[B.start + B.key0] : 0;
  kt1 = B.key1 < B.n ? time.keyTimes[B.start + B.key1] : 0;
  for (int x = threadIdx.x; x <= time.buckets; x += BWD_WARPS * 32) s.dTime[x] = 0.f;
#endif
}

extern "C" __global__ void __launch_bounds__(BWD_WARPS * 32, BWD_MIN_BLOCKS)
hstu_attention_backward(ATTENTION_BACKWARD_PARAMS) {
  grid_dependency_wait();
  extern __shared__ __align__(16) unsigned char shared[];
  bf16_t* sK = (bf16_t*)shared;             // [BN][SQK]
  bf16_t* sV = sK + BN * SQK;               // [BN][SV]
  bf16_t* sQ = sV + BN * SV;                // [2][QT][SQK]
  bf16_t* sO = sQ + 2 * QT * SQK;           // [2][QT][SV]  (dO)
  bf16_t* sDS = sO + 2 * QT * SV;           // [BN][SDS]    dSᵀ
  const BackwardScratch s(sDS + BN * SDS, tilesPerSequence);
  const TimeBiasArgs time = {keyTimes, queryTimes, timeTable, timeThresholds, timeBuckets};
  const MaskArgs m = {window, tail, prefix, contextual};

  BackwardBlock B;
  if (!backward_block(B, offsets, targets, bounds, tilesPerSequence, invNConst, blockGroup)) return;
  const int start = B.start, n = B.n, k0 = B.k0, h = B.h;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3, mi = lane >> 3;
  const size_t ldqk = (size_t)heads * DQK, ldv = (size_t)heads * DV;
  const bf16_t* qBase = q + (size_t)start * ldqk + h * DQK;
  const bf16_t* oBase = dout + (size_t)start * ldv + h * DV;

  // K, V and the first query tile's Q and dO in flight while warp 0 lists the tiles.
  int tile = first_backward_tile(B);
  load_tile<DQK, SQK, BWD_WARPS * 32>(sK, k + (size_t)(start + k0) * ldqk + h * DQK, ldqk, BN, n - k0);
  load_tile<DV, SV, BWD_WARPS * 32>(sV, v + (size_t)(start + k0) * ldv + h * DV, ldv, BN, n - k0);
  load_tile<DQK, SQK, BWD_WARPS * 32>(sQ, qBase + (size_t)tile * QT * ldqk, ldqk, QT, n - tile * QT);
  load_tile<DV, SV, BWD_WARPS * 32>(sO, oBase + (size_t)tile * QT * ldv, ldv, QT, n - tile * QT);
  cp_async_commit();
  backward_tile_list(s, B, m);
  __syncthreads();
  const int count = *s.tileCount;

  float accK[DQK / 8][4], accV[DV / 8][4];
  long long kt0, kt1;
  backward_begin(accK, accV, B, s, time, kt0, kt1);
  PositionGradient posGradient;

  for (int i = 0, stage = 0; i < count; ++i, stage ^= 1) {
    const int q0 = tile * QT;
    if (i + 1 < count) {   // the next tile's Q and dO, while this one computes
      const int nextTile = s.tile(i + 1);
      load_tile<DQK, SQK, BWD_WARPS * 32>(sQ + (stage ^ 1) * QT * SQK, qBase + (size_t)nextTile * QT * ldqk, ldqk, QT, n - nextTile * QT);
      load_tile<DV, SV, BWD_WARPS * 32>(sO + (stage ^ 1) * QT * SV, oBase + (size_t)nextTile * QT * ldv, ldv, QT, n - nextTile * QT);
    }
    cp_async_commit();
    backward_tile_queries(s, B, q0, m, lse, delta, heads, time);
    cp_async_wait<1>();
    __syncthreads();
    const bf16_t* cQ = sQ + stage * QT * SQK;
    const bf16_t* cO = sO + stage * QT * SV;

    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for this warp's 16 keys and the tile's 64 queries.
    float st[QT / 8][4], dpt[QT / 8][4];
    warp_keys_times_queries<DQK, SQK>(st, sK, cQ, warp, lane);
    warp_keys_times_queries<DV, SV>(dpt, sV, cO, warp, lane);

    u32 pf[QT / 16][4], df[QT / 16][4];
    DiagonalSlots slots;
    backward_scores(st, dpt, pf, df, slots, s, B, q0, s.full(i), pos,
                    scoreScale, time, kt0, kt1, [&](int row, int unit) { return sDS + row * SDS + unit * 8; });
    if (POS_BIAS) sum_warp_diagonals(slots, s.diag);

    // dV += Pᵀ dO and dK += dSᵀ Q.
    #pragma unroll
    for (int kk = 0; kk < QT / 16; ++kk) {
      #pragma unroll
      for (int dp = 0; dp < DV / 16; ++dp) {
        u32 r0, r1, r2, r3;
        ldmatrix_x4_trans(r0, r1, r2, r3, cO + (kk * 16 + (lane & 7) + (mi & 1) * 8) * SV + dp * 16 + (mi >> 1) * 8);
        mma_bf16_16816(accV[2 * dp], pf[kk], r0, r1);
        mma_bf16_16816(accV[2 * dp + 1], pf[kk], r2, r3);
      }
      #pragma unroll
      for (int dp = 0; dp < DQK / 16; ++dp) {
        u32 r0, r1, r2, r3;
        ldmatrix_x4_trans(r0, r1, r2, r3, cQ + (kk * 16 + (lane & 7) + (mi & 1) * 8) * SQK + dp * 16 + (mi >> 1) * 8);
        mma_bf16_16816(accK[2 * dp], df[kk], r0, r1);
        mma_bf16_16816(accK[2 * dp + 1], df[kk], r2, r3);
      }
    }
    __syncthreads();

    // dQ[q0 + warp*16 .. +16, :] += dS K over this block's 64 keys, in two halves of columns.
    #pragma unroll
    for (int half = 0; half < 2; ++half) {
      float acc[DQK / 16][4];
      #pragma unroll
      for (int x = 0; x < DQK / 16; ++x) acc[x][0] = acc[x][1] = acc[x][2] = acc[x][3] = 0.f;
      #pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        u32 af[4];
        ldmatrix_x4_trans(af[0], af[1], af[2], af[3], sDS + (kk * 16 + (lane & 7) + (mi >> 1) * 8) * SDS + warp * 16 + (mi & 1) * 8);
        #pragma unroll
        for (int dp = 0; dp < DQK / 32; ++dp) {
          u32 r0, r1, r2, r3;
          const int col = half * (DQK / 2) + dp * 16;
          ldmatrix_x4_trans(r0, r1, r2, r3, sK + (kk * 16 + (lane & 7) + (mi & 1) * 8) * SQK + col + (mi >> 1) * 8);
          mma_bf16_16816(acc[2 * dp], af, r0, r1);
          mma_bf16_16816(acc[2 * dp + 1], af, r2, r3);
        }
      }
      add_query_gradient(acc, dq + (size_t)start * ldqk + h * DQK + half * (DQK / 2), q0 + warp * 16 + g, n, ldqk, tq);
    }
    if (POS_BIAS) posGradient.add_tile(s, B, q0, dpos, posLength);
    __syncthreads();
    tile = s.tile(i + 1);   // read again here: fewer registers live through the step
  }
  cp_async_wait<0>();
  if (POS_BIAS) posGradient.flush(dpos, posLength);
  store_key_gradients(accK, accV, B, s, {dk, dv, pre, dpre, preStride, preV, preK}, dtime, heads, timeBuckets);
}

/// Softmax backward pre-pass: Δ[token, h] = Σ_c dO[token, h, c] · out[token, h, c], one warp per
/// token and head.
extern "C" __global__ void softmax_attention_delta(const float* __restrict__ out, const bf16_t* __restrict__ dout,
    float* __restrict__ delta, int rows, int heads) {
  grid_dependency_wait();
  const int item = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (item >= rows * heads) return;
  const size_t base = (size_t)item * DV;   // [T, H, DV] row-major: (token, head) items are consecutive
  float sum = 0.f;
  for (int c = lane; c < DV; c += 32) sum += out[base + c] * bf16_to_float(dout[base + c]);
  sum = warp_sum(sum);
  if (lane == 0) delta[item] = sum;
}

"""# + AttentionWGMMAKernels.source
}
