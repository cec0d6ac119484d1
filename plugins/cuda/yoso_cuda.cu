// yoso_cuda.cu -- CUDA kernels and launch functions of the com.yoso ops (see yoso_cuda.h).
//
// The per-thread bodies and the launch sequences live in yoso_cuda_kernels.h (shared with the CPU
// emulation test); this file only maps them onto CUDA: three generic kernels and an executor that
// launches them on the caller's stream.
//
// Build: compiled with --fmad=false (no FMA contraction; the WHT must be bit-exact, see OPS.md) and
// without fast-math, for the architectures in YOSO_CUDA_ARCHITECTURES.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "yoso_cuda.h"
#include "yoso_cuda_kernels.h"

namespace yoso {
namespace cuda {
namespace {

constexpr int kThreads = 256;               // element and row kernels
constexpr int64_t kMaxGrid = int64_t{1} << 20;  // grid-stride loops beyond this many blocks

int64_t grid_for(int64_t work_items, int64_t items_per_block) {
  return std::max<int64_t>(1, std::min(kMaxGrid, (work_items + items_per_block - 1) / items_per_block));
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

template <class F>
__global__ void __launch_bounds__(kThreads) element_kernel(F f, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

// A warp per row, its lanes over the columns.
template <class F>
__global__ void __launch_bounds__(kThreads) row_kernel(F f, int64_t rows, int64_t cols) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t n_warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += n_warps) {
    const typename F::Row st = f.row(r);
    if (!st.active) continue;
    for (int64_t c = lane; c < cols; c += 32) f.col(st, c);
  }
}

// The device side of kern::fast_hash_block's Block: every thread runs the phase, then the block
// synchronises.
struct DeviceBlock {
  __device__ int size() const { return static_cast<int>(blockDim.x); }
  template <class F>
  __device__ void run(F&& f) const {
    f(static_cast<int>(threadIdx.x));
    __syncthreads();
  }
};

template <typename T>
__global__ void __launch_bounds__(kern::kFastHashThreads)
    fast_hash_kernel(kern::FastHashArgs<T> a, int64_t n_blocks) {
  __shared__ kern::FastHashShared sh;
  const DeviceBlock blk;
  for (int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) kern::fast_hash_block(blk, a, b, sh);
}

// ---------------------------------------------------------------------------------------------
// Executor for kern::run_* on a stream
// ---------------------------------------------------------------------------------------------

struct StreamExec {
  cudaStream_t stream;

  int invalid_value() const { return static_cast<int>(cudaErrorInvalidValue); }

  int memset(void* p, int value, size_t bytes) const {
    if (bytes == 0) return 0;
    return static_cast<int>(cudaMemsetAsync(p, value, bytes, stream));
  }

  template <class F>
  int for_each(const F& f, int64_t n) const {
    if (n <= 0) return 0;
    element_kernel<F><<<static_cast<unsigned>(grid_for(n, kThreads)), kThreads, 0, stream>>>(f, n);
    return static_cast<int>(cudaGetLastError());
  }

  template <class F>
  int for_each_row(const F& f, int64_t rows, int64_t cols) const {
    if (rows <= 0 || cols <= 0) return 0;
    row_kernel<F><<<static_cast<unsigned>(grid_for(rows, kThreads / 32)), kThreads, 0, stream>>>(f, rows, cols);
    return static_cast<int>(cudaGetLastError());
  }

  template <typename T>
  int fast_hash(const kern::FastHashArgs<T>& a, int64_t n_blocks) const {
    if (n_blocks <= 0) return 0;
    fast_hash_kernel<T><<<static_cast<unsigned>(grid_for(n_blocks, 1)), kern::kFastHashThreads, 0, stream>>>(
        a, n_blocks);
    return static_cast<int>(cudaGetLastError());
  }
};

// Reads the validation record (synchronising the stream) and formats the first failure.
cudaError_t read_input_error(const InputCheck* checks, int n, const void* workspace,
                             cudaStream_t stream, std::string* message, bool* checked) {
  message->clear();
  *checked = false;
  if (!input_checks_enabled()) return cudaSuccess;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  cudaError_t err = cudaStreamIsCapturing(stream, &capture);
  if (err != cudaSuccess) return err;
  if (capture != cudaStreamCaptureStatusNone) return cudaSuccess;  // cannot synchronise now

  ErrorRecord rec;
  err = cudaMemcpyAsync(&rec, workspace, sizeof(rec), cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return err;
  *checked = true;
  const int i = first_failed_check(rec, checks, n);
  if (i < 0) return cudaSuccess;
  const int64_t at = static_cast<int64_t>(rec.first_bad[checks[i].slot]);
  uint32_t raw = 0;  // every checked element is 4 bytes (int32 mask/codes, float32 signs)
  err = cudaMemcpyAsync(&raw, static_cast<const char*>(checks[i].data) + at * 4, sizeof(raw),
                        cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return err;
  *message = input_error_message(checks[i], at, raw);
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_fast_hash(const FastHashDims& d, DType x_type, const void* x,
                             const int32_t* mask, const float* signs, int32_t* codes,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  StreamExec ex{stream};
  const int rc =
      x_type == DType::kFloat16
          ? kern::run_fast_hash(ex, d, static_cast<const Half*>(x), mask, signs, codes, workspace,
                                workspace_bytes)
          : kern::run_fast_hash(ex, d, static_cast<const float*>(x), mask, signs, codes, workspace,
                                workspace_bytes);
  return static_cast<cudaError_t>(rc);
}

cudaError_t launch_lsh_cumulation(const LshDims& d, DType value_type, const int32_t* query_codes,
                                  const int32_t* key_codes, const int32_t* query_mask,
                                  const int32_t* key_mask, const void* value, void* output,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream,
                                  int64_t table_budget_floats) {
  StreamExec ex{stream};
  const int rc =
      value_type == DType::kFloat16
          ? kern::run_lsh(ex, d, query_codes, key_codes, query_mask, key_mask,
                          static_cast<const Half*>(value), static_cast<Half*>(output), workspace,
                          workspace_bytes, table_budget_floats)
          : kern::run_lsh(ex, d, query_codes, key_codes, query_mask, key_mask,
                          static_cast<const float*>(value), static_cast<float*>(output), workspace,
                          workspace_bytes, table_budget_floats);
  return static_cast<cudaError_t>(rc);
}

cudaError_t fast_hash_check_inputs(const FastHashDims& d, const int32_t* mask, const float* signs,
                                   const void* workspace, cudaStream_t stream,
                                   std::string* message, bool* checked) {
  InputCheck checks[kMaxCheckedInputs];
  const int n = fast_hash_checks(d, mask, signs, checks);
  return read_input_error(checks, n, workspace, stream, message, checked);
}

cudaError_t lsh_check_inputs(const LshDims& d, const int32_t* query_codes,
                             const int32_t* key_codes, const int32_t* query_mask,
                             const int32_t* key_mask, const void* workspace, cudaStream_t stream,
                             std::string* message, bool* checked) {
  InputCheck checks[kMaxCheckedInputs];
  const int n = lsh_checks(d, query_codes, key_codes, query_mask, key_mask, checks);
  return read_input_error(checks, n, workspace, stream, message, checked);
}

std::string error_string(cudaError_t err) {
  return std::string("CUDA error ") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
}

}  // namespace cuda
}  // namespace yoso
