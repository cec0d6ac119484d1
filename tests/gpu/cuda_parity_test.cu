// cuda_parity_test.cu -- the CUDA kernels (plugins/cuda) on a real GPU against the CPU kernels.
//
//   * FastHash: bit-identical codes for every D in 1..1024, many (m, tau), S = 1, 13, 4099, mask
//     patterns, float32 and float16 x, NaN / inf / -0 inputs;
//   * LSHCumulation: equal to rounding for random shapes incl. S = 1, 13, 4099, masks (all ones,
//     random, right-padded, all zeros), float32 and float16 values, several table budgets (one
//     round, chunks over (b, h), hash functions split over rounds);
//   * invalid mask / sign / code values: the device check reports the CPU's message; the kernels
//     never access memory out of bounds (run under compute-sanitizer --tool memcheck);
//   * CUDA-graph capture of both launches replays to the same results;
//   * a workspace that is too small is refused;
//   * the contract's edge shapes (gpu_edge_*): S = 1, 13, 4099 x D = 16..1024 x tau up to 16, and
//     empty B / S;
//   * gpu_small_*: a compact set of small shapes of every path (both dtypes, mask patterns, chunked
//     tables, no keys, invalid values) for the compute-sanitizer runs of scripts/device_check.sh.
// float16 bound (LSHCumulation): the float32 bound (2e-6 x the sum of |values| + 1e-7) plus one
// float16 ulp of the result (|want| / 1024 + 6e-8): sums are float32, rounded to float16 once.
// Exit status 0 = pass, 1 = failure, 77 = no CUDA device (skipped).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "yoso_cuda.h"
#include "yoso_test.h"

using namespace yoso_test;
using yoso::Half;
namespace cu = yoso::cuda;

