#if canImport(Glibc)
import Glibc
#endif

/// One GPU: its context, a main stream and a side stream (`fork`), the device-memory arena, the
/// compiled kernel modules and the cuBLASLt handle. All launches of this package go through here.
///
/// Creating a `CUDADevice` is the only thing that loads libcuda; it throws `CUDAError` (never
/// traps) when there is no driver or no GPU.
public final class CUDADevice {
  public let ordinal: Int32
  public let name: String
  public let computeCapability: (major: Int32, minor: Int32)
  public let multiprocessors: Int32
  public let maxSharedMemoryPerBlock: Int32
  /// The NVRTC target: `sm_90a` on Hopper (wgmma and TMA available), else the plain `sm_XY`.
  public let architecture: String
  public var arena: DeviceArena
  /// The HSTU attention forward that `hstuAttentionForward` runs unless told otherwise (benchmarks
  /// set `.mmaSync` to compare kernels on the same model).
  public var attentionForwardKernel: AttentionKernel = .automatic
  /// The attention backward that `hstuAttentionBackward` and `softmaxAttentionBackward` run unless told otherwise.
  public var attentionBackwardKernel: AttentionKernel = .automatic
  /// Told, just before NVRTC starts, of each kernel module that is not in the cubin cache (a first
  /// run compiles for seconds to tens of seconds per module, then loads the cached cubins).
  public var compileLog: ((String) -> Void)?
  /// Time cuBLASLt's candidate algorithms on the first product of each shape class and keep the
  /// fastest (`CuBLASLt.matmul`), rather than take its heuristic's first choice. On by default.
  public var tunesGEMMs = true
  /// Told of each GEMM shape class tuned: the shape, the candidate kept and its time against the
  /// heuristic's first choice.
  public var tuningLog: ((String) -> Void)?
  /// Whether the driver (cuLaunchKernelEx) and the GPU (sm_90+) support programmatic dependent launch.
  public let supportsProgrammaticDependentLaunch: Bool
  /// Launch every kernel with programmatic dependent launch: a kernel may start while the previous
  /// one on the stream finishes, and waits for it in `grid_dependency_wait()` before touching
  /// memory, which hides part of the gap between back-to-back kernels. On where supported unless
  /// the environment sets HSTU_PDL=0; setting it on a device without support leaves it off.
  public var programmaticDependentLaunch: Bool {
    get { usesProgrammaticDependentLaunch }
    set { usesProgrammaticDependentLaunch = newValue && supportsProgrammaticDependentLaunch }
  }
  private var usesProgrammaticDependentLaunch: Bool
  /// HSTU_PDL=0 turns programmatic dependent launch off by default (for A/B runs of one binary).
  private static let environmentAllowsProgrammaticDependentLaunch = getenv("HSTU_PDL").map { String(cString: $0) != "0" } ?? true
  let driver: CUDADriver
  /// The stream that launches, copies and fills go to: `mainStream`, or `sideStream` inside `fork`.
  var stream: OpaquePointer?
  let mainStream, sideStream: OpaquePointer?
  /// Recorded on the main stream by `fork`, for the side stream to wait for.
  let forkEvent: OpaquePointer?
  /// Events no `SideStreamWork` holds, for the next ones.
  var idleEvents: [OpaquePointer?] = []
  private var modules: [String: CUDAModule] = [:]
  private var blasHandle: CuBLASLt?
  /// cuBLASLt's workspace: the first bytes of the arena, reserved at init so that no mark/release
  /// scope can free it while the handle keeps using it.
  private let blasWorkspace: DeviceArray<UInt8>
  static let blasWorkspaceBytes = 32 << 20

