/// The retrieval side of training and evaluation on the device:
///
///   negatives:  neg[r·R + s] = 1 + below(itemCount; seed, stream, r·R + s)   (CPUOps.sampledNegative)
///   loss sum:   acc[0] += Σ_r loss[r] · scale                                  (a device-side epoch total)
///   L2 norm:    y[r] = x[r] / max(‖x[r]‖, eps)
///   exclusion:  scores[b, items[t]] = −∞ for every history token t of user b, except the target
///   rank:       rank[b] = 1 + #{ j ≥ 1, j ≠ target : j ranks above the target }, ties pessimistic for
///               lower indices (RankingMetrics.rank; excluded items are −∞ and never rank above)
enum RetrievalKernels {
  static let source = CUDAPrelude.source + #"""
extern "C" __global__ void sample_negatives(int* __restrict__ out, long long count, int itemCount, u64 seed, u64 stream) {
  grid_dependency_wait();
  const u64 key = mix64(seed ^ mix64(stream));
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
    const u64 r = mix64(key + (u64)i) >> 32;
    out[i] = 1 + (int)((r * (u64)itemCount) >> 32);
  }
}

/// One block of 1024 threads. Each thread keeps eight partial sums, so eight of its loads are in
/// flight at once: the sum is one step's row losses (tens of thousands), latency-bound, not
/// bandwidth-bound. One block keeps the order of the additions fixed.
extern "C" __global__ void accumulate_sum(const float* __restrict__ x, int count, float scale, float* __restrict__ acc) {
  grid_dependency_wait();
  __shared__ float red[32];
  constexpr int U = 8;
  float s[U] = {};
  const int stride = blockDim.x;
  int i = threadIdx.x;
  for (; i + (U - 1) * stride < count; i += U * stride) {
    #pragma unroll
    for (int u = 0; u < U; ++u) s[u] += x[i + u * stride];
  }
  for (; i < count; i += stride) s[0] += x[i];
  float t = 0.f;
  #pragma unroll
  for (int u = 0; u < U; ++u) t += s[u];
  t = block_sum(t, red);
  if (threadIdx.x == 0) acc[0] += t * scale;
}

/// One warp per row.
extern "C" __global__ void l2_normalize_rows(const float* __restrict__ x, float* __restrict__ y, int rows, int dim, float eps) {
  grid_dependency_wait();
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + (size_t)row * dim;
  float s = 0.f;
  for (int c = lane; c < dim; c += 32) s += xr[c] * xr[c];
  const float inv = 1.f / fmaxf(sqrtf(warp_sum(s)), eps);
  for (int c = lane; c < dim; c += 32) y[(size_t)row * dim + c] = xr[c] * inv;
}

/// One block per user.
extern "C" __global__ void exclude_history(float* __restrict__ scores, const int* __restrict__ offsets,
    const int* __restrict__ items, const int* __restrict__ targets, int columns) {
  grid_dependency_wait();
  const int b = blockIdx.x;
  for (int t = offsets[b] + threadIdx.x; t < offsets[b + 1]; t += blockDim.x) {
    const int item = items[t];
    if (item != targets[b] && item >= 1 && item < columns) scores[(size_t)b * columns + item] = -__int_as_float(0x7f800000);
  }
}

/// One block of 256 threads per user.
extern "C" __global__ void target_rank(const float* __restrict__ scores, const int* __restrict__ targets,
    int* __restrict__ ranks, int columns) {
  grid_dependency_wait();
  __shared__ float red[32];
  const int b = blockIdx.x, target = targets[b];
  const float* s = scores + (size_t)b * columns;
  if (target < 1 || target >= columns) { if (threadIdx.x == 0) ranks[b] = columns; return; }
  const float t = s[target];
  float above = 0.f;
  for (int j = 1 + threadIdx.x; j < columns; j += blockDim.x) {
    if (j < target) above += !(s[j] < t) ? 1.f : 0.f;
    else if (j > target) above += !(s[j] <= t) ? 1.f : 0.f;
  }
  above = block_sum(above, red);
  if (threadIdx.x == 0) ranks[b] = 1 + (int)above;
}
"""#
}

extension CUDADevice {
  private func retrievalKernel(_ name: String) throws -> CUDAFunction {
    try module("retrieval", source: RetrievalKernels.source).function(name)
  }

  /// `out[i] = 1 + below(itemCount)` from (seed, stream, i): the CPU's uniform negatives, bit for bit.
  public func sampleNegatives(_ out: DeviceArray<Int32>, itemCount: Int, seed: UInt64, stream: UInt64) throws {
    try launch(retrievalKernel("sample_negatives"), grid: (max(1, min((out.count + 255) / 256, Int(multiprocessors) * 16)), 1, 1),
               block: (256, 1, 1), [.pointer(out.address), .uint64(UInt64(out.count)), .int(Int32(itemCount)), .uint64(seed), .uint64(stream)])
  }

  /// `accumulator[0] += scale · Σ x`.
  public func accumulateSum(_ x: DeviceArray<Float>, scale: Float, into accumulator: DeviceArray<Float>) throws {
    try launch(retrievalKernel("accumulate_sum"), grid: (1, 1, 1), block: (1024, 1, 1),
               [.pointer(x.address), .int(Int32(x.count)), .float(scale), .pointer(accumulator.address)])
  }

  /// Row-wise `y = x / max(‖x‖, eps)`.
  public func l2Normalize(_ x: DeviceArray<Float>, into y: DeviceArray<Float>, rows: Int, dim: Int, eps: Float = 1e-6) throws {
    try launch(retrievalKernel("l2_normalize_rows"), grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1),
               [.pointer(x.address), .pointer(y.address), .int(Int32(rows)), .int(Int32(dim)), .float(eps)])
  }

  /// Sets the score of every history item of each user (other than its target) to −∞.
  public func excludeHistory(scores: DeviceArray<Float>, offsets: DeviceArray<Int32>, items: DeviceArray<Int32>,
                             targets: DeviceArray<Int32>, users: Int, columns: Int) throws {
    try launch(retrievalKernel("exclude_history"), grid: (users, 1, 1), block: (128, 1, 1),
               [.pointer(scores.address), .pointer(offsets.address), .pointer(items.address), .pointer(targets.address), .int(Int32(columns))])
  }

  /// The 1-based full-ranking rank of each user's target (ties and NaNs as in `RankingMetrics.rank`).
  public func targetRanks(scores: DeviceArray<Float>, targets: DeviceArray<Int32>, ranks: DeviceArray<Int32>, users: Int, columns: Int) throws {
    try launch(retrievalKernel("target_rank"), grid: (users, 1, 1), block: (256, 1, 1),
               [.pointer(scores.address), .pointer(targets.address), .pointer(ranks.address), .int(Int32(columns))])
  }
}
