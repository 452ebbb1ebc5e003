/// Row lookup and its gradient (fp32), for embeddings and for moving rows of jagged batches
/// (attention truncation, the mixture of transducers' fusion, the evaluator's last rows):
///   gather:      out[r, :] = Dropout((accumulate ? out[r, :] : 0) + table[id_r, :] · scale (+ positionTable[positionIds[r], :]))
///   scatter-add: dTable[id_r, :] += Dropout(dOut[r, :]) · scale   (or `=`: a scatter of rows, ids distinct)
/// with id_r = ids[r · stride] (one column of a `[rows × stride]` id array, e.g. one action
/// signal). A negative id reads as a zero row and scatters nothing. The optional dropout is the
/// input dropout's mask over the `[rows × dim]` output (element index r·dim + c, as
/// `dropout_apply`), so the model's input needs no separate dropout pass, forward or backward.
enum EmbeddingKernels {
  static let source = CUDAPrelude.source + #"""
extern "C" __global__ void embedding_gather(const float* __restrict__ table, const int* __restrict__ ids, int stride,
    const float* __restrict__ positionTable, const int* __restrict__ positionIds, float* __restrict__ out, int rows, int dim,
    float scale, int accumulate, float rate, u64 seed, u64 stream) {
  grid_dependency_wait();
  const int r = blockIdx.x;
  if (r >= rows) return;
  const Dropout drop(rate, seed, stream);
  const int id = ids[(size_t)r * stride];
  const float* src = id >= 0 ? table + (size_t)id * dim : nullptr;
  const float* pos = positionTable ? positionTable + (size_t)positionIds[r] * dim : nullptr;
  float* dst = out + (size_t)r * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    const float value = (src ? src[c] * scale : 0.f) + (pos ? pos[c] : 0.f);
    dst[c] = drop(accumulate ? dst[c] + value : value, (u64)r * dim + c);
  }
}
extern "C" __global__ void embedding_scatter_add(const float* __restrict__ dout, const int* __restrict__ ids, int stride,
    float* __restrict__ dtable, int rows, int dim, float scale, int accumulate, float rate, u64 seed, u64 stream) {
  grid_dependency_wait();
  const int r = blockIdx.x;
  if (r >= rows) return;
  const int id = ids[(size_t)r * stride];
  if (id < 0) return;
  const Dropout drop(rate, seed, stream);
  float* dst = dtable + (size_t)id * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    const float value = drop(dout[(size_t)r * dim + c], (u64)r * dim + c) * scale;
    if (accumulate) atomicAdd(dst + c, value); else dst[c] = value;
  }
}
"""#
}

extension CUDADevice {
  /// out[r] = table[ids[r · idStride]] · scale (+ positionTable[positionIds[r]]) for `rows` rows
  /// (all of `ids` when nil; a negative id gives a zero row); with `accumulate`, added to out[r];
  /// then `dropout` over the result (give it to the last gather that writes `out`).
  public func embeddingGather(table: DeviceArray<Float>, ids: DeviceArray<Int32>, idStride: Int = 1, rows: Int? = nil,
                              positionTable: DeviceArray<Float>? = nil, positionIds: DeviceArray<Int32>? = nil,
                              out: DeviceArray<Float>, dim: Int, scale: Float = 1, accumulate: Bool = false,
                              dropout: DropoutMask? = nil) throws {
    let rows = rows ?? ids.count / idStride
    if rows == 0 { return }
    try launch(module("embedding", source: EmbeddingKernels.source).function("embedding_gather"),
               grid: (rows, 1, 1), block: (min(256, (dim + 31) / 32 * 32), 1, 1),
               [.pointer(table.address), .pointer(ids.address), .int(Int32(idStride)), .pointer(positionTable?.address ?? 0),
                .pointer(positionIds?.address ?? 0), .pointer(out.address), .int(Int32(rows)), .int(Int32(dim)), .float(scale),
                .int(accumulate ? 1 : 0)] + DropoutMask.arguments(dropout))
  }
  /// dTable[ids[r · idStride]] += Dropout(dOut[r]) · scale for `rows` rows (all of `ids` when nil),
  /// skipping negative ids; `dropout` is the mask of the gather that produced dOut's forward
  /// value. Accumulates; zero dTable first for a fresh gradient.
  public func embeddingScatterAdd(dOut: DeviceArray<Float>, ids: DeviceArray<Int32>, idStride: Int = 1, rows: Int? = nil,
                                  dTable: DeviceArray<Float>, dim: Int, scale: Float = 1, dropout: DropoutMask? = nil) throws {
    try scatter(dOut, ids: ids, idStride: idStride, rows: rows, into: dTable, dim: dim, scale: scale, accumulate: true, dropout: dropout)
  }

  /// destination[ids[r]] = source[r] for `rows` rows (all of `ids` when nil; ids distinct, negative ones skipped).
  public func scatterRows(_ source: DeviceArray<Float>, ids: DeviceArray<Int32>, rows: Int? = nil, into destination: DeviceArray<Float>,
                          dim: Int) throws {
    try scatter(source, ids: ids, idStride: 1, rows: rows, into: destination, dim: dim, scale: 1, accumulate: false, dropout: nil)
  }

  private func scatter(_ source: DeviceArray<Float>, ids: DeviceArray<Int32>, idStride: Int, rows: Int?, into destination: DeviceArray<Float>,
                       dim: Int, scale: Float, accumulate: Bool, dropout: DropoutMask?) throws {
    let rows = rows ?? ids.count / idStride
    if rows == 0 { return }
    try launch(module("embedding", source: EmbeddingKernels.source).function("embedding_scatter_add"),
               grid: (rows, 1, 1), block: (min(256, (dim + 31) / 32 * 32), 1, 1),
               [.pointer(source.address), .pointer(ids.address), .int(Int32(idStride)), .pointer(destination.address), .int(Int32(rows)),
                .int(Int32(dim)), .float(scale), .int(accumulate ? 1 : 0)] + DropoutMask.arguments(dropout))
  }
}