  /// Opens GPU `ordinal` and reserves `arenaBytes` of its memory for the arena.
  public init(ordinal: Int32 = 0, arenaBytes: Int) throws {
    let d = try CUDADriver.shared()
    driver = d
    try d.check(d.cuInit(0), "cuInit")
    var count: Int32 = 0
    try d.check(d.cuDeviceGetCount(&count), "cuDeviceGetCount")
    guard count > ordinal else { throw CUDAError.noDevice }
    var device: Int32 = 0
    try d.check(d.cuDeviceGet(&device, ordinal), "cuDeviceGet")
    self.ordinal = ordinal
    var nameBytes = [CChar](repeating: 0, count: 256)
    try d.check(d.cuDeviceGetName(&nameBytes, 256, device), "cuDeviceGetName")
    name = String(cString: nameBytes)
    func attribute(_ a: Int32) throws -> Int32 {
      var v: Int32 = 0
      try d.check(d.cuDeviceGetAttribute(&v, a, device), "cuDeviceGetAttribute(\(a))")
      return v
    }
    computeCapability = (try attribute(CUDADriver.attributeComputeCapabilityMajor), try attribute(CUDADriver.attributeComputeCapabilityMinor))
    multiprocessors = try attribute(CUDADriver.attributeMultiprocessorCount)
    maxSharedMemoryPerBlock = try attribute(CUDADriver.attributeMaxSharedMemoryPerBlockOptin)
    let sm = "\(computeCapability.major)\(computeCapability.minor)"
    architecture = computeCapability.major == 9 ? "sm_\(sm)a" : "sm_\(sm)"
    supportsProgrammaticDependentLaunch = d.cuLaunchKernelEx != nil && computeCapability.major >= 9
    usesProgrammaticDependentLaunch = supportsProgrammaticDependentLaunch && Self.environmentAllowsProgrammaticDependentLaunch

    var context: OpaquePointer? = nil
    try d.check(d.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
    try d.check(d.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    // The main stream at the highest priority and the side stream at the lowest, so that when SMs
    // free up the block scheduler takes the main stream's blocks first.
    var leastPriority: Int32 = 0, greatestPriority: Int32 = 0
    try d.check(d.cuCtxGetStreamPriorityRange(&leastPriority, &greatestPriority), "cuCtxGetStreamPriorityRange")
    func newStream(priority: Int32) throws -> OpaquePointer? {
      var s: OpaquePointer? = nil
      try d.check(d.cuStreamCreateWithPriority(&s, 1, priority), "cuStreamCreateWithPriority")  // CU_STREAM_NON_BLOCKING
      return s
    }
    func newEvent() throws -> OpaquePointer? {
      var e: OpaquePointer? = nil
      try d.check(d.cuEventCreate(&e, 2), "cuEventCreate")  // CU_EVENT_DISABLE_TIMING
      return e
    }
    mainStream = try newStream(priority: greatestPriority); sideStream = try newStream(priority: leastPriority)
    stream = mainStream
    forkEvent = try newEvent()
    var base: CUdeviceptr = 0
    try d.check(d.cuMemAlloc(&base, arenaBytes), "cuMemAlloc(\(arenaBytes) bytes)")
    arena = DeviceArena(base: base, capacity: arenaBytes)
    blasWorkspace = try arena.allocate(UInt8.self, count: Self.blasWorkspaceBytes)
  }

  deinit { _ = driver.cuMemFree(arena.base) }

  // MARK: modules and launches

  /// The module compiled from `source` with `defines` (`-D` options), compiled on first use.
  func module(_ family: String, source: String, defines: [String: Int] = [:]) throws -> CUDAModule {
    let options = defines.sorted { $0.key < $1.key }.map { "-D\($0.key)=\($0.value)" }
    let key = family + options.joined()
    if let m = modules[key] { return m }
    let compiled = try NVRTC.shared().compile(source: source, name: family, arch: architecture, options: options) { [self] directory in
      compileLog?("compiling CUDA module \(([family] + options).joined(separator: " ")) for \(architecture) with NVRTC ("
                  + (directory.map { "cached in \($0)" } ?? "no writable cache folder: set HSTU_CACHE_DIR") + ")")
    }
    let m = try CUDAModule(driver: driver, cubin: compiled.cubin, name: key)
    modules[key] = m
    return m
  }

  /// Launches `function` on the device's stream, with programmatic dependent launch when
  /// `programmaticDependentLaunch` is on. Launch-configuration errors throw here; errors inside
  /// the kernel surface at the next `synchronize()`.
  func launch(_ function: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0, _ arguments: [KernelArgument]) throws {
    if sharedBytes > 48 * 1024 { try function.allowDynamicSharedMemory(sharedBytes) }
    // One slot per argument: 8 bytes, or 128 bytes 64-byte aligned for a tensor map.
    var offsets: [Int] = [], size = 0
    for argument in arguments {
      if case .tensorMap = argument { size = (size + 63) / 64 * 64; offsets.append(size); size += 128 } else { offsets.append(size); size += 8 }
    }
    let storage = UnsafeMutableRawPointer.allocate(byteCount: max(8, size), alignment: 64)
    defer { storage.deallocate() }
    var pointers = [UnsafeMutableRawPointer?]()
    for (argument, offset) in zip(arguments, offsets) {
      let slot = storage + offset
      switch argument {
      case let .pointer(p): slot.storeBytes(of: p, as: UInt64.self)
      case let .int(v): slot.storeBytes(of: v, as: Int32.self)
      case let .float(v): slot.storeBytes(of: v, as: Float.self)
      case let .uint64(v): slot.storeBytes(of: v, as: UInt64.self)
      case let .tensorMap(map): map.words.withUnsafeBytes { slot.copyMemory(from: $0.baseAddress!, byteCount: 128) }
      }
      pointers.append(slot)
    }
    guard grid.0 > 0, grid.1 > 0, grid.2 > 0 else { return }
    try pointers.withUnsafeMutableBufferPointer { parameters in
      if programmaticDependentLaunch, let launchEx = driver.cuLaunchKernelEx {
        let code = ProgrammaticLaunchConfig.with(grid: grid, block: block, sharedBytes: sharedBytes, stream: stream) {
          launchEx($0, function.handle, parameters.baseAddress, nil)
        }
        try driver.check(code, "cuLaunchKernelEx(\(function.name))")
      } else {
        try driver.check(driver.cuLaunchKernel(function.handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(block.0),
                                               UInt32(block.1), UInt32(block.2), UInt32(sharedBytes), stream, parameters.baseAddress, nil),
                         "cuLaunchKernel(\(function.name))")
      }
    }
  }

  /// Waits for all work on the stream; kernel faults are reported here.
  public func synchronize() throws {
    try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize")
  }

  // MARK: memory

  /// Allocates from the arena.
  public func allocate<T>(_ type: T.Type, count: Int) throws -> DeviceArray<T> {
    try arena.allocate(type, count: count)
  }

  /// Copies `values` to `array` (synchronously with respect to the host buffer).
  public func upload<T>(_ values: [T], to array: DeviceArray<T>) throws {
    precondition(values.count <= array.count, "upload larger than the destination")
    try values.withUnsafeBytes { try driver.check(driver.cuMemcpyHtoDAsync(array.address, $0.baseAddress!, $0.count, stream), "cuMemcpyHtoDAsync") }
    try synchronize()
  }

  /// Allocates an array holding `values`.
  public func array<T>(_ values: [T]) throws -> DeviceArray<T> {
    let a = try allocate(T.self, count: values.count)
    try upload(values, to: a)
    return a
  }

  /// Copies `array` back to the host, after all queued work.
  public func download<T>(_ array: DeviceArray<T>) throws -> [T] {
    var out = [T]()
    out.reserveCapacity(array.count)
    let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, array.bytes), alignment: 16)
    defer { raw.deallocate() }
    try driver.check(driver.cuMemcpyDtoHAsync(raw, array.address, array.bytes, stream), "cuMemcpyDtoHAsync")
    try synchronize()
    let typed = raw.bindMemory(to: T.self, capacity: array.count)
    for i in 0..<array.count { out.append(typed[i]) }
    return out
  }

