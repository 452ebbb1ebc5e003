/// Element-wise ops, forward and backward: SiLU and dropout (fp32), plus the fp32 -> bf16 cast
/// that feeds tensor-core kernels.
///
///   SiLU: y = x σ(x);  dx = dy · σ(x)(1 + x(1 − σ(x)))
///   Dropout (rate p, counter-based): keep_i = unit(seed, stream, i) ≥ p;  y = x · keep / (1 − p);
///   backward recomputes keep from (seed, stream, i), so no mask is stored.
enum ElementwiseKernels {
  static let source = CUDAPrelude.source + #"""
extern "C" __global__ void silu_forward(const float* __restrict__ x, float* __restrict__ y, long long count) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i]; y[i] = v * sigmoidf_exact(v);
  }
}
extern "C" __global__ void silu_backward(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long count) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const float v = x[i], s = sigmoidf_exact(v); dx[i] = dy[i] * s * (1.f + v * (1.f - s));
  }
}
/// Forward (x -> y) and backward (dy -> dx) are the same map: both multiply by keep / (1 - p).
extern "C" __global__ void dropout_apply(const float* __restrict__ x, float* __restrict__ y, long long count,
    float rate, u64 seed, u64 stream) {
  const float scale = 1.f / (1.f - rate);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x)
    y[i] = counter_unit(seed, stream, (u64)i) >= rate ? x[i] * scale : 0.f;
}
extern "C" __global__ void cast_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, long long count) {
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
  /// (seed, stream).
  public func dropout(_ x: DeviceArray<Float>, into y: DeviceArray<Float>, rate: Float, seed: UInt64, stream: UInt64) throws {
    try launch(elementwise("dropout_apply"), grid: gridFor(x.count), block: (256, 1, 1),
               [.pointer(x.address), .pointer(y.address), .uint64(UInt64(x.count)), .float(rate), .uint64(seed), .uint64(stream)])
  }
  public func castToBFloat16(_ x: DeviceArray<Float>, into y: DeviceArray<BFloat16>) throws {
    try launch(elementwise("cast_bf16"), grid: gridFor(x.count), block: (256, 1, 1), [.pointer(x.address), .pointer(y.address), .uint64(UInt64(x.count))])
  }
}
