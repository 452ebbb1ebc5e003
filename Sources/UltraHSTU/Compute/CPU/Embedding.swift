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
