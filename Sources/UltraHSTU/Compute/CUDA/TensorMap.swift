/// A TMA tensor map (CUtensorMap): how the tensor memory accelerator reads boxes of a 2-D global
/// array into shared memory. Passed to kernels by value (`KernelArgument.tensorMap`).
public struct TensorMap {
  /// The 128 opaque bytes cuTensorMapEncodeTiled writes.
  var words = [UInt64](repeating: 0, count: 16)

  // Values from cuda.h.
  static let interleaveNone: UInt32 = 0
  static let swizzle128B: UInt32 = 3
  static let l2Promotion128B: UInt32 = 2
  static let outOfBoundsZero: UInt32 = 0
}

/// The element types a `TensorMap` describes.
protocol TensorMapElement {
  /// The CUtensorMapDataType value (cuda.h).
  static var tensorMapDataType: UInt32 { get }
}
extension BFloat16: TensorMapElement { static let tensorMapDataType: UInt32 = 9 }
extension Float: TensorMapElement { static let tensorMapDataType: UInt32 = 7 }

extension CUDADevice {
  /// A tensor map over `array` as a row-major `rows × columns` matrix, in boxes of `boxRows` rows ×
  /// 128 bytes of columns (64 bf16 or 32 fp32: one 128-byte swizzle row) in the 128-byte swizzled
  /// layout wgmma descriptors describe; TMA loads (bf16 operands) and reductions (fp32 dQ) use it.
  /// Rows past `rows` read as zeros and take no writes.
  func tensorMap<Element: TensorMapElement>(_ array: DeviceArray<Element>, rows: Int, columns: Int, boxRows: Int) throws -> TensorMap {
    guard let encode = driver.cuTensorMapEncodeTiled else {
      throw CUDAError.unsupported("this CUDA driver has no cuTensorMapEncodeTiled (TMA)")
    }
    let size = MemoryLayout<Element>.stride, boxColumns = 128 / size
    guard rows * columns <= array.count, columns % boxColumns == 0, (1...256).contains(boxRows) else {
      throw CUDAError.unsupported("tensor map of \(rows) × \(columns) over \(array.count) elements, box rows \(boxRows)")
    }
    var map = TensorMap()
    let dims: [UInt64] = [UInt64(columns), UInt64(rows)], strides: [UInt64] = [UInt64(columns * size)]
    let box: [UInt32] = [UInt32(boxColumns), UInt32(boxRows)], elementStrides: [UInt32] = [1, 1]
    let code = map.words.withUnsafeMutableBytes { raw in
      encode(raw.baseAddress!, Element.tensorMapDataType, 2, UnsafeMutableRawPointer(bitPattern: UInt(array.address)), dims, strides,
             box, elementStrides, TensorMap.interleaveNone, TensorMap.swizzle128B, TensorMap.l2Promotion128B, TensorMap.outOfBoundsZero)
    }
    try driver.check(code, "cuTensorMapEncodeTiled(\(rows) × \(columns), box \(boxRows) × \(boxColumns))")
    return map
  }
}
