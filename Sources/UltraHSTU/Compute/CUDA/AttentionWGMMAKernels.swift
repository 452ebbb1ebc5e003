/// The attention kernels on Hopper's warpgroup tensor-core instructions (wgmma, sm_90a), appended
/// to `AttentionKernels.source` and compiled where they apply: head dims that are multiples of 64
/// (`AttentionKernel` picks them). `hstu_attention_backward_wgmma` (SiLU and softmax scores) is
/// described at the kernel. The forward (SiLU scores; the launcher takes it from 128 tokens on) has
/// the arguments, masks, biases, key-tile walk and split keys of `hstu_attention_forward`, whose
/// mma.sync loop it replaces:
///
/// - a CTA is `WG_COUNT` warpgroups, each owning 64 query rows: two (128 rows, one CTA per SM,
///   four ring slots) or one (64 rows, three slots, small enough for two CTAs per SM, so one CTA's
///   first loads and last stores overlap the other's tiles); Q passes through shared memory once
///   into registers (with one warpgroup, through the last ring slot, free until the loop fills
///   it), and K/V tiles of 64 keys stream through a ring of `WG_STAGES` shared buffers, loaded by
///   the tensor memory accelerator (TMA, issued by thread 0) and tracked by mbarriers:
///   `landed[slot]` completes when a tile's bytes arrive, `freed[slot]` when every warp is done
///   with it, so the warpgroups never meet at a CTA-wide barrier in the loop;
/// - tiles are stored in the 128-byte swizzled layout wgmma reads (64-column chunks, 16-byte units
///   XOR-ed with the row); S = Q Kᵀ takes Q from registers (loaded once) and K straight from shared
///   memory (K-major), and O += P V takes P from registers (the S accumulators turned into bf16 A
///   fragments by `silu_scores`) and V as an N-major operand;
/// - S of the next tile is issued before the SiLU of the current one, so the tensor cores work
///   while the SFU/ALU evaluate SiLU (two S register sets alternate).
enum AttentionWGMMAKernels {
  /// `wgmma_rs<N, T>`: D[64×N] (+)= A[64×16] B[16×N], fp32 D, bf16 A from registers (the mma.sync
  /// A-fragment layout, 16 rows per warp) and B from shared memory, K-major (T = 0) or N-major
  /// (T = 1); `accumulate` = 0 overwrites D.
  static func instructions(n: Int) -> String {
    let count = n / 2
    let d = (0..<count).map { "%\($0)" }.joined(separator: ", ")
    let outputs = (0..<count).map { "\"+f\"(d[\($0 / 4)][\($0 % 4)])" }.joined(separator: ", ")
    return (0...1).map { transposeB in
      #"""
template <> __device__ __forceinline__ void wgmma_rs<\#(n), \#(transposeB)>(float (&d)[\#(n / 8)][4], const u32 (&a)[4], u64 b, int accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %\#(count + 5), 0;\n"
               "wgmma.mma_async.sync.aligned.m64n\#(n)k16.f32.bf16.bf16 {\#(d)}, {%\#(count), %\#(count + 1), %\#(count + 2), %\#(count + 3)}, %\#(count + 4), p, 1, 1, \#(transposeB);\n}\n"
               : \#(outputs) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

"""#
    }.joined()
  }

  /// `wgmma_ss<N, TA, TB>`: D[64×N] (+)= A[64×16] B[16×N] with both operands in shared memory;
  /// A K-major (TA = 0) or M-major (TA = 1), B K-major (TB = 0) or N-major (TB = 1).
  static func sharedInstructions(n: Int, transposes: [(Int, Int)]) -> String {
    let count = n / 2
    let d = (0..<count).map { "%\($0)" }.joined(separator: ", ")
    let outputs = (0..<count).map { "\"+f\"(d[\($0 / 4)][\($0 % 4)])" }.joined(separator: ", ")
    return transposes.map { (transposeA, transposeB) in
      #"""
template <> __device__ __forceinline__ void wgmma_ss<\#(n), \#(transposeA), \#(transposeB)>(float (&d)[\#(n / 8)][4], u64 a, u64 b, int accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %\#(count + 2), 0;\n"
               "wgmma.mma_async.sync.aligned.m64n\#(n)k16.f32.bf16.bf16 {\#(d)}, %\#(count), %\#(count + 1), p, 1, 1, \#(transposeA), \#(transposeB);\n}\n"
               : \#(outputs) : "l"(a), "l"(b), "r"(accumulate));
}

"""#
    }.joined()
  }

  static let source = #"""
#if DQK % 64 == 0 && DV % 64 == 0 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ROWS 64                     // query rows per warpgroup (the wgmma M)
#ifndef WG_COUNT
#define WG_COUNT 2                     // warpgroups per forward CTA: 2, or 1 for two CTAs per SM
#endif
static_assert(WG_COUNT == 1 || WG_COUNT == 2, "the wgmma forward has one or two warpgroups");
#define WBM (WG_ROWS * WG_COUNT)       // query rows per CTA
#define WG_STAGES (WG_COUNT == 1 ? 3 : 4)   // K/V tiles in the shared ring
#define WG_Q_IN_RING (WG_COUNT == 1)   // Q staged in the last slot's K half (WBM = BN rows fit it)
// Tile u + WG_STAGES − 1 is fetched in step u, after the S of tile u + 1 was issued from its own slot.
static_assert(WG_STAGES >= 3, "the wgmma forward's K/V ring needs at least 3 slots");

template <int N, int TRANSPOSE_B> __device__ __forceinline__ void wgmma_rs(float (&d)[N / 8][4], const u32 (&a)[4], u64 b, int accumulate);
template <int N, int TRANSPOSE_A, int TRANSPOSE_B> __device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], u64 a, u64 b, int accumulate);

