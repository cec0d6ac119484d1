// cuda_bench.cu -- speed of the CUDA kernels (plugins/cuda) at yoso-4096 shapes, for
// scripts/device_check.sh. Prints one JSON object on stdout.
//
// Shapes: B in {1, 8, 32} x S in {512, 4096}, H = 12, D = Dv = 64, m = 64, tau = 9 (uw-madison/yoso-4096),
// all tokens unmasked; FastHash on float32 and float16 x, LSHCumulation on float32 and float16 values
// with the codes FastHash produced. Each op: 3 warm-up launches, then the mean of N launches between
// two CUDA events (N so that the timed span is >= ~50 ms, 5..200). No synchronising input check is timed
// (the launch functions validate on the device; reading the record back is the bindings' business).
//
// Bandwidth: "compulsory" bytes are what any implementation must move through HBM -- every input read
// once, every output written once:
//   FastHash       x + mask + signs + codes
//   LSHCumulation  query_codes + key_codes + masks + value + output
// achieved GB/s = compulsory bytes / time, and roofline fraction = that / the device-to-device copy
// bandwidth measured here (bytes read + written by cudaMemcpyAsync of 1 GiB), also given against the
// nominal peak passed with --peak-gbs (default 4800, H200). LSHCumulation's "traffic" bytes add what
// this implementation's schedule moves on top (the validation pass over codes and masks, zeroing the
// bucket tables, one read-modify-write of a table row per (key, hash function) and one table-row read
// per (query, hash function)); most of that is served by L2, so it bounds the work, not the HBM time.
//
// Usage: yoso_cuda_bench [--quick] [--peak-gbs 4800]     exit 0 ok, 1 CUDA error, 77 no device
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "yoso_cuda.h"

namespace cu = yoso::cuda;

namespace {

#define BENCH_OK(expr)                                                                             \
  do {                                                                                             \
    const cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, cu::error_string(e_).c_str()); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

__device__ inline uint32_t mix(uint64_t i) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}

