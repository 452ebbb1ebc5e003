/// One layer of a `CUDAEncoder` stack (HSTU or SASRec), with its saved activations.
protocol CUDAEncoderLayer: AnyObject {
  /// `out = layer(x)` over the rows of `stage` (`x`, `out`: `[stage.rows, D]` fp32).
  func forward(_ x: DeviceArray<Float>, into out: DeviceArray<Float>, stage: CUDAEncoder.Stage, pass: CUDAPass) throws
  /// Back-propagates through the last forward of `pass`: `gradient` (fp32, `[stage.rows, D]`) holds
  /// d out on entry and d x on exit, `gradientBF16` its bf16 copy on entry and on exit; the
  /// parameter gradients are written. `x` is the forward's input.
  func backward(_ gradient: DeviceArray<Float>, gradientBF16: DeviceArray<BFloat16>, input x: DeviceArray<Float>,
                stage: CUDAEncoder.Stage, pass: CUDAPass) throws
}

/// What a forward or backward pass shares with the CPU's: training or not, and the counter
/// streams of its dropout masks.
struct CUDAPass {
  var training: Bool
  var seed: UInt64
  var step: UInt64

  /// The dropout mask of `site` in `layer` at `rate`; nil when off.
  func dropout(rate: Float, layer: Int, site: Int) -> DropoutMask? {
    guard training && rate > 0 else { return nil }
    return DropoutMask(rate: rate, seed: seed, stream: ForwardContext.dropoutStream(step: step, layer: layer, site: site))
  }
}
