// yoso_ort_common.h -- what the execution providers of libyoso_ort.so share (plugins/ort/cpu,
// plugins/ort/cuda): status and attribute helpers, the exception firewall around the lite-op
// callbacks (Hardened), output shape inference, ONNX Runtime's parallel-for and the kernel report.
// Included by the per-provider translation units only; see yoso_ort.cc for the design notes.
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#include "onnxruntime_lite_custom_op.h"
#undef ORT_API_MANUAL_INIT

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "yoso_attrs.h"
#include "yoso_cpu.h"
#include "yoso_validate.h"

namespace yoso_ort {

constexpr int kOpsetVersion = 1;


// ---------------------------------------------------------------------------------------------
// Helpers shared by all execution providers
// ---------------------------------------------------------------------------------------------

inline yoso::ShapeRef shape_ref(const std::vector<int64_t>& shape) {
  return yoso::ShapeRef{shape.data(), shape.size()};
}

inline Ort::Status invalid_argument(const std::string& msg) {
  return Ort::Status(msg.c_str(), ORT_INVALID_ARGUMENT);
}

// Takes ownership of a C API status and returns its message (empty if status is null).
inline std::string take_status_message(const OrtApi* api, OrtStatus* status) {
  if (status == nullptr) return {};
  std::string msg = api->GetErrorMessage(status);
  api->ReleaseStatus(status);
  return msg.empty() ? std::string("unknown error") : msg;
}

// Reads a required int64 attribute without throwing; returns an error message or "".
inline std::string read_int_attr(const OrtApi* api, const OrtKernelInfo* info, const char* op,
                          const char* name, int64_t* value) {
  std::string err = take_status_message(api, api->KernelInfoGetAttribute_int64(info, name, value));
  if (!err.empty()) {
    return std::string(op) + ": required int attribute '" + name +
           "' is missing or not an int (" + err + "). Fix: set " + name + " on the node.";
  }
  return {};
}

// Checks the node's arity: all `names` inputs present (lite ops declare their inputs optional,
// so ONNX Runtime itself would accept a node with fewer or empty inputs) and one output.
inline std::string check_node_io(const OrtApi* api, const OrtKernelInfo* info, const char* op,
                          const std::vector<const char*>& names) {
  size_t n_in = 0, n_out = 0;
  std::string err = take_status_message(api, api->KernelInfo_GetInputCount(info, &n_in));
  if (err.empty()) err = take_status_message(api, api->KernelInfo_GetOutputCount(info, &n_out));
  if (!err.empty()) return std::string(op) + ": cannot inspect the node: " + err;
  if (n_in != names.size()) {
    return std::string(op) + ": expects " + std::to_string(names.size()) + " inputs, got " +
           std::to_string(n_in) + ". Fix: wire all inputs of the op (see plugins/OPS.md).";
  }
  if (n_out != 1) {
    return std::string(op) + ": expects 1 output, got " + std::to_string(n_out) + ".";
  }
  for (size_t i = 0; i < n_in; ++i) {
    size_t size = 0;
    err = take_status_message(api, api->KernelInfo_GetInputName(info, i, nullptr, &size));
    if (!err.empty()) return std::string(op) + ": cannot inspect input " + std::to_string(i) + ": " + err;
    if (size <= 1) {  // only the terminating NUL: the optional-input placeholder ""
      return std::string(op) + ": input '" + names[i] + "' (input " + std::to_string(i) +
             ") is missing. Fix: wire all inputs of the op (see plugins/OPS.md).";
    }
  }
  return {};
}

// Reads the node's attributes into `out` (plugins/common/yoso_attrs.h) after checking its arity:
// "" or the message kernel creation reports. Every kernel (CPU and CUDA, every type) starts here.
template <class Attrs>
std::string read_attrs(const OrtApi* api, const OrtKernelInfo* info, Attrs* out) noexcept {
  try {
    const std::vector<const char*> inputs(Attrs::kInputNames, Attrs::kInputNames + Attrs::kNumInputs);
    std::string err = check_node_io(api, info, Attrs::kOp, inputs);
    int64_t values[Attrs::kNumAttrs] = {};
    for (int i = 0; err.empty() && i < Attrs::kNumAttrs; ++i)
      err = read_int_attr(api, info, Attrs::kOp, Attrs::kAttrNames[i], &values[i]);
    if (err.empty()) err = yoso::make_attrs(values, out);
    return err;
  } catch (...) {
    return std::string(Attrs::kOp) + ": out of memory while creating the kernel";
  }
}

// The part every kernel shares: the op's attributes, read when ONNX Runtime creates the kernel; a
// problem is kept in init_error() and reported by kernel creation (Hardened::CreateKernelV2).
template <class AttrsT>
class KernelBase {
 public:
  using Attrs = AttrsT;
  KernelBase(const OrtApi* api, const OrtKernelInfo* info) noexcept { init_error_ = read_attrs(api, info, &attrs_); }
  const std::string& init_error() const { return init_error_; }