  /// Copies `source` into the start of `destination` on the stream (device to device).
  public func copy<T>(_ source: DeviceArray<T>, to destination: DeviceArray<T>) throws {
    precondition(source.count <= destination.count, "copy larger than the destination")
    try driver.check(driver.cuMemcpyDtoDAsync(destination.address, source.address, source.bytes, stream), "cuMemcpyDtoDAsync")
  }

  /// Fills `array` with the 32-bit pattern `word` (0 for zeros; 0x7FC0_0000 poisons floats with NaN).
  public func fill<T>(_ array: DeviceArray<T>, word: UInt32 = 0) throws {
    precondition(array.bytes % 4 == 0, "fill works on 4-byte words")
    try driver.check(driver.cuMemsetD32Async(array.address, word, array.bytes / 4, stream), "cuMemsetD32Async")
  }

  /// The cuBLASLt handle (created on first use) and its workspace.
  func blas() throws -> (CuBLASLt, DeviceArray<UInt8>) {
    if let b = blasHandle { return (b, blasWorkspace) }
    let b = try CuBLASLt()
    blasHandle = b
    return (b, blasWorkspace)
  }

  // MARK: timing

  /// Runs `body` `repeats` times between two CUDA events after `warmup` untimed runs and
  /// returns each run's milliseconds (event pairs around every repeat).
  public func time(warmup: Int = 2, repeats: Int, _ body: () throws -> Void) throws -> [Double] {
    for _ in 0..<warmup { try body() }
    try synchronize()
    var start: OpaquePointer? = nil, stop: OpaquePointer? = nil
    try driver.check(driver.cuEventCreate(&start, 0), "cuEventCreate")
    try driver.check(driver.cuEventCreate(&stop, 0), "cuEventCreate")
    defer { _ = driver.cuEventDestroy(start); _ = driver.cuEventDestroy(stop) }
    var times: [Double] = []
    for _ in 0..<repeats {
      try driver.check(driver.cuEventRecord(start, stream), "cuEventRecord")
      try body()
      try driver.check(driver.cuEventRecord(stop, stream), "cuEventRecord")
      try driver.check(driver.cuEventSynchronize(stop), "cuEventSynchronize")
      var ms: Float = 0
      try driver.check(driver.cuEventElapsedTime(&ms, start, stop), "cuEventElapsedTime")
      times.append(Double(ms))
    }
    return times
  }
}