// Uniform values in [-1, 1).
__global__ void fill_uniform(float* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<float>(mix(i + seed) >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_signs(float* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = (mix(i + seed) & 1u) ? 1.0f : -1.0f;
}

__global__ void fill_ones(int32_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = 1;
}

__global__ void to_half(const float* in, __half* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2half_rn(in[i]);
}

unsigned grid(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(65535, (n + 255) / 256)); }

void* dmalloc(size_t bytes) {
  void* p = nullptr;
  BENCH_OK(cudaMalloc(&p, std::max<size_t>(bytes, 256)));
  return p;
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    BENCH_OK(cudaEventCreate(&a));
    BENCH_OK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
};

// Mean milliseconds per call of f() on `stream`, and the number of timed calls.
template <class F>
double time_ms(cudaStream_t stream, F&& f, int* iters_out, bool quick) {
  for (int i = 0; i < 3; ++i) f();
  BENCH_OK(cudaStreamSynchronize(stream));
  Timer t;
  BENCH_OK(cudaEventRecord(t.a, stream));
  f();
  BENCH_OK(cudaEventRecord(t.b, stream));
  BENCH_OK(cudaEventSynchronize(t.b));
  float one = 0.0f;
  BENCH_OK(cudaEventElapsedTime(&one, t.a, t.b));
  int iters = one > 0.0f ? static_cast<int>(50.0f / one) : 200;
  iters = std::max(quick ? 2 : 5, std::min(quick ? 10 : 200, iters));
  BENCH_OK(cudaEventRecord(t.a, stream));
  for (int i = 0; i < iters; ++i) f();
  BENCH_OK(cudaEventRecord(t.b, stream));
  BENCH_OK(cudaEventSynchronize(t.b));
  float ms = 0.0f;
  BENCH_OK(cudaEventElapsedTime(&ms, t.a, t.b));
  *iters_out = iters;
  return static_cast<double>(ms) / iters;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  double peak_gbs = 4800.0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--peak-gbs") && i + 1 < argc) peak_gbs = std::atof(argv[++i]);
  }
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("{\"skipped\": \"no CUDA device: %s\"}\n", e != cudaSuccess ? cu::error_string(e).c_str() : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  BENCH_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  BENCH_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  // Device-to-device copy bandwidth (read + write bytes).
  const size_t copy_bytes = size_t{1} << 30;
  void* src = dmalloc(copy_bytes);
  void* dst = dmalloc(copy_bytes);
  BENCH_OK(cudaMemsetAsync(src, 1, copy_bytes, stream));
  int copy_iters = 0;
  const double copy_ms = time_ms(stream, [&] { BENCH_OK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, stream)); },
                                 &copy_iters, quick);
  BENCH_OK(cudaFree(src));
  BENCH_OK(cudaFree(dst));
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;

  std::printf("{\"device\": \"%s\", \"sm\": \"sm_%d%d\", \"multiprocessors\": %d, \"copy_gbs\": %.1f, \"peak_gbs\": %.1f, "
              "\"results\": [",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, copy_gbs, peak_gbs);
  const int H = 12, D = 64, M = 64, TAU = 9;
  bool first = true;
  const std::vector<int64_t> batches = quick ? std::vector<int64_t>{1, 8} : std::vector<int64_t>{1, 8, 32};
  for (int64_t B : batches) {
    for (int64_t S : {int64_t{512}, int64_t{4096}}) {
      yoso::FastHashDims fd;
      const int64_t P = yoso::num_parts(M, D, TAU);
      fd.B = B; fd.H = H; fd.S = S; fd.D = D; fd.m = M; fd.P = P; fd.per_part = D / TAU; fd.tau = TAU;
      yoso::LshDims ld;
      ld.B = B; ld.H = H; ld.Sq = S; ld.Sk = S; ld.m = M; ld.Dv = D; ld.tau = TAU;
      const int64_t nx = B * H * S * D, nc = B * H * S * M, nmask = B * S, nsigns = H * 3 * P * D;
      auto* x = static_cast<float*>(dmalloc(nx * 4));
      auto* xh = static_cast<__half*>(dmalloc(nx * 2));
      auto* mask = static_cast<int32_t*>(dmalloc(nmask * 4));
      auto* signs = static_cast<float*>(dmalloc(nsigns * 4));
      auto* codes = static_cast<int32_t*>(dmalloc(nc * 4));
      auto* out = static_cast<float*>(dmalloc(nx * 4));
      auto* outh = static_cast<__half*>(dmalloc(nx * 2));
      fill_uniform<<<grid(nx), 256, 0, stream>>>(x, nx, 1);
      to_half<<<grid(nx), 256, 0, stream>>>(x, xh, nx);
      fill_ones<<<grid(nmask), 256, 0, stream>>>(mask, nmask);
      fill_signs<<<grid(nsigns), 256, 0, stream>>>(signs, nsigns, 7);
      BENCH_OK(cudaGetLastError());
      const size_t fws_b = cu::fast_hash_workspace_size(fd);
      const size_t lws_b = std::max(cu::lsh_workspace_size(ld, cu::DType::kFloat32), cu::lsh_workspace_size(ld, cu::DType::kFloat16));
      void* fws = dmalloc(fws_b);
      void* lws = dmalloc(lws_b);
      const cu::LshPlan plan = cu::plan_lsh(ld, cu::DType::kFloat32);
      const int64_t rounds = ((B * H + plan.bh_chunk - 1) / plan.bh_chunk) * ((M + plan.f_chunk - 1) / plan.f_chunk);

      for (int half = 0; half < 2; ++half) {
        const size_t elt = half ? 2 : 4;
        int it_fh = 0, it_lsh = 0;
        const double fh_ms = time_ms(stream, [&] {
          BENCH_OK(cu::launch_fast_hash(fd, half ? cu::DType::kFloat16 : cu::DType::kFloat32, half ? static_cast<void*>(xh) : x,
                                        mask, signs, codes, fws, fws_b, stream));
        }, &it_fh, quick);
        const double lsh_ms = time_ms(stream, [&] {
          BENCH_OK(cu::launch_lsh_cumulation(ld, half ? cu::DType::kFloat16 : cu::DType::kFloat32, codes, codes, mask, mask,
                                             half ? static_cast<void*>(xh) : x, half ? static_cast<void*>(outh) : out,
                                             lws, lws_b, stream));
        }, &it_lsh, quick);
        const double fh_bytes = nx * elt + nmask * 4.0 + nsigns * 4.0 + nc * 4.0;
        const double lsh_bytes = 2.0 * nc * 4 + 2.0 * nmask * 4 + nx * elt + nx * elt;
        const double table_bytes = static_cast<double>(plan.table_bytes) * rounds;  // memsets (upper bound)
        const double lsh_traffic = lsh_bytes + (2.0 * nc * 4 + 2.0 * nmask * 4) /* validation pass */ + table_bytes +
                                   2.0 * B * H * M * S * D * 4 /* scatter RMW */ + 1.0 * B * H * M * S * D * 4 /* gather */;
        for (int op = 0; op < 2; ++op) {
          const double ms = op ? lsh_ms : fh_ms;
          const double bytes = op ? lsh_bytes : fh_bytes;
          const double gbs = bytes / (ms * 1e-3) / 1e9;
          std::printf("%s\n  {\"op\": \"%s\", \"dtype\": \"%s\", \"B\": %lld, \"S\": %lld, \"H\": %d, \"D\": %d, \"m\": %d, "
                      "\"tau\": %d, \"ms\": %.4f, \"iters\": %d, \"compulsory_bytes\": %.0f, \"gbs\": %.1f, "
                      "\"roofline_fraction_measured\": %.4f, \"roofline_fraction_nominal\": %.4f",
                      first ? "" : ",", op ? "LSHCumulation" : "FastHash", half ? "float16" : "float32",
                      static_cast<long long>(B), static_cast<long long>(S), H, D, M, TAU, ms, op ? it_lsh : it_fh, bytes, gbs,
                      gbs / copy_gbs, gbs / peak_gbs);
          if (op) {
            std::printf(", \"traffic_bytes\": %.0f, \"traffic_gbs\": %.1f, \"rounds\": %lld, \"workspace_bytes\": %zu",
                        lsh_traffic, lsh_traffic / (ms * 1e-3) / 1e9, static_cast<long long>(rounds), lws_b);
          }
          std::printf("}");
          first = false;
        }
        std::fflush(stdout);
      }
      for (void* p : {static_cast<void*>(x), static_cast<void*>(xh), static_cast<void*>(mask), static_cast<void*>(signs),
                      static_cast<void*>(codes), static_cast<void*>(out), static_cast<void*>(outh), fws, lws})
        BENCH_OK(cudaFree(p));
    }
  }
  std::printf("\n]}\n");
  BENCH_OK(cudaStreamDestroy(stream));
  return 0;
}
