// yoso_trt_plugin.cc -- host logic of the TensorRT plugins (see yoso_trt_plugin.h).
//
// Every method TensorRT calls is noexcept: failures are logged through the installed sink with the
// op, the input, the expected and the actual value (plugins/OPS.md section 4) and reported to
// TensorRT by the method's return value (non-zero status, nullptr, false).
#include "yoso_trt_plugin.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "yoso_cuda.h"

namespace yoso {
namespace trt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IExprBuilder;
using nvinfer1::IPluginCapability;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

// =============================================================================================
// Logging
// =============================================================================================

namespace {
std::atomic<LogSink> g_sink{nullptr};
}  // namespace

void set_log_sink(LogSink sink) noexcept { g_sink.store(sink); }

void log(Severity severity, std::string const& message) noexcept {
  LogSink sink = g_sink.load();
  if (sink != nullptr) {
    sink(severity, message.c_str());
  } else if (severity <= Severity::kWARNING) {
    std::fprintf(stderr, "[yoso_trt] %s\n", message.c_str());
  }
}

namespace {

void log_error(std::string const& message) noexcept { log(Severity::kERROR, message); }

// Runs `fn` (returning a status int) and converts exceptions into a logged error and -1.
template <class Fn>
int32_t guarded(char const* op, char const* method, Fn&& fn) noexcept {
  try {
    return fn();
  } catch (std::bad_alloc const&) {
    log_error(std::string(op) + "::" + method + ": out of memory");
  } catch (std::exception const& e) {
    log_error(std::string(op) + "::" + method + ": " + e.what());
  } catch (...) {
    log_error(std::string(op) + "::" + method + ": unknown error");
  }
  return -1;
}

ShapeRef shape_ref(Dims const& d) {
  return ShapeRef{d.d, static_cast<size_t>(d.nbDims < 0 ? 0 : d.nbDims)};
}

// Dims of an expression list: constants where known, -1 elsewhere.
Dims constant_dims(DimsExprs const& e) {
  Dims d{};
  d.nbDims = e.nbDims;
  for (int32_t i = 0; i < e.nbDims && i < Dims::MAX_DIMS; ++i) {
    d.d[i] = (e.d[i] != nullptr && e.d[i]->isConstant()) ? e.d[i]->getConstantValue() : -1;
  }
  return d;
}

std::string io_count_error(char const* op, int32_t want_in, char const* inputs, int32_t got_in,
                           int32_t got_out) {
  return std::string(op) + ": expects " + std::to_string(want_in) + " inputs (" + inputs +
         ") and 1 output; got " + std::to_string(got_in) + " inputs and " +
         std::to_string(got_out) + " outputs. Fix: wire all inputs of the op (see plugins/OPS.md).";
}

bool is_float_type(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF; }

cuda::DType to_dtype(DataType t) {
  return t == DataType::kHALF ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
}

std::string type_error(char const* op, char const* input, int index, char const* want, DataType got) {
  return std::string(op) + ": input '" + input + "' (input " + std::to_string(index) + ") must be " +
         want + "; got " + data_type_name(got) + ".";
}

}  // namespace

char const* data_type_name(DataType t) noexcept {
  switch (t) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kBOOL: return "bool";
    case DataType::kUINT8: return "uint8";
    case DataType::kFP8: return "fp8";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT64: return "int64";
    case DataType::kINT4: return "int4";
    default: return "an unsupported type";
  }
}

// =============================================================================================
// Fields
// =============================================================================================

