@testable import UltraHSTU

import Testing

/// The chunk width of the sampled-softmax kernels (no GPU needed): the widest of 8, 4, 2, 1 columns
/// that divides the dim and whose accesses every array allows (bf16 arrays at 2 bytes a column, fp32
/// arrays at 4 bytes a column up to one 16-byte access).
@Suite struct LossVectorWidthTests {
  @Test func widestChunkTheDimAndTheAddressesAllow() {
    let aligned: CUdeviceptr = 0x1_0000
    #expect(CUDADevice.lossVectorWidth(dim: 512, floats: [aligned], bf16s: [aligned]) == 8)
    #expect(CUDADevice.lossVectorWidth(dim: 64, floats: [aligned, aligned + 16], bf16s: [aligned + 16]) == 8)
    #expect(CUDADevice.lossVectorWidth(dim: 100, floats: [aligned], bf16s: [aligned]) == 4)
    #expect(CUDADevice.lossVectorWidth(dim: 50, floats: [aligned], bf16s: [aligned]) == 2)
    #expect(CUDADevice.lossVectorWidth(dim: 51, floats: [aligned], bf16s: [aligned]) == 1)
  }

  @Test func misalignedArraysNarrowTheChunk() {
    let aligned: CUdeviceptr = 0x1_0000
    // A bf16 table at an 8-byte boundary allows 4 columns; at 4 bytes, 2; at 2 bytes, 1.
    #expect(CUDADevice.lossVectorWidth(dim: 512, floats: [aligned], bf16s: [aligned + 8]) == 4)
    #expect(CUDADevice.lossVectorWidth(dim: 512, floats: [aligned], bf16s: [aligned + 4]) == 2)
    #expect(CUDADevice.lossVectorWidth(dim: 512, floats: [aligned], bf16s: [aligned + 2]) == 1)
    // fp32 arrays: 8 columns need 16-byte alignment (two 16-byte accesses), 2 columns 8 bytes.
    #expect(CUDADevice.lossVectorWidth(dim: 512, floats: [aligned + 8], bf16s: [aligned]) == 2)
    #expect(CUDADevice.lossVectorWidth(dim: 512, floats: [aligned + 4], bf16s: [aligned]) == 1)
  }
}