"""# + instructions(n: 64) + instructions(n: 128) + sharedInstructions(n: 64, transposes: [(0, 0), (1, 1)]) + #"""
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory"); }
/// Orders this thread's earlier generic-proxy shared-memory writes (st.shared, cp.async) before
/// later async-proxy reads of them (wgmma operands); a barrier then publishes them to the warpgroup.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/// Pins registers an in-flight wgmma reads or writes: the compiler may neither move nor reuse them
/// across this point (it cannot see the asynchronous access).
template <int R> __device__ __forceinline__ void pin(float (&x)[R][4]) {
  #pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(x[i][0]), "+f"(x[i][1]), "+f"(x[i][2]), "+f"(x[i][3]) :: "memory");
}
template <int R> __device__ __forceinline__ void pin(u32 (&x)[R][4]) {
  #pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+r"(x[i][0]), "+r"(x[i][1]), "+r"(x[i][2]), "+r"(x[i][3]) :: "memory");
}

/// The descriptor of a 128-byte-swizzled operand at shared address `addr` (its 8-row × 128-byte
/// atoms 1024-byte aligned): `lbo` is the byte step between 64-column chunks along N of an
/// N-major operand (unused for K-major), `sbo` the step between 8-row groups.
__device__ __forceinline__ u64 sw128_desc(u32 addr, u32 lbo, u32 sbo) {
  return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(lbo >> 4) << 16) | ((u64)(sbo >> 4) << 32) | (1ull << 62);
}