namespace {

char const* field_type_name(PluginFieldType t) {
  switch (t) {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kDIMS: return "kDIMS";
    case PluginFieldType::kUNKNOWN: return "kUNKNOWN";
    case PluginFieldType::kBF16: return "kBF16";
    case PluginFieldType::kINT64: return "kINT64";
    default: return "an unsupported field type";
  }
}

// One integer scalar field (kINT32 as the ONNX parser passes it; kINT8/16/64 accepted too).
std::string read_int_field(char const* op, PluginField const& f, int64_t* out) {
  std::string const where = std::string(op) + ": field '" + f.name + "'";
  if (f.data == nullptr || f.length != 1) {
    return where + " must hold exactly one integer; got " +
           (f.data == nullptr ? std::string("no data") : "length " + std::to_string(f.length)) +
           ". Fix: set the ONNX attribute to a single int.";
  }
  switch (f.type) {
    case PluginFieldType::kINT32: *out = *static_cast<int32_t const*>(f.data); return {};
    case PluginFieldType::kINT64: *out = *static_cast<int64_t const*>(f.data); return {};
    case PluginFieldType::kINT16: *out = *static_cast<int16_t const*>(f.data); return {};
    case PluginFieldType::kINT8: *out = *static_cast<int8_t const*>(f.data); return {};
    default:
      return where + " must be an integer field (kINT32); got type " + field_type_name(f.type) +
             ". Fix: the ONNX attribute must be an int (AttributeProto.INT).";
  }
}

// Reads the named integer fields of `fc` into values[i] (have[i] = found); unknown fields only warn.
std::string read_fields(char const* op, PluginFieldCollection const* fc, char const* const* names,
                        int n_names, int64_t* values, bool* have) {
  for (int i = 0; i < n_names; ++i) have[i] = false;
  if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr)) {
    return std::string(op) + ": no plugin fields given. Fix: create the plugin with its fields (" +
           "the ONNX attributes of the node).";
  }
  for (int32_t k = 0; k < fc->nbFields; ++k) {
    PluginField const& f = fc->fields[k];
    if (f.name == nullptr) return std::string(op) + ": plugin field " + std::to_string(k) + " has no name.";
    int match = -1;
    for (int i = 0; i < n_names; ++i) {
      if (std::strcmp(f.name, names[i]) == 0) match = i;
    }
    if (match < 0) {
      log(Severity::kWARNING, std::string(op) + ": ignoring unknown plugin field '" + f.name + "'.");
      continue;
    }
    if (have[match]) {
      return std::string(op) + ": field '" + f.name + "' is given twice. Fix: pass each field once.";
    }
    std::string err = read_int_field(op, f, &values[match]);
    if (!err.empty()) return err;
    have[match] = true;
  }
  for (int i = 0; i < n_names; ++i) {
    if (!have[i]) {
      return std::string(op) + ": required field '" + names[i] + "' is missing. Fix: set the ONNX " +
             "attribute '" + names[i] + "' on the node.";
    }
  }
  return {};
}

}  // namespace

std::string parse_fast_hash_fields(PluginFieldCollection const* fc, FastHashAttrs* out) {
  int64_t v[FastHashAttrs::kNumAttrs] = {};
  bool have[FastHashAttrs::kNumAttrs];
  std::string err = read_fields(kFastHashName, fc, FastHashAttrs::kAttrNames, FastHashAttrs::kNumAttrs, v, have);
  if (err.empty()) err = make_attrs(v, out);
  return err;
}

std::string parse_lsh_fields(PluginFieldCollection const* fc, LshAttrs* out) {
  int64_t v[LshAttrs::kNumAttrs] = {};
  bool have[LshAttrs::kNumAttrs];
  std::string err = read_fields(kLshName, fc, LshAttrs::kAttrNames, LshAttrs::kNumAttrs, v, have);
  LshAttrs attrs;
  if (err.empty()) err = make_attrs(v, &attrs);  // the contract's range first, then the CUDA limit
  if (err.empty()) err = cuda::check_lsh_cuda_limits(attrs.hash_code_len, 0);
  if (err.empty()) *out = attrs;
  return err;
}

// =============================================================================================
// Static shape checks
// =============================================================================================

// The rules themselves are yoso_validate.h's (check_fast_hash_known_dims / check_lsh_known_dims):
// the same checks, and the same messages, as the ONNX Runtime kernels' at run time and shape
// inference at load time, applied to the sizes TensorRT knows (-1 = not known yet).
std::string check_fast_hash_static(Dims const& x, Dims const& mask, Dims const& signs,
                                   FastHashAttrs const& a) {
  char const* op = kFastHashName;
  if (x.nbDims != 4) return detail::rank_error(op, "x", 0, 4, "[B,H,S,D]", shape_ref(x));
  if (mask.nbDims != 2) return detail::rank_error(op, "mask", 1, 2, "[B,S]", shape_ref(mask));
  if (signs.nbDims != 4) return detail::rank_error(op, "signs", 2, 4, "[H,3,P,D]", shape_ref(signs));
  return check_fast_hash_known_dims(shape_ref(x), shape_ref(mask), shape_ref(signs), a.num_hash,
                                    a.hash_code_len);
}

