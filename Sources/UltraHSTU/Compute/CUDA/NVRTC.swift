#if canImport(Glibc)
import Glibc
#endif

/// Run-time compilation of the package's CUDA C kernels with NVRTC, with an on-disk cubin cache.
///
/// The cache key is a 64-bit FNV-1a hash of the source, the options and the NVRTC version, so an
/// edited kernel or a new toolkit never reuses a stale cubin. The cache folder is
/// `$HSTU_CACHE_DIR`, else `~/.cache/ultrahstu`; a cache that cannot be written is skipped silently
/// (compilation still works, it is just repeated next time).
final class NVRTC: @unchecked Sendable {
  typealias Program = OpaquePointer?
  let library: DynamicLibrary
  let version: (major: Int32, minor: Int32)

  private let nvrtcCreateProgram: @convention(c) (
    UnsafeMutablePointer<Program>, UnsafePointer<CChar>, UnsafePointer<CChar>?, Int32,
    UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?
  ) -> Int32
  private let nvrtcCompileProgram: @convention(c) (Program, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
  private let nvrtcGetProgramLogSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Int32
  private let nvrtcGetProgramLog: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Int32
  private let nvrtcGetCUBINSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Int32
  private let nvrtcGetCUBIN: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Int32
  private let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program>) -> Int32
  private let nvrtcGetErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?

  private init() throws {
    let lib = try DynamicLibrary(name: "libnvrtc", candidates: toolkitLibraryCandidates("libnvrtc"))
    library = lib
    nvrtcCreateProgram = try lib.function("nvrtcCreateProgram")
    nvrtcCompileProgram = try lib.function("nvrtcCompileProgram")
    nvrtcGetProgramLogSize = try lib.function("nvrtcGetProgramLogSize")
    nvrtcGetProgramLog = try lib.function("nvrtcGetProgramLog")
    nvrtcGetCUBINSize = try lib.function("nvrtcGetCUBINSize")
    nvrtcGetCUBIN = try lib.function("nvrtcGetCUBIN")
    nvrtcDestroyProgram = try lib.function("nvrtcDestroyProgram")
    nvrtcGetErrorString = try lib.function("nvrtcGetErrorString")
    let getVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32 =
      try lib.function("nvrtcVersion")
    var major: Int32 = 0, minor: Int32 = 0
    _ = getVersion(&major, &minor)
    version = (major, minor)
  }

  private static let loaded: Result<NVRTC, Error> = Result { try NVRTC() }

  /// The process-wide NVRTC binding; loads libnvrtc on first use. Needs no GPU.
  static func shared() throws -> NVRTC { try loaded.get() }

  /// The result of one compilation: the cubin and the compiler log (resource usage when
  /// `--ptxas-options=-v` is among the options).
  struct Output {
    var cubin: [UInt8]
    var log: String
    var fromCache: Bool
  }

  /// Compiles `source` (named `name` in messages) to a cubin for `arch` (e.g. "sm_90a"), or reads it
  /// from the cache; `willCompile` runs when the cache does not have it, before compiling, with the
  /// cache folder the cubin will be written to (nil: none is writable).
  func compile(source: String, name: String, arch: String, options extra: [String] = [],
               willCompile: (_ cacheDirectory: String?) -> Void = { _ in }) throws -> Output {
    let options = ["--gpu-architecture=\(arch)", "--std=c++17", "-default-device"] + extra
    let key = Self.fnv1a(source + "\u{0}" + options.joined(separator: "\u{0}") + "\u{0}\(version.major).\(version.minor)")
    let cacheDirectory = Self.cacheDirectory()
    let cachePath = cacheDirectory.map { "\($0)/\(name)-\(String(key, radix: 16)).cubin" }
    if let path = cachePath, let cached = Self.readFile(path) {
      return Output(cubin: cached, log: "", fromCache: true)
    }
    willCompile(cacheDirectory)

    var program: Program = nil
    try check(nvrtcCreateProgram(&program, source, name + ".cu", 0, nil, nil), "nvrtcCreateProgram(\(name))")
    defer { _ = nvrtcDestroyProgram(&program) }
    let cOptions = options.map { UnsafePointer(strdup($0)) }
    defer { cOptions.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    let compileCode = cOptions.withUnsafeBufferPointer { nvrtcCompileProgram(program, Int32(options.count), $0.baseAddress) }

    var logSize = 0
    try check(nvrtcGetProgramLogSize(program, &logSize), "nvrtcGetProgramLogSize(\(name))")
    var logBytes = [CChar](repeating: 0, count: logSize + 1)
    try check(nvrtcGetProgramLog(program, &logBytes), "nvrtcGetProgramLog(\(name))")
    let log = String(cString: logBytes)
    guard compileCode == 0 else {
      throw CUDAError.nvrtc(call: "nvrtcCompileProgram(\(name)) [\(errorString(compileCode))]", code: compileCode, log: log)
    }

    var size = 0
    try check(nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize(\(name))")
    var cubin = [CChar](repeating: 0, count: size)
    try check(nvrtcGetCUBIN(program, &cubin), "nvrtcGetCUBIN(\(name))")
    let bytes = cubin.map { UInt8(bitPattern: $0) }
    if let path = cachePath { Self.writeFileAtomically(path, bytes) }
    return Output(cubin: bytes, log: log, fromCache: false)
  }

  private func errorString(_ code: Int32) -> String {
    nvrtcGetErrorString(code).map { String(cString: $0) } ?? "unknown"
  }

  private func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
    guard code != 0 else { return }
    throw CUDAError.nvrtc(call: call(), code: code, log: errorString(code))
  }

  // MARK: cache files

  static func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    return hash
  }

  /// `$HSTU_CACHE_DIR`, else `$HOME/.cache/ultrahstu`, created if missing; nil when unusable.
  static func cacheDirectory() -> String? {
    let dir: String
    if let env = getenv("HSTU_CACHE_DIR") {
      dir = String(cString: env)
    } else if let home = getenv("HOME") {
      dir = String(cString: home) + "/.cache/ultrahstu"
    } else {
      return nil
    }
    var prefix = dir.hasPrefix("/") ? "" : "."
    for part in dir.split(separator: "/") {
      prefix += "/" + part
      mkdir(prefix, 0o755)
    }
    return access(dir, W_OK) == 0 ? dir : nil
  }

  static func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let n = fread(&chunk, 1, chunk.count, f)
      if n <= 0 { break }
      bytes += chunk[0..<n]
    }
    return bytes.isEmpty ? nil : bytes
  }

  /// Writes to a temporary name and renames, so a concurrent reader never sees half a cubin.
  static func writeFileAtomically(_ path: String, _ bytes: [UInt8]) {
    let tmp = path + ".tmp\(getpid())"
    guard let f = fopen(tmp, "wb") else { return }
    let written = fwrite(bytes, 1, bytes.count, f)
    fclose(f)
    if written == bytes.count { rename(tmp, path) } else { unlink(tmp) }
  }
}
