// yoso_kernels.cc -- the C ABI of libyoso_kernels.so (see yoso_kernels.h).
//
// A thin binding, like plugins/ort is for ONNX Runtime: it validates with
// plugins/common/yoso_validate.h (the same checks, in the same order, with the same messages as the
// ONNX Runtime ops), then runs the CPU kernels of plugins/cpu/yoso_cpu.h over a small thread pool,
// or the CUDA launch functions of plugins/cuda/yoso_cuda.h on the caller's stream. No math lives
// here.
#include "yoso_kernels.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "yoso_cpu.h"
#include "yoso_validate.h"

#if defined(YOSO_KERNELS_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "yoso_cuda.h"
#endif

namespace {

// ---------------------------------------------------------------------------------------------
// Status and messages
// ---------------------------------------------------------------------------------------------

int32_t fail(int32_t status, const std::string& msg, char* error, size_t error_size) {
  if (error != nullptr && error_size > 0) {
    const size_t n = std::min(msg.size(), error_size - 1);
    std::memcpy(error, msg.data(), n);
    error[n] = '\0';
  }
  return status;
}

const char* dtype_name(int32_t t) {
  switch (t) {
    case YOSO_DTYPE_FLOAT32: return "float32";
    case YOSO_DTYPE_FLOAT16: return "float16";
    case YOSO_DTYPE_INT32: return "int32";
    case YOSO_DTYPE_INT64: return "int64";
    case YOSO_DTYPE_BFLOAT16: return "bfloat16";
    case YOSO_DTYPE_FLOAT64: return "float64";
    default: return "an unsupported type";
  }
}

yoso::ShapeRef shape_of(const yoso_tensor* t) {
  return yoso::ShapeRef{t->shape, static_cast<size_t>(t->rank < 0 ? 0 : t->rank)};
}

bool is_cuda(const yoso_exec* e) { return e->device_type == YOSO_DEVICE_CUDA; }

// "" if the tensor's dtype is one of `allowed`, else the message.
std::string check_dtype(const char* op, const char* input, int index, const yoso_tensor* t,
                        std::initializer_list<int32_t> allowed, const char* fix) {
  for (int32_t a : allowed)
    if (t->dtype == a) return {};
  std::string want;
  for (int32_t a : allowed) {
    if (!want.empty()) want += " or ";
    want += dtype_name(a);
  }
  return yoso::detail::input_name(op, input, index) + " must be " + want + "; got " +
         dtype_name(t->dtype) + ". Fix: " + fix;
}

std::string check_pointers(const char* op, std::initializer_list<const yoso_tensor*> ts) {
  for (const yoso_tensor* t : ts) {
    if (t == nullptr || (t->rank > 0 && t->shape == nullptr) || t->rank < 0) {
      return std::string(op) + ": a tensor descriptor is NULL or has no shape (caller bug).";
    }
  }
  return {};
}

int64_t numel(const yoso_tensor* t) {
  int64_t n = 1;
  for (int32_t i = 0; i < t->rank; ++i) n *= t->shape[i];
  return n;
}

std::string check_output(const char* op, const char* name, const yoso_tensor* out, int32_t dtype,
                         std::initializer_list<int64_t> dims) {
  bool ok = out->dtype == dtype && out->rank == static_cast<int32_t>(dims.size());
  if (ok) {
    int32_t i = 0;
    for (int64_t d : dims) ok = ok && out->shape[i++] == d;
  }
  if (!ok) {
    return std::string(op) + ": output '" + name + "' must be " + dtype_name(dtype) + " of shape " +
           yoso::dims_str(dims) + "; got " + dtype_name(out->dtype) + " " + yoso::shape_str(shape_of(out)) +
           " (caller bug: allocate the output with the shape the op produces).";
  }
  if (out->data == nullptr && numel(out) > 0) return std::string(op) + ": output '" + name + "' is NULL.";
  return {};
}

// Data pointer of a non-empty tensor, NULL otherwise; an error if a non-empty tensor has none.
bool data_ok(const yoso_tensor* t) { return t->data != nullptr || numel(t) == 0; }

// ---------------------------------------------------------------------------------------------
// CPU thread pool
// ---------------------------------------------------------------------------------------------

// Persistent workers, so that the CPU kernels' per-thread scratch (plugins/cpu/yoso_cpu.cc) is reused between
// calls. After a region a worker spins for up to kSpinMicros before it sleeps, so the back-to-back
// calls of a layer (FastHash, FastHash, LSHCumulation) do not each pay a thread wake-up. One parallel
// region at a time: a second concurrent caller runs its tasks inline on its own thread (correct, just
// not parallel). Never destroyed (threads block on a condition variable until the process exits); a
// forked child builds a fresh pool.
class Pool {
 public:
  using Fn = void (*)(void*, size_t);