std::string check_lsh_static(Dims const& qc, Dims const& kc, Dims const& qm, Dims const& km,
                             Dims const& value, LshAttrs const& a) {
  char const* op = kLshName;
  if (qc.nbDims != 4) return detail::rank_error(op, "query_codes", 0, 4, "[B,H,Sq,m]", shape_ref(qc));
  if (kc.nbDims != 4) return detail::rank_error(op, "key_codes", 1, 4, "[B,H,Sk,m]", shape_ref(kc));
  if (qm.nbDims != 2) return detail::rank_error(op, "query_mask", 2, 2, "[B,Sq]", shape_ref(qm));
  if (km.nbDims != 2) return detail::rank_error(op, "key_mask", 3, 2, "[B,Sk]", shape_ref(km));
  if (value.nbDims != 4) return detail::rank_error(op, "value", 4, 4, "[B,H,Sk,Dv]", shape_ref(value));
  std::string err = check_lsh_known_dims(shape_ref(qc), shape_ref(kc), shape_ref(qm), shape_ref(km),
                                         shape_ref(value));
  if (err.empty() && known_dim(value.d[3])) err = cuda::check_lsh_cuda_limits(a.hash_code_len, value.d[3]);
  return err;
}

// =============================================================================================
// PluginBase
// =============================================================================================

IPluginCapability* PluginBase::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

IPluginV3* PluginBase::attachToContext(nvinfer1::IPluginResourceContext*) noexcept { return clone(); }

// =============================================================================================
// FastHash
// =============================================================================================

FastHashPlugin::FastHashPlugin(FastHashAttrs const& attrs) : attrs_(attrs) {
  id_ = std::string(kFastHashName) + ":num_hash=" + std::to_string(attrs.num_hash) +
        ",hash_code_len=" + std::to_string(attrs.hash_code_len);
}

IPluginV3* FastHashPlugin::clone() noexcept {
  try {
    return new FastHashPlugin(*this);
  } catch (...) {
    log_error("FastHash::clone: out of memory");
    return nullptr;
  }
}

int32_t FastHashPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                           DataType const* inputTypes, int32_t nbInputs) const noexcept {
  return guarded(kFastHashName, "getOutputDataTypes", [&]() -> int32_t {
    if (nbInputs != 3 || nbOutputs != 1) {
      log_error(io_count_error(kFastHashName, 3, "x, mask, signs", nbInputs, nbOutputs));
      return -1;
    }
    std::string err;
    if (!is_float_type(inputTypes[0])) err = type_error(kFastHashName, "x", 0, "float32 or float16", inputTypes[0]);
    else if (inputTypes[1] != DataType::kINT32) err = type_error(kFastHashName, "mask", 1, "int32", inputTypes[1]);
    else if (inputTypes[2] != DataType::kFLOAT) err = type_error(kFastHashName, "signs", 2, "float32", inputTypes[2]);
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    outputTypes[0] = DataType::kINT32;
    return 0;
  });
}

int32_t FastHashPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*,
                                        int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                                        IExprBuilder& exprBuilder) noexcept {
  return guarded(kFastHashName, "getOutputShapes", [&]() -> int32_t {
    if (nbInputs != 3 || nbOutputs != 1 || nbShapeInputs != 0) {
      log_error(io_count_error(kFastHashName, 3, "x, mask, signs", nbInputs, nbOutputs));
      return -1;
    }
    std::string err = check_fast_hash_static(constant_dims(inputs[0]), constant_dims(inputs[1]),
                                             constant_dims(inputs[2]), attrs_);
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    // codes [B, H, S, num_hash]: B, H, S follow x (dynamic B and S stay symbolic).
    outputs[0].nbDims = 4;
    for (int i = 0; i < 3; ++i) outputs[0].d[i] = inputs[0].d[i];
    outputs[0].d[3] = exprBuilder.constant(attrs_.num_hash);
    return outputs[0].d[3] != nullptr ? 0 : -1;
  });
}

bool FastHashPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                               int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (inOut == nullptr || nbInputs != 3 || nbOutputs != 1 || pos < 0 || pos >= 4) return false;
  PluginTensorDesc const& d = inOut[pos].desc;
  if (d.format != TensorFormat::kLINEAR) return false;
  switch (pos) {
    case 0: return is_float_type(d.type);        // x
    case 1: return d.type == DataType::kINT32;   // mask
    case 2: return d.type == DataType::kFLOAT;   // signs
    default: return d.type == DataType::kINT32;  // codes
  }
}

int32_t FastHashPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                        DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
  return guarded(kFastHashName, "configurePlugin", [&]() -> int32_t {
    if (nbInputs != 3 || nbOutputs != 1) {
      log_error(io_count_error(kFastHashName, 3, "x, mask, signs", nbInputs, nbOutputs));
      return -1;
    }
    std::string err = check_fast_hash_static(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims, attrs_);
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    return 0;
  });
}