/// Loads ROWS × D bf16 (row stride ld in global) into the swizzled layout: D/64 chunks of
/// ROWS × 128 bytes, 16-byte unit c of row r at unit c ^ (r % 8), by cp.async from THREADS
/// threads. Rows at or past `valid` read as zeros. ROWS is compile-time, so each thread's units
/// (and their shared offsets) are fixed and the loop unrolls.
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile_sw128(bf16_t* smem, const bf16_t* g, size_t ld, int valid) {
  constexpr int UNITS = D / 8;
  static_assert(ROWS * UNITS % THREADS == 0, "every thread copies the same number of units");
  #pragma unroll
  for (int i = 0; i < ROWS * UNITS / THREADS; ++i) {
    const int x = threadIdx.x + i * THREADS, r = x / UNITS, c = x % UNITS;
    const bool ok = r < valid;
    bf16_t* dst = smem + (c >> 3) * ROWS * 64 + r * 64 + (((c & 7) ^ (r & 7)) << 3);
    cp_async_16(dst, ok ? (const void*)(g + (size_t)r * ld + c * 8) : (const void*)g, ok);
  }
}

/// A CUtensorMap (cuTensorMapEncodeTiled), passed by value as a __grid_constant__ parameter.
struct __align__(64) TensorMap { unsigned long long bits[16]; };

/// mbarrier operations on a 64-bit barrier in shared memory.
__device__ __forceinline__ void mbar_init(u64* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(smem_u32(bar)), "r"(count) : "memory");
}
/// Arrives and announces `bytes` of asynchronous copies that complete on this barrier.
__device__ __forceinline__ void mbar_expect_bytes(u64* bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(smem_u32(bar)) : "memory");
}
/// Waits until the barrier's phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(u64* bar, int parity) {
  asm volatile("{\n.reg .pred done;\nWAIT:\n"
               "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               "@!done bra WAIT;\n}\n" :: "r"(smem_u32(bar)), "r"(parity) : "memory");
}
/// One box of a 2-D tensor map (column `col`, row `row` of its top-left element) into shared
/// memory, completing on `bar`. Rows past the tensor's end arrive as zeros.
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int col, int row, u64* bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
               :: "r"(smem_u32(dst)), "l"((u64)map), "r"(col), "r"(row), "r"(smem_u32(bar)) : "memory");
}

/// Columns col0 … col0 + D − 1 of rows row … row + ROWS − 1 (the map's box) into D/64 swizzled
/// chunks of ROWS × 64 at dst, all completing on bar.
template <int D, int ROWS>
__device__ __forceinline__ void tma_load_tile(bf16_t* dst, const TensorMap* map, int col0, int row, u64* bar) {
  #pragma unroll
  for (int c = 0; c < D / 64; ++c) tma_load_2d(dst + c * ROWS * 64, map, col0 + c * 64, row, bar);
}