namespace {

#define CUDA_OK(expr)                                                                              \
  do {                                                                                             \
    const cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                       \
      std::printf("  %s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, cu::error_string(e_).c_str()); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

cudaStream_t g_stream = nullptr;

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    if (n) CUDA_OK(cudaMalloc(&ptr, n * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    if (n) CUDA_OK(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), n(o.n) {
    o.ptr = nullptr;
    o.n = 0;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (n) CUDA_OK(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// A workspace full of garbage: the kernels must not depend on its content.
DeviceBuffer<unsigned char> garbage_workspace(size_t bytes) {
  DeviceBuffer<unsigned char> ws(bytes);
  if (bytes) CUDA_OK(cudaMemset(ws.ptr, 0xA5, bytes));
  return ws;
}

template <typename T>
std::vector<int32_t> gpu_fast_hash(const FastHashCase& c, const std::vector<T>& x, std::string* msg = nullptr) {
  DeviceBuffer<T> dx(x);
  DeviceBuffer<int32_t> dmask(c.mask);
  DeviceBuffer<float> dsigns(c.signs);
  DeviceBuffer<int32_t> dcodes(static_cast<size_t>(c.d.B * c.d.H * c.d.S * c.d.m));
  const size_t wsb = cu::fast_hash_workspace_size(c.d);
  auto ws = garbage_workspace(wsb);
  const auto type = std::is_same<T, Half>::value ? cu::DType::kFloat16 : cu::DType::kFloat32;
  CUDA_OK(cu::launch_fast_hash(c.d, type, dx.ptr, dmask.ptr, dsigns.ptr, dcodes.ptr, ws.ptr, wsb, g_stream));
  std::string m;
  bool checked = false;
  CUDA_OK(cu::fast_hash_check_inputs(c.d, dmask.ptr, dsigns.ptr, ws.ptr, g_stream, &m, &checked));
  YT_CHECK(checked, "the input check ran");
  if (msg) *msg = m;
  else YT_CHECK(m.empty(), "unexpected input error: " + m);
  CUDA_OK(cudaStreamSynchronize(g_stream));
  return dcodes.download();
}

template <typename T>
std::vector<T> gpu_lsh(const LshCase& c, const std::vector<T>& value, int64_t budget, std::string* msg = nullptr) {
  DeviceBuffer<int32_t> qc(c.qc), kc(c.kc), qm(c.qm), km(c.km);
  DeviceBuffer<T> v(value);
  DeviceBuffer<T> out(static_cast<size_t>(c.d.B * c.d.H * c.d.Sq * c.d.Dv));
  if (out.n) CUDA_OK(cudaMemset(out.ptr, 0x7f, out.n * sizeof(T)));
  const auto type = std::is_same<T, Half>::value ? cu::DType::kFloat16 : cu::DType::kFloat32;
  const size_t wsb = cu::lsh_workspace_size(c.d, type, budget);
  auto ws = garbage_workspace(wsb);
  CUDA_OK(cu::launch_lsh_cumulation(c.d, type, qc.ptr, kc.ptr, qm.ptr, km.ptr, v.ptr, out.ptr, ws.ptr, wsb,
                                    g_stream, budget));
  std::string m;
  bool checked = false;
  CUDA_OK(cu::lsh_check_inputs(c.d, qc.ptr, kc.ptr, qm.ptr, km.ptr, ws.ptr, g_stream, &m, &checked));
  YT_CHECK(checked, "the input check ran");
  if (msg) *msg = m;
  else YT_CHECK(m.empty(), "unexpected input error: " + m);
  CUDA_OK(cudaStreamSynchronize(g_stream));
  return out.download();
}

float as_float(float v) { return v; }
float as_float(Half h) { return yoso::half_to_float(h); }

template <typename T>
void compare_lsh(const LshCase& c, const std::vector<T>& got, const std::vector<float>& want,
                 const std::vector<float>& abs_ref, const std::string& what) {
  YT_CHECK(got.size() == want.size(), "size " + what);
  int bad = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const float g = as_float(got[i]);
    if (!lsh_close(g, want[i], abs_ref[i], std::is_same<T, Half>::value) && ++bad <= 3) {
      YT_CHECK(false, what + " " + c.label + ": element " + std::to_string(i) + " got " + std::to_string(g) +
                          " want " + std::to_string(want[i]));
    }
  }
}

void check_lsh(const LshCase& c) {
  const auto want = cpu_lsh(c, c.value);
  const auto abs_ref = cpu_lsh(c, abs_values(c.value));
  const int64_t table = (int64_t{1} << c.d.tau) * std::max<int64_t>(1, c.d.Dv);
  for (int64_t budget : {int64_t{0}, table, table * 3, table * std::max<int64_t>(1, c.d.m) * 2}) {
    compare_lsh(c, gpu_lsh(c, c.value, budget), want, abs_ref, "float32 budget=" + std::to_string(budget));
    compare_lsh(c, gpu_lsh(c, to_half(c.value), budget), want, abs_ref, "float16 budget=" + std::to_string(budget));
  }
}

}  // namespace

YT_TEST(gpu_fast_hash_bit_exact) {
  Rng rng(1234);
  int cases = 0;
  for (int64_t D : {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}) {
    for (int tau : {1, 2, 3, 5, 8, 9, 16, 30}) {
      if (tau > D) continue;
      const int64_t per_part = D / tau;
      for (int64_t m : {int64_t{1}, per_part, per_part + 1, 3 * per_part + 2, int64_t{128}}) {
        const auto c = make_fast_hash_case(rng, 1 + static_cast<int64_t>(rng() % 2), 1 + static_cast<int64_t>(rng() % 3),
                                           1 + static_cast<int64_t>(rng() % 13), D, m, tau,
                                           static_cast<MaskMode>(rng() % 3), false, true);
        YT_CHECK(gpu_fast_hash(c, c.x) == cpu_fast_hash(c), "codes differ for " + c.label);
        ++cases;
      }
    }
  }
  std::printf("  %d shapes\n", cases);
}

YT_TEST(gpu_fast_hash_sequence_lengths_and_fp16) {
  Rng rng(99);
  for (int64_t S : {1, 13, 4099}) {
    for (MaskMode mode : {MaskMode::kAllOnes, MaskMode::kRightPadded, MaskMode::kRandom, MaskMode::kAllZeros}) {
      const auto c = make_fast_hash_case(rng, 2, 4, S, 64, 32, 9, mode, true, true);
      const auto want = cpu_fast_hash(c);
      YT_CHECK(gpu_fast_hash(c, c.x) == want, "float32 S=" + std::to_string(S));
      YT_CHECK(gpu_fast_hash(c, to_half(c.x)) == want, "float16 S=" + std::to_string(S));
    }
  }
}

YT_TEST(gpu_lsh_random_shapes) {
  Rng rng(2024);
  int cases = 0;
  for (int tau : {1, 2, 4, 9, 16}) {
    for (int64_t Dv : {1, 3, 17, 64, 100}) {
      for (int64_t m : {1, 3, 32}) {
        const auto c = make_lsh_case(rng, 1 + static_cast<int64_t>(rng() % 2), 1 + static_cast<int64_t>(rng() % 3),
                                     static_cast<int64_t>(rng() % 20), static_cast<int64_t>(rng() % 50), m, Dv, tau,
                                     static_cast<MaskMode>(rng() % 3), static_cast<MaskMode>(rng() % 4), true);
        check_lsh(c);
        ++cases;
      }
    }
  }
  std::printf("  %d shapes x 4 budgets x 2 dtypes\n", cases);
}

YT_TEST(gpu_lsh_sequence_lengths) {
  Rng rng(5);
  for (int64_t S : {1, 13, 4099}) {
    for (MaskMode mode : {MaskMode::kAllOnes, MaskMode::kRightPadded, MaskMode::kRandom}) {
      check_lsh(make_lsh_case(rng, 2, 4, S, S, 32, 64, 9, mode, mode, true));
    }
  }
  // Queries and keys of different lengths; no keys; all keys masked.
  check_lsh(make_lsh_case(rng, 2, 2, 13, 4099, 8, 17, 6, MaskMode::kRandom, MaskMode::kRandom, true));
  check_lsh(make_lsh_case(rng, 2, 2, 13, 0, 8, 17, 6, MaskMode::kRandom, MaskMode::kRandom, true));
  check_lsh(make_lsh_case(rng, 2, 2, 13, 9, 8, 17, 6, MaskMode::kRandom, MaskMode::kAllZeros, true));
}

YT_TEST(gpu_invalid_inputs_are_reported_like_the_cpu) {
  Rng rng(11);
  auto c = make_fast_hash_case(rng, 2, 2, 9, 16, 7, 4, MaskMode::kRandom, false, false);
  c.mask[5] = 2;
  c.mask[11] = -1;
  std::string msg;
  (void)gpu_fast_hash(c, c.x, &msg);
  YT_CHECK(msg == yoso::check_mask_values("FastHash", "mask", 1, c.mask.data(), c.d.B * c.d.S), msg);
  auto s = make_fast_hash_case(rng, 1, 2, 4, 8, 3, 2, MaskMode::kAllOnes, false, false);
  s.signs[7] = 0.5f;
  (void)gpu_fast_hash(s, s.x, &msg);
  YT_CHECK(msg == yoso::check_signs_values(s.signs.data(), static_cast<int64_t>(s.signs.size())), msg);

  auto l = make_lsh_case(rng, 2, 2, 6, 7, 3, 4, 4, MaskMode::kRandom, MaskMode::kRandom, true);
  l.kc[4] = 1 << 28;  // far out of range: an unchecked index would be an illegal address
  l.kc[9] = -5;
  l.qc[2] = 16;
  (void)gpu_lsh(l, l.value, 0, &msg);
  YT_CHECK(msg == yoso::check_code_values("LSHCumulation", "query_codes", 0, l.qc.data(),
                                          static_cast<int64_t>(l.qc.size()), l.d.tau),
           msg);
  l.qm[1] = 9;
  (void)gpu_lsh(l, l.value, 0, &msg);
  YT_CHECK(msg == yoso::check_mask_values("LSHCumulation", "query_mask", 2, l.qm.data(), l.d.B * l.d.Sq), msg);
}

YT_TEST(gpu_graph_capture) {
  Rng rng(77);
  const auto fc = make_fast_hash_case(rng, 2, 3, 37, 64, 16, 8, MaskMode::kRightPadded, false, false);
  const auto lc = make_lsh_case(rng, 2, 3, 37, 37, 16, 64, 8, MaskMode::kRightPadded, MaskMode::kRightPadded, true);
  DeviceBuffer<float> x(fc.x), signs(fc.signs), value(lc.value), out(static_cast<size_t>(2 * 3 * 37 * 64));
  DeviceBuffer<int32_t> mask(fc.mask), codes(static_cast<size_t>(2 * 3 * 37 * 16));
  DeviceBuffer<int32_t> qc(lc.qc), kc(lc.kc), qm(lc.qm), km(lc.km);
  const size_t fws_b = cu::fast_hash_workspace_size(fc.d);
  const size_t lws_b = cu::lsh_workspace_size(lc.d, cu::DType::kFloat32);
  auto fws = garbage_workspace(fws_b);
  auto lws = garbage_workspace(lws_b);

  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeGlobal));
  CUDA_OK(cu::launch_fast_hash(fc.d, cu::DType::kFloat32, x.ptr, mask.ptr, signs.ptr, codes.ptr, fws.ptr, fws_b, g_stream));
  std::string msg;
  bool checked = true;
  CUDA_OK(cu::fast_hash_check_inputs(fc.d, mask.ptr, signs.ptr, fws.ptr, g_stream, &msg, &checked));
  YT_CHECK(!checked && msg.empty(), "no synchronising check while capturing");
  CUDA_OK(cu::launch_lsh_cumulation(lc.d, cu::DType::kFloat32, qc.ptr, kc.ptr, qm.ptr, km.ptr, value.ptr, out.ptr,
                                    lws.ptr, lws_b, g_stream));
  CUDA_OK(cudaStreamEndCapture(g_stream, &graph));
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 3; ++replay) {
    CUDA_OK(cudaGraphLaunch(exec, g_stream));
    CUDA_OK(cudaStreamSynchronize(g_stream));
    YT_CHECK(codes.download() == cpu_fast_hash(fc), "graph replay FastHash");
    const auto want = cpu_lsh(lc, lc.value);
    const auto abs_ref = cpu_lsh(lc, abs_values(lc.value));
    compare_lsh(lc, out.download(), want, abs_ref, "graph replay LSHCumulation");
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
}

YT_TEST(gpu_small_workspace_is_refused) {
  Rng rng(3);
  const auto lc = make_lsh_case(rng, 1, 2, 8, 8, 4, 8, 4, MaskMode::kAllOnes, MaskMode::kAllOnes, true);
  DeviceBuffer<int32_t> qc(lc.qc), kc(lc.kc), qm(lc.qm), km(lc.km);
  DeviceBuffer<float> value(lc.value), out(static_cast<size_t>(2 * 8 * 8));
  const size_t need = cu::lsh_workspace_size(lc.d, cu::DType::kFloat32);
  DeviceBuffer<unsigned char> ws(need);
  YT_CHECK(cu::launch_lsh_cumulation(lc.d, cu::DType::kFloat32, qc.ptr, kc.ptr, qm.ptr, km.ptr, value.ptr, out.ptr,
                                     ws.ptr, need - 1, g_stream) == cudaErrorInvalidValue,
           "too small");
  YT_CHECK(cu::launch_fast_hash(yoso::FastHashDims{}, cu::DType::kFloat32, nullptr, nullptr, nullptr, nullptr,
                                nullptr, 0, g_stream) == cudaErrorInvalidValue,
           "no workspace");
}

YT_TEST(gpu_edge_fast_hash_contract_shapes) {
  // S = 1, 13, 4099 for every D from 16 to 1024 and tau in {1, 9, 16}, with padding masks.
  Rng rng(4099);
  int cases = 0;
  for (int64_t S : {1, 13, 4099}) {
    for (int64_t D : {16, 32, 64, 128, 256, 512, 1024}) {
      for (int tau : {1, 9, 16}) {
        const int64_t per_part = D / tau;
        const int64_t m = std::min<int64_t>(per_part + 1, 64);
        const MaskMode mode = S == 4099 ? MaskMode::kRightPadded : static_cast<MaskMode>(cases % 3);
        const auto c = make_fast_hash_case(rng, S == 4099 ? 1 : 2, S == 4099 ? 1 : 3, S, D, m, tau, mode, true, true);
        const auto want = cpu_fast_hash(c);
        YT_CHECK(gpu_fast_hash(c, c.x) == want, "float32 codes differ for " + c.label);
        YT_CHECK(gpu_fast_hash(c, to_half(c.x)) == want, "float16 codes differ for " + c.label);
        ++cases;
      }
    }
  }
  std::printf("  %d shapes x 2 dtypes\n", cases);
}

YT_TEST(gpu_edge_lsh_contract_shapes) {
  Rng rng(4100);
  for (int64_t S : {1, 13, 4099}) {
    for (int tau : {1, 9, 16}) {
      for (int64_t Dv : {1, 64, 100}) {
        check_lsh(make_lsh_case(rng, S == 4099 ? 1 : 2, 2, S, S, 8, Dv, tau, MaskMode::kRightPadded,
                                MaskMode::kRightPadded, true));
      }
    }
  }
}

YT_TEST(gpu_edge_empty_batch_and_sequence) {
  Rng rng(0);
  for (const auto& bs : {std::pair<int64_t, int64_t>{0, 5}, {2, 0}, {0, 0}}) {
    const auto c = make_fast_hash_case(rng, bs.first, 2, bs.second, 16, 6, 4, MaskMode::kAllOnes, false, false);
    YT_CHECK(gpu_fast_hash(c, c.x).empty(), "FastHash: empty output for B=" + std::to_string(bs.first));
    const auto l = make_lsh_case(rng, bs.first, 2, bs.second, bs.second, 6, 8, 4, MaskMode::kAllOnes,
                                 MaskMode::kAllOnes, true);
    YT_CHECK(gpu_lsh(l, l.value, 0).empty(), "LSHCumulation: empty output");
  }
  // Queries but no keys: zeros; keys but no queries: empty.
  const auto nk = make_lsh_case(rng, 2, 2, 5, 0, 3, 4, 4, MaskMode::kAllOnes, MaskMode::kAllOnes, true);
  const auto out = gpu_lsh(nk, nk.value, 0);
  YT_CHECK(out.size() == 2 * 2 * 5 * 4 && std::all_of(out.begin(), out.end(), [](float v) { return v == 0.0f; }),
           "Sk = 0 gives zeros");
  const auto nq = make_lsh_case(rng, 2, 2, 0, 5, 3, 4, 4, MaskMode::kAllOnes, MaskMode::kAllOnes, true);
  YT_CHECK(gpu_lsh(nq, nq.value, 0).empty(), "Sq = 0 gives an empty output");
}

// Small shapes of every path, for compute-sanitizer (memcheck / racecheck / initcheck): each call is
// one of the paths the large tests take, at sizes the sanitizers get through in seconds.
YT_TEST(gpu_small_fast_hash) {
  Rng rng(17);
  for (int64_t D : {1, 16, 64, 1024}) {
    for (int tau : {1, 9, 16}) {
      if (tau > D) continue;
      const auto c = make_fast_hash_case(rng, 2, 2, 13, D, D / tau + 1, tau, MaskMode::kRandom, true, true);
      YT_CHECK(gpu_fast_hash(c, c.x) == cpu_fast_hash(c), "float32 " + c.label);
      YT_CHECK(gpu_fast_hash(c, to_half(c.x)) == cpu_fast_hash(c), "float16 " + c.label);
    }
  }
}

YT_TEST(gpu_small_lsh) {
  Rng rng(18);
  check_lsh(make_lsh_case(rng, 2, 2, 13, 11, 8, 17, 6, MaskMode::kRandom, MaskMode::kRightPadded, true));
  check_lsh(make_lsh_case(rng, 1, 3, 1, 13, 3, 64, 9, MaskMode::kAllOnes, MaskMode::kRandom, true));
  check_lsh(make_lsh_case(rng, 2, 1, 9, 9, 4, 5, 16, MaskMode::kRightPadded, MaskMode::kRightPadded, true));
  check_lsh(make_lsh_case(rng, 2, 2, 7, 0, 4, 8, 5, MaskMode::kAllOnes, MaskMode::kAllOnes, true));
  check_lsh(make_lsh_case(rng, 2, 2, 7, 6, 4, 8, 5, MaskMode::kAllOnes, MaskMode::kAllZeros, true));
}

YT_TEST(gpu_small_invalid_inputs) {
  Rng rng(19);
  auto c = make_fast_hash_case(rng, 1, 2, 5, 16, 4, 4, MaskMode::kAllOnes, false, false);
  c.mask[3] = 5;
  std::string msg;
  (void)gpu_fast_hash(c, c.x, &msg);
  YT_CHECK(!msg.empty(), "invalid mask reported");
  auto l = make_lsh_case(rng, 1, 2, 5, 6, 3, 4, 4, MaskMode::kAllOnes, MaskMode::kAllOnes, true);
  l.kc[1] = 1 << 20;
  (void)gpu_lsh(l, l.value, 0, &msg);
  YT_CHECK(!msg.empty(), "invalid code reported");
}

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: %s\n", e != cudaSuccess ? cu::error_string(e).c_str() : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  CUDA_OK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  const int rc = yoso_test::run_all(argc, argv);
  CUDA_OK(cudaStreamDestroy(g_stream));
  return rc;
}