size_t FastHashPlugin::getWorkspaceSize(DynamicPluginTensorDesc const*, int32_t,
                                        DynamicPluginTensorDesc const*, int32_t) const noexcept {
  return cuda::fast_hash_workspace_size(FastHashDims{});
}

int32_t FastHashPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                      PluginTensorDesc const*, int32_t nbOutputs) noexcept {
  return guarded(kFastHashName, "onShapeChange", [&]() -> int32_t {
    if (nbInputs != 3 || nbOutputs != 1) {
      log_error(io_count_error(kFastHashName, 3, "x, mask, signs", nbInputs, nbOutputs));
      return -1;
    }
    FastHashDims d;
    std::string err = check_fast_hash_shapes(shape_ref(in[0].dims), shape_ref(in[1].dims),
                                             shape_ref(in[2].dims), attrs_.num_hash,
                                             attrs_.hash_code_len, &d);
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    return 0;
  });
}

int32_t FastHashPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                                void const* const* inputs, void* const* outputs, void* workspace,
                                cudaStream_t stream) noexcept {
  return guarded(kFastHashName, "enqueue", [&]() -> int32_t {
    FastHashDims d;
    std::string err = check_fast_hash_shapes(shape_ref(inputDesc[0].dims), shape_ref(inputDesc[1].dims),
                                             shape_ref(inputDesc[2].dims), attrs_.num_hash,
                                             attrs_.hash_code_len, &d);
    if (err.empty() && !is_float_type(inputDesc[0].type))
      err = type_error(kFastHashName, "x", 0, "float32 or float16", inputDesc[0].type);
    if (err.empty() && outputDesc[0].type != DataType::kINT32)
      err = std::string(kFastHashName) + ": output 'codes' must be int32; got " + data_type_name(outputDesc[0].type) + ".";
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    auto const* mask = static_cast<int32_t const*>(inputs[1]);
    auto const* signs = static_cast<float const*>(inputs[2]);
    cudaError_t e = cuda::launch_fast_hash(d, to_dtype(inputDesc[0].type), inputs[0], mask, signs,
                                           static_cast<int32_t*>(outputs[0]), workspace,
                                           cuda::fast_hash_workspace_size(d), stream);
    if (e != cudaSuccess) {
      log_error(std::string(kFastHashName) + ": kernel launch failed: " + cuda::error_string(e));
      return -1;
    }
    bool checked = false;
    e = cuda::fast_hash_check_inputs(d, mask, signs, workspace, stream, &err, &checked);
    if (e != cudaSuccess) {
      log_error(std::string(kFastHashName) + ": " + cuda::error_string(e));
      return -1;
    }
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    return 0;
  });
}

PluginFieldCollection const* FastHashPlugin::getFieldsToSerialize() noexcept {
  fields_[0] = PluginField("num_hash", &attrs_.num_hash, PluginFieldType::kINT32, 1);
  fields_[1] = PluginField("hash_code_len", &attrs_.hash_code_len, PluginFieldType::kINT32, 1);
  fc_.nbFields = 2;
  fc_.fields = fields_.data();
  return &fc_;
}

// =============================================================================================
// LSHCumulation
// =============================================================================================

LshCumulationPlugin::LshCumulationPlugin(LshAttrs const& attrs) : attrs_(attrs) {
  id_ = std::string(kLshName) + ":hash_code_len=" + std::to_string(attrs.hash_code_len);
}

IPluginV3* LshCumulationPlugin::clone() noexcept {
  try {
    return new LshCumulationPlugin(*this);
  } catch (...) {
    log_error("LSHCumulation::clone: out of memory");
    return nullptr;
  }
}

int32_t LshCumulationPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                DataType const* inputTypes, int32_t nbInputs) const noexcept {
  return guarded(kLshName, "getOutputDataTypes", [&]() -> int32_t {
    if (nbInputs != 5 || nbOutputs != 1) {
      log_error(io_count_error(kLshName, 5, "query_codes, key_codes, query_mask, key_mask, value",
                               nbInputs, nbOutputs));
      return -1;
    }
    static char const* const names[] = {"query_codes", "key_codes", "query_mask", "key_mask"};
    for (int i = 0; i < 4; ++i) {
      if (inputTypes[i] != DataType::kINT32) {
        log_error(type_error(kLshName, names[i], i, "int32", inputTypes[i]));
        return -1;
      }
    }
    if (!is_float_type(inputTypes[4])) {
      log_error(type_error(kLshName, "value", 4, "float32 or float16", inputTypes[4]));
      return -1;
    }
    outputTypes[0] = inputTypes[4];
    return 0;
  });
}

