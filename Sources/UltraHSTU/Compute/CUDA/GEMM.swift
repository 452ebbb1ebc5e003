/// Dense products through cuBLASLt (see `CuBLASLt`), row-major, fp32 accumulation, with the bias
/// and residual epilogues fused; and the backward of the bias epilogue, a column sum.
///
///   forward:   d[m,n] = op(a)·op(b) + bias[n] (+ residual)
///   backward:  dBias[n] += Σ_rows dD[row, n]   (dD fp32, or its bf16 copy: half the bytes, and the
///              values PyTorch's autocast would sum too; fp32 accumulation either way)
/// (cuBLASLt would do the column sum as an m = 1 GEMM: one output tile, so one SM reads all of dD.)
enum GEMMEpilogueKernels {
  static let source = CUDAPrelude.source + #"""
__device__ __forceinline__ float as_float(float x) { return x; }
__device__ __forceinline__ float as_float(bf16_t x) { return bf16_to_float(x); }

/// Each block sums a chunk of rows: a thread owns columns, and keeps four rows' loads in flight
/// (four partial sums) so the column walk is not one dependent load after another; then one
/// atomic per column and block. DY is float or bf16_t. For any width and alignment.
template <typename DY>
__device__ __forceinline__ void bias_gradient_rows(const DY* __restrict__ dy, float* __restrict__ dbias, int rows, int cols) {
  const int rowsPerBlock = (rows + gridDim.x - 1) / gridDim.x;
  const int r0 = blockIdx.x * rowsPerBlock, r1 = min(rows, r0 + rowsPerBlock);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
      s0 += as_float(dy[(size_t)r * cols + c]);
      s1 += as_float(dy[(size_t)(r + 1) * cols + c]);
      s2 += as_float(dy[(size_t)(r + 2) * cols + c]);
      s3 += as_float(dy[(size_t)(r + 3) * cols + c]);
    }
    for (; r < r1; ++r) s0 += as_float(dy[(size_t)r * cols + c]);
    if (r1 > r0) atomicAdd(dbias + c, (s0 + s1) + (s2 + s3));
  }
}

/// The same sums with 16-byte loads, for cols a multiple of V with cols / V ≤ blockDim.x and dy
/// 16-byte aligned: thread t owns the V-column chunk t mod (cols / V) in the row lane t / (cols / V)
/// (rows r0 + lane, r0 + lane + lanes, …), four rows' loads in flight; the lanes' sums meet in
/// shared memory, then one atomic per column and block.
template <int V, typename DY>
__device__ __forceinline__ void bias_gradient_chunks(const DY* __restrict__ dy, float* __restrict__ dbias, int rows, int cols) {
  extern __shared__ float partial[];   // [lanes][cols]
  const int chunks = cols / V, lanes = blockDim.x / chunks;
  const int chunk = threadIdx.x % chunks, lane = threadIdx.x / chunks;
  const int rowsPerBlock = (rows + gridDim.x - 1) / gridDim.x;
  const int r0 = blockIdx.x * rowsPerBlock, r1 = min(rows, r0 + rowsPerBlock);
  if (r1 <= r0) return;
  if (lane < lanes) {
    float s[V] = {};
    const DY* p = dy + chunk * V;
    int r = r0 + lane;
    for (; r + 3 * lanes < r1; r += 4 * lanes) {
      float a[V], b[V], c[V], d[V];
      load_floats(p + (size_t)r * cols, a); load_floats(p + (size_t)(r + lanes) * cols, b);
      load_floats(p + (size_t)(r + 2 * lanes) * cols, c); load_floats(p + (size_t)(r + 3 * lanes) * cols, d);
      #pragma unroll
      for (int i = 0; i < V; ++i) s[i] += (a[i] + b[i]) + (c[i] + d[i]);
    }
    for (; r < r1; r += lanes) {
      float a[V];
      load_floats(p + (size_t)r * cols, a);
      #pragma unroll
      for (int i = 0; i < V; ++i) s[i] += a[i];
    }
    #pragma unroll
    for (int i = 0; i < V; ++i) partial[lane * cols + chunk * V + i] = s[i];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float sum = 0.f;
    for (int l = 0; l < lanes; ++l) sum += partial[l * cols + c];
    atomicAdd(dbias + c, sum);
  }
}

extern "C" __global__ void bias_gradient(const float* __restrict__ dy, float* __restrict__ dbias, int rows, int cols) {
  grid_dependency_wait();
  bias_gradient_rows(dy, dbias, rows, cols);
}