  static Pool& get() {
    static std::mutex create_mu;
    static Pool* pool = nullptr;
    std::lock_guard<std::mutex> lock(create_mu);
    if (pool == nullptr || pool->pid_ != getpid()) pool = new Pool();  // the old one is leaked
    return *pool;
  }

  // fn(ctx, i) for every i in [0, n), on up to `threads` threads including the caller.
  void run(size_t n, int threads, Fn fn, void* ctx) {
    if (n == 0) return;
    const int want = static_cast<int>(std::min<size_t>(n, static_cast<size_t>(std::max(1, threads))));
    std::unique_lock<std::mutex> region(region_mu_, std::try_to_lock);
    if (want <= 1 || !region.owns_lock()) {
      for (size_t i = 0; i < n; ++i) fn(ctx, i);
      return;
    }
    const int helpers = ensure_workers(want - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = fn;
      ctx_ = ctx;
      n_ = n;
      next_.store(0);
      helpers_ = helpers;
      running_ = helpers;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return running_ == 0; });
  }

 private:
  Pool() : pid_(getpid()) {}

  // Called inside a region, before the job is published: a new worker starts from the current
  // generation, so it only ever joins regions published after its creation.
  // Returns how many workers exist, at most `count` (fewer if a thread could not be created).
  int ensure_workers(int count) {
    while (static_cast<int>(n_workers_) < count) {
      const int index = static_cast<int>(n_workers_);
      uint64_t start;
      {
        std::lock_guard<std::mutex> lock(mu_);
        start = generation_.load(std::memory_order_relaxed);
      }
      try {
        std::thread([this, index, start] { worker(index, start); }).detach();
      } catch (const std::exception&) {  // std::system_error: run with the workers we have
        break;
      }
      ++n_workers_;
    }
    return std::min(count, static_cast<int>(n_workers_));
  }

  void work() {
    for (;;) {
      const size_t i = next_.fetch_add(1);
      if (i >= n_) return;
      fn_(ctx_, i);
    }
  }

  void worker(int index, uint64_t seen) {
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
      for (unsigned i = 1; generation_.load(std::memory_order_acquire) == seen; ++i) {
        if ((i & 63u) == 0 && std::chrono::steady_clock::now() > until) break;
        cpu_relax();
      }
      bool helper = false;
      {
        // The generation and the job are read together under the lock: a region cannot end (nor a
        // new one start) while one of its helpers has not finished.
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        helper = index < helpers_;
      }
      if (!helper) continue;  // not needed in this region
      work();
      std::lock_guard<std::mutex> lock(mu_);
      if (--running_ == 0) done_cv_.notify_all();
    }
  }

  static constexpr int kSpinMicros = 200;

  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  const pid_t pid_;
  std::mutex region_mu_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  size_t n_workers_ = 0;
  std::atomic<uint64_t> generation_{0};  // written under mu_ (with the job); read spinning
  int helpers_ = 0, running_ = 0;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
  size_t n_ = 0;
  std::atomic<size_t> next_{0};
};


// ---------------------------------------------------------------------------------------------
// Validation shared by CPU and CUDA (shapes, attributes, dtypes); values are checked per device
// ---------------------------------------------------------------------------------------------