int32_t LshCumulationPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*,
                                             int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                                             IExprBuilder&) noexcept {
  return guarded(kLshName, "getOutputShapes", [&]() -> int32_t {
    if (nbInputs != 5 || nbOutputs != 1 || nbShapeInputs != 0) {
      log_error(io_count_error(kLshName, 5, "query_codes, key_codes, query_mask, key_mask, value",
                               nbInputs, nbOutputs));
      return -1;
    }
    std::string err = check_lsh_static(constant_dims(inputs[0]), constant_dims(inputs[1]),
                                       constant_dims(inputs[2]), constant_dims(inputs[3]),
                                       constant_dims(inputs[4]), attrs_);
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    // output [B, H, Sq, Dv]: B, H, Sq of query_codes, Dv of value.
    outputs[0].nbDims = 4;
    for (int i = 0; i < 3; ++i) outputs[0].d[i] = inputs[0].d[i];
    outputs[0].d[3] = inputs[4].d[3];
    return 0;
  });
}

bool LshCumulationPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                    int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (inOut == nullptr || nbInputs != 5 || nbOutputs != 1 || pos < 0 || pos >= 6) return false;
  PluginTensorDesc const& d = inOut[pos].desc;
  if (d.format != TensorFormat::kLINEAR) return false;
  if (pos < 4) return d.type == DataType::kINT32;  // codes and masks
  if (pos == 4) return is_float_type(d.type);      // value
  return d.type == inOut[4].desc.type;             // output: the value's type
}

int32_t LshCumulationPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                             DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
  return guarded(kLshName, "configurePlugin", [&]() -> int32_t {
    if (nbInputs != 5 || nbOutputs != 1) {
      log_error(io_count_error(kLshName, 5, "query_codes, key_codes, query_mask, key_mask, value",
                               nbInputs, nbOutputs));
      return -1;
    }
    std::string err = check_lsh_static(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims,
                                       in[3].desc.dims, in[4].desc.dims, attrs_);
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    return 0;
  });
}

size_t LshCumulationPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                             DynamicPluginTensorDesc const*, int32_t) const noexcept {
  if (inputs == nullptr || nbInputs != 5) return cuda::kErrorRecordBytes;
  // The largest shapes of the profile; plan_lsh's workspace never shrinks as shapes grow, so
  // this covers every call of the profile.
  Dims const& qc = inputs[0].max;
  Dims const& kc = inputs[1].max;
  Dims const& v = inputs[4].max;
  if (qc.nbDims != 4 || kc.nbDims != 4 || v.nbDims != 4) return cuda::kErrorRecordBytes;
  LshDims d;
  d.B = std::max<int64_t>(0, qc.d[0]);
  d.H = std::max<int64_t>(0, qc.d[1]);
  d.Sq = std::max<int64_t>(0, qc.d[2]);
  d.m = std::max<int64_t>(1, qc.d[3]);
  d.Sk = std::max<int64_t>(0, kc.d[2]);
  d.Dv = std::max<int64_t>(0, v.d[3]);
  d.tau = attrs_.hash_code_len;
  if (!cuda::check_lsh_cuda_limits(d.tau, d.Dv).empty()) return cuda::kErrorRecordBytes;
  return cuda::lsh_workspace_size(d, to_dtype(inputs[4].desc.type));
}

int32_t LshCumulationPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                           PluginTensorDesc const*, int32_t nbOutputs) noexcept {
  return guarded(kLshName, "onShapeChange", [&]() -> int32_t {
    if (nbInputs != 5 || nbOutputs != 1) {
      log_error(io_count_error(kLshName, 5, "query_codes, key_codes, query_mask, key_mask, value",
                               nbInputs, nbOutputs));
      return -1;
    }
    LshDims d;
    std::string err = check_lsh_shapes(shape_ref(in[0].dims), shape_ref(in[1].dims), shape_ref(in[2].dims),
                                       shape_ref(in[3].dims), shape_ref(in[4].dims),
                                       attrs_.hash_code_len, &d);
    if (err.empty()) err = cuda::check_lsh_cuda_limits(d.tau, d.Dv);
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    return 0;
  });
}

