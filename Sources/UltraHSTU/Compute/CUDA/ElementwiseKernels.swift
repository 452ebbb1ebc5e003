/// Element-wise ops, forward and backward: SiLU, dropout (optionally onto a residual) and ReLU
/// followed by dropout (fp32), plus the fp32 -> bf16 cast that feeds tensor-core kernels.
///
///   SiLU: y = x σ(x);  dx = dy · σ(x)(1 + x(1 − σ(x)))
///   Dropout (rate p, counter-based): keep_i = unit(seed, stream, i) ≥ p;  y = r + x · keep / (1 − p)
///   (r: an optional residual); backward recomputes keep from (seed, stream, i), so no mask is stored.
///   ReLU then dropout (SASRec's feed-forward): y = max(x, 0), z = Dropout(y);
///   backward dx = [y > 0] · Dropout(dz).
enum ElementwiseKernels {
  static let source = CUDAPrelude.source + #"""
extern "C" __global__ void silu_forward(const float* __restrict__ x, float* __restrict__ y, long long count) {
  grid_dependency_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i]; y[i] = v * sigmoidf_exact(v);
  }
}
extern "C" __global__ void silu_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long count) {
  grid_dependency_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i], s = sigmoidf_exact(v); dx[i] = dy[i] * s * (1.f + v * (1.f - s));
  }
}
/// Forward (x -> y) and backward (dy -> dx) are the same map: both multiply by keep / (1 - p).
/// Writes y (fp32) and/or yBF16; adds `residual` when given.
extern "C" __global__ void dropout_apply(const float* __restrict__ x, const float* __restrict__ residual, float* __restrict__ y,
    bf16_t* __restrict__ yBF16, long long count, float rate, u64 seed, u64 stream) {
  grid_dependency_wait();
  const Dropout drop(rate, seed, stream);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    float value = drop(x[i], (u64)i);
    if (residual) value += residual[i];
    if (y) y[i] = value;
    if (yBF16) yBF16[i] = float_to_bf16(value);
  }
}
/// x -> y = max(x, 0) in place, and z = bf16(Dropout(y)).
extern "C" __global__ void relu_dropout_forward(float* __restrict__ x, bf16_t* __restrict__ z, long long count,
    float rate, u64 seed, u64 stream) {
  grid_dependency_wait();
  const Dropout drop(rate, seed, stream);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const float y = fmaxf(x[i], 0.f);
    x[i] = y;
    z[i] = float_to_bf16(drop(y, (u64)i));
  }
}
/// dx = [y > 0] · Dropout(dz), in fp32 (in place on dz allowed) and bf16.
extern "C" __global__ void relu_dropout_backward(const float* dz, const float* __restrict__ y, float* dx,
    bf16_t* __restrict__ dxBF16, long long count, float rate, u64 seed, u64 stream) {
  grid_dependency_wait();
  const Dropout drop(rate, seed, stream);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const float g = y[i] > 0.f ? drop(dz[i], (u64)i) : 0.f;
    dx[i] = g;
    dxBF16[i] = float_to_bf16(g);
  }
}
extern "C" __global__ void cast_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, long long count) {
  grid_dependency_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x)
    y[i] = float_to_bf16(x[i]);
}
"""#
}

extension CUDADevice {
  private func elementwise(_ name: String) throws -> CUDAFunction {
    try module("elementwise", source: ElementwiseKernels.source).function(name)
  }
  private func gridFor(_ count: Int) -> (Int, Int, Int) { (max(1, min((count + 255) / 256, Int(multiprocessors) * 16)), 1, 1) }

  public func siluForward(x: DeviceArray<Float>, y: DeviceArray<Float>) throws {
    try launch(elementwise("silu_forward"), grid: gridFor(x.count), block: (256, 1, 1), [.pointer(x.address), .pointer(y.address), .uint64(UInt64(x.count))])
  }
  public func siluBackward(x: DeviceArray<Float>, dy: DeviceArray<Float>, dx: DeviceArray<Float>) throws {
    try launch(elementwise("silu_backward"), grid: gridFor(x.count), block: (256, 1, 1),
               [.pointer(x.address), .pointer(dy.address), .pointer(dx.address), .uint64(UInt64(x.count))])
  }
  /// Dropout forward (x -> y) or backward (dy -> dx): the same counter-based mask for the same
  /// (seed, stream); a nil mask copies. Writes `y` and/or `yBF16`, plus `residual` when given.
  public func dropout(_ x: DeviceArray<Float>, into y: DeviceArray<Float>? = nil, intoBF16 yBF16: DeviceArray<BFloat16>? = nil,
                      residual: DeviceArray<Float>? = nil, mask: DropoutMask?) throws {
    try launch(elementwise("dropout_apply"), grid: gridFor(x.count), block: (256, 1, 1),
               [.pointer(x.address), .pointer(residual?.address ?? 0), .pointer(y?.address ?? 0), .pointer(yBF16?.address ?? 0),
                .uint64(UInt64(x.count))] + DropoutMask.arguments(mask))
  }
  /// `x = max(x, 0)` in place and `dropped = bf16(Dropout(x))`.
  public func reluDropoutForward(_ x: DeviceArray<Float>, dropped: DeviceArray<BFloat16>, mask: DropoutMask?) throws {
    try launch(elementwise("relu_dropout_forward"), grid: gridFor(x.count), block: (256, 1, 1),
               [.pointer(x.address), .pointer(dropped.address), .uint64(UInt64(x.count))] + DropoutMask.arguments(mask))
  }
  /// Backward of `reluDropoutForward` given its output `y`: `dx = [y > 0] · Dropout(dDropped)`
  /// (fp32, may be `dDropped` itself) and its bf16 copy.
  public func reluDropoutBackward(_ dDropped: DeviceArray<Float>, y: DeviceArray<Float>, dx: DeviceArray<Float>, dxBF16: DeviceArray<BFloat16>,
                                  mask: DropoutMask?) throws {
    try launch(elementwise("relu_dropout_backward"), grid: gridFor(y.count), block: (256, 1, 1),
               [.pointer(dDropped.address), .pointer(y.address), .pointer(dx.address), .pointer(dxBF16.address),
                .uint64(UInt64(y.count))] + DropoutMask.arguments(mask))
  }
  public func castToBFloat16(_ x: DeviceArray<Float>, into y: DeviceArray<BFloat16>) throws {
    try launch(elementwise("cast_bf16"), grid: gridFor(x.count), block: (256, 1, 1), [.pointer(x.address), .pointer(y.address), .uint64(UInt64(x.count))])
  }
}