std::string check_exec(const char* op, const yoso_exec* e) {
  if (e == nullptr) return std::string(op) + ": no execution context (caller bug).";
  if (e->device_type != YOSO_DEVICE_CPU && e->device_type != YOSO_DEVICE_CUDA) {
    return std::string(op) + ": unknown device type " + std::to_string(e->device_type) +
           ". Fix: run the op on CPU or CUDA tensors.";
  }
  return {};
}

std::string fast_hash_shapes(const yoso_exec* e, const yoso_tensor* x, const yoso_tensor* mask,
                             const yoso_tensor* signs, int64_t num_hash, int64_t hash_code_len,
                             yoso::FastHashDims* d) {
  const char* op = "FastHash";
  std::string err = check_exec(op, e);
  if (err.empty()) err = check_pointers(op, {x, mask, signs});
  if (err.empty())
    err = yoso::check_fast_hash_shapes(shape_of(x), shape_of(mask), shape_of(signs), num_hash,
                                       hash_code_len, d);
  if (!err.empty()) return err;
  if (is_cuda(e)) {
    err = check_dtype(op, "x", 0, x, {YOSO_DTYPE_FLOAT32, YOSO_DTYPE_FLOAT16}, "cast x to float32 or float16.");
  } else {
    err = check_dtype(op, "x", 0, x, {YOSO_DTYPE_FLOAT32}, "cast x to float32 (the CPU kernels compute in float32).");
  }
  if (err.empty()) err = check_dtype(op, "mask", 1, mask, {YOSO_DTYPE_INT32}, "convert the mask with (mask != 0).to(int32).");
  if (err.empty()) err = check_dtype(op, "signs", 2, signs, {YOSO_DTYPE_FLOAT32}, "pass the float32 sign diagonals.");
  if (err.empty() && !(data_ok(x) && data_ok(mask) && data_ok(signs)))
    err = std::string(op) + ": a non-empty input has no data pointer (caller bug).";
  return err;
}

std::string lsh_shapes(const yoso_exec* e, const yoso_tensor* qc, const yoso_tensor* kc,
                       const yoso_tensor* qm, const yoso_tensor* km, const yoso_tensor* v,
                       int64_t hash_code_len, yoso::LshDims* d) {
  const char* op = "LSHCumulation";
  std::string err = check_exec(op, e);
  if (err.empty()) err = check_pointers(op, {qc, kc, qm, km, v});
  if (err.empty())
    err = yoso::check_lsh_shapes(shape_of(qc), shape_of(kc), shape_of(qm), shape_of(km), shape_of(v),
                                 hash_code_len, d);
  if (!err.empty()) return err;
  const char* code_fix = "feed FastHash outputs (int32 codes).";
  const char* mask_fix = "convert the mask with (mask != 0).to(int32).";
  err = check_dtype(op, "query_codes", 0, qc, {YOSO_DTYPE_INT32}, code_fix);
  if (err.empty()) err = check_dtype(op, "key_codes", 1, kc, {YOSO_DTYPE_INT32}, code_fix);
  if (err.empty()) err = check_dtype(op, "query_mask", 2, qm, {YOSO_DTYPE_INT32}, mask_fix);
  if (err.empty()) err = check_dtype(op, "key_mask", 3, km, {YOSO_DTYPE_INT32}, mask_fix);
  if (err.empty()) {
    if (is_cuda(e)) {
      err = check_dtype(op, "value", 4, v, {YOSO_DTYPE_FLOAT32, YOSO_DTYPE_FLOAT16}, "cast value to float32 or float16.");
    } else {
      err = check_dtype(op, "value", 4, v, {YOSO_DTYPE_FLOAT32}, "cast value to float32 (the CPU kernels compute in float32).");
    }
  }
#if defined(YOSO_KERNELS_WITH_CUDA)
  if (err.empty() && is_cuda(e)) err = yoso::cuda::check_lsh_cuda_limits(d->tau, d->Dv);
#endif
  if (err.empty() && !(data_ok(qc) && data_ok(kc) && data_ok(qm) && data_ok(km) && data_ok(v)))
    err = std::string(op) + ": a non-empty input has no data pointer (caller bug).";
  return err;
}

