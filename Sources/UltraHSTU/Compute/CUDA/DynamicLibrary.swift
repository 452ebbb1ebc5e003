#if canImport(Glibc)
import Glibc
#endif

/// A shared library opened with dlopen, from which typed C function pointers are taken.
///
/// The CUDA backend links nothing at build time: the static `hstu` binary runs on machines with
/// no driver, and only a GPU command opens these libraries.
struct DynamicLibrary: @unchecked Sendable {
  let name: String
  let handle: UnsafeMutableRawPointer

  /// Opens the first of `candidates` that dlopen accepts.
  init(name: String, candidates: [String]) throws {
    var lastError = "no candidates"
    for path in candidates {
      if let h = dlopen(path, RTLD_NOW | RTLD_GLOBAL) {
        self.name = path
        self.handle = h
        return
      }
      if let e = dlerror() { lastError = String(cString: e) }
    }
    throw CUDAError.libraryNotFound(library: name, tried: candidates, dlerror: lastError)
  }

  /// The C function `symbol`, cast to the `@convention(c)` type `T`.
  func function<T>(_ symbol: String, as type: T.Type = T.self) throws -> T {
    guard let p = dlsym(handle, symbol) else { throw CUDAError.missingSymbol(library: name, symbol: symbol) }
    return unsafeBitCast(p, to: type)
  }
}

/// Candidate names of a CUDA toolkit library: the plain soname, versioned sonames, and the
/// toolkit's default folders (for when LD_LIBRARY_PATH is not set).
func toolkitLibraryCandidates(_ base: String, versions: [String] = ["13", "12"]) -> [String] {
  var names = ["\(base).so"] + versions.map { "\(base).so.\($0)" }
  for dir in ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"] {
    names += ["\(dir)/\(base).so"] + versions.map { "\(dir)/\(base).so.\($0)" }
  }
  return names
}
