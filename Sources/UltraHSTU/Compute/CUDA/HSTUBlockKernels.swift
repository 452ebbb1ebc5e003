/// The glue between the GEMMs and the fused attention inside one HSTU block, forward and backward:
///
///   split:  pre[T, 2·H·dv + 2·H·dqk] = [u | v | q | k] (bf16, the GEMM's output; head-major inside each part)
///           v, q, k = bf16(SiLU(pre_·)) in the attention's padded layout [T, H, DP] (DP = head dim
///           rounded up to 16, pad columns zero, so q·k and P·v are unchanged)
///   merge:  dpre_{v,q,k} = [dv | dq | dk] ⊙ SiLU'(pre)   (the inverse layout change, through SiLU; bf16, the
///           operand of the two backward GEMMs of W_uvqk); with unpadded heads the attention backward
///           does the v and k parts in its epilogue (`AttentionKeyGradients.siluMerged`) and this the q part
/// The gate u = SiLU(pre_u) is not stored: the gated LayerNorm (`SiLUGate`) reads pre_u and writes
/// dpre_u itself.
/// (`HeadLayoutKernels` pads and unpads the attention's input and output when a head dim is not a
/// multiple of 16.)
/// When both head dims are multiples of 16 there is no padding: u, v, q, k are the four column
/// ranges of pre as they are, and split and merge run as element-wise maps over 8-column chunks
/// (16-byte loads and stores) instead of one block per token with a scalar column loop.
enum HSTUBlockKernels {
  static let source = CUDAPrelude.source + #"""
/// One block per token; threads stride the padded output columns [v (H·dvp) | q (H·dqkp) | k (H·dqkp)].
extern "C" __global__ void uvqk_split_silu(const bf16_t* __restrict__ pre, bf16_t* __restrict__ v,
    bf16_t* __restrict__ q, bf16_t* __restrict__ k, int heads, int dv, int dqk, int dvp, int dqkp) {
  grid_dependency_wait();
  const size_t t = blockIdx.x;
  const int hv = heads * dv, hq = heads * dqk, width = 2 * hv + 2 * hq;
  const int columns = heads * (dvp + 2 * dqkp);
  const bf16_t* row = pre + t * width;
  for (int c = threadIdx.x; c < columns; c += blockDim.x) {
    int x = c;
    if (x < heads * dvp) {
      const int h = x / dvp, j = x % dvp;
      v[t * heads * dvp + x] = float_to_bf16(j < dv ? silu_exact(bf16_to_float(row[hv + h * dv + j])) : 0.f);
      continue;
    }
    x -= heads * dvp;
    const bool isK = x >= heads * dqkp;
    if (isK) x -= heads * dqkp;
    const int h = x / dqkp, j = x % dqkp;
    const float value = j < dqk ? silu_exact(bf16_to_float(row[2 * hv + (isK ? hq : 0) + h * dqk + j])) : 0.f;
    (isK ? k : q)[t * heads * dqkp + x] = float_to_bf16(value);
  }
}

__device__ __forceinline__ void unpack8(uint4 w, float (&x)[8]) {
  const u32 p[4] = {w.x, w.y, w.z, w.w};
  #pragma unroll
  for (int i = 0; i < 4; ++i) { x[2 * i] = __uint_as_float(p[i] << 16); x[2 * i + 1] = __uint_as_float(p[i] & 0xffff0000u); }
}
__device__ __forceinline__ uint4 pack8(const float (&x)[8]) {
  return make_uint4(pack_bf16x2(x[0], x[1]), pack_bf16x2(x[2], x[3]), pack_bf16x2(x[4], x[5]), pack_bf16x2(x[6], x[7]));
}

/// The chunk of the unpadded split and merge that this thread owns (one thread per 8 columns of
/// pre's columns first..<first + columns in each token's row): token t and pre column c; false
/// past the last.
__device__ __forceinline__ bool uvqk_chunk(int tokens, int first, int columns, size_t& t, int& c) {
  const int chunks = columns / 8;
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)tokens * chunks) return false;
  t = i / chunks;
  c = first + (int)(i % chunks) * 8;
  return true;
}