// ---------------------------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------------------------

// The caller's pool as yoso::cpu's parallel drivers want it.
struct PoolFor {
  int threads;
  void operator()(size_t n, void (*task)(void*, size_t), void* job) const { Pool::get().run(n, threads, task, job); }
};

int32_t fast_hash_cpu(const yoso_exec* e, const yoso::FastHashDims& d, const yoso_tensor* x,
                      const yoso_tensor* mask, const yoso_tensor* signs, const yoso_tensor* codes,
                      char* error, size_t error_size) {
  const auto* maskp = static_cast<const int32_t*>(mask->data);
  const auto* signsp = static_cast<const float*>(signs->data);
  const std::string err = yoso::check_fast_hash_values(d, maskp, signsp);
  if (!err.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, err, error, error_size);
  yoso::cpu::fast_hash_f32_parallel(d, static_cast<const float*>(x->data), maskp, signsp,
                                    static_cast<int32_t*>(codes->data), PoolFor{e->num_threads});
  return YOSO_STATUS_OK;
}

int32_t lsh_cpu(const yoso_exec* e, const yoso::LshDims& d, const yoso_tensor* qc,
                const yoso_tensor* kc, const yoso_tensor* qm, const yoso_tensor* km,
                const yoso_tensor* v, const yoso_tensor* out, char* error, size_t error_size) {
  const auto* qcp = static_cast<const int32_t*>(qc->data);
  const auto* kcp = static_cast<const int32_t*>(kc->data);
  const auto* qmp = static_cast<const int32_t*>(qm->data);
  const auto* kmp = static_cast<const int32_t*>(km->data);
  const std::string err = yoso::check_lsh_values(d, qcp, kcp, qmp, kmp);
  if (!err.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, err, error, error_size);
  try {
    yoso::cpu::lsh_cumulation_f32_parallel(d, qcp, kcp, qmp, kmp, static_cast<const float*>(v->data),
                                           static_cast<float*>(out->data), PoolFor{e->num_threads});
  } catch (const std::bad_alloc&) {
    return fail(YOSO_STATUS_RUNTIME_ERROR,
                "LSHCumulation: out of memory allocating the scratch bucket tables; use a smaller batch or sequence",
                error, error_size);
  }
  return YOSO_STATUS_OK;
}

// ---------------------------------------------------------------------------------------------
// CUDA
// ---------------------------------------------------------------------------------------------

#if defined(YOSO_KERNELS_WITH_CUDA)

yoso::cuda::DType cuda_dtype(const yoso_tensor* t) {
  return t->dtype == YOSO_DTYPE_FLOAT16 ? yoso::cuda::DType::kFloat16 : yoso::cuda::DType::kFloat32;
}

// Makes `device` current for the call and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    err_ = cudaGetDevice(&prev_);
    if (err_ == cudaSuccess && prev_ != device) {
      err_ = cudaSetDevice(device);
      restore_ = err_ == cudaSuccess;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  cudaError_t error() const { return err_; }

 private:
  int prev_ = 0;
  bool restore_ = false;
  cudaError_t err_ = cudaSuccess;
};

int32_t cuda_error(const char* op, const std::string& what, char* error, size_t error_size) {
  return fail(YOSO_STATUS_RUNTIME_ERROR, std::string(op) + " (CUDA): " + what, error, error_size);
}

