/// Matrix products through cuBLASLt (libcublasLt, loaded with dlopen), row-major, with the
/// epilogues this model needs: `D = A·B (+ bias) (+ C)`.
///
/// Row-major `D[m,n] = A[m,k]·B[k,n]` is issued as the column-major product `Dᵀ = Bᵀ·Aᵀ`, so the
/// buffers are passed unchanged and a bias of length `n` (one per output feature) is cuBLASLt's
/// per-row bias of `Dᵀ`. The residual is cuBLASLt's `C` with beta = 1 (C may alias D).
final class CuBLASLt: @unchecked Sendable {
  typealias Handle = OpaquePointer?
  let library: DynamicLibrary
  private(set) var handle: Handle = nil

  private let cublasLtCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Int32
  private let cublasLtMatmulDescCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, Int32) -> Int32
  private let cublasLtMatmulDescDestroy: @convention(c) (Handle) -> Int32
  private let cublasLtMatmulDescSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
  private let cublasLtMatrixLayoutCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, UInt64, UInt64, Int64) -> Int32
  private let cublasLtMatrixLayoutDestroy: @convention(c) (Handle) -> Int32
  private let cublasLtMatmulPreferenceCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Int32
  private let cublasLtMatmulPreferenceDestroy: @convention(c) (Handle) -> Int32
  private let cublasLtMatmulPreferenceSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
  private let cublasLtMatmulAlgoGetHeuristic: @convention(c) (
    Handle, Handle, Handle, Handle, Handle, Handle, Handle, Int32, UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>
  ) -> Int32
  private let cublasLtMatmulAlgoCheck: @convention(c) (
    Handle, Handle, Handle, Handle, Handle, Handle, UnsafeRawPointer, UnsafeMutableRawPointer
  ) -> Int32
  private let cublasLtMatmul: @convention(c) (
    Handle, Handle, UnsafeRawPointer, CUdeviceptr, Handle, CUdeviceptr, Handle, UnsafeRawPointer,
    CUdeviceptr, Handle, CUdeviceptr, Handle, UnsafeRawPointer?, CUdeviceptr, Int, Handle
  ) -> Int32

  // Values from library_types.h and cublasLt.h.
  enum DataType: Int32 { case f32 = 0, bf16 = 14 }
  private static let computeF32: Int32 = 68
  private static let descTransA: Int32 = 3, descTransB: Int32 = 4, descEpilogue: Int32 = 7
  private static let descBiasPointer: Int32 = 8, descBiasDataType: Int32 = 26
  private static let epilogueDefault: UInt32 = 1, epilogueBias: UInt32 = 4
  private static let prefMaxWorkspace: Int32 = 1
  /// CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES (uint32; cuBLASLt assumes 256 when unset).
  private static let prefMinAlignment: [Int32] = [5, 6, 7, 8]
  /// sizeof(cublasLtMatmulHeuristicResult_t): a 64-byte algo, size_t, int, float, int[4].
  private static let heuristicResultSize = 96
  /// The byte offsets of its workspace size (size_t) and state (cublasStatus_t).
  private static let heuristicWorkspaceOffset = 64, heuristicStateOffset = 72
  /// How many of the heuristic's algorithms a tuned shape times.
  static let tuningCandidates = 8
  /// Products of fewer multiply-adds are not tuned: they take microseconds, launches dominate them.
  static let tuningMinimumMultiplyAdds = 1 << 30

  /// A product's shape, types, epilogue and alignments, and whether it is tuned (a device may
  /// switch tuning off and on: the heuristic's choice and the tuned one are cached apart).
  private struct Key: Hashable {
    var m, n, k: Int; var transA, transB: Bool; var a, b, d: Int32; var bias, residual: Bool; var alignments: [UInt32]; var tuned: Bool
  }

  /// The largest power of two (at most 256) that divides `address`: parameter slices of the bf16
  /// weight copy start anywhere, so the heuristic must only offer kernels that accept them.
  private static func alignment(_ address: CUdeviceptr) -> UInt32 {
    address == 0 ? 256 : UInt32(min(256, 1 << address.trailingZeroBitCount))
  }
  private var algorithms: [Key: [UInt8]] = [:]
  /// The algorithm timed fastest for each shape class: the key with m, n and k rounded up to
  /// powers of two (`tuningClass`), so that the token counts of jagged batches, which vary from
  /// step to step (m of the data products, k of the weight gradients), reuse one tuning.
  private var tuned: [Key: [UInt8]] = [:]

  /// Picks one of a new shape class's candidate algorithms: `run(i)` enqueues the product with
  /// candidate i (the heuristic's order, 0 its first choice); the result is the index to keep.
  typealias AlgorithmChooser = (_ candidates: Int, _ run: (Int) throws -> Void) throws -> Int

  private static func tuningClass(_ key: Key) -> Key {
    func ceilingPowerOfTwo(_ x: Int) -> Int { 1 << (Int.bitWidth - (max(x, 1) - 1).leadingZeroBitCount) }
    var k = key
    k.m = ceilingPowerOfTwo(key.m); k.n = ceilingPowerOfTwo(key.n); k.k = ceilingPowerOfTwo(key.k)
    return k
  }

  init() throws {
    let lib = try DynamicLibrary(name: "libcublasLt", candidates: toolkitLibraryCandidates("libcublasLt"))
    library = lib
    cublasLtCreate = try lib.function("cublasLtCreate")
    cublasLtMatmulDescCreate = try lib.function("cublasLtMatmulDescCreate")
    cublasLtMatmulDescDestroy = try lib.function("cublasLtMatmulDescDestroy")
    cublasLtMatmulDescSetAttribute = try lib.function("cublasLtMatmulDescSetAttribute")
    cublasLtMatrixLayoutCreate = try lib.function("cublasLtMatrixLayoutCreate")
    cublasLtMatrixLayoutDestroy = try lib.function("cublasLtMatrixLayoutDestroy")
    cublasLtMatmulPreferenceCreate = try lib.function("cublasLtMatmulPreferenceCreate")
    cublasLtMatmulPreferenceDestroy = try lib.function("cublasLtMatmulPreferenceDestroy")
    cublasLtMatmulPreferenceSetAttribute = try lib.function("cublasLtMatmulPreferenceSetAttribute")
    cublasLtMatmulAlgoGetHeuristic = try lib.function("cublasLtMatmulAlgoGetHeuristic")
    cublasLtMatmulAlgoCheck = try lib.function("cublasLtMatmulAlgoCheck")
    cublasLtMatmul = try lib.function("cublasLtMatmul")
    try check(cublasLtCreate(&handle), "cublasLtCreate")
  }

  private func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
    if code != 0 { throw CUDAError.cublas(call: call(), code: code) }
  }

  /// Row-major `D[m,n] = op(A)·op(B) (+ bias[n]) (+ C)`, fp32 accumulation.
  ///
  /// `transA` means A is stored `[k,m]`; `transB` means B is stored `[n,k]`. `residual` is added
  /// with beta = 1 and may be the same buffer as `d`. The workspace comes from the caller's arena.
  ///
  /// The algorithm is cuBLASLt's first heuristic choice, unless `choose` is given: then the first
  /// product of each shape class (m, n, k rounded up to powers of two) runs each of the
  /// heuristic's first `tuningCandidates` algorithms through `choose` (e.g. timing them) and the
  /// class keeps the one chosen, for every shape in it that the algorithm supports
  /// (`cublasLtMatmulAlgoCheck`). Small products (`tuningMinimumMultiplyAdds`) and those whose
  /// residual is their output (rerunning them would add twice) are never tuned.
  func matmul(
    m: Int, n: Int, k: Int,
    a: CUdeviceptr, transA: Bool = false, aType: DataType,
    b: CUdeviceptr, transB: Bool = false, bType: DataType,
    d: CUdeviceptr, dType: DataType,
    bias: CUdeviceptr? = nil, residual: CUdeviceptr? = nil,
    workspace: CUdeviceptr, workspaceSize: Int, stream: OpaquePointer?, choose: AlgorithmChooser? = nil
  ) throws {
    var desc: Handle = nil
    try check(cublasLtMatmulDescCreate(&desc, Self.computeF32, DataType.f32.rawValue), "cublasLtMatmulDescCreate")
    defer { _ = cublasLtMatmulDescDestroy(desc) }
    // Column-major view: Dᵀ[n,m] = op(B)ᵀ[n,k] · op(A)ᵀ[k,m]; the first operand is B's buffer.
    var opFirst: Int32 = transB ? 1 : 0, opSecond: Int32 = transA ? 1 : 0
    try check(cublasLtMatmulDescSetAttribute(desc, Self.descTransA, &opFirst, 4), "set TRANSA")
    try check(cublasLtMatmulDescSetAttribute(desc, Self.descTransB, &opSecond, 4), "set TRANSB")
    var epilogue = bias == nil ? Self.epilogueDefault : Self.epilogueBias
    try check(cublasLtMatmulDescSetAttribute(desc, Self.descEpilogue, &epilogue, 4), "set EPILOGUE")
    if var biasPointer = bias {
      try check(cublasLtMatmulDescSetAttribute(desc, Self.descBiasPointer, &biasPointer, 8), "set BIAS_POINTER")
      var biasType = DataType.f32.rawValue
      try check(cublasLtMatmulDescSetAttribute(desc, Self.descBiasDataType, &biasType, 4), "set BIAS_DATA_TYPE")
    }

    var layoutFirst: Handle = nil, layoutSecond: Handle = nil, layoutD: Handle = nil
    // B stored row-major [k,n] is column-major [n,k] with ld n; transposed ([n,k] row-major) it is [k,n] with ld k.
    try check(cublasLtMatrixLayoutCreate(&layoutFirst, bType.rawValue, UInt64(transB ? k : n), UInt64(transB ? n : k), Int64(transB ? k : n)), "layout B")
    defer { _ = cublasLtMatrixLayoutDestroy(layoutFirst) }
    try check(cublasLtMatrixLayoutCreate(&layoutSecond, aType.rawValue, UInt64(transA ? m : k), UInt64(transA ? k : m), Int64(transA ? m : k)), "layout A")
    defer { _ = cublasLtMatrixLayoutDestroy(layoutSecond) }
    try check(cublasLtMatrixLayoutCreate(&layoutD, dType.rawValue, UInt64(n), UInt64(m), Int64(n)), "layout D")
    defer { _ = cublasLtMatrixLayoutDestroy(layoutD) }

    // In cuBLASLt's (column-major) terms A is our B, B is our A, C the residual (or D).
    let alignments = [b, a, residual ?? d, d].map(Self.alignment)
    let tuning = choose != nil && residual != d && m * n * k >= Self.tuningMinimumMultiplyAdds
    let key = Key(m: m, n: n, k: k, transA: transA, transB: transB, a: aType.rawValue, b: bType.rawValue, d: dType.rawValue,
                  bias: bias != nil, residual: residual != nil, alignments: alignments, tuned: tuning)
    var alpha: Float = 1, beta: Float = residual == nil ? 0 : 1
    func run(_ algorithm: [UInt8]) throws {
      try check(algorithm.withUnsafeBytes { algo in
        cublasLtMatmul(handle, desc, &alpha, b, layoutFirst, a, layoutSecond, &beta, residual ?? d, layoutD, d, layoutD,
                       algo.baseAddress, workspace, workspaceSize, stream)
      }, "cublasLtMatmul(m=\(m) n=\(n) k=\(k))")
    }
    if let cached = algorithms[key] { return try run(cached) }
    // A tuned class's algorithm serves each new shape of the class it supports, with no heuristic
    // query (jagged batches bring a new m nearly every step).
    let shapeClass = Self.tuningClass(key)
    if tuning, let kept = tuned[shapeClass], supports(kept, desc, layoutFirst, layoutSecond, layoutD, workspaceSize: workspaceSize) {
      algorithms[key] = kept
      return try run(kept)
    }

    // The heuristic's candidates for this exact shape, those that ran its checks and fit the workspace.
    var preference: Handle = nil
    try check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
    defer { _ = cublasLtMatmulPreferenceDestroy(preference) }
    var limit = UInt64(workspaceSize)
    try check(cublasLtMatmulPreferenceSetAttribute(preference, Self.prefMaxWorkspace, &limit, 8), "set MAX_WORKSPACE_BYTES")
    for (attribute, bytes) in zip(Self.prefMinAlignment, alignments) {
      var value = bytes
      try check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, 4), "set MIN_ALIGNMENT")
    }
    let tunesNow = tuning && tuned[shapeClass] == nil
    let requested = tunesNow ? Self.tuningCandidates : 1
    var results = [UInt8](repeating: 0, count: requested * Self.heuristicResultSize)
    var found: Int32 = 0
    try check(results.withUnsafeMutableBytes {
      cublasLtMatmulAlgoGetHeuristic(handle, desc, layoutFirst, layoutSecond, layoutD, layoutD, preference, Int32(requested),
                                     $0.baseAddress!, &found)
    }, "cublasLtMatmulAlgoGetHeuristic(m=\(m) n=\(n) k=\(k))")
    let candidates = (0..<Int(found)).compactMap { i -> [UInt8]? in
      let result = results[(i * Self.heuristicResultSize)..<((i + 1) * Self.heuristicResultSize)]
      let state = result.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: Self.heuristicStateOffset, as: Int32.self) }
      return state == 0 ? Array(result.prefix(64)) : nil
    }
    guard let first = candidates.first else { throw CUDAError.unsupported("cuBLASLt found no algorithm for m=\(m) n=\(n) k=\(k)") }

    var algorithm = first
    if tunesNow, let choose {
      if candidates.count > 1 { algorithm = candidates[try choose(candidates.count) { try run(candidates[$0]) }] }
      tuned[shapeClass] = algorithm
    }
    algorithms[key] = algorithm
    try run(algorithm)
  }

  /// Whether `algorithm` (kept for another shape of the class) runs this product within the workspace.
  private func supports(_ algorithm: [UInt8], _ desc: Handle, _ layoutFirst: Handle, _ layoutSecond: Handle, _ layoutD: Handle,
                        workspaceSize: Int) -> Bool {
    var result = [UInt8](repeating: 0, count: Self.heuristicResultSize)
    let status = algorithm.withUnsafeBytes { algo in
      result.withUnsafeMutableBytes {
        cublasLtMatmulAlgoCheck(handle, desc, layoutFirst, layoutSecond, layoutD, layoutD, algo.baseAddress!, $0.baseAddress!)
      }
    }
    let needed = result.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: Self.heuristicWorkspaceOffset, as: Int.self) }
    return status == 0 && needed <= workspaceSize
  }
}