 protected:
  Attrs attrs_;
  std::string init_error_;
};

// ---------------------------------------------------------------------------------------------
// Shape inference (OrtCustomOp::InferOutputShapeFn)
// ---------------------------------------------------------------------------------------------

// One input as shape inference sees it: rank and sizes (negative: unknown or symbolic; its name in
// `symbols`), or has_shape = false when the graph gives no shape.
struct InferInput {
  bool has_shape = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
  std::vector<const char*> symbols;  // "" where the size has no name
  yoso::ShapeRef ref() const { return yoso::ShapeRef{dims.data(), dims.size()}; }
};

inline std::string infer_input(const OrtApi& api, OrtShapeInferContext* ctx, size_t i, InferInput* in) {
  OrtTensorTypeAndShapeInfo* info = nullptr;  // owned by the context
  std::string err = take_status_message(&api, api.ShapeInferContext_GetInputTypeShape(ctx, i, &info));
  if (!err.empty() || info == nullptr) return err;
  size_t rank = 0;
  err = take_status_message(&api, api.GetTensorElementType(info, &in->type));
  if (err.empty()) err = take_status_message(&api, api.GetDimensionsCount(info, &rank));
  if (!err.empty()) return err;
  in->dims.assign(rank, -1);
  in->symbols.assign(rank, "");
  if (rank > 0) {
    err = take_status_message(&api, api.GetDimensions(info, in->dims.data(), rank));
    if (err.empty()) err = take_status_message(&api, api.GetSymbolicDimensions(info, in->symbols.data(), rank));
    if (!err.empty()) return err;
  }
  for (size_t k = 0; k < rank; ++k) {
    if (in->symbols[k] == nullptr) in->symbols[k] = "";
    if (in->symbols[k][0] != '\0' || in->dims[k] < 0) in->dims[k] = -1;
  }
  in->has_shape = rank > 0;  // the ops take no scalars: rank 0 means "no shape known"
  return {};
}

inline std::string infer_int_attr(const OrtApi& api, OrtShapeInferContext* ctx, const char* op,
                                  const char* name, int64_t* value) {
  const OrtOpAttr* attr = nullptr;
  std::string err = take_status_message(&api, api.ShapeInferContext_GetAttribute(ctx, name, &attr));
  size_t size = 0;
  if (err.empty() && attr == nullptr) err = "not set";
  if (err.empty()) err = take_status_message(&api, api.ReadOpAttr(attr, ORT_OP_ATTR_INT, value, sizeof(*value), &size));
  if (!err.empty()) {
    return std::string(op) + ": required int attribute '" + name + "' is missing or not an int (" + err +
           "). Fix: set " + name + " on the node.";
  }
  return {};
}

// Output 0 of type `type` and sizes dims[i] (or the name names[i] where non-empty).
inline std::string infer_set_output(const OrtApi& api, OrtShapeInferContext* ctx, ONNXTensorElementDataType type,
                                    const std::vector<int64_t>& dims, const std::vector<std::string>& names) {
  std::vector<const char*> symbols;
  for (const std::string& n : names) symbols.push_back(n.c_str());
  OrtTensorTypeAndShapeInfo* info = nullptr;
  std::string err = take_status_message(&api, api.CreateTensorTypeAndShapeInfo(&info));
  if (!err.empty()) return err;
  err = take_status_message(&api, api.SetTensorElementType(info, type));
  if (err.empty()) err = take_status_message(&api, api.SetDimensions(info, dims.data(), dims.size()));
  if (err.empty())
    err = take_status_message(&api, api.SetSymbolicDimensions(info, const_cast<const char**>(symbols.data()), symbols.size()));
  if (err.empty()) err = take_status_message(&api, api.ShapeInferContext_SetOutputTypeShape(ctx, 0, info));
  api.ReleaseTensorTypeAndShapeInfo(info);
  return err;
}

// Reads the attributes and the inputs of the node being inferred. *ready is false when the node
// has fewer inputs than the op (kernel creation reports that).
template <class Attrs>
std::string infer_prepare(const OrtApi& api, OrtShapeInferContext* ctx, Attrs* attrs, InferInput* in, bool* ready) {
  *ready = false;
  size_t n = 0;
  std::string err = take_status_message(&api, api.ShapeInferContext_GetInputCount(ctx, &n));
  if (!err.empty() || n != static_cast<size_t>(Attrs::kNumInputs)) return err;
  int64_t values[Attrs::kNumAttrs] = {};
  for (int i = 0; err.empty() && i < Attrs::kNumAttrs; ++i)
    err = infer_int_attr(api, ctx, Attrs::kOp, Attrs::kAttrNames[i], &values[i]);
  if (err.empty()) err = yoso::make_attrs(values, attrs);
  for (int i = 0; err.empty() && i < Attrs::kNumInputs; ++i) err = infer_input(api, ctx, static_cast<size_t>(i), &in[i]);
  *ready = err.empty();
  return err;
}

inline OrtStatus* infer_error(const OrtApi& api, const std::string& err) {
  return err.empty() ? nullptr : api.CreateStatus(ORT_INVALID_ARGUMENT, err.c_str());
}

// The 4 output sizes, each taken from an input size (`input`, `dim`) or a constant. A size that is
// unknown and unnamed gets a fresh name "yoso_unk_<n>", unique in the process: ONNX Runtime's
// SetOutputTypeShape turns an unnamed size into a dim_value, so -1 cannot mean "unknown" there, and
// a unique name claims no equality with any other size.
struct OutDim {
  int input;  // -1: constant
  int dim;
  int64_t constant;
};
inline std::string fresh_dim_name() {
  static std::atomic<uint64_t> fresh{0};
  return "yoso_unk_" + std::to_string(fresh.fetch_add(1));
}
inline void infer_dims(const InferInput* in, const OutDim (&spec)[4], std::vector<int64_t>* dims,
                       std::vector<std::string>* names) {
  dims->assign(4, -1);
  names->assign(4, std::string());
  for (int k = 0; k < 4; ++k) {
    if (spec[k].input < 0) {
      (*dims)[k] = spec[k].constant;
      continue;
    }
    const InferInput& src = in[spec[k].input];
    if (src.has_shape && src.dims.size() == 4) {
      (*dims)[k] = src.dims[spec[k].dim];
      (*names)[k] = src.symbols[spec[k].dim];
    }
    if ((*dims)[k] < 0 && (*names)[k].empty()) (*names)[k] = fresh_dim_name();
  }
}

// Sizes known at load time break the contract: the output still gets its type (so ONNX Runtime's
// type checks and kernel selection see the right one, e.g. a float16 node reaches the kernel that
// refuses it by name) and rank 4 with unknown sizes; the run-time check reports the violation.
// ONNX Runtime 1.32 ignores the returned error, so that check is what the user sees.
inline OrtStatus* infer_violation(const OrtApi& api, OrtShapeInferContext* ctx, ONNXTensorElementDataType type,
                                  const std::string& err) {
  std::vector<int64_t> dims(4, -1);
  std::vector<std::string> names;
  for (int k = 0; k < 4; ++k) names.push_back(fresh_dim_name());
  infer_set_output(api, ctx, type, dims, names);
  return infer_error(api, err);
}

// FastHash: codes int32 [B, H, S, num_hash] from x [B, H, S, D].
inline OrtStatus* infer_output(const OrtApi& api, OrtShapeInferContext* ctx, const yoso::FastHashAttrs*) {
  yoso::FastHashAttrs a;
  InferInput in[3];
  bool ready = false;
  std::string err = infer_prepare(api, ctx, &a, in, &ready);
  if (!ready) return infer_error(api, err);
  const InferInput &x = in[0], &mask = in[1], &signs = in[2];
  if (x.has_shape && x.dims.size() != 4) err = yoso::detail::rank_error(a.kOp, "x", 0, 4, "[B,H,S,D]", x.ref());
  if (err.empty() && mask.has_shape && mask.dims.size() != 2)
    err = yoso::detail::rank_error(a.kOp, "mask", 1, 2, "[B,S]", mask.ref());
  if (err.empty() && signs.has_shape && signs.dims.size() != 4)
    err = yoso::detail::rank_error(a.kOp, "signs", 2, 4, "[H,3,P,D]", signs.ref());
  if (err.empty() && x.has_shape && mask.has_shape && signs.has_shape)
    err = yoso::check_fast_hash_known_dims(x.ref(), mask.ref(), signs.ref(), a.num_hash, a.hash_code_len);
  if (!err.empty()) return infer_violation(api, ctx, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, err);
  std::vector<int64_t> dims;
  std::vector<std::string> names;
  infer_dims(in, {{0, 0, 0}, {0, 1, 0}, {0, 2, 0}, {-1, 0, a.num_hash}}, &dims, &names);
  return infer_error(api, infer_set_output(api, ctx, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, dims, names));
}

// LSHCumulation: output of value's type [B, H, Sq, Dv] from query_codes [B, H, Sq, m] and value.
inline OrtStatus* infer_output(const OrtApi& api, OrtShapeInferContext* ctx, const yoso::LshAttrs*) {
  yoso::LshAttrs a;
  InferInput in[5];
  bool ready = false;
  std::string err = infer_prepare(api, ctx, &a, in, &ready);
  if (!ready) return infer_error(api, err);
  static const size_t ranks[5] = {4, 4, 2, 2, 4};
  static const char* const layouts[5] = {"[B,H,Sq,m]", "[B,H,Sk,m]", "[B,Sq]", "[B,Sk]", "[B,H,Sk,Dv]"};
  bool all_shapes = true;
  for (int i = 0; i < 5 && err.empty(); ++i) {
    all_shapes = all_shapes && in[i].has_shape;
    if (in[i].has_shape && in[i].dims.size() != ranks[i])
      err = yoso::detail::rank_error(a.kOp, a.kInputNames[i], i, ranks[i], layouts[i], in[i].ref());
  }
  if (err.empty() && all_shapes)
    err = yoso::check_lsh_known_dims(in[0].ref(), in[1].ref(), in[2].ref(), in[3].ref(), in[4].ref());
  const ONNXTensorElementDataType type =
      in[4].type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : in[4].type;
  if (!err.empty()) return infer_violation(api, ctx, type, err);
  std::vector<int64_t> dims;
  std::vector<std::string> names;
  infer_dims(in, {{0, 0, 0}, {0, 1, 0}, {0, 2, 0}, {4, 3, 0}}, &dims, &names);
  return infer_error(api, infer_set_output(api, ctx, type, dims, names));
}

// ---------------------------------------------------------------------------------------------
// Exception firewall around the lite-op callbacks
// ---------------------------------------------------------------------------------------------

inline OrtStatus* status_from_current_exception(const char* op) noexcept {
  const OrtApi& api = Ort::GetApi();
  try {
    throw;
  } catch (const Ort::Exception& e) {
    return api.CreateStatus(e.GetOrtErrorCode(), (std::string(op) + ": " + e.what()).c_str());
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": out of memory").c_str());
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": " + e.what()).c_str());
  } catch (...) {
    return api.CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": unknown error").c_str());
  }
}

