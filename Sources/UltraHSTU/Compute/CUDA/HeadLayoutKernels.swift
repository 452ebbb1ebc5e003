/// Layout changes between dense heads and the attention kernels' padded heads, each the other's
/// backward:
///
///   pad:    bf16 padded[T, H, DP] = x[T, off + H·d]   (zeros in the pad; row stride of x: `stride`)
///   unpad:  out[T, off + H·d] = padded[T, H, DP]      (fp32 and/or bf16; row stride of out: `stride`)
///
/// DP is the head dim rounded up to 16 (the mma tile), so zero pad columns leave q·k and P·v
/// unchanged. `off` and `stride` address one part of a wider row (k or v inside SASRec's kv).
enum HeadLayoutKernels {
  static let source = CUDAPrelude.source + #"""
/// One block per token.
extern "C" __global__ void pad_heads_bf16(const float* __restrict__ x, bf16_t* __restrict__ padded, int heads, int d, int dp,
    int stride, int offset) {
  grid_dependency_wait();
  const size_t t = blockIdx.x;
  for (int c = threadIdx.x; c < heads * dp; c += blockDim.x) {
    const int h = c / dp, j = c % dp;
    padded[t * heads * dp + c] = float_to_bf16(j < d ? x[t * stride + offset + h * d + j] : 0.f);
  }
}

extern "C" __global__ void unpad_heads(const float* __restrict__ padded, float* __restrict__ out, bf16_t* __restrict__ outBF16,
    int heads, int d, int dp, int stride, int offset) {
  grid_dependency_wait();
  const size_t t = blockIdx.x;
  for (int c = threadIdx.x; c < heads * d; c += blockDim.x) {
    const float value = padded[(t * heads + c / d) * dp + c % d];
    if (out) out[t * stride + offset + c] = value;
    if (outBF16) outBF16[t * stride + offset + c] = float_to_bf16(value);
  }
}
"""#
}

extension CUDADevice {
  /// Head dim as the attention kernels store it: rounded up to a multiple of 16.
  public static func paddedHeadDim(_ d: Int) -> Int { (d + 15) / 16 * 16 }

  private func headLayoutKernel(_ name: String) throws -> CUDAFunction {
    try module("head_layout", source: HeadLayoutKernels.source).function(name)
  }

  /// `out` (fp32) and/or `outBF16`, columns `offset ..< offset + H·d` of rows of `stride` (default
  /// H·d), from the padded `[T, H, pad(d)]`.
  public func unpadHeads(_ padded: DeviceArray<Float>, into out: DeviceArray<Float>? = nil, intoBF16 outBF16: DeviceArray<BFloat16>? = nil,
                         tokens: Int, heads: Int, dim: Int, stride: Int? = nil, offset: Int = 0) throws {
    try launch(headLayoutKernel("unpad_heads"), grid: (tokens, 1, 1), block: (128, 1, 1),
               [.pointer(padded.address), .pointer(out?.address ?? 0), .pointer(outBF16?.address ?? 0), .int(Int32(heads)),
                .int(Int32(dim)), .int(Int32(Self.paddedHeadDim(dim))), .int(Int32(stride ?? heads * dim)), .int(Int32(offset))])
  }

  /// bf16 `[T, H, pad(d)]` (zero pad) from columns `offset ..< offset + H·d` of `x`'s rows of
  /// `stride` (default H·d).
  public func padHeadsBFloat16(_ x: DeviceArray<Float>, into padded: DeviceArray<BFloat16>, tokens: Int, heads: Int, dim: Int,
                               stride: Int? = nil, offset: Int = 0) throws {
    try launch(headLayoutKernel("pad_heads_bf16"), grid: (tokens, 1, 1), block: (128, 1, 1),
               [.pointer(x.address), .pointer(padded.address), .int(Int32(heads)), .int(Int32(dim)),
                .int(Int32(Self.paddedHeadDim(dim))), .int(Int32(stride ?? heads * dim)), .int(Int32(offset))])
  }
}
