// yoso_trt_plugin.h -- TensorRT IPluginV3 plugins for the com.yoso ops (plugins/OPS.md).
//
// The plugins and their creators are plain classes over the TensorRT headers: they call no
// libnvinfer function (only virtual methods of objects TensorRT hands them) and reach the GPU only
// through plugins/cuda/yoso_cuda.h. So this part builds and is unit-tested without TensorRT, a
// GPU or the CUDA kernels (tests/cpp/trt_host_test.cc links it with test stubs of yoso::cuda).
// The registration with TensorRT lives in two separate translation units, one per loading style:
//   yoso_trt_register_static.cc   REGISTER_TENSORRT_PLUGIN  -> libyoso_trt.so
//   yoso_trt_register_dynamic.cc  getCreators/setLoggerFinder -> libyoso_trt_dyn.so
// (see plugins/trt/README.md).
//
// Naming: plugin names are the ONNX op types ("FastHash", "LSHCumulation"), version "1",
// namespace "" -- what the TensorRT ONNX parser looks up for a node of an unknown op type when the
// node has no plugin_version / plugin_namespace attributes (exported models have none). Creator
// fields are the ONNX attribute names (num_hash, hash_code_len), int32 scalars.
#pragma once

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>

#include "yoso_attrs.h"
#include "yoso_cuda_plan.h"
#include "yoso_validate.h"

namespace yoso {
namespace trt {

constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";
constexpr char const* kFastHashName = "FastHash";
constexpr char const* kLshName = "LSHCumulation";

// ---------------------------------------------------------------------------------------------
// Logging: the registration unit installs a sink (TensorRT's logger); tests install their own.
// Without a sink, warnings and errors go to stderr.
// ---------------------------------------------------------------------------------------------
using Severity = nvinfer1::ILogger::Severity;
using LogSink = void (*)(Severity, char const*);
void set_log_sink(LogSink sink) noexcept;
void log(Severity severity, std::string const& message) noexcept;

// ---------------------------------------------------------------------------------------------
// Attributes (plugin fields)
// ---------------------------------------------------------------------------------------------
// The op attributes (plugins/common/yoso_attrs.h, shared with the ONNX Runtime kernels).
using yoso::FastHashAttrs;
using yoso::LshAttrs;

// Parse and validate the creator fields; "" on success, else a message naming the field.
std::string parse_fast_hash_fields(nvinfer1::PluginFieldCollection const* fc, FastHashAttrs* out);
std::string parse_lsh_fields(nvinfer1::PluginFieldCollection const* fc, LshAttrs* out);

// Checks of partially known shapes (-1 = not known yet), as seen at network build time: every
// relation between known sizes that the op contract requires. "" when nothing is violated.
std::string check_fast_hash_static(nvinfer1::Dims const& x, nvinfer1::Dims const& mask,
                                   nvinfer1::Dims const& signs, FastHashAttrs const& a);
std::string check_lsh_static(nvinfer1::Dims const& qc, nvinfer1::Dims const& kc,
                             nvinfer1::Dims const& qm, nvinfer1::Dims const& km,
                             nvinfer1::Dims const& value, LshAttrs const& a);

char const* data_type_name(nvinfer1::DataType t) noexcept;

// ---------------------------------------------------------------------------------------------
// Plugins
// ---------------------------------------------------------------------------------------------

// The capability plumbing shared by both plugins.
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime {
 public:
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
  int32_t getNbOutputs() const noexcept override { return 1; }
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  char const* getTimingCacheID() noexcept override { return id_.c_str(); }
  char const* getMetadataString() noexcept override { return id_.c_str(); }

 protected:
  PluginBase() = default;
  PluginBase(PluginBase const&) = default;
  PluginBase& operator=(PluginBase const&) = delete;
  std::string id_;  // "<op>:<attr>=<value>,..." (timing cache id and metadata)
  std::array<nvinfer1::PluginField, 2> fields_{};
  nvinfer1::PluginFieldCollection fc_{};
};

class FastHashPlugin final : public PluginBase {
 public:
  explicit FastHashPlugin(FastHashAttrs const& attrs);
  FastHashAttrs const& attrs() const { return attrs_; }

  // IPluginV3
  nvinfer1::IPluginV3* clone() noexcept override;
  // IPluginV3OneCore
  char const* getPluginName() const noexcept override { return kFastHashName; }
  // IPluginV3OneBuild
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                          nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs,
                          int32_t nbOutputs) const noexcept override;
  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  FastHashAttrs attrs_;
};

class LshCumulationPlugin final : public PluginBase {
 public:
  explicit LshCumulationPlugin(LshAttrs const& attrs);
  LshAttrs const& attrs() const { return attrs_; }

  nvinfer1::IPluginV3* clone() noexcept override;
  char const* getPluginName() const noexcept override { return kLshName; }
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                          nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs,
                          int32_t nbOutputs) const noexcept override;
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  LshAttrs attrs_;
};

// ---------------------------------------------------------------------------------------------
// Creators
// ---------------------------------------------------------------------------------------------

class FastHashCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  FastHashCreator() noexcept;
  char const* getPluginName() const noexcept override { return kFastHashName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &fc_; }
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;

 private:
  std::array<nvinfer1::PluginField, 2> fields_;
  nvinfer1::PluginFieldCollection fc_;
};

class LshCumulationCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  LshCumulationCreator() noexcept;
  char const* getPluginName() const noexcept override { return kLshName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &fc_; }
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;

 private:
  std::array<nvinfer1::PluginField, 1> fields_;
  nvinfer1::PluginFieldCollection fc_;
};

}  // namespace trt
}  // namespace yoso