extern "C" __global__ void bias_gradient_bf16(const bf16_t* __restrict__ dy, float* __restrict__ dbias, int rows, int cols) {
  grid_dependency_wait();
  bias_gradient_rows(dy, dbias, rows, cols);
}

extern "C" __global__ void bias_gradient_vec(const float* __restrict__ dy, float* __restrict__ dbias, int rows, int cols) {
  grid_dependency_wait();
  bias_gradient_chunks<4>(dy, dbias, rows, cols);
}

extern "C" __global__ void bias_gradient_bf16_vec(const bf16_t* __restrict__ dy, float* __restrict__ dbias, int rows, int cols) {
  grid_dependency_wait();
  bias_gradient_chunks<8>(dy, dbias, rows, cols);
}
"""#
}

extension CUDADevice {
  /// `d[m,n] = op(a)·op(b) (+ bias[n]) (+ residual)`; `a`, `b` bf16 or fp32 (both the same), `d` fp32 or bf16.
  public func gemm<A, D>(m: Int, n: Int, k: Int, a: DeviceArray<A>, transA: Bool = false, b: DeviceArray<A>, transB: Bool = false,
                         d: DeviceArray<D>, bias: DeviceArray<Float>? = nil, residual: DeviceArray<D>? = nil) throws {
    func type<T>(_: T.Type) throws -> CuBLASLt.DataType {
      if T.self == Float.self { return .f32 }
      if T.self == BFloat16.self { return .bf16 }
      throw CUDAError.unsupported("GEMM element type \(T.self)")
    }
    precondition(stream == mainStream, "GEMMs share one cuBLASLt workspace: main stream only")
    let (blas, workspace) = try blas()
    try blas.matmul(m: m, n: n, k: k, a: a.address, transA: transA, aType: type(A.self), b: b.address, transB: transB,
                    bType: type(A.self), d: d.address, dType: type(D.self), bias: bias?.address, residual: residual?.address,
                    workspace: workspace.address, workspaceSize: workspace.bytes, stream: stream,
                    choose: tunesGEMMs ? { try self.fastestGEMM($0, $1, shape: "m=\(m) n=\(n) k=\(k)\(transA ? " Aᵀ" : "")"
                                                           + "\(transB ? " Bᵀ" : "")\(bias == nil ? "" : " +bias")\(residual == nil ? "" : " +residual")") } : nil)
  }

  /// The candidate whose best of three runs (after one warm-up run) is the shortest; synchronises.
  private func fastestGEMM(_ candidates: Int, _ run: (Int) throws -> Void, shape: String) throws -> Int {
    let times = try (0..<candidates).map { i in try time(warmup: 1, repeats: 3) { try run(i) }.min()! }
    let best = times.indices.min { times[$0] < times[$1] }!
    tuningLog?("tuned GEMM \(shape): candidate \(best) of \(candidates), "
               + String(format: "%.3f ms (the heuristic's first %.3f ms)", times[best], times[0]))
    return best
  }

  /// `dBias[n] += Σ_r dY[r, n]` over `rows` rows of `dY` (`[rows, cols]`, fp32 or bf16). 16-byte
  /// loads when the width and alignment allow them (`bias_gradient[_bf16]_vec`).
  public func biasGradient<DY>(_ dY: DeviceArray<DY>, into dBias: DeviceArray<Float>, rows: Int, cols: Int) throws {
    let name: String
    switch DY.self {
    case is Float.Type: name = "bias_gradient"
    case is BFloat16.Type: name = "bias_gradient_bf16"
    default: throw CUDAError.unsupported("biasGradient: dY of type \(DY.self)")
    }
    let threads = 256, vector = 16 / MemoryLayout<DY>.stride
    let vectorized = cols % vector == 0 && cols / vector <= threads && dY.address % 16 == 0
    let blocks = max(1, min(Int(multiprocessors) * 2, (rows + 63) / 64))
    try launch(module("gemm_epilogue", source: GEMMEpilogueKernels.source).function(vectorized ? name + "_vec" : name),
               grid: (blocks, 1, 1), block: (vectorized ? threads : min(threads, (cols + 31) / 32 * 32), 1, 1),
               sharedBytes: vectorized ? 4 * threads / (cols / vector) * cols : 0,
               [.pointer(dY.address), .pointer(dBias.address), .int(Int32(rows)), .int(Int32(cols))])
  }
}