/// dst box (column `col`, row `row` of a 2-D fp32 tensor map) += the box at shared `src`, by TMA
/// in the tensor map's swizzled layout (an element-wise atomic add in L2); joins the bulk group
/// that `bulk_commit` closes. Rows past the tensor's end are dropped.
__device__ __forceinline__ void tma_reduce_add_2d(const TensorMap* map, int col, int row, const void* src) {
  asm volatile("cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2}], [%3];\n"
               :: "l"((u64)map), "r"(col), "r"(row), "r"(smem_u32(src)) : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
/// Waits until this thread's bulk groups have read their shared sources (READ) or completed.
template <bool READ> __device__ __forceinline__ void bulk_wait() {
  if (READ) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  else asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

/// A compile-time flag passed to a generic lambda.
template <bool B> struct WGFlag { static constexpr bool value = B; };

#if !SOFTMAX

extern "C" __global__ void __launch_bounds__(WG_COUNT * 128, 3 - WG_COUNT)
hstu_attention_forward_wgmma(ATTENTION_FORWARD_PARAMS, const __grid_constant__ TensorMap keyMap,
    const __grid_constant__ TensorMap valueMap) {
  grid_dependency_wait();
  extern __shared__ __align__(16) unsigned char shared[];
  bf16_t* base = (bf16_t*)(shared + ((1024 - (smem_u32(shared) & 1023)) & 1023));   // swizzle atoms: 1024-byte aligned
  bf16_t* sK = base + (WG_Q_IN_RING ? 0 : WBM * DQK);   // [WG_STAGES][DQK/64][BN][64]
  bf16_t* sV = sK + WG_STAGES * BN * DQK;               // [WG_STAGES][DV/64][BN][64]
  bf16_t* sQ = WG_Q_IN_RING ? sK + (WG_STAGES - 1) * BN * DQK : base;   // [DQK/64][WBM][64]
  u64* landed = (u64*)(sV + WG_STAGES * BN * DV);   // [WG_STAGES] the slot's tile has arrived (TMA bytes)
  u64* freed = landed + WG_STAGES;                  // [WG_STAGES] every warp is done with the slot's tile
  const MaskArgs m = {window, tail, prefix, contextual};
  const TimeBiasArgs time = {keyTimes, queryTimes, timeTable, timeThresholds, timeBuckets};

  ForwardBlock f;
  if (!forward_block(f, offsets, targets, bounds, tilesPerSequence, invNConst, splitTiles, queryTiles, splitQueryTiles, WBM, blockGroup)) return;
  const int h = f.h, start = f.start, n = f.n, t = f.t, q0 = f.q0, e1 = f.e1, s2 = f.s2, itBegin = f.itBegin;
  const int* bb = f.bb;
  const bool atomicOut = f.atomicOut;
  const float invN = f.invN;   // P leaves out 1/N (`silu_scores`): O is scaled when stored
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int count = f.itEnd - itBegin;

  const QueryRows r = query_rows(q0 + wg * WG_ROWS + warp * 16 + g, n, t, m, TIME_BIAS ? time.queryTimes + start : nullptr);
  float o[DV / 8][4];
  #pragma unroll
  for (int x = 0; x < DV / 8; ++x) o[x][0] = o[x][1] = o[x][2] = o[x][3] = 0.f;
  if (count <= 0) {   // rows that see no key (an empty split never gets here)
    store_output<DV / 8>(o, out, outBF16, (size_t)start * heads * DV + h * DV, (size_t)heads * DV, r, n, tq, atomicOut, invN);
    return;
  }
  const long long* keyTime = TIME_BIAS ? time.keyTimes + start : nullptr;
  const size_t ldqk = (size_t)heads * DQK, ldv = (size_t)heads * DV;
  auto key0 = [&](int u) { const int it = itBegin + u; return (it < e1 ? it : s2 + (it - e1)) * BN; };
  // Tile u into ring slot u % WG_STAGES by TMA (thread 0 only): K and V boxes of 64 columns × BN
  // keys, already in the swizzled layout, all completing on landed[slot].
  auto produce = [&](int u) {
    const int slot = u % WG_STAGES, row = start + key0(u);
    mbar_expect_bytes(&landed[slot], BN * (DQK + DV) * 2);
    tma_load_tile<DQK, BN>(sK + slot * BN * DQK, &keyMap, h * DQK, row, &landed[slot]);
    tma_load_tile<DV, BN>(sV + slot * BN * DV, &valueMap, h * DV, row, &landed[slot]);
  };
  if (threadIdx.x == 0) {
    for (int x = 0; x < WG_STAGES; ++x) { mbar_init(&landed[x], 1); mbar_init(&freed[x], WG_COUNT * 4); }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x == 0) for (int u = 0; u < min(count, WG_STAGES - 1); ++u) produce(u);
  load_tile_sw128<DQK, WBM, WG_COUNT * 128>(sQ, q + (size_t)(start + q0) * ldqk + h * DQK, ldqk, n - q0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // This warp's 16 rows of Q as A fragments (ldmatrix through the swizzle): S reads only K from
  // shared memory, which halves its shared-memory traffic.
  u32 qf[DQK / 16][4];
  #pragma unroll
  for (int kk = 0; kk < DQK / 16; ++kk) {
    const int row = wg * WG_ROWS + warp * 16 + (lane & 15), unit = (kk & 3) * 2 + (lane >> 4);
    ldmatrix_x4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], sQ + (kk >> 2) * WBM * 64 + row * 64 + ((unit ^ (row & 7)) << 3));
  }
  if (WG_Q_IN_RING) {   // every warp holds Q: its slot may take tile WG_STAGES − 1 (a TMA write) in step 0
    fence_proxy_async();
    __syncthreads();
  }
  // S = Q Kᵀ of tile u (DQK/16 k-steps of 16 columns: chunk kk/4, 32 bytes per step inside it).
  auto issue_scores = [&](float (&s)[BN / 8][4], int u) {
    mbar_wait(&landed[u % WG_STAGES], (u / WG_STAGES) & 1);   // tile u has arrived
    const u32 kAddr = smem_u32(sK + (u % WG_STAGES) * BN * DQK);
    wgmma_fence();
    #pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk)
      wgmma_rs<BN, 0>(s, qf[kk], sw128_desc(kAddr + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
    wgmma_commit();
  };

  float sa[BN / 8][4], sb[BN / 8][4];
  u32 pf[BN / 16][4];
  #pragma unroll
  for (int x = 0; x < BN / 16; ++x) pf[x][0] = pf[x][1] = pf[x][2] = pf[x][3] = 0u;
  #pragma unroll
  for (int x = 0; x < BN / 8; ++x) sa[x][0] = sa[x][1] = sa[x][2] = sa[x][3] = sb[x][0] = sb[x][1] = sb[x][2] = sb[x][3] = 0.f;

  // Step u: with `more`, S(u + 1) goes to the tensor cores first; then SiLU of S(u) (in `cur`)
  // and O += P V(u). Callers pass `more` as a constant, so every wait is unconditional and ptxas
  // can see which wgmma group each one retires (a conditional wait serialises every wgmma).
  auto step = [&](float (&cur)[BN / 8][4], float (&next)[BN / 8][4], int u, auto more) {
    if constexpr (decltype(more)::value) {
      issue_scores(next, u + 1);
      wgmma_wait<1>();   // S(u) and P V(u − 1) are done
    } else {
      wgmma_wait<0>();
    }
    pin(pf);
    // This warp is done with tile u − 1; thread 0 refills its slot with tile u + WG_STAGES − 1
    // once every warp of both warpgroups is.
    if (u > 0 && lane == 0) mbar_arrive(&freed[(u - 1) % WG_STAGES]);
    if (threadIdx.x == 0 && u + WG_STAGES - 1 < count) {
      if (u > 0) mbar_wait(&freed[(u - 1) % WG_STAGES], ((u - 1) / WG_STAGES) & 1);
      produce(u + WG_STAGES - 1);
    }
    const int k0 = key0(u);
    const bool full = (k0 + BN <= bb[3]) || (k0 >= bb[4] && k0 + BN <= bb[5]);
    silu_scores<BN / 8>(cur, pf, r, k0, tq, full, pos, time, keyTime);
    const u32 vAddr = smem_u32(sV + (u % WG_STAGES) * BN * DV);
    wgmma_fence();
    #pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs<DV, 1>(o, pf[kk], sw128_desc(vAddr + kk * 16 * 128, BN * 128, 1024), 1);
    wgmma_commit();
  };

  issue_scores(sa, 0);
  int u = 0;
  for (; u + 2 < count; u += 2) {
    step(sa, sb, u, WGFlag<true>{});
    step(sb, sa, u + 1, WGFlag<true>{});
  }
  // The last one or two steps; each branch drains the tensor cores before the paths join.
  if (count - u == 2) {
    step(sa, sb, u, WGFlag<true>{});
    step(sb, sa, u + 1, WGFlag<false>{});
    wgmma_wait<0>();
  } else {
    step(sa, sb, u, WGFlag<false>{});
    wgmma_wait<0>();
  }
  pin(o);

  store_output<DV / 8>(o, out, outBF16, (size_t)start * ldv + h * DV, ldv, r, n, tq, atomicOut, invN);
}
#endif

/// A thread's dQ accumulators of columns 64·chunk … 64·chunk + 63 (rows `row` and row + 8, the
/// wgmma accumulator layout) into the fp32 staging tile: DQK/32 boxes of QT rows × 32 columns
/// (128 bytes), 16-byte unit u of row r at u ^ (r % 8), the layout the dQ tensor map reduces from.
/// The eight rows g of a store land on eight distinct units: no bank conflicts.
__device__ __forceinline__ void stage_query_gradient(const float (&acc)[8][4], float* sDQ, int chunk, int row, int tq) {
  #pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const int c = chunk * 64 + nt * 8 + 2 * tq, unit = ((c & 31) >> 2) ^ (row & 7);   // (row + 8) % 8 = row % 8
    float* box = sDQ + (c >> 5) * QT * 32 + (unit << 2) + (c & 3);
    *(float2*)(box + row * 32) = make_float2(acc[nt][0], acc[nt][1]);
    *(float2*)(box + (row + 8) * 32) = make_float2(acc[nt][2], acc[nt][3]);
  }
}

/// The attention backward on wgmma: the walk, masks, biases and outputs of
/// `hstu_attention_backward`, whose mma.sync products it replaces. A CTA is one warpgroup and
/// owns BN = 64 keys (warp w rows 16w … 16w + 15, the layout of the mma.sync kernel, so both share
/// `backward_scores`). K, V and double-buffered Q, dO tiles sit in shared memory in the 128-byte
/// swizzled layout, loaded by TMA (thread 0 issues them; `kvLanded` and `qLanded[stage]` complete
/// when their bytes arrive), so the warps spend no instructions on loads; per query tile:
///   Sᵀ = K Qᵀ, dPᵀ = V dOᵀ      (wgmma, A and B from shared memory, both K-major);
///   Pᵀ, dSᵀ element-wise         (`backward_scores`; dSᵀ also into shared memory, swizzled);
///   dV += Pᵀ dO, dK += dSᵀ Q     (A from registers, B = dO, Q N-major);
///   dQ = dS K                     (A = dSᵀ from shared memory M-major, B = K N-major, 64 columns
///                                  at a time), staged in fp32 over the tile's Q and dO, which dV
///                                  and dK no longer need, and added into dq by one TMA reduction
///                                  that thread 0 issues: no atomics from the warps.
/// The next tile's Q and dO go to the other stage once its S and dP are issued, after that
/// stage's dQ reduction has read its shared memory. The scores read rab^p from the padded pairs
/// of the table (`hstu_position_bias_padded`), like the forward; its gradient's shuffles
/// (`sum_warp_diagonals`) run while dV and dK are on the tensor cores, the block's sums
/// (`PositionGradient`) while dQ's first chunk is.
/// Query rows past the sequence arrive as the next sequence's rows (zeros past the batch): their
/// intervals are empty and their tile is never full, so their P and dS, and so their dQ rows, are
/// zero: they add nothing.
extern "C" __global__ void __launch_bounds__(BWD_WARPS * 32, BWD_MIN_BLOCKS)
hstu_attention_backward_wgmma(ATTENTION_BACKWARD_PARAMS, const __grid_constant__ TensorMap queryMap,
    const __grid_constant__ TensorMap keyMap, const __grid_constant__ TensorMap valueMap, const __grid_constant__ TensorMap gradMap,
    const __grid_constant__ TensorMap dqMap) {
  static_assert(BWD_WARPS == 4 && BN == 64 && QT == 64, "one warpgroup of 64 keys, 64-query tiles");
  // bf16 elements per stage: Q [DQK/64][QT][64] then dO [DV/64][QT][64]; later dQ, fp32 [DQK/32][QT][32].
  constexpr int STAGE = QT * (DQK + DV) > 2 * QT * DQK ? QT * (DQK + DV) : 2 * QT * DQK;
  grid_dependency_wait();
  extern __shared__ __align__(16) unsigned char shared[];
  bf16_t* sK = (bf16_t*)(shared + ((1024 - (smem_u32(shared) & 1023)) & 1023));   // [DQK/64][BN][64], swizzle atoms 1024-byte aligned
  bf16_t* sV = sK + BN * DQK;                // [DV/64][BN][64]
  bf16_t* sStage = sV + BN * DV;             // [2][STAGE]
  bf16_t* sDS = sStage + 2 * STAGE;          // [BN][QT]            dSᵀ (one 64-column chunk)
  u64* kvLanded = (u64*)(sDS + BN * QT);     // K and V have arrived
  u64* qLanded = kvLanded + 1;               // [2] the stage's Q and dO tiles have arrived
  const BackwardScratch s(qLanded + 2, tilesPerSequence);
  const TimeBiasArgs time = {keyTimes, queryTimes, timeTable, timeThresholds, timeBuckets};
  const MaskArgs m = {window, tail, prefix, contextual};

  BackwardBlock B;
  if (!backward_block(B, offsets, targets, bounds, tilesPerSequence, invNConst, blockGroup)) return;
  const int start = B.start, k0 = B.k0, h = B.h;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;

  if (threadIdx.x == 0) {
    mbar_init(kvLanded, 1); mbar_init(&qLanded[0], 1); mbar_init(&qLanded[1], 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    mbar_expect_bytes(kvLanded, BN * (DQK + DV) * 2);
    tma_load_tile<DQK, BN>(sK, &keyMap, h * DQK, start + k0, kvLanded);
    tma_load_tile<DV, BN>(sV, &valueMap, h * DV, start + k0, kvLanded);
  }
  // Query tile `tile` into stage `stage` (thread 0 only), once the stage's last dQ reduction has read it.
  auto produce = [&](int tile, int stage) {
    bf16_t* sQ = sStage + stage * STAGE;
    bulk_wait<true>();
    mbar_expect_bytes(&qLanded[stage], QT * (DQK + DV) * 2);
    tma_load_tile<DQK, QT>(sQ, &queryMap, h * DQK, start + tile * QT, &qLanded[stage]);
    tma_load_tile<DV, QT>(sQ + QT * DQK, &gradMap, h * DV, start + tile * QT, &qLanded[stage]);
  };
  // The first query tile's Q and dO in flight while warp 0 lists the tiles.
  const int first = first_backward_tile(B);
  if (threadIdx.x == 0) produce(first, 0);
  backward_tile_list(s, B, m);
  __syncthreads();
  const int count = *s.tileCount;

  float accK[DQK / 8][4], accV[DV / 8][4];
  long long kt0, kt1;
  backward_begin(accK, accV, B, s, time, kt0, kt1);
  const u32 kAddr = smem_u32(sK), vAddr = smem_u32(sV), dsAddr = smem_u32(sDS);
  mbar_wait(kvLanded, 0);
  PositionGradient posGradient;

  for (int i = 0, stage = 0; i < count; ++i, stage ^= 1) {
    const int q0 = s.tile(i) * QT;
    backward_tile_queries(s, B, q0, m, lse, delta, heads, time);
    __syncthreads();
    mbar_wait(&qLanded[stage], (i >> 1) & 1);
    const u32 qAddr = smem_u32(sStage + stage * STAGE), oAddr = qAddr + QT * DQK * 2;

    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ: k-step kk reads chunk kk/4, 32 bytes into each 128-byte row.
    float st[QT / 8][4], dpt[QT / 8][4];
    wgmma_fence();
    #pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk)
      wgmma_ss<QT, 0, 0>(st, sw128_desc(kAddr + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024),
                         sw128_desc(qAddr + (kk >> 2) * QT * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
    #pragma unroll
    for (int kk = 0; kk < DV / 16; ++kk)
      wgmma_ss<QT, 0, 0>(dpt, sw128_desc(vAddr + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024),
                         sw128_desc(oAddr + (kk >> 2) * QT * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
    wgmma_commit();
    // The next tile's Q and dO, while this one computes.
    if (threadIdx.x == 0 && i + 1 < count) produce(s.tile(i + 1), stage ^ 1);
    wgmma_wait<0>();
    pin(st);
    pin(dpt);

    u32 pf[QT / 16][4], df[QT / 16][4];
    DiagonalSlots slots;
    backward_scores(st, dpt, pf, df, slots, s, B, q0, s.full(i), pos,
                    scoreScale, time, kt0, kt1, [&](int row, int unit) { return sDS + row * QT + ((unit ^ (row & 7)) << 3); });

    // dV += Pᵀ dO and dK += dSᵀ Q: k-step kk is 16 query rows; dO and Q are N-major (64-column chunks QT·128 bytes apart).
    wgmma_fence();
    #pragma unroll
    for (int kk = 0; kk < QT / 16; ++kk) wgmma_rs<DV, 1>(accV, pf[kk], sw128_desc(oAddr + kk * 16 * 128, QT * 128, 1024), 1);
    #pragma unroll
    for (int kk = 0; kk < QT / 16; ++kk) wgmma_rs<DQK, 1>(accK, df[kk], sw128_desc(qAddr + kk * 16 * 128, QT * 128, 1024), 1);
    wgmma_commit();
    if (POS_BIAS) sum_warp_diagonals(slots, s.diag);   // while dV and dK run
    fence_proxy_async();   // this thread's dSᵀ stores, visible to the tensor cores
    __syncthreads();       // every warp's dSᵀ rows

    // dQ[q0 .. q0 + 64, :] = dS K, 64 columns at a time: A = dSᵀ read transposed (M-major), k-step kk
    // is 16 key rows; B = K, N-major. The first wait also retires dV and dK, so Q and dO are free.
    // Chunk c + 1 goes to the tensor cores before chunk c is staged.
    float* sDQ = (float*)(sStage + stage * STAGE);
    float acc[2][8][4];
    auto issue_query_gradient = [&](float (&a)[8][4], int chunk) {
      wgmma_fence();
      #pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk)
        wgmma_ss<64, 1, 1>(a, sw128_desc(dsAddr + kk * 16 * 128, BN * 128, 1024),
                           sw128_desc(kAddr + chunk * BN * 128 + kk * 16 * 128, BN * 128, 1024), kk > 0);
      wgmma_commit();
    };
    issue_query_gradient(acc[0], 0);
    if (POS_BIAS) posGradient.add_tile(s, B, q0, dpos, posLength);   // while dQ runs
    #pragma unroll
    for (int chunk = 0; chunk < DQK / 64; ++chunk) {
      if (chunk + 1 < DQK / 64) {
        issue_query_gradient(acc[(chunk + 1) & 1], chunk + 1);
        wgmma_wait<1>();
      } else {
        wgmma_wait<0>();
      }
      pin(acc[chunk & 1]);
      stage_query_gradient(acc[chunk & 1], sDQ, chunk, warp * 16 + g, tq);
    }
    pin(pf);
    pin(df);
    pin(accK);
    pin(accV);
    fence_proxy_async();   // the dQ stores, visible to the TMA reduction
    __syncthreads();
    if (threadIdx.x == 0) {
      #pragma unroll
      for (int b = 0; b < DQK / 32; ++b) tma_reduce_add_2d(&dqMap, h * DQK + b * 32, start + q0, sDQ + b * QT * 32);
      bulk_commit();
    }
  }
  if (threadIdx.x == 0) bulk_wait<false>();
  if (POS_BIAS) posGradient.flush(dpos, posLength);
  store_key_gradients(accK, accV, B, s, {dk, dv, pre, dpre, preStride, preV, preK}, dtime, heads, timeBuckets);
}
#endif
"""#
}