/// One scalar or pointer argument of a kernel launch (each occupies one 8-byte slot).
public enum KernelArgument {
  case pointer(CUdeviceptr)
  case int(Int32)
  case float(Float)
  case uint64(UInt64)
  /// A `const __grid_constant__` tensor map parameter.
  case tensorMap(TensorMap)
}

/// A loaded cubin.
final class CUDAModule {
  let driver: CUDADriver
  let handle: OpaquePointer?
  let name: String
  private var functions: [String: CUDAFunction] = [:]

  init(driver: CUDADriver, cubin: [UInt8], name: String) throws {
    self.driver = driver
    self.name = name
    var h: OpaquePointer? = nil
    try driver.check(cubin.withUnsafeBytes { driver.cuModuleLoadData(&h, $0.baseAddress!) }, "cuModuleLoadData(\(name))")
    handle = h
  }

  /// The `extern "C"` kernel `name` of this module.
  func function(_ name: String) throws -> CUDAFunction {
    if let f = functions[name] { return f }
    var h: OpaquePointer? = nil
    try driver.check(driver.cuModuleGetFunction(&h, handle, name), "cuModuleGetFunction(\(name))")
    let f = CUDAFunction(driver: driver, handle: h, name: name)
    functions[name] = f
    return f
  }
}

/// A kernel of a loaded module.
final class CUDAFunction {
  let driver: CUDADriver
  let handle: OpaquePointer?
  let name: String
  private var sharedLimit = 48 * 1024

  init(driver: CUDADriver, handle: OpaquePointer?, name: String) {
    self.driver = driver
    self.handle = handle
    self.name = name
  }

  /// Raises the dynamic shared-memory limit (needed above 48 KiB).
  func allowDynamicSharedMemory(_ bytes: Int) throws {
    guard bytes > sharedLimit else { return }
    try driver.check(driver.cuFuncSetAttribute(handle, CUDADriver.functionAttributeMaxDynamicSharedSize, Int32(bytes)), "cuFuncSetAttribute(\(name), \(bytes) B shared)")
    sharedLimit = bytes
  }
}
