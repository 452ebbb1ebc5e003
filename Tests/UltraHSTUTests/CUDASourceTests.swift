import Foundation
import Testing
@testable import UltraHSTU

/// Every CUDA C module the GPU path compiles with NVRTC, checked by clang's CUDA front end for
/// sm_90a (device side, `-fsyntax-only`): CI has no GPU and no NVRTC, but a kernel that does not
/// parse or type-check in any of its variants fails here. `Fixtures/cuda/nvrtc_builtins.h` declares
/// what NVRTC has built in and clang would take from a CUDA toolkit. The PTX inside `asm`
/// statements is not checked (ptxas does that when `hstu gpu-check` runs on a GPU machine).
struct CUDASourceTests {
  /// clang++ from PATH (Swift toolchains ship it).
  static let clang: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
    .map { "\($0)/clang++" }.first { FileManager.default.isExecutableFile(atPath: $0) }
  static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/cuda").path

  /// clang's diagnostics for `source` with `defines`, or nil when it parses and type-checks.
  static func diagnostics(_ source: String, defines: [String: Int], clang: String) throws -> String? {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("cuda-source-\(UUID().uuidString).cu")
    try source.write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: clang)
    process.arguments = ["-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_90a", "-nocudainc", "-nocudalib",
                         "-fsyntax-only", "-std=c++17", "-I", fixtures, "-include", "nvrtc_builtins.h"]
      + defines.sorted { $0.key < $1.key }.map { "-D\($0.key)=\($0.value)" } + [file.path]
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let output = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return process.terminationStatus == 0 ? nil : output
  }

  @Test(.enabled(if: clang != nil, "needs clang++ on PATH"))
  func everyKernelModuleTypeChecksForSm90a() throws {
    let modules = CUDAKernelCatalog.modules(attentionDims: [(128, 128), (64, 64), (32, 32)])
    #expect(modules.count > 20)
    for (name, source, defines) in modules {
      let errors = try Self.diagnostics(source, defines: defines, clang: Self.clang!)
      #expect(errors == nil, "\(name) \(defines): \(errors ?? "")")
    }
  }

  /// The check above can fail: a kernel that uses an undeclared name is reported.
  @Test(.enabled(if: clang != nil, "needs clang++ on PATH"))
  func aKernelWithAnUndeclaredNameFails() throws {
    let broken = LayerNormKernels.source + "\nextern \"C\" __global__ void broken(float* x) { x[threadIdx.x] = undeclared_value; }\n"
    let errors = try Self.diagnostics(broken, defines: [:], clang: Self.clang!)
    #expect(errors?.contains("undeclared_value") == true)
  }
}
