import Foundation

extension CPUOps {
  /// One AdamW step (decoupled weight decay, bias-corrected moments) over a flat parameter array.
  /// `step` is 1-based.
  public static func adamW(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
                           m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int,
                           learningRate: Float, beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float, step: Int) {
    let c1 = 1 / (1 - Float(Foundation.pow(Double(beta1), Double(step))))
    let c2 = 1 / (1 - Float(Foundation.pow(Double(beta2), Double(step))))
    Parallel.forChunks(count, minimumPerWorker: 1 << 14) { r in
      for i in r {
        let g = gradients[i]
        let mi = beta1 * m[i] + (1 - beta1) * g
        let vi = beta2 * v[i] + (1 - beta2) * g * g
        m[i] = mi; v[i] = vi
        parameters[i] -= learningRate * ((mi * c1) / ((vi * c2).squareRoot() + epsilon) + weightDecay * parameters[i])
      }
    }
  }
}