int32_t LshCumulationPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                                     void const* const* inputs, void* const* outputs, void* workspace,
                                     cudaStream_t stream) noexcept {
  return guarded(kLshName, "enqueue", [&]() -> int32_t {
    LshDims d;
    std::string err = check_lsh_shapes(shape_ref(inputDesc[0].dims), shape_ref(inputDesc[1].dims),
                                       shape_ref(inputDesc[2].dims), shape_ref(inputDesc[3].dims),
                                       shape_ref(inputDesc[4].dims), attrs_.hash_code_len, &d);
    if (err.empty()) err = cuda::check_lsh_cuda_limits(d.tau, d.Dv);
    if (err.empty() && !is_float_type(inputDesc[4].type))
      err = type_error(kLshName, "value", 4, "float32 or float16", inputDesc[4].type);
    if (err.empty() && outputDesc[0].type != inputDesc[4].type)
      err = std::string(kLshName) + ": the output must have the value's type (" +
            data_type_name(inputDesc[4].type) + "); got " + data_type_name(outputDesc[0].type) + ".";
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    auto const* qc = static_cast<int32_t const*>(inputs[0]);
    auto const* kc = static_cast<int32_t const*>(inputs[1]);
    auto const* qm = static_cast<int32_t const*>(inputs[2]);
    auto const* km = static_cast<int32_t const*>(inputs[3]);
    cuda::DType const type = to_dtype(inputDesc[4].type);
    // TensorRT allocated getWorkspaceSize(max shapes) >= the size for these shapes (plan_lsh is
    // monotonic in the shapes).
    cudaError_t e = cuda::launch_lsh_cumulation(d, type, qc, kc, qm, km, inputs[4], outputs[0], workspace,
                                                cuda::lsh_workspace_size(d, type), stream);
    if (e != cudaSuccess) {
      log_error(std::string(kLshName) + ": kernel launch failed: " + cuda::error_string(e));
      return -1;
    }
    bool checked = false;
    e = cuda::lsh_check_inputs(d, qc, kc, qm, km, workspace, stream, &err, &checked);
    if (e != cudaSuccess) {
      log_error(std::string(kLshName) + ": " + cuda::error_string(e));
      return -1;
    }
    if (!err.empty()) {
      log_error(err);
      return -1;
    }
    return 0;
  });
}

PluginFieldCollection const* LshCumulationPlugin::getFieldsToSerialize() noexcept {
  fields_[0] = PluginField("hash_code_len", &attrs_.hash_code_len, PluginFieldType::kINT32, 1);
  fc_.nbFields = 1;
  fc_.fields = fields_.data();
  return &fc_;
}

// =============================================================================================
// Creators
// =============================================================================================

namespace {

template <class Plugin, class Attrs>
IPluginV3* create_plugin(char const* op, char const* name, PluginFieldCollection const* fc,
                         std::string (*parse)(PluginFieldCollection const*, Attrs*)) noexcept {
  try {
    Attrs attrs;
    std::string err = parse(fc, &attrs);
    if (!err.empty()) {
      log_error(std::string("cannot create ") + op + " plugin '" + (name ? name : "") + "': " + err);
      return nullptr;
    }
    return new Plugin(attrs);
  } catch (...) {
    log_error(std::string("cannot create ") + op + " plugin: out of memory");
    return nullptr;
  }
}

}  // namespace

FastHashCreator::FastHashCreator() noexcept
    : fields_{PluginField("num_hash", nullptr, PluginFieldType::kINT32, 1),
              PluginField("hash_code_len", nullptr, PluginFieldType::kINT32, 1)},
      fc_{2, fields_.data()} {}

IPluginV3* FastHashCreator::createPlugin(char const* name, PluginFieldCollection const* fc,
                                         nvinfer1::TensorRTPhase) noexcept {
  return create_plugin<FastHashPlugin, FastHashAttrs>(kFastHashName, name, fc, &parse_fast_hash_fields);
}

LshCumulationCreator::LshCumulationCreator() noexcept
    : fields_{PluginField("hash_code_len", nullptr, PluginFieldType::kINT32, 1)}, fc_{1, fields_.data()} {}

IPluginV3* LshCumulationCreator::createPlugin(char const* name, PluginFieldCollection const* fc,
                                              nvinfer1::TensorRTPhase) noexcept {
  return create_plugin<LshCumulationPlugin, LshAttrs>(kLshName, name, fc, &parse_lsh_fields);
}

}  // namespace trt
}  // namespace yoso
