/// The `CUlaunchConfig` that `cuLaunchKernelEx` takes, carrying one attribute: programmatic stream
/// serialization (programmatic dependent launch, sm_90+). It lets the kernel start while the
/// previous kernel on the stream is still finishing; the kernel then waits for it in
/// `grid_dependency_wait()` (CUDAPrelude) before touching global memory.
///
/// Written as raw bytes at cuda.h's offsets for 64-bit Linux, so that the layout does not depend
/// on how Swift would lay out an equivalent struct:
///
///     CUlaunchAttribute (72 bytes): id (uint32) at 0, 4 bytes padding, value (a 64-byte union) at 8;
///         for PROGRAMMATIC_STREAM_SERIALIZATION the value is an int at its offset 0.
///     CUlaunchConfig (56 bytes): gridDimX/Y/Z at 0/4/8, blockDimX/Y/Z at 12/16/20, sharedMemBytes
///         at 24, 4 bytes padding, hStream at 32, attrs at 40, numAttrs (uint32) at 48, 4 bytes padding.
enum ProgrammaticLaunchConfig {
  /// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION in cuda.h.
  static let attributeProgrammaticStreamSerialization: UInt32 = 6
  static let configBytes = 56
  static let attributeBytes = 72

  /// Calls `body` with a `const CUlaunchConfig*` describing this launch on `stream`, with
  /// programmatic stream serialization allowed. The pointer is valid only inside `body`.
  static func with<R>(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int, stream: OpaquePointer?,
                      _ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
    try withUnsafeTemporaryAllocation(byteCount: configBytes + attributeBytes, alignment: 8) { buffer in
      let config = buffer.baseAddress!
      config.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
      let attribute = config + configBytes
      attribute.storeBytes(of: attributeProgrammaticStreamSerialization, as: UInt32.self)
      attribute.storeBytes(of: 1, toByteOffset: 8, as: Int32.self)

      func word(_ value: Int, at offset: Int) { config.storeBytes(of: UInt32(value), toByteOffset: offset, as: UInt32.self) }
      word(grid.0, at: 0); word(grid.1, at: 4); word(grid.2, at: 8)
      word(block.0, at: 12); word(block.1, at: 16); word(block.2, at: 20)
      word(sharedBytes, at: 24)
      config.storeBytes(of: stream, toByteOffset: 32, as: OpaquePointer?.self)
      config.storeBytes(of: attribute, toByteOffset: 40, as: UnsafeMutableRawPointer.self)
      config.storeBytes(of: 1, toByteOffset: 48, as: UInt32.self)
      return try body(config)
    }
  }
}