/// Unpadded split (dv, dqk multiples of 16): one thread per 8-column chunk of pre's v | q | k (a
/// chunk never straddles two parts, whose widths hv and hq are multiples of 16).
extern "C" __global__ void uvqk_split_silu_dense(const bf16_t* __restrict__ pre, bf16_t* __restrict__ v,
    bf16_t* __restrict__ q, bf16_t* __restrict__ k, int tokens, int hv, int hq) {
  grid_dependency_wait();
  const int width = 2 * hv + 2 * hq;
  size_t t; int c;
  if (!uvqk_chunk(tokens, hv, hv + 2 * hq, t, c)) return;
  float x[8];
  unpack8(*(const uint4*)(pre + t * width + c), x);
  #pragma unroll
  for (int e = 0; e < 8; ++e) x[e] = silu_exact(x[e]);
  if (c < 2 * hv) {
    *(uint4*)(v + t * hv + (c - hv)) = pack8(x);
  } else if (c < 2 * hv + hq) {
    *(uint4*)(q + t * hq + (c - 2 * hv)) = pack8(x);
  } else {
    *(uint4*)(k + t * hq + (c - 2 * hv - hq)) = pack8(x);
  }
}

/// Unpadded merge: one thread per 8-column chunk of dpre's columns first..<first + columns (v | q | k,
/// or q alone when the attention backward merged dv and dk: `KeyGradientOutput`).
extern "C" __global__ void uvqk_merge_silu_backward_dense(const bf16_t* __restrict__ pre, const float* __restrict__ dv,
    const float* __restrict__ dq, const float* __restrict__ dk, bf16_t* __restrict__ dpre, int tokens, int hv, int hq,
    int first, int columns) {
  grid_dependency_wait();
  const int width = 2 * hv + 2 * hq;
  size_t t; int c;
  if (!uvqk_chunk(tokens, first, columns, t, c)) return;
  const float* g = c < 2 * hv ? dv + t * hv + (c - hv)
                 : c < 2 * hv + hq ? dq + t * hq + (c - 2 * hv) : dk + t * hq + (c - 2 * hv - hq);
  const float4 g0 = ((const float4*)g)[0], g1 = ((const float4*)g)[1];
  const float gs[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
  float x[8];
  unpack8(*(const uint4*)(pre + t * width + c), x);
  #pragma unroll
  for (int e = 0; e < 8; ++e) x[e] = gs[e] * silu_grad(x[e]);
  *(uint4*)(dpre + t * width + c) = pack8(x);
}

/// One block per token; threads stride the unpadded v | q | k columns of dpre.
extern "C" __global__ void uvqk_merge_silu_backward(const bf16_t* __restrict__ pre, const float* __restrict__ dv,
    const float* __restrict__ dq, const float* __restrict__ dk, bf16_t* __restrict__ dpre,
    int heads, int dvDim, int dqkDim, int dvp, int dqkp) {
  grid_dependency_wait();
  const size_t t = blockIdx.x;
  const int hv = heads * dvDim, hq = heads * dqkDim, width = 2 * hv + 2 * hq;
  for (int c = hv + threadIdx.x; c < width; c += blockDim.x) {
    float g;
    if (c < 2 * hv) { const int x = c - hv; g = dv[(t * heads + x / dvDim) * dvp + x % dvDim]; }
    else if (c < 2 * hv + hq) { const int x = c - 2 * hv; g = dq[(t * heads + x / dqkDim) * dqkp + x % dqkDim]; }
    else { const int x = c - 2 * hv - hq; g = dk[(t * heads + x / dqkDim) * dqkp + x % dqkDim]; }
    dpre[t * width + c] = float_to_bf16(g * silu_grad(bf16_to_float(pre[t * width + c])));
  }
}
"""#
}

extension CUDADevice {
  private func blockKernel(_ name: String) throws -> CUDAFunction {
    try module("hstu_block", source: HSTUBlockKernels.source).function(name)
  }

  /// Whether split and merge can take their unpadded 8-column-chunk kernels: both head dims
  /// multiples of 16 and every buffer 16-byte aligned.
  static func denseHeads(dv: Int, dqk: Int, _ addresses: [CUdeviceptr]) -> Bool {
    dv % 16 == 0 && dqk % 16 == 0 && addresses.allSatisfy { $0 % 16 == 0 }
  }

  /// bf16 `v`, `q`, `k` = SiLU of their parts of `pre`, in the padded head layout (u stays in pre:
  /// `SiLUGate`).
  public func uvqkSplitSiLU(pre: DeviceArray<BFloat16>, v: DeviceArray<BFloat16>, q: DeviceArray<BFloat16>,
                            k: DeviceArray<BFloat16>, tokens: Int, heads: Int, dv: Int, dqk: Int) throws {
    if Self.denseHeads(dv: dv, dqk: dqk, [pre.address, v.address, q.address, k.address]) {
      let chunks = tokens * (heads * (dv + 2 * dqk)) / 8
      try launch(blockKernel("uvqk_split_silu_dense"), grid: ((chunks + 255) / 256, 1, 1), block: (256, 1, 1),
                 [.pointer(pre.address), .pointer(v.address), .pointer(q.address), .pointer(k.address),
                  .int(Int32(tokens)), .int(Int32(heads * dv)), .int(Int32(heads * dqk))])
      return
    }
    try launch(blockKernel("uvqk_split_silu"), grid: (tokens, 1, 1), block: (128, 1, 1),
               [.pointer(pre.address), .pointer(v.address), .pointer(q.address), .pointer(k.address),
                .int(Int32(heads)), .int(Int32(dv)), .int(Int32(dqk)), .int(Int32(Self.paddedHeadDim(dv))), .int(Int32(Self.paddedHeadDim(dqk)))])
  }

  /// bf16 `dPre_{v,q,k} = [dv | dq | dk] ⊙ SiLU'(pre)`, reading dq (and, with `.separate` key
  /// gradients, dv and dk) in the padded head layout; after `.siluMerged` (unpadded heads only) the
  /// attention backward has written dPre's v and k columns, and this writes its q columns. (The gated
  /// LayerNorm's backward writes dPre's u columns: `SiLUGate`.)
  public func uvqkMergeSiLUBackward(pre: DeviceArray<BFloat16>, dq: DeviceArray<Float>, keys: AttentionKeyGradients,
                                    dPre: DeviceArray<BFloat16>, tokens: Int, heads: Int, dvDim: Int, dqkDim: Int) throws {
    let hv = heads * dvDim, hq = heads * dqkDim
    let (dk, dv): (DeviceArray<Float>?, DeviceArray<Float>?)
    switch keys {
    case let .separate(k, v): (dk, dv) = (k, v)
    case .siluMerged: (dk, dv) = (nil, nil)
    }
    let addresses = [pre.address, dq.address, dPre.address] + [dk, dv].compactMap { $0?.address }
    if Self.denseHeads(dv: dvDim, dqk: dqkDim, addresses) {
      // v | q | k, or q alone.
      let (first, columns) = dk == nil ? (2 * hv, hq) : (hv, hv + 2 * hq)
      let chunks = tokens * columns / 8
      try launch(blockKernel("uvqk_merge_silu_backward_dense"), grid: ((chunks + 255) / 256, 1, 1), block: (256, 1, 1),
                 [.pointer(pre.address), .pointer(dv?.address ?? 0), .pointer(dq.address), .pointer(dk?.address ?? 0),
                  .pointer(dPre.address), .int(Int32(tokens)), .int(Int32(hv)), .int(Int32(hq)),
                  .int(Int32(first)), .int(Int32(columns))])
      return
    }
    guard let dk, let dv else {
      throw CUDAError.unsupported("uvqkMergeSiLUBackward: SiLU-merged key gradients need unpadded heads (dv=\(dvDim), dqk=\(dqkDim))")
    }
    try launch(blockKernel("uvqk_merge_silu_backward"), grid: (tokens, 1, 1), block: (128, 1, 1),
               [.pointer(pre.address), .pointer(dv.address), .pointer(dq.address), .pointer(dk.address),
                .pointer(dPre.address), .int(Int32(heads)), .int(Int32(dvDim)), .int(Int32(dqkDim)),
                .int(Int32(Self.paddedHeadDim(dvDim))), .int(Int32(Self.paddedHeadDim(dqkDim)))])
  }
}
