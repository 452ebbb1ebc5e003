@testable import UltraHSTU

import Testing

/// The arena's bookkeeping (no GPU needed): aligned bump allocation, marks, and the error that
/// names the request, the fill level and the flag that sizes the arena.
@Suite struct DeviceArenaTests {
  @Test func allocatesAlignedAndReleasesToMarks() throws {
    var arena = DeviceArena(base: 0x10000, capacity: 4096)
    let a = try arena.allocate(Float.self, count: 3)
    #expect(a.address == 0x10000 && a.count == 3 && arena.used == 12)
    let mark = arena.mark()
    let b = try arena.allocate(BFloat16.self, count: 100)
    #expect(b.address == 0x10000 + CUdeviceptr(DeviceArena.alignment) && arena.used == DeviceArena.alignment + 200)
    arena.release(to: mark)
    #expect(arena.used == 12)
    #expect(try arena.allocate(UInt8.self, count: 1).address == b.address)
  }

  @Test func exhaustionNamesTheRequestAndTheFlag() throws {
    var arena = DeviceArena(base: 0, capacity: 1024)
    _ = try arena.allocate(Float.self, count: 200)
    #expect(throws: CUDAError.self) { try arena.allocate(Float.self, count: 100) }
    do {
      _ = try arena.allocate(Float.self, count: 100)
    } catch let error as CUDAError {
      #expect(error.description.contains("cannot allocate 400 bytes (800 of 1024 in use)"))
      #expect(error.description.contains("--gpu-memory"))
    }
    #expect(arena.used == 800)
  }
}