// The lite-op template builds kernels and calls Compute through callbacks that may throw (e.g.
// Ort::Custom::Tensor's constructor). Hardened<K> replaces them with noexcept wrappers that
// forward to the originals and convert any exception into an OrtStatus. It also routes kernel
// creation through CreateKernelV2 so that attribute errors are reported at session creation.
template <typename Kernel>
struct Hardened {
  using LiteOp = Ort::Custom::OrtLiteCustomStruct<Kernel>;
  using LiteKernel = typename LiteOp::Kernel;

  static inline decltype(OrtCustomOp::CreateKernel) inner_create = nullptr;
  static inline decltype(OrtCustomOp::KernelComputeV2) inner_compute = nullptr;

  static OrtStatusPtr ORT_API_CALL CreateKernelV2(const OrtCustomOp* op, const OrtApi* api,
                                                  const OrtKernelInfo* info,
                                                  void** kernel) noexcept {
    *kernel = nullptr;
    try {
      void* created = inner_create(op, api, info);
      const std::string& err = static_cast<LiteKernel*>(created)->custom_op_->init_error();
      if (!err.empty()) {
        OrtStatus* status = api->CreateStatus(ORT_INVALID_ARGUMENT, err.c_str());
        op->KernelDestroy(created);
        return status;
      }
      *kernel = created;
      return nullptr;
    } catch (...) {
      return status_from_current_exception(Kernel::kName);
    }
  }

