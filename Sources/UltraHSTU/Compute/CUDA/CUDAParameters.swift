/// A `ParameterStore` on one GPU: the fp32 master weights, their gradients and AdamW moments in
/// the store's flat layout (same entries, same offsets), plus `valuesBF16`, the bf16 copy of the
/// weights that the tensor-core GEMMs read and AdamW rewrites in the same pass.
public final class CUDAParameters {
  public let device: CUDADevice
  /// The layout, identical to the host store's `entries`.
  public let entries: [ParameterEntry]
  public let values: DeviceArray<Float>, gradients: DeviceArray<Float>, firstMoment: DeviceArray<Float>, secondMoment: DeviceArray<Float>
  public let valuesBF16: DeviceArray<BFloat16>
  /// AdamW steps taken.
  public var step = 0

  /// Allocates the device copy of `store` and uploads its weights, moments and step.
  public init(_ store: ParameterStore, device: CUDADevice) throws {
    self.device = device
    entries = store.entries
    let n = store.count
    values = try device.allocate(Float.self, count: n)
    gradients = try device.allocate(Float.self, count: n)
    firstMoment = try device.allocate(Float.self, count: n)
    secondMoment = try device.allocate(Float.self, count: n)
    valuesBF16 = try device.allocate(BFloat16.self, count: n)
    try load(from: store)
  }

  /// Copies the weights, AdamW moments and step of `store` (same layout) to the device and
  /// rounds the weights into `valuesBF16`.
  public func load(from store: ParameterStore) throws {
    for (host, array) in [(store.values, values), (store.firstMoment, firstMoment), (store.secondMoment, secondMoment)] {
      try device.upload(Array(UnsafeBufferPointer(start: host.pointer, count: array.count)), to: array)
    }
    try device.castToBFloat16(values, into: valuesBF16)
    step = store.step
  }

  /// Copies the device weights, AdamW moments and step back into `store`.
  public func save(to store: ParameterStore) throws {
    for (host, array) in [(store.values, values), (store.firstMoment, firstMoment), (store.secondMoment, secondMoment)] {
      let v = try device.download(array)
      v.withUnsafeBufferPointer { host.pointer.update(from: $0.baseAddress!, count: v.count) }
    }
    store.step = step
  }

  /// One AdamW step over every parameter with the current gradients.
  public func adamWStep(_ train: TrainConfig) throws {
    step += 1
    try adamW(train, 0..<values.count)
  }

  /// The first half of an AdamW step split around the backward: counts the step and updates the
  /// rows of `table` that `marks` did not mark, whose gradients are final once the loss has written
  /// them. `adamWStepFinish` updates the rest.
  func adamWStepBegin(_ train: TrainConfig, table: ParameterEntry, marks: TableRowMarks) throws {
    step += 1
    try adamW(train, table.offset..<(table.offset + table.count), rows: marks.selection(touched: false))
  }

  /// The second half: every parameter outside `table`, and the rows of `table` that `marks` marked.
  func adamWStepFinish(_ train: TrainConfig, table: ParameterEntry, marks: TableRowMarks) throws {
    for range in ranges(outside: table) { try adamW(train, range) }
    try adamW(train, table.offset..<(table.offset + table.count), rows: marks.selection(touched: true))
  }

  /// The non-empty index ranges of the layout before and after `entry`.
  func ranges(outside entry: ParameterEntry) -> [Range<Int>] {
    [0..<entry.offset, (entry.offset + entry.count)..<values.count].filter { !$0.isEmpty }
  }

  /// AdamW at the current step over the values in `range` (only `rows` of them, if given).
  private func adamW(_ train: TrainConfig, _ range: Range<Int>, rows: AdamWRows? = nil) throws {
    let count = range.count, start = range.lowerBound
    try device.adamW(parameters: values.prefix(count, from: start), gradients: gradients.prefix(count, from: start),
                     m: firstMoment.prefix(count, from: start), v: secondMoment.prefix(count, from: start),
                     shadow: valuesBF16.prefix(count, from: start), rows: rows, lr: train.learningRate, beta1: train.beta1,
                     beta2: train.beta2, eps: train.epsilon, weightDecay: train.weightDecay, step: step)
  }
}

extension DeviceArray {
  /// The elements of a parameter `entry` in an array laid out like its store.
  func slice(_ entry: ParameterEntry) -> DeviceArray {
    DeviceArray(address: address + CUdeviceptr(entry.offset * MemoryLayout<Element>.stride), count: entry.count)
  }
  /// `count` elements from element `start`.
  func prefix(_ count: Int, from start: Int = 0) -> DeviceArray {
    DeviceArray(address: address + CUdeviceptr(start * MemoryLayout<Element>.stride), count: count)
  }
}
