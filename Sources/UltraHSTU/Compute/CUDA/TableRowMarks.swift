/// The rows of a parameter table (the item embeddings) that the current step's inputs read, and so
/// the only rows its embedding backward scatters gradients into, marked with a per-step stamp. With
/// them a training step splits AdamW over the table: the unmarked rows as soon as the loss has
/// written their gradient (on the side stream, alongside the encoder backward), the marked rows
/// after the scatter (`CUDAParameters.adamWStepBegin` / `adamWStepFinish`).
final class TableRowMarks {
  let device: CUDADevice
  /// One stamp per table row, zeroed by the first `mark` (and whenever the counter wraps); 0 never
  /// matches a step.
  let stamps: DeviceArray<UInt32>
  let dim: Int
  /// The current step's stamp (0 before the first `mark`).
  private(set) var stamp: UInt32 = 0

  init(rows: Int, dim: Int, device: CUDADevice) throws {
    self.device = device
    self.dim = dim
    stamps = try device.allocate(UInt32.self, count: rows)
  }

  /// Starts a new step's marks: the rows named by every list in `ids`.
  func mark(_ ids: [DeviceArray<Int32>]) throws {
    stamp = stamp == UInt32.max ? 1 : stamp + 1
    if stamp == 1 { try device.fill(stamps) }   // the first step, or a wrapped counter that must not meet old stamps
    for list in ids { try device.markRows(ids: list, stamps: stamps, stamp: stamp) }
  }

  /// The marked rows (`touched`) or the others, as one AdamW launch selects them.
  func selection(touched: Bool) -> AdamWRows { AdamWRows(stamps: stamps, stamp: stamp, dim: dim, touched: touched) }
}