  // Output type and shape at graph load time (ONNX Runtime's shape inference), with the static
  // checks of the contract on the sizes known then (infer_output below): a violation returns an
  // error and sets no output (ONNX Runtime ignores the error; Compute reports the violation).
  static OrtStatusPtr ORT_API_CALL InferOutputShape(const OrtCustomOp*, OrtShapeInferContext* ctx) noexcept {
    try {
      return infer_output(Ort::GetApi(), ctx, static_cast<const typename Kernel::Attrs*>(nullptr));
    } catch (...) {
      return status_from_current_exception(Kernel::kName);
    }
  }

  static OrtStatusPtr ORT_API_CALL ComputeV2(void* kernel, OrtKernelContext* context) noexcept {
    try {
      return inner_compute(kernel, context);
    } catch (...) {
      return status_from_current_exception(Kernel::kName);
    }
  }

  static const OrtCustomOp* Create(const char* execution_provider) {
    std::unique_ptr<Ort::Custom::OrtLiteCustomOp> op{
        Ort::Custom::CreateLiteCustomOp<Kernel>(Kernel::kName, execution_provider,
                                                /*start_ver=*/kOpsetVersion,
                                                /*end_ver=*/kOpsetVersion)};
    inner_create = op->CreateKernel;
    inner_compute = op->KernelComputeV2;
    op->CreateKernelV2 = &CreateKernelV2;
    op->KernelComputeV2 = &ComputeV2;
    op->InferOutputShapeFn = &InferOutputShape;
    return op.release();
  }
};

