/// Everything that can go wrong on the CUDA path, with a message a user can act on.
///
/// The CPU path never touches any of this: the CUDA libraries are only loaded when a GPU command
/// asks for them, and a missing driver or GPU surfaces here as a typed error, not a crash.
public enum CUDAError: Error, CustomStringConvertible {
  /// None of the candidate file names of a library could be loaded with dlopen.
  case libraryNotFound(library: String, tried: [String], dlerror: String)
  /// A library was loaded but lacks a function this package calls.
  case missingSymbol(library: String, symbol: String)
  /// The driver loaded, but reports no CUDA device.
  case noDevice
  /// A driver API call returned a non-zero CUresult.
  case driver(call: String, code: Int32, message: String)
  /// NVRTC failed; `log` holds the compiler's output.
  case nvrtc(call: String, code: Int32, log: String)
  /// A cuBLASLt call returned a non-zero cublasStatus_t.
  case cublas(call: String, code: Int32)
  /// The device memory arena cannot hold a request.
  case arenaExhausted(requested: Int, used: Int, capacity: Int)
  /// Arguments that no kernel of this package supports (shape, alignment, head dimension, ...).
  case unsupported(String)

  public var description: String {
    switch self {
    case let .libraryNotFound(library, tried, err):
      return "CUDA: could not load \(library) (tried \(tried.joined(separator: ", "))): \(err). "
        + "Is an NVIDIA driver installed, and is LD_LIBRARY_PATH set (e.g. /usr/local/cuda/lib64)?"
    case let .missingSymbol(library, symbol):
      return "CUDA: \(library) has no symbol \(symbol) (driver or toolkit too old?)"
    case .noDevice:
      return "CUDA: the driver loaded but found no GPU"
    case let .driver(call, code, message):
      return "CUDA: \(call) failed with CUresult \(code) (\(message))"
    case let .nvrtc(call, code, log):
      return "NVRTC: \(call) failed with code \(code)\n\(log)"
    case let .cublas(call, code):
      return "cuBLASLt: \(call) failed with status \(code)"
    case let .arenaExhausted(requested, used, capacity):
      return "CUDA arena: cannot allocate \(requested) bytes (\(used) of \(capacity) in use); the arena is sized when the device "
        + "is opened (hstu: --gpu-memory GiB)"
    case let .unsupported(what):
      return "CUDA: unsupported: \(what)"
    }
  }
}
