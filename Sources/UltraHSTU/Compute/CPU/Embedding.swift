extension CPUOps {
  /// Input embedding of a jagged batch: `out[t] = table[ids[t]] · scale (+ positions[pos[t]])`.
  public static func embeddingForward(ids: UnsafePointer<Int32>, table: UnsafePointer<Float>, scale: Float,
                                      positionIndex: UnsafePointer<Int32>?, positionTable: UnsafePointer<Float>?,
                                      _ out: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
    Parallel.forChunks(rows, minimumPerWorker: 512) { r in
      for t in r {
        let e = table + Int(ids[t]) * dim, o = out + t * dim
        if let positionIndex, let positionTable {
          let p = positionTable + Int(positionIndex[t]) * dim
          for c in 0..<dim { o[c] = e[c] * scale + p[c] }
        } else {
          for c in 0..<dim { o[c] = e[c] * scale }
        }
      }
    }
  }

  /// Scatter-add backward of `embeddingForward`: `dTable[ids[t]] += dout[t] · scale`,
  /// `dPositions[pos[t]] += dout[t]`. Sequential: rows that share an id must not race.
  public static func embeddingBackward(_ dout: UnsafePointer<Float>, ids: UnsafePointer<Int32>, scale: Float,
                                       positionIndex: UnsafePointer<Int32>?, dTable: UnsafeMutablePointer<Float>,
                                       dPositionTable: UnsafeMutablePointer<Float>?, rows: Int, dim: Int) {
    for t in 0..<rows {
      let g = dout + t * dim, d = dTable + Int(ids[t]) * dim
      for c in 0..<dim { d[c] += g[c] * scale }
      if let positionIndex, let dPositionTable {
        let dp = dPositionTable + Int(positionIndex[t]) * dim
        for c in 0..<dim { dp[c] += g[c] }
      }
    }
  }
}

extension CPUOps {
  /// `out[t] += table[ids[t·stride]] · scale` for every token whose id is not −1 (action
  /// embeddings: one strided column of a `[T × signals]` id array per table).
  public static func embeddingAccumulate(ids: UnsafePointer<Int32>, stride: Int, table: UnsafePointer<Float>, scale: Float,
                                         _ out: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
    Parallel.forChunks(rows, minimumPerWorker: 512) { r in
      for t in r {
        let id = Int(ids[t * stride])
        if id < 0 { continue }
        let e = table + id * dim, o = out + t * dim
        for c in 0..<dim { o[c] += e[c] * scale }
      }
    }
  }

  /// Scatter-add backward of `embeddingAccumulate`: `dTable[ids[t]] += dout[t] · scale`.
  public static func embeddingAccumulateBackward(_ dout: UnsafePointer<Float>, ids: UnsafePointer<Int32>, stride: Int,
                                                 dTable: UnsafeMutablePointer<Float>, scale: Float, rows: Int, dim: Int) {
    for t in 0..<rows {
      let id = Int(ids[t * stride])
      if id < 0 { continue }
      let g = dout + t * dim, d = dTable + id * dim
      for c in 0..<dim { d[c] += g[c] * scale }
    }
  }

  /// `out[r] = x[rows[r]]` (attention truncation keeps a subset of a jagged batch's rows).
  public static func gatherRows(_ x: UnsafePointer<Float>, rows: UnsafePointer<Int32>, count: Int, dim: Int,
                                _ out: UnsafeMutablePointer<Float>) {
    Parallel.forChunks(count, minimumPerWorker: 512) { r in
      for i in r { (out + i * dim).update(from: x + Int(rows[i]) * dim, count: dim) }
    }
  }

  /// Backward of `gatherRows`: `dx[rows[r]] += dout[r]` (rows are distinct, so no races).
  public static func scatterRows(_ dout: UnsafePointer<Float>, rows: UnsafePointer<Int32>, count: Int, dim: Int,
                                 _ dx: UnsafeMutablePointer<Float>) {
    Parallel.forChunks(count, minimumPerWorker: 512) { r in
      for i in r {
        let d = dx + Int(rows[i]) * dim, g = dout + i * dim
        for c in 0..<dim { d[c] += g[c] }
      }
    }
  }
}
