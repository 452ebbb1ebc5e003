@testable import UltraHSTU

import Testing

/// The CUlaunchConfig bytes that cuLaunchKernelEx reads, at cuda.h's 64-bit offsets.
@Suite struct ProgrammaticLaunchConfigTests {
  @Test func programmaticLaunchLayout() {
    let stream = OpaquePointer(bitPattern: 0x1234_5678_9ABC)
    ProgrammaticLaunchConfig.with(grid: (1, 2, 3), block: (4, 5, 6), sharedBytes: 7, stream: stream) { config in
      #expect((0..<7).map { config.load(fromByteOffset: 4 * $0, as: UInt32.self) } == [1, 2, 3, 4, 5, 6, 7])
      #expect(config.load(fromByteOffset: 32, as: OpaquePointer?.self) == stream)
      #expect(config.load(fromByteOffset: 48, as: UInt32.self) == 1)
      let attribute = config.load(fromByteOffset: 40, as: UnsafeRawPointer.self)
      #expect(attribute.load(as: UInt32.self) == 6)   // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
      #expect(attribute.load(fromByteOffset: 8, as: Int32.self) == 1)
      #expect((12..<72).allSatisfy { attribute.load(fromByteOffset: $0, as: UInt8.self) == 0 })
    }
  }
}
