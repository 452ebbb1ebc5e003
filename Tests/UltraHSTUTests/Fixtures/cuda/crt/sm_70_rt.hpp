// Empty: clang's __clang_cuda_intrinsics.h includes this CUDA toolkit header, whose declarations
// the kernels do not use. Present so that CUDASourceTests can parse the kernels without a toolkit.