int32_t fast_hash_cuda(const yoso_exec* e, const yoso::FastHashDims& d, const yoso_tensor* x,
                       const yoso_tensor* mask, const yoso_tensor* signs, const yoso_tensor* codes,
                       char* error, size_t error_size) {
  const char* op = "FastHash";
  const int64_t mask_n = d.B * d.S;
  const int64_t signs_n = d.H * 3 * d.P * d.D;
  if (mask_n == 0 && signs_n == 0) return YOSO_STATUS_OK;  // nothing to check or compute
  const size_t need = yoso::cuda::fast_hash_workspace_size(d);
  if (e->workspace == nullptr || e->workspace_bytes < need) {
    return fail(YOSO_STATUS_INVALID_ARGUMENT,
                std::string(op) + " (CUDA): the workspace holds " + std::to_string(e->workspace_bytes) +
                    " bytes; " + std::to_string(need) + " are needed (caller bug: use yoso_fast_hash_workspace_size).",
                error, error_size);
  }
  DeviceGuard guard(e->device_index);
  if (guard.error() != cudaSuccess) return cuda_error(op, yoso::cuda::error_string(guard.error()), error, error_size);
  auto stream = static_cast<cudaStream_t>(e->stream);
  const auto* mask_p = mask_n > 0 ? static_cast<const int32_t*>(mask->data) : nullptr;
  const auto* signs_p = signs_n > 0 ? static_cast<const float*>(signs->data) : nullptr;
  cudaError_t err = yoso::cuda::launch_fast_hash(d, cuda_dtype(x), x->data, mask_p, signs_p,
                                                 static_cast<int32_t*>(codes->data), e->workspace,
                                                 e->workspace_bytes, stream);
  if (err != cudaSuccess) return cuda_error(op, yoso::cuda::error_string(err), error, error_size);
  if (e->check_inputs) {
    std::string msg;
    bool checked = false;
    err = yoso::cuda::fast_hash_check_inputs(d, mask_p, signs_p, e->workspace, stream, &msg, &checked);
    if (err != cudaSuccess) return cuda_error(op, yoso::cuda::error_string(err), error, error_size);
    if (!msg.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, msg, error, error_size);
  }
  return YOSO_STATUS_OK;
}

int32_t lsh_cuda(const yoso_exec* e, const yoso::LshDims& d, const yoso_tensor* qc,
                 const yoso_tensor* kc, const yoso_tensor* qm, const yoso_tensor* km,
                 const yoso_tensor* v, const yoso_tensor* out, char* error, size_t error_size) {
  const char* op = "LSHCumulation";
  const int64_t qm_n = d.B * d.Sq, km_n = d.B * d.Sk;
  const int64_t qc_n = qm_n * d.H * d.m, kc_n = km_n * d.H * d.m;
  if (qm_n == 0 && km_n == 0) return YOSO_STATUS_OK;  // B == 0 or Sq == Sk == 0
  const yoso::cuda::DType type = cuda_dtype(v);
  const size_t need = yoso::cuda::lsh_workspace_size(d, type);
  if (e->workspace == nullptr || e->workspace_bytes < need) {
    return fail(YOSO_STATUS_INVALID_ARGUMENT,
                std::string(op) + " (CUDA): the workspace holds " + std::to_string(e->workspace_bytes) +
                    " bytes; " + std::to_string(need) +
                    " are needed (caller bug: use yoso_lsh_cumulation_workspace_size).",
                error, error_size);
  }
  DeviceGuard guard(e->device_index);
  if (guard.error() != cudaSuccess) return cuda_error(op, yoso::cuda::error_string(guard.error()), error, error_size);
  auto stream = static_cast<cudaStream_t>(e->stream);
  const auto* qcp = qc_n > 0 ? static_cast<const int32_t*>(qc->data) : nullptr;
  const auto* kcp = kc_n > 0 ? static_cast<const int32_t*>(kc->data) : nullptr;
  const auto* qmp = qm_n > 0 ? static_cast<const int32_t*>(qm->data) : nullptr;
  const auto* kmp = km_n > 0 ? static_cast<const int32_t*>(km->data) : nullptr;
  const void* vp = km_n * d.H * d.Dv > 0 ? v->data : nullptr;
  cudaError_t err = yoso::cuda::launch_lsh_cumulation(d, type, qcp, kcp, qmp, kmp, vp, out->data,
                                                      e->workspace, e->workspace_bytes, stream);
  if (err != cudaSuccess) return cuda_error(op, yoso::cuda::error_string(err), error, error_size);
  if (e->check_inputs) {
    std::string msg;
    bool checked = false;
    err = yoso::cuda::lsh_check_inputs(d, qcp, kcp, qmp, kmp, e->workspace, stream, &msg, &checked);
    if (err != cudaSuccess) return cuda_error(op, yoso::cuda::error_string(err), error, error_size);
    if (!msg.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, msg, error, error_size);
  }
  return YOSO_STATUS_OK;
}

