/* yoso_kernels.h -- plain C ABI of the com.yoso kernels (libyoso_kernels.so).
 *
 * The same FastHash / LSHCumulation kernels as libyoso_ort.so (the AVX2/scalar CPU kernels of
 * plugins/cpu and the CUDA kernels of plugins/cuda), callable from any language through plain
 * pointers and shapes: yoso_deploy.modeling.native_ops calls it with ctypes from torch.library
 * custom ops, without building against torch. The semantics, limits and error messages are those
 * of plugins/OPS.md and plugins/common/yoso_validate.h, word for word the ones the ONNX Runtime
 * ops report.
 *
 * Why a library of its own (and not more exports from libyoso_ort.so): libyoso_ort.so is loaded by
 * ONNX Runtime into processes we do not control and exports exactly RegisterCustomOps (a tested
 * hardening property, tests/plugins/test_supply_chain.py); its ABI is ONNX Runtime's. This library has a
 * different client and ABI, needs no ONNX Runtime headers at run time, and is built from the same
 * sources (no kernel is written twice), so the two can evolve and be audited separately. It exports
 * only the yoso_kernels_* / yoso_fast_hash / yoso_lsh_cumulation functions below
 * (plugins/kernels/yoso_kernels.map).
 *
 * Conventions
 *   - Every function returns a YOSO_STATUS_* code. On failure a one-line message (NUL-terminated,
 *     truncated to error_size) is written to `error` when it is not NULL. Nothing is written to an
 *     output before its inputs are validated; no function throws, aborts or prints.
 *   - Tensors are dense, row-major, contiguous; `data` may be NULL only for an empty tensor.
 *   - The caller allocates every output (and, on CUDA, the workspace): codes [B,H,S,m] int32;
 *     LSHCumulation's output [B,H,Sq,Dv] with the value's dtype. The library never allocates
 *     device memory and never synchronises a CUDA stream except to report invalid input values
 *     (yoso_exec.check_inputs; skipped while the stream is being captured into a CUDA graph).
 *   - CPU: float32 x / value. Work is split over a pool of up to yoso_exec.num_threads threads
 *     (the calling thread included; the pool is created on first use and kept).
 *   - CUDA: float32 or float16 x / value (accumulation in float32); the work is enqueued on
 *     yoso_exec.stream of device yoso_exec.device_index. Built without CUDA, the CUDA entry points
 *     return YOSO_STATUS_NOT_AVAILABLE.
 */
#ifndef YOSO_KERNELS_H_
#define YOSO_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define YOSO_KERNELS_ABI_VERSION 1

#if defined(__GNUC__)
#define YOSO_KERNELS_API __attribute__((visibility("default")))
#else
#define YOSO_KERNELS_API
#endif

/* Status codes */
#define YOSO_STATUS_OK 0
#define YOSO_STATUS_INVALID_ARGUMENT 1 /* an input violates plugins/OPS.md (message names op, input, fix) */
#define YOSO_STATUS_RUNTIME_ERROR 2    /* out of memory, a CUDA error */
#define YOSO_STATUS_NOT_AVAILABLE 3    /* built without CUDA, or an unknown device type */

/* Element types of yoso_tensor.dtype (only FLOAT32 / FLOAT16 / INT32 are accepted anywhere; the
 * others exist so that a wrong type is named in the error message). */
#define YOSO_DTYPE_FLOAT32 0
#define YOSO_DTYPE_FLOAT16 1
#define YOSO_DTYPE_INT32 2
#define YOSO_DTYPE_INT64 3
#define YOSO_DTYPE_BFLOAT16 4
#define YOSO_DTYPE_FLOAT64 5
#define YOSO_DTYPE_OTHER 6

#define YOSO_DEVICE_CPU 0
#define YOSO_DEVICE_CUDA 1

typedef struct yoso_tensor {
  void* data;            /* host pointer (CPU) or device pointer (CUDA); NULL only if empty */
  const int64_t* shape;  /* `rank` dimensions */
  int32_t rank;
  int32_t dtype;         /* YOSO_DTYPE_* */
} yoso_tensor;

typedef struct yoso_exec {
  int32_t device_type;     /* YOSO_DEVICE_CPU or YOSO_DEVICE_CUDA */
  int32_t device_index;    /* CUDA device ordinal (made current for the call, then restored) */
  int32_t num_threads;     /* CPU: threads to use, the caller's included (< 1 means 1) */
  int32_t check_inputs;    /* CUDA: 1 = synchronise the stream after the launch and report invalid
                              mask / sign / code values (as the CPU does); 0 = never synchronise
                              (outputs of invalid inputs are then unspecified, but no access is out
                              of bounds). YOSO_CUDA_CHECK_INPUTS=0 in the environment also disables it. */
  void* stream;            /* CUDA: cudaStream_t to enqueue on (NULL = the legacy default stream) */
  void* workspace;         /* CUDA: device buffer of at least the *_workspace_size bytes */
  size_t workspace_bytes;
} yoso_exec;

/* YOSO_KERNELS_ABI_VERSION of the library. */
YOSO_KERNELS_API int32_t yoso_kernels_abi_version(void);

/* 1 if the library was built with the CUDA kernels, else 0. */
YOSO_KERNELS_API int32_t yoso_kernels_has_cuda(void);

/* A static JSON object describing the build (compiler; CUDA version and architectures). Never NULL;
 * owned by the library. */
YOSO_KERNELS_API const char* yoso_kernels_build_info(void);

/* Bytes of CUDA workspace yoso_fast_hash needs for these inputs (0 on CPU). Validates the shapes,
 * dtypes and attributes (not the values). */
YOSO_KERNELS_API int32_t yoso_fast_hash_workspace_size(
    const yoso_exec* exec, const yoso_tensor* x, const yoso_tensor* mask, const yoso_tensor* signs,
    int64_t num_hash, int64_t hash_code_len, size_t* bytes, char* error, size_t error_size);

/* com.yoso::FastHash: codes[B,H,S,m] = FastHash(x[B,H,S,D], mask[B,S], signs[H,3,P,D]). */
YOSO_KERNELS_API int32_t yoso_fast_hash(
    const yoso_exec* exec, const yoso_tensor* x, const yoso_tensor* mask, const yoso_tensor* signs,
    int64_t num_hash, int64_t hash_code_len, const yoso_tensor* codes, char* error,
    size_t error_size);

/* Bytes of CUDA workspace yoso_lsh_cumulation needs (0 on CPU). */
YOSO_KERNELS_API int32_t yoso_lsh_cumulation_workspace_size(
    const yoso_exec* exec, const yoso_tensor* query_codes, const yoso_tensor* key_codes,
    const yoso_tensor* query_mask, const yoso_tensor* key_mask, const yoso_tensor* value,
    int64_t hash_code_len, size_t* bytes, char* error, size_t error_size);

/* com.yoso::LSHCumulation: output[B,H,Sq,Dv] (dtype of value). */
YOSO_KERNELS_API int32_t yoso_lsh_cumulation(
    const yoso_exec* exec, const yoso_tensor* query_codes, const yoso_tensor* key_codes,
    const yoso_tensor* query_mask, const yoso_tensor* key_mask, const yoso_tensor* value,
    int64_t hash_code_len, const yoso_tensor* output, char* error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* YOSO_KERNELS_H_ */
