import Foundation

extension CPUOps {
  /// The negative item of `row`'s `r`-th sample: uniform over `1...itemCount`.
  @inline(__always)
  public static func sampledNegative(row: Int, sample r: Int, negatives: Int, itemCount: Int,
                                     random: CounterRandom, stream: UInt64) -> Int {
    1 + random.below(itemCount, stream: stream, counter: UInt64(row * negatives + r))
  }

  /// Sampled-softmax retrieval loss with uniform negatives, forward and backward in one pass.
  ///
  /// For each row: logits `[u·e₊, u·e₁ … u·e_R] / T` over L2-normalised user and item embeddings;
  /// a negative equal to the positive (an accidental hit) is excluded; loss `−log softmax₀`.
  /// Returns the mean loss over rows. Gradients of the mean loss are written to `dUser`
  /// (overwritten) and accumulated into `dItems` (the gradient w.r.t. the *normalised* table).
  /// `scratch` holds one table-sized partial gradient per worker; pass the same buffer every step
  /// to avoid reallocating it.
  public static func sampledSoftmaxLoss(user: UnsafePointer<Float>, positives: UnsafePointer<Int32>, rows: Int, dim: Int,
                                        items: UnsafePointer<Float>, itemCount: Int, negatives: Int, temperature: Float,
                                        random: CounterRandom, stream: UInt64,
                                        dUser: UnsafeMutablePointer<Float>?, dItems: UnsafeMutablePointer<Float>?,
                                        scratch: HostBuffer = HostBuffer()) -> Float {
    if rows == 0 { return 0 }
    let workers = Parallel.workers
    let tableSize = (itemCount + 1) * dim
    let partialBase = scratch.reserve(dItems == nil ? 0 : workers * tableSize)
    scratch.zero()
    let partials = dItems == nil ? [] : (0..<workers).map { partialBase + $0 * tableSize }
    var losses = [Double](repeating: 0, count: workers)
    let invT = 1 / temperature, invRows = 1 / Float(rows)
    let chunks = min(workers, rows)
    losses.withUnsafeMutableBufferPointer { lossBuffer in
      DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
        let ids = UnsafeMutablePointer<Int>.allocate(capacity: negatives + 1)
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: negatives + 1)
        defer { ids.deallocate(); logits.deallocate() }
        var lossSum: Double = 0
        for row in (rows * chunk / chunks)..<(rows * (chunk + 1) / chunks) {
          let u = user + row * dim
          let positive = Int(positives[row])
          ids[0] = positive
          for r in 0..<negatives {
            ids[r + 1] = sampledNegative(row: row, sample: r, negatives: negatives, itemCount: itemCount,
                                         random: random, stream: stream)
          }
          var maxLogit = -Float.infinity
          for c in 0...negatives {
            if c > 0 && ids[c] == positive { logits[c] = -.infinity; continue }
            logits[c] = VectorMath.dot(u, items + ids[c] * dim, dim) * invT
            maxLogit = max(maxLogit, logits[c])
          }
          let sum = VectorMath.expShifted(logits, negatives + 1, shift: maxLogit)
          lossSum += Double(-Foundation.log(logits[0] / sum))
          // d loss / d logit_c = softmax_c − [c = 0], scaled by 1/T and averaged over rows.
          let scale = invT * invRows
          if let dUser {
            let du = dUser + row * dim
            du.update(repeating: 0, count: dim)
            for c in 0...negatives where logits[c] > 0 || c == 0 {
              let g = (logits[c] / sum - (c == 0 ? 1 : 0)) * scale
              let e = items + ids[c] * dim
              for d in 0..<dim { du[d] += g * e[d] }
            }
          }
          if dItems != nil {
            let part = partials[chunk]
            for c in 0...negatives where logits[c] > 0 || c == 0 {
              let g = (logits[c] / sum - (c == 0 ? 1 : 0)) * scale
              let de = part + ids[c] * dim
              for d in 0..<dim { de[d] += g * u[d] }
            }
          }
        }
        lossBuffer[chunk] = lossSum
      }
    }
    if let dItems {
      Parallel.forChunks(tableSize, minimumPerWorker: 4096) { r in
        for p in partials { for i in r { dItems[i] += p[i] } }
      }
    }
    return Float(losses.reduce(0, +) / Double(rows))
  }
}
