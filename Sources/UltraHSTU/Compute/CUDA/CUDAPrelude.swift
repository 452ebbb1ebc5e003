/// CUDA C shared by every kernel family: bf16 conversions, the wait for the previous kernel
/// (programmatic dependent launch), tensor-core fragments (ldmatrix, mma.sync), asynchronous copies
/// and the counter-based random generator with the dropout built on it. Written against no header
/// at all, so NVRTC needs nothing from the toolkit's include folder.
enum CUDAPrelude {
  static let source = #"""
typedef unsigned short bf16_t;
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ float bf16_to_float(bf16_t x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ bf16_t float_to_bf16(float x) {
  bf16_t r; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x)); return r;
}
/// Two floats as one bf16x2 register, `lo` in the low half (the lower column of an mma fragment).
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
  u32 r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
/// tanh(x) in one MUFU op (tanh.approx, rel. err ~2^-11): the attention kernels' σ(x) = (1 + tanh(x/2)) / 2.
__device__ __forceinline__ float tanh_approx(float x) { float t; asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(x)); return t; }
/// The accurate sigmoid (ex2.approx and rcp.approx, a few ulp) for fp32 ops checked to 1e-5 against
/// the CPU; __fdividef skips the IEEE division's refinement and slow path (1/inf is still 0).
__device__ __forceinline__ float sigmoidf_exact(float x) { return __fdividef(1.0f, 1.0f + __expf(-x)); }
/// SiLU and its derivative σ(x)(1 + x(1 − σ(x))) with the exact sigmoid.
__device__ __forceinline__ float silu_exact(float x) { return x * sigmoidf_exact(x); }
__device__ __forceinline__ float silu_grad(float x) { const float s = sigmoidf_exact(x); return s * (1.f + x * (1.f - s)); }

/// N consecutive floats at p (N = 1, 2, 4 or 8; p aligned to 4·min(N, 4) bytes) to and from
/// registers, in one access (two for N = 8).
template <int N> __device__ __forceinline__ void load_vec(const float* p, float (&o)[N]) {
  if constexpr (N % 4 == 0) {
    #pragma unroll
    for (int q = 0; q < N / 4; ++q) {
      const float4 t = ((const float4*)p)[q]; o[4 * q] = t.x; o[4 * q + 1] = t.y; o[4 * q + 2] = t.z; o[4 * q + 3] = t.w;
    }
  } else if constexpr (N == 2) {
    const float2 t = *(const float2*)p; o[0] = t.x; o[1] = t.y;
  } else {
    o[0] = *p;
  }
}
/// N consecutive bf16 at p as floats (N = 1, 4 or 8; p aligned to 2·N bytes), in one access.
template <int N> __device__ __forceinline__ void load_bf16_vec(const bf16_t* p, float (&o)[N]) {
  if constexpr (N == 8) {
    const uint4 t = *(const uint4*)p;
    const u32 w[4] = {t.x, t.y, t.z, t.w};
    #pragma unroll
    for (int i = 0; i < 4; ++i) { o[2 * i] = __uint_as_float(w[i] << 16); o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
  } else if constexpr (N == 4) {
    const uint2 t = *(const uint2*)p;
    o[0] = __uint_as_float(t.x << 16); o[1] = __uint_as_float(t.x & 0xffff0000u);
    o[2] = __uint_as_float(t.y << 16); o[3] = __uint_as_float(t.y & 0xffff0000u);
  } else {
    o[0] = bf16_to_float(*p);
  }
}
/// V values of an fp32 or a bf16 row as floats (`load_vec` or `load_bf16_vec`).
template <int V> __device__ __forceinline__ void load_floats(const float* p, float (&o)[V]) { load_vec(p, o); }
template <int V> __device__ __forceinline__ void load_floats(const bf16_t* p, float (&o)[V]) { load_bf16_vec(p, o); }
template <int N> __device__ __forceinline__ void store_vec(float* p, const float (&o)[N]) {
  if constexpr (N % 4 == 0) {
    #pragma unroll
    for (int q = 0; q < N / 4; ++q) ((float4*)p)[q] = make_float4(o[4 * q], o[4 * q + 1], o[4 * q + 2], o[4 * q + 3]);
  } else if constexpr (N == 2) *(float2*)p = make_float2(o[0], o[1]);
  else *p = o[0];
}

/// Waits until the previous kernel on the stream has completed and its memory is visible. Every
/// kernel calls it first: with programmatic dependent launch (CUDADevice.launch on sm_90+) a
/// kernel may start while its predecessor still runs. Without that launch attribute it returns at once.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }

/// 16 bytes global -> shared without a register round trip; `valid == false` writes zeros.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(smem_u32(smem)), "l"(gmem), "r"(valid ? 16 : 0));
}
/// 4 bytes global -> shared by cp.async (through L1), in the current cp.async group.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" :: "r"(smem_u32(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

/// Four 8x8 b16 matrices from shared memory (lane l gives the address of row l%8 of matrix l/8).
__device__ __forceinline__ void ldmatrix_x4(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}
/// c[16x8] += a[16x16] * b[16x8], bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float* c, const u32* a, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// The package's counter-based generator (Support/Random.swift): SplitMix64's finaliser.
__device__ __forceinline__ u64 mix64(u64 z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
/// Dropout with the package's counter-based mask (CPUOps.dropoutForward): element `index` is kept
/// when CounterRandom.unit(stream, index) ≥ rate, that is when the top 24 bits of its draw reach
/// ⌈rate·2²⁴⌉ (an exact integer test), and then scaled by 1/(1 − rate). The per-(seed, stream) key
/// is mixed once, so an element costs one mix64.
struct Dropout {
  u64 key;
  u32 threshold;
  float scale;
  bool active;
  __device__ __forceinline__ Dropout(float rate, u64 seed, u64 stream)
      : key(mix64(seed ^ mix64(stream))), threshold((u32)ceilf(rate * 16777216.0f)), scale(1.0f / (1.0f - rate)),
        active(rate > 0.f) {}
  __device__ __forceinline__ float operator()(float value, u64 index) const {
    return !active ? value : (u32)(mix64(key + index) >> 40) >= threshold ? value * scale : 0.f;
  }
};

/// Sum over the warp (float or int); every lane gets it.
template <typename T> __device__ __forceinline__ T warp_sum(T x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
/// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024); all threads get it.
template <typename T> __device__ __forceinline__ T block_sum(T x, T* scratch32) {
  x = warp_sum(x);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch32[warp] = x;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += scratch32[w];
  return total;
}

"""#
}
