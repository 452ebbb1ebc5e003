/// A TMA tensor map (CUtensorMap): how the tensor memory accelerator reads boxes of a 2-D global
/// array into shared memory. Passed to kernels by value (`KernelArgument.tensorMap`).
public struct TensorMap {
  /// The 128 opaque bytes cuTensorMapEncodeTiled writes.
  var words = [UInt64](repeating: 0, count: 16)

  // Values from cuda.h.
  static let dataTypeBFloat16: UInt32 = 9
  static let interleaveNone: UInt32 = 0
  static let swizzle128B: UInt32 = 3
  static let l2Promotion128B: UInt32 = 2
  static let outOfBoundsZero: UInt32 = 0
}

extension CUDADevice {
  /// A tensor map over `array` as a row-major `rows × columns` bf16 matrix, read in boxes of
  /// `boxRows × 64` columns (128 bytes: one 128-byte swizzle row) into the 128-byte swizzled layout
  /// wgmma descriptors describe. Rows past `rows` read as zeros.
  func bf16TensorMap(_ array: DeviceArray<BFloat16>, rows: Int, columns: Int, boxRows: Int) throws -> TensorMap {
    guard let encode = driver.cuTensorMapEncodeTiled else {
      throw CUDAError.unsupported("this CUDA driver has no cuTensorMapEncodeTiled (TMA)")
    }
    guard rows * columns <= array.count, columns % 64 == 0, (1...256).contains(boxRows) else {
      throw CUDAError.unsupported("tensor map of \(rows) × \(columns) over \(array.count) elements, box rows \(boxRows)")
    }
    var map = TensorMap()
    let dims: [UInt64] = [UInt64(columns), UInt64(rows)], strides: [UInt64] = [UInt64(columns * 2)]
    let box: [UInt32] = [64, UInt32(boxRows)], elementStrides: [UInt32] = [1, 1]
    let code = map.words.withUnsafeMutableBytes { raw in
      encode(raw.baseAddress!, TensorMap.dataTypeBFloat16, 2, UnsafeMutableRawPointer(bitPattern: UInt(array.address)), dims, strides,
             box, elementStrides, TensorMap.interleaveNone, TensorMap.swizzle128B, TensorMap.l2Promotion128B, TensorMap.outOfBoundsZero)
    }
    try driver.check(code, "cuTensorMapEncodeTiled(\(rows) × \(columns), box \(boxRows) × 64)")
    return map
  }
}
