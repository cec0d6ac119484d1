/* leak_harness.c -- drive libyoso_ort.so through the ONNX Runtime C API, then release everything.
 *
 * Run under valgrind by tests/test_leaks.py:
 *
 *   leak_harness LIBONNXRUNTIME LIBYOSO_ORT MODEL RUNS
 *
 * LIBONNXRUNTIME is the onnxruntime wheel's bundled capi/libonnxruntime.so.<version> (dlopen'ed, so
 * no link-time SONAME symlink is needed); the headers are ONNX Runtime's C API headers.
 *
 * MODEL (written by the test) has inputs q, k [1,H,S,D] float, mask [1,S] int32, v [1,H,S,DV] float,
 * a signs initializer, and computes out = LSHCumulation(FastHash(q), FastHash(k), mask, mask, v)
 * [1,H,S,DV]: both custom ops. The harness creates an environment, session options with the library
 * registered (RegisterCustomOpsLibrary_V2, so ONNX Runtime loads and owns it), a session, runs it
 * RUNS times on deterministic integer-valued inputs (exact in float, so the test can recompute
 * them), prints the last output ("out <i> <value>" lines), runs once more with an invalid mask
 * value (the error status must name FastHash; printed as "status: ..."), releases every object
 * it created and prints "done". Exit status 2 on any unexpected API failure, 3 if the invalid
 * mask is accepted.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnxruntime_c_api.h"

#define H 2
#define S 6
#define D 8
#define DV 4

static const OrtApi* api;

static void check(OrtStatus* status, const char* what) {
  if (status != NULL) {
    fprintf(stderr, "%s failed: %s\n", what, api->GetErrorMessage(status));
    api->ReleaseStatus(status);
    exit(2);
  }
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s LIBONNXRUNTIME LIBYOSO_ORT MODEL RUNS\n", argv[0]);
    return 2;
  }
  const char* lib = argv[2];
  const char* model = argv[3];
  const int runs = atoi(argv[4]);

  void* ort = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (ort == NULL) {
    fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
    return 2;
  }
  typedef const OrtApiBase* (*GetApiBaseFn)(void);
  GetApiBaseFn get_api_base;
  *(void**)(&get_api_base) = dlsym(ort, "OrtGetApiBase");
  if (get_api_base == NULL) {
    fprintf(stderr, "no OrtGetApiBase in %s\n", argv[1]);
    return 2;
  }
  api = get_api_base()->GetApi(ORT_API_VERSION);
  if (api == NULL) {
    fprintf(stderr, "this ONNX Runtime lacks C API version %d\n", ORT_API_VERSION);
    return 2;
  }

  OrtEnv* env = NULL;
  OrtSessionOptions* options = NULL;
  OrtSession* session = NULL;
  OrtMemoryInfo* memory = NULL;
  check(api->CreateEnv(ORT_LOGGING_LEVEL_FATAL, "leak_harness", &env), "CreateEnv");
  check(api->CreateSessionOptions(&options), "CreateSessionOptions");
  check(api->SetIntraOpNumThreads(options, 2), "SetIntraOpNumThreads");
  check(api->RegisterCustomOpsLibrary_V2(options, lib), "RegisterCustomOpsLibrary_V2");
  check(api->CreateSession(env, model, options, &session), "CreateSession");
  check(api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory), "CreateCpuMemoryInfo");

  static float q[H * S * D], k[H * S * D], v[H * S * DV];
  static int32_t mask[S];
  for (int i = 0; i < H * S * D; ++i) {
    q[i] = (float)((i * 7) % 11) - 5.0f;
    k[i] = (float)((i * 5) % 13) - 6.0f;
  }
  for (int i = 0; i < H * S * DV; ++i) v[i] = (float)(i % 7) - 3.0f;
  for (int i = 0; i < S; ++i) mask[i] = i < S - 1;  /* last token is padding */

  const int64_t x_shape[4] = {1, H, S, D}, m_shape[2] = {1, S}, v_shape[4] = {1, H, S, DV};
  OrtValue* inputs[4] = {NULL, NULL, NULL, NULL};
  check(api->CreateTensorWithDataAsOrtValue(memory, q, sizeof q, x_shape, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                            &inputs[0]), "CreateTensor q");
  check(api->CreateTensorWithDataAsOrtValue(memory, k, sizeof k, x_shape, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                            &inputs[1]), "CreateTensor k");
  check(api->CreateTensorWithDataAsOrtValue(memory, mask, sizeof mask, m_shape, 2,
                                            ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, &inputs[2]), "CreateTensor mask");
  check(api->CreateTensorWithDataAsOrtValue(memory, v, sizeof v, v_shape, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                            &inputs[3]), "CreateTensor v");
  const char* input_names[4] = {"q", "k", "mask", "v"};
  const char* output_names[1] = {"out"};

  for (int r = 0; r < runs; ++r) {
    OrtValue* out = NULL;
    check(api->Run(session, NULL, input_names, (const OrtValue* const*)inputs, 4, output_names, 1, &out), "Run");
    float* data = NULL;
    check(api->GetTensorMutableData(out, (void**)&data), "GetTensorMutableData");
    if (r == runs - 1) {
      for (int i = 0; i < H * S * DV; ++i) printf("out %d %.9g\n", i, (double)data[i]);
    }
    api->ReleaseValue(out);
  }

  /* The error path must not leak either: an invalid mask value is refused with a status. */
  mask[1] = 2;
  OrtValue* out = NULL;
  OrtStatus* status = api->Run(session, NULL, input_names, (const OrtValue* const*)inputs, 4, output_names, 1, &out);
  if (status == NULL) {
    fprintf(stderr, "the invalid mask value was accepted\n");
    return 3;
  }
  printf("status: %s\n", api->GetErrorMessage(status));
  api->ReleaseStatus(status);
  if (out != NULL) api->ReleaseValue(out);

  for (int i = 0; i < 4; ++i) api->ReleaseValue(inputs[i]);
  api->ReleaseMemoryInfo(memory);
  api->ReleaseSession(session);
  api->ReleaseSessionOptions(options);
  api->ReleaseEnv(env);
  dlclose(ort);
  printf("done\n");
  return 0;
}