#endif  // YOSO_KERNELS_WITH_CUDA

#if !defined(YOSO_KERNELS_WITH_CUDA)
int32_t no_cuda(const char* op, char* error, size_t error_size) {
  return fail(YOSO_STATUS_NOT_AVAILABLE,
              std::string(op) + ": libyoso_kernels.so was built without the CUDA kernels. Fix: rebuild with "
                                "-DYOSO_BUILD_CUDA=ON (e.g. scripts/device_check.sh builds it), or run on CPU tensors.",
              error, error_size);
}
#endif

// Runs f() and converts any exception into a status (nothing may cross the C ABI).
template <class F>
int32_t guarded(const char* op, char* error, size_t error_size, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(YOSO_STATUS_RUNTIME_ERROR, std::string(op) + ": out of memory", error, error_size);
  } catch (const std::exception& ex) {
    return fail(YOSO_STATUS_RUNTIME_ERROR, std::string(op) + ": " + ex.what(), error, error_size);
  } catch (...) {
    return fail(YOSO_STATUS_RUNTIME_ERROR, std::string(op) + ": unknown error", error, error_size);
  }
}

}  // namespace

extern "C" {

int32_t yoso_kernels_abi_version(void) { return YOSO_KERNELS_ABI_VERSION; }

int32_t yoso_kernels_has_cuda(void) {
#if defined(YOSO_KERNELS_WITH_CUDA)
  return 1;
#else
  return 0;
#endif
}

const char* yoso_kernels_build_info(void) {
  static const std::string info = [] {
    std::string s = "{\"abi_version\": " + std::to_string(YOSO_KERNELS_ABI_VERSION);
#if defined(__clang__)
    s += ", \"compiler\": \"clang " __clang_version__ "\"";
#elif defined(__GNUC__)
    s += ", \"compiler\": \"gcc " __VERSION__ "\"";
#endif
#if defined(YOSO_KERNELS_WITH_CUDA)
    s += ", \"cuda\": true";
#if defined(YOSO_KERNELS_CUDA_VERSION)
    s += ", \"cuda_version\": \"" YOSO_KERNELS_CUDA_VERSION "\"";
#endif
#if defined(YOSO_KERNELS_CUDA_ARCHITECTURES)
    s += ", \"cuda_architectures\": \"" YOSO_KERNELS_CUDA_ARCHITECTURES "\"";
#endif
#else
    s += ", \"cuda\": false";
#endif
    s += "}";
    return s;
  }();
  return info.c_str();
}

int32_t yoso_fast_hash_workspace_size(const yoso_exec* exec, const yoso_tensor* x,
                                      const yoso_tensor* mask, const yoso_tensor* signs,
                                      int64_t num_hash, int64_t hash_code_len, size_t* bytes,
                                      char* error, size_t error_size) {
  return guarded("FastHash", error, error_size, [&]() -> int32_t {
    if (bytes == nullptr) return fail(YOSO_STATUS_INVALID_ARGUMENT, "FastHash: bytes is NULL (caller bug).", error, error_size);
    *bytes = 0;
    yoso::FastHashDims d;
    const std::string err = fast_hash_shapes(exec, x, mask, signs, num_hash, hash_code_len, &d);
    if (!err.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, err, error, error_size);
    if (!is_cuda(exec)) return YOSO_STATUS_OK;
#if defined(YOSO_KERNELS_WITH_CUDA)
    *bytes = yoso::cuda::fast_hash_workspace_size(d);
    return YOSO_STATUS_OK;
#else
    return no_cuda("FastHash", error, error_size);
#endif
  });
}

int32_t yoso_fast_hash(const yoso_exec* exec, const yoso_tensor* x, const yoso_tensor* mask,
                       const yoso_tensor* signs, int64_t num_hash, int64_t hash_code_len,
                       const yoso_tensor* codes, char* error, size_t error_size) {
  return guarded("FastHash", error, error_size, [&]() -> int32_t {
    yoso::FastHashDims d;
    std::string err = fast_hash_shapes(exec, x, mask, signs, num_hash, hash_code_len, &d);
    if (err.empty()) err = check_pointers("FastHash", {codes});
    if (err.empty()) err = check_output("FastHash", "codes", codes, YOSO_DTYPE_INT32, {d.B, d.H, d.S, d.m});
    if (!err.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, err, error, error_size);
    if (!is_cuda(exec)) return fast_hash_cpu(exec, d, x, mask, signs, codes, error, error_size);
#if defined(YOSO_KERNELS_WITH_CUDA)
    return fast_hash_cuda(exec, d, x, mask, signs, codes, error, error_size);
#else
    return no_cuda("FastHash", error, error_size);
#endif
  });
}

int32_t yoso_lsh_cumulation_workspace_size(const yoso_exec* exec, const yoso_tensor* query_codes,
                                           const yoso_tensor* key_codes,
                                           const yoso_tensor* query_mask,
                                           const yoso_tensor* key_mask, const yoso_tensor* value,
                                           int64_t hash_code_len, size_t* bytes, char* error,
                                           size_t error_size) {
  return guarded("LSHCumulation", error, error_size, [&]() -> int32_t {
    if (bytes == nullptr) return fail(YOSO_STATUS_INVALID_ARGUMENT, "LSHCumulation: bytes is NULL (caller bug).", error, error_size);
    *bytes = 0;
    yoso::LshDims d;
    const std::string err = lsh_shapes(exec, query_codes, key_codes, query_mask, key_mask, value, hash_code_len, &d);
    if (!err.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, err, error, error_size);
    if (!is_cuda(exec)) return YOSO_STATUS_OK;
#if defined(YOSO_KERNELS_WITH_CUDA)
    *bytes = yoso::cuda::lsh_workspace_size(d, cuda_dtype(value));
    return YOSO_STATUS_OK;
#else
    return no_cuda("LSHCumulation", error, error_size);
#endif
  });
}

int32_t yoso_lsh_cumulation(const yoso_exec* exec, const yoso_tensor* query_codes,
                            const yoso_tensor* key_codes, const yoso_tensor* query_mask,
                            const yoso_tensor* key_mask, const yoso_tensor* value,
                            int64_t hash_code_len, const yoso_tensor* output, char* error,
                            size_t error_size) {
  return guarded("LSHCumulation", error, error_size, [&]() -> int32_t {
    yoso::LshDims d;
    std::string err = lsh_shapes(exec, query_codes, key_codes, query_mask, key_mask, value, hash_code_len, &d);
    if (err.empty()) err = check_pointers("LSHCumulation", {output});
    if (err.empty()) err = check_output("LSHCumulation", "output", output, value->dtype, {d.B, d.H, d.Sq, d.Dv});
    if (!err.empty()) return fail(YOSO_STATUS_INVALID_ARGUMENT, err, error, error_size);
    if (!is_cuda(exec))
      return lsh_cpu(exec, d, query_codes, key_codes, query_mask, key_mask, value, output, error, error_size);
#if defined(YOSO_KERNELS_WITH_CUDA)
    return lsh_cuda(exec, d, query_codes, key_codes, query_mask, key_mask, value, output, error, error_size);
#else
    return no_cuda("LSHCumulation", error, error_size);
#endif
  });
}

}  // extern "C"
