import UltraHSTU

/// Random test inputs from a seeded counter generator.
func randomArray(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
  let r = CounterRandom(seed: seed)
  return (0..<n).map { scale * r.normal(stream: 7, counter: UInt64($0)) }
}

/// Central finite differences of `loss` with respect to every element of `x`, compared with
/// `analytic`; returns ‖numeric − analytic‖ / max(‖analytic‖, tiny).
func finiteDifferenceError(_ x: [Float], analytic: [Float], h: Float = 1e-2, loss: ([Float]) -> Double) -> Double {
  var x = x
  var diff = 0.0, norm = 0.0
  for i in x.indices {
    let saved = x[i]
    x[i] = saved + h; let up = loss(x)
    x[i] = saved - h; let down = loss(x)
    x[i] = saved
    let numeric = (up - down) / (2 * Double(h))
    diff += (numeric - Double(analytic[i])) * (numeric - Double(analytic[i]))
    norm += Double(analytic[i]) * Double(analytic[i])
  }
  return diff.squareRoot() / max(norm.squareRoot(), 1e-12)
}

/// `Σ w·y` in double precision: the scalar a gradient check differentiates.
func weightedSum(_ y: UnsafePointer<Float>, _ w: [Float]) -> Double {
  var s = 0.0
  for i in w.indices { s += Double(w[i]) * Double(y[i]) }
  return s
}
