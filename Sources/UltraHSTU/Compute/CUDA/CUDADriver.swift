/// Typed entry points of the CUDA driver API (libcuda.so.1), loaded with dlopen.
///
/// Only the calls this package needs are bound. Every call goes through `check`, which turns a
/// non-zero CUresult into `CUDAError.driver` with the driver's own message.
public typealias CUdeviceptr = UInt64

final class CUDADriver: @unchecked Sendable {
  typealias Handle = OpaquePointer?
  let library: DynamicLibrary

  let cuInit: @convention(c) (UInt32) -> Int32
  let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
  let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
  let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Int32
  let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Int32
  let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle>, Int32) -> Int32
  let cuCtxSetCurrent: @convention(c) (Handle) -> Int32
  let cuStreamCreateWithPriority: @convention(c) (UnsafeMutablePointer<Handle>, UInt32, Int32) -> Int32
  let cuCtxGetStreamPriorityRange: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
  let cuStreamSynchronize: @convention(c) (Handle) -> Int32
  let cuStreamWaitEvent: @convention(c) (Handle, Handle, UInt32) -> Int32
  let cuMemAlloc: @convention(c) (UnsafeMutablePointer<CUdeviceptr>, Int) -> Int32
  let cuMemFree: @convention(c) (CUdeviceptr) -> Int32
  let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Int32
  let cuMemcpyHtoDAsync: @convention(c) (CUdeviceptr, UnsafeRawPointer, Int, Handle) -> Int32
  let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, CUdeviceptr, Int, Handle) -> Int32
  let cuMemcpyDtoDAsync: @convention(c) (CUdeviceptr, CUdeviceptr, Int, Handle) -> Int32
  let cuMemsetD32Async: @convention(c) (CUdeviceptr, UInt32, Int, Handle) -> Int32
  let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle>, UnsafeRawPointer) -> Int32
  let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle>, Handle, UnsafePointer<CChar>) -> Int32
  let cuFuncSetAttribute: @convention(c) (Handle, Int32, Int32) -> Int32
  let cuLaunchKernel: @convention(c) (
    Handle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle,
    UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?
  ) -> Int32
  /// Launch with a `CUlaunchConfig` (ProgrammaticLaunchConfig); nil on drivers before CUDA 11.8.
  let cuLaunchKernelEx: (@convention(c) (
    UnsafeRawPointer, Handle, UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?
  ) -> Int32)?
  let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Int32
  let cuEventDestroy: @convention(c) (Handle) -> Int32
  let cuEventRecord: @convention(c) (Handle, Handle) -> Int32
  let cuEventSynchronize: @convention(c) (Handle) -> Int32
  let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle, Handle) -> Int32
  let cuGetErrorString: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32
  /// Tensor-map encoding for the TMA (CUDA 12+ drivers); nil on older drivers.
  let cuTensorMapEncodeTiled: (@convention(c) (
    UnsafeMutableRawPointer, UInt32, UInt32, UnsafeMutableRawPointer?, UnsafePointer<UInt64>, UnsafePointer<UInt64>,
    UnsafePointer<UInt32>, UnsafePointer<UInt32>, UInt32, UInt32, UInt32, UInt32) -> Int32)?

  // Values from cuda.h.
  static let attributeMultiprocessorCount: Int32 = 16
  static let attributeComputeCapabilityMajor: Int32 = 75
  static let attributeComputeCapabilityMinor: Int32 = 76
  static let attributeMaxSharedMemoryPerBlockOptin: Int32 = 97
  static let functionAttributeMaxDynamicSharedSize: Int32 = 8

  private init() throws {
    let lib = try DynamicLibrary(name: "libcuda", candidates: ["libcuda.so.1", "libcuda.so"])
    library = lib
    cuInit = try lib.function("cuInit")
    cuDeviceGetCount = try lib.function("cuDeviceGetCount")
    cuDeviceGet = try lib.function("cuDeviceGet")
    cuDeviceGetName = try lib.function("cuDeviceGetName")
    cuDeviceGetAttribute = try lib.function("cuDeviceGetAttribute")
    cuDevicePrimaryCtxRetain = try lib.function("cuDevicePrimaryCtxRetain")
    cuCtxSetCurrent = try lib.function("cuCtxSetCurrent")
    cuStreamCreateWithPriority = try lib.function("cuStreamCreateWithPriority")
    cuCtxGetStreamPriorityRange = try lib.function("cuCtxGetStreamPriorityRange")
    cuStreamSynchronize = try lib.function("cuStreamSynchronize")
    cuStreamWaitEvent = try lib.function("cuStreamWaitEvent")
    cuMemAlloc = try lib.function("cuMemAlloc_v2")
    cuMemFree = try lib.function("cuMemFree_v2")
    cuMemGetInfo = try lib.function("cuMemGetInfo_v2")
    cuMemcpyHtoDAsync = try lib.function("cuMemcpyHtoDAsync_v2")
    cuMemcpyDtoHAsync = try lib.function("cuMemcpyDtoHAsync_v2")
    cuMemcpyDtoDAsync = try lib.function("cuMemcpyDtoDAsync_v2")
    cuMemsetD32Async = try lib.function("cuMemsetD32Async")
    cuModuleLoadData = try lib.function("cuModuleLoadData")
    cuModuleGetFunction = try lib.function("cuModuleGetFunction")
    cuFuncSetAttribute = try lib.function("cuFuncSetAttribute")
    cuLaunchKernel = try lib.function("cuLaunchKernel")
    cuLaunchKernelEx = try? lib.function("cuLaunchKernelEx")
    cuEventCreate = try lib.function("cuEventCreate")
    cuEventDestroy = try lib.function("cuEventDestroy_v2")
    cuEventRecord = try lib.function("cuEventRecord")
    cuEventSynchronize = try lib.function("cuEventSynchronize")
    cuEventElapsedTime = try lib.function("cuEventElapsedTime")
    cuGetErrorString = try lib.function("cuGetErrorString")
    cuTensorMapEncodeTiled = try? lib.function("cuTensorMapEncodeTiled")
  }

  private static let loaded: Result<CUDADriver, Error> = Result { try CUDADriver() }

  /// The process-wide driver binding; loads libcuda on first use.
  static func shared() throws -> CUDADriver { try loaded.get() }

  /// Throws `CUDAError.driver` when `code` is not CUDA_SUCCESS.
  func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
    guard code != 0 else { return }
    var text: UnsafePointer<CChar>? = nil
    let message = cuGetErrorString(code, &text) == 0 && text != nil ? String(cString: text!) : "unknown error"
    throw CUDAError.driver(call: call(), code: code, message: message)
  }
}
