#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors raised while loading the CPU BLAS library.
public enum BLASError: Error, CustomStringConvertible {
  case libraryNotFound(tried: [String])
  case symbolMissing(String)

  public var description: String {
    switch self {
    case .libraryNotFound(let tried):
      return "OpenBLAS not found (tried \(tried.joined(separator: ", "))); install it with `apt-get install -y libopenblas-dev`"
    case .symbolMissing(let name): return "OpenBLAS library lacks symbol \(name)"
    }
  }
}

/// Single-precision GEMM through OpenBLAS, loaded with `dlopen` at run time.
///
/// Debian's OpenBLAS does not recognise recent AVX-512 processors and falls back to slow generic
/// kernels. OpenBLAS reads `OPENBLAS_CORETYPE` when it is loaded, so this type picks the core from
/// the processor's features *before* loading the library (unless the user already set the variable).
public final class BLAS: @unchecked Sendable {
  typealias SgemmFn = @convention(c) (Int32, Int32, Int32, Int32, Int32, Int32, Float,
                                      UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32,
                                      Float, UnsafeMutablePointer<Float>?, Int32) -> Void
  typealias SetThreadsFn = @convention(c) (Int32) -> Void
  typealias GetNameFn = @convention(c) () -> UnsafePointer<CChar>?

  private let sgemmFn: SgemmFn
  private let setThreadsFn: SetThreadsFn?
  /// The kernel family OpenBLAS runs with (e.g. `SkylakeX`).
  public let coreName: String
  /// The library file that was loaded.
  public let libraryPath: String

  /// The process-wide instance, loaded on first use. Commands call `check()` before any CPU work,
  /// so a missing library is a thrown `BLASError` with a message, not a crash here.
  public static var shared: BLAS {
    switch loading {
    case .success(let blas): return blas
    case .failure(let error): fatalError("\(error)")
    }
  }
  private static let loading = Result { try BLAS() }

  /// Loads the library (once) and throws `BLASError` if it cannot be used.
  public static func check() throws { _ = try loading.get() }

  /// Candidate library names, most specific first.
  static let candidates = ["libopenblas.so.0", "libopenblas.so", "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
                           "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "libopenblas.dylib"]

  init() throws {
    if getenv("OPENBLAS_CORETYPE") == nil, let core = BLAS.preferredCoreType() {
      setenv("OPENBLAS_CORETYPE", core, 1)
    }
    var handle: UnsafeMutableRawPointer?
    var loaded = ""
    for name in BLAS.candidates {
      if let h = dlopen(name, RTLD_NOW | RTLD_LOCAL) { handle = h; loaded = name; break }
    }
    guard let handle else { throw BLASError.libraryNotFound(tried: BLAS.candidates) }
    guard let sg = dlsym(handle, "cblas_sgemm") else { throw BLASError.symbolMissing("cblas_sgemm") }
    sgemmFn = unsafeBitCast(sg, to: SgemmFn.self)
    setThreadsFn = dlsym(handle, "openblas_set_num_threads").map { unsafeBitCast($0, to: SetThreadsFn.self) }
    if let g = dlsym(handle, "openblas_get_corename"), let name = unsafeBitCast(g, to: GetNameFn.self)() {
      coreName = String(cString: name)
    } else {
      coreName = "unknown"
    }
    libraryPath = loaded
  }

  /// The OpenBLAS core matching this processor's vector extensions, read from /proc/cpuinfo.
  static func preferredCoreType() -> String? {
    guard let file = fopen("/proc/cpuinfo", "r") else { return nil }
    defer { fclose(file) }
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    while getline(&line, &capacity, file) > 0 {
      guard let line else { break }
      let text = String(cString: line)
      guard text.hasPrefix("flags") else { continue }
      let flags = Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init))
      free(line)
      if flags.contains("avx512f") && flags.contains("avx512bw") && flags.contains("avx512vl") { return "SkylakeX" }
      if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
      return nil
    }
    free(line)
    return nil
  }

  /// Sets the number of threads OpenBLAS uses inside one call.
  public func setThreads(_ n: Int) { setThreadsFn?(Int32(n)) }

  /// Row-major `C = alpha * op(A) * op(B) + beta * C` where op(A) is m×k and op(B) is k×n.
  @inline(__always)
  public func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                    b: UnsafePointer<Float>, ldb: Int,
                    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
    sgemmFn(101, transA ? 112 : 111, transB ? 112 : 111, Int32(m), Int32(n), Int32(k), alpha,
            a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }
}
