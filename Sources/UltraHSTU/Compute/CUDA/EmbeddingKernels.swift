/// Embedding lookup and its gradient (fp32):
///   gather:      out[r, :] = table[ids[r], :] · scale (+ positionTable[positionIds[r], :] when given)
///   scatter-add: dTable[ids[r], :] += dOut[r, :] · scale   (rows whose id is `paddingId` are skipped)
enum EmbeddingKernels {
  static let source = CUDAPrelude.source + #"""
extern "C" __global__ void embedding_gather(const float* __restrict__ table, const int* __restrict__ ids,
    const float* __restrict__ positionTable, const int* __restrict__ positionIds, float* __restrict__ out, int rows, int dim, float scale) {
  const int r = blockIdx.x;
  if (r >= rows) return;
  const float* src = table + (size_t)ids[r] * dim;
  const float* pos = positionTable ? positionTable + (size_t)positionIds[r] * dim : nullptr;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) out[(size_t)r * dim + c] = src[c] * scale + (pos ? pos[c] : 0.f);
}
extern "C" __global__ void embedding_scatter_add(const float* __restrict__ dout, const int* __restrict__ ids,
    float* __restrict__ dtable, int rows, int dim, int paddingId, float scale) {
  const int r = blockIdx.x;
  if (r >= rows || ids[r] == paddingId) return;
  float* dst = dtable + (size_t)ids[r] * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) atomicAdd(dst + c, dout[(size_t)r * dim + c] * scale);
}
"""#
}

extension CUDADevice {
  /// out[r] = table[ids[r]] · scale (+ positionTable[positionIds[r]]) for every row of `ids`.
  public func embeddingGather(table: DeviceArray<Float>, ids: DeviceArray<Int32>, positionTable: DeviceArray<Float>? = nil,
                              positionIds: DeviceArray<Int32>? = nil, out: DeviceArray<Float>, dim: Int, scale: Float = 1) throws {
    try launch(module("embedding", source: EmbeddingKernels.source).function("embedding_gather"),
               grid: (ids.count, 1, 1), block: (min(256, (dim + 31) / 32 * 32), 1, 1),
               [.pointer(table.address), .pointer(ids.address), .pointer(positionTable?.address ?? 0), .pointer(positionIds?.address ?? 0),
                .pointer(out.address), .int(Int32(ids.count)), .int(Int32(dim)), .float(scale)])
  }
  /// dTable[ids[r]] += dOut[r] (accumulates; zero dTable first for a fresh gradient).
  public func embeddingScatterAdd(dOut: DeviceArray<Float>, ids: DeviceArray<Int32>, dTable: DeviceArray<Float>, dim: Int, paddingId: Int32 = -1, scale: Float = 1) throws {
    try launch(module("embedding", source: EmbeddingKernels.source).function("embedding_scatter_add"),
               grid: (ids.count, 1, 1), block: (min(256, (dim + 31) / 32 * 32), 1, 1),
               [.pointer(dOut.address), .pointer(ids.address), .pointer(dTable.address), .int(Int32(ids.count)), .int(Int32(dim)), .int(paddingId), .float(scale)])
  }
}
