// What NVRTC has built in and the kernels use, for clang's CUDA front end without a CUDA toolkit
// (CUDASourceTests): execution-space keywords, vector types, min/max and atomics as declarations,
// then clang's own device-function and intrinsic headers. Only for checking that the kernels parse
// and type-check; nothing here is compiled to code.
#define __host__ __attribute__((host))
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#define __grid_constant__ __attribute__((grid_constant))
#define __align__(n) __attribute__((aligned(n)))
#define __CUDACC__ 1
#define CUDA_VERSION 12000
#define INT_MAX 2147483647
#define INT_MIN (-INT_MAX - 1)
#define HUGE_VAL __builtin_huge_val()
#define HUGE_VALF __builtin_huge_valf()
typedef unsigned long size_t;
typedef unsigned int cuuint32_t;

#define VECTOR2(T, N) struct __align__(2 * sizeof(T)) N##2 { T x, y; }; \
  __host__ __device__ inline N##2 make_##N##2(T x, T y) { N##2 r; r.x = x; r.y = y; return r; }
#define VECTOR3(T, N) struct N##3 { T x, y, z; }; \
  __host__ __device__ inline N##3 make_##N##3(T x, T y, T z) { N##3 r; r.x = x; r.y = y; r.z = z; return r; }
#define VECTOR4(T, N) struct __align__(4 * sizeof(T)) N##4 { T x, y, z, w; }; \
  __host__ __device__ inline N##4 make_##N##4(T x, T y, T z, T w) { N##4 r; r.x = x; r.y = y; r.z = z; r.w = w; return r; }
VECTOR2(char, char) VECTOR4(char, char) VECTOR2(unsigned char, uchar) VECTOR4(unsigned char, uchar)
VECTOR2(short, short) VECTOR4(short, short) VECTOR2(unsigned short, ushort) VECTOR4(unsigned short, ushort)
VECTOR2(int, int) VECTOR3(int, int) VECTOR4(int, int)
VECTOR2(unsigned int, uint) VECTOR3(unsigned int, uint) VECTOR4(unsigned int, uint)
VECTOR2(long long, longlong) VECTOR2(unsigned long long, ulonglong)
VECTOR2(float, float) VECTOR3(float, float) VECTOR4(float, float)
VECTOR2(double, double) VECTOR4(double, double)
struct dim3 {
  unsigned x, y, z;
  __host__ __device__ dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
  __host__ __device__ dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

__device__ unsigned int __isShared(const void*);
__device__ size_t __cvta_generic_to_shared(const void*);
#include <__clang_cuda_builtin_vars.h>
#include <__clang_cuda_libdevice_declares.h>
#include <__clang_cuda_device_functions.h>
#include <__clang_cuda_intrinsics.h>
#include <__clang_cuda_math.h>

__device__ int min(int, int);
__device__ int max(int, int);
__device__ unsigned min(unsigned, unsigned);
__device__ unsigned max(unsigned, unsigned);
__device__ long long min(long long, long long);
__device__ long long max(long long, long long);
__device__ float min(float, float);
__device__ float max(float, float);
__device__ int atomicAdd(int*, int);
__device__ unsigned atomicAdd(unsigned*, unsigned);
__device__ unsigned long long atomicAdd(unsigned long long*, unsigned long long);
__device__ float atomicAdd(float*, float);
__device__ int atomicMax(int*, int);
__device__ int atomicMin(int*, int);
__device__ int atomicCAS(int*, int, int);
__device__ unsigned atomicCAS(unsigned*, unsigned, unsigned);