// Runs fn(i) for i in [0, n_tasks) on ONNX Runtime's intra-op pool (inline for a single task).
inline void parallel_for(OrtKernelContext* context, void (*fn)(void*, size_t), size_t n_tasks, void* job) {
  if (n_tasks == 0) return;
  if (n_tasks == 1) {
    fn(job, 0);
    return;
  }
  Ort::KernelContext(context).ParallelFor(fn, n_tasks, 0, job);
}

// ---------------------------------------------------------------------------------------------
// Kernel report (diagnostics and tests): YOSO_KERNEL_REPORT=<file>
// ---------------------------------------------------------------------------------------------
// Read when the kernel is created. If set, every Compute call appends one line:
//   yoso-kernel op=FastHash node=<node> provider=CPUExecutionProvider kernel=avx2 tasks=<parallel
//   tasks> <dims: B=.. H=.. S=.. D=.. m=.. tau=..> cpu_avx2_fma=1
// (kernel: yoso::cpu::cpu_kernel_name of the dispatch's choice; cpu_avx2_fma: what the CPU supports).
// with one write(2) on an O_APPEND descriptor (lines of concurrent calls never interleave). A file
// that cannot be opened is reported once on stderr; inference is never affected.
class KernelReport {
 public:
  // Never throws (a failure to allocate leaves the report off).
  KernelReport(const OrtApi* api, const OrtKernelInfo* info) noexcept {
    try {
      const char* path = std::getenv("YOSO_KERNEL_REPORT");
      if (path == nullptr || path[0] == '\0') return;
      size_t size = 0;
      std::string node;
      if (take_status_message(api, api->KernelInfo_GetNodeName(info, nullptr, &size)).empty() && size > 1) {
        node.resize(size);
        if (!take_status_message(api, api->KernelInfo_GetNodeName(info, &node[0], &size)).empty()) size = 1;
        node.resize(size - 1);
      }
      node_ = node.empty() ? std::string("-") : node;
      path_ = path;
    } catch (...) {
      path_.clear();
    }
  }

  bool enabled() const { return !path_.empty(); }

  // `fields`: the op's own "key=value ..." part (kernel, tasks, dims).
  void write(const char* op, const std::string& fields) const noexcept {
    try {
      const std::string line = std::string("yoso-kernel op=") + op + " node=" + node_ +
                               " provider=CPUExecutionProvider " + fields + " cpu_avx2_fma=" +
                               (yoso::cpu::cpu_supports_avx2_fma() ? "1" : "0") + "\n";
      const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) {
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true))
          std::fprintf(stderr, "libyoso_ort.so: cannot open YOSO_KERNEL_REPORT=%s; no kernel report\n",
                       path_.c_str());
        return;
      }
      const ssize_t n = ::write(fd, line.data(), line.size());
      (void)n;
      ::close(fd);
    } catch (...) {
    }
  }

 private:
  std::string path_;  // empty: off
  std::string node_;
};

inline std::string kv(const char* key, int64_t value) { return std::string(" ") + key + "=" + std::to_string(value); }


}  // namespace yoso_ort
