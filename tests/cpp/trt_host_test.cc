// trt_host_test.cc -- the TensorRT plugins' host logic without TensorRT, a GPU or CUDA kernels.
//
// Links plugins/trt/yoso_trt_plugin.cc with TEST STUBS of yoso::cuda (trt_test_stubs.cc) and
// drives the plugin and creator classes the way TensorRT would: field parsing and validation,
// getFieldsToSerialize -> createPlugin(kRUNTIME) round trips, output types, output shapes through a
// fake IExprBuilder (a tiny expression evaluator behind TensorRT's public IExprBuilder /
// IDimensionExpr wrappers), format combinations, workspace sizes, configure / onShapeChange checks,
// and enqueue's dispatch to the CUDA launch functions (recorded by the stubs). No libnvinfer symbol
// is needed: the plugins only call virtual methods of the objects handed to them.
#include <NvInferRuntime.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "trt_test_stubs.h"
#include "yoso_test.h"
#include "yoso_trt_plugin.h"

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IPluginV3;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;
using yoso::trt::FastHashCreator;
using yoso::trt::FastHashPlugin;
using yoso::trt::LshCumulationCreator;
using yoso::trt::LshCumulationPlugin;

namespace {

// ---------------------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------------------

std::vector<std::pair<yoso::trt::Severity, std::string>>& logs() {
  static std::vector<std::pair<yoso::trt::Severity, std::string>> l;
  return l;
}
void capture(yoso::trt::Severity s, char const* msg) { logs().emplace_back(s, msg); }
void reset_logs() {
  logs().clear();
  yoso::trt::set_log_sink(&capture);
}
bool logged(yoso::trt::Severity s, std::string const& needle) {
  for (auto const& l : logs())
    if (l.first == s && l.second.find(needle) != std::string::npos) return true;
  return false;
}
std::string all_logs() {
  std::string r;
  for (auto const& l : logs()) r += "[" + std::to_string(static_cast<int>(l.first)) + "] " + l.second + "\n";
  return r;
}

// ---------------------------------------------------------------------------------------------
// Fake IExprBuilder: constants evaluate, symbols stay symbolic, operations fold constants
// ---------------------------------------------------------------------------------------------

struct FakeExprImpl final : nvinfer1::apiv::VDimensionExpr {
  bool constant = false;
  int64_t value = 0;
  std::string text;
  bool isConstant() const override { return constant; }
  int64_t getConstantValue() const override { return constant ? value : std::numeric_limits<int64_t>::min(); }
  bool isSizeTensor() const override { return false; }
};

class FakeExpr final : public IDimensionExpr {
 public:
  explicit FakeExpr(FakeExprImpl* impl) { mImpl = impl; }
  FakeExprImpl const& impl() const { return *static_cast<FakeExprImpl const*>(mImpl); }
};

struct FakeBuilderImpl final : nvinfer1::apiv::VExprBuilder {
  std::vector<std::unique_ptr<FakeExprImpl>> impls;
  std::vector<std::unique_ptr<FakeExpr>> exprs;
  int constants_made = 0;

  FakeExpr const* make(bool c, int64_t v, std::string text) {
    impls.push_back(std::make_unique<FakeExprImpl>());
    impls.back()->constant = c;
    impls.back()->value = v;
    impls.back()->text = std::move(text);
    exprs.push_back(std::make_unique<FakeExpr>(impls.back().get()));
    return exprs.back().get();
  }
  IDimensionExpr const* constant(int64_t value) override {
    ++constants_made;
    return make(true, value, std::to_string(value));
  }
  IDimensionExpr const* operation(nvinfer1::DimensionOperation op, IDimensionExpr const& a,
                                  IDimensionExpr const& b) override {
    auto const& x = static_cast<FakeExpr const&>(a).impl();
    auto const& y = static_cast<FakeExpr const&>(b).impl();
    static char const* const names[] = {"+", "*", "max", "min", "-", "==", "<", "//", "ceil/"};
    std::string const text = "(" + x.text + " " + names[static_cast<int>(op)] + " " + y.text + ")";
    if (!(x.constant && y.constant)) return make(false, 0, text);
    int64_t v = 0;
    switch (op) {
      case nvinfer1::DimensionOperation::kSUM: v = x.value + y.value; break;
      case nvinfer1::DimensionOperation::kPROD: v = x.value * y.value; break;
      case nvinfer1::DimensionOperation::kMAX: v = std::max(x.value, y.value); break;
      case nvinfer1::DimensionOperation::kMIN: v = std::min(x.value, y.value); break;
      case nvinfer1::DimensionOperation::kSUB: v = x.value - y.value; break;
      case nvinfer1::DimensionOperation::kEQUAL: v = x.value == y.value; break;
      case nvinfer1::DimensionOperation::kLESS: v = x.value < y.value; break;
      case nvinfer1::DimensionOperation::kFLOOR_DIV: v = x.value / y.value; break;
      case nvinfer1::DimensionOperation::kCEIL_DIV: v = (x.value + y.value - 1) / y.value; break;
    }
    return make(true, v, text);
  }
  IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
    return nullptr;
  }
};

class FakeBuilder final : public nvinfer1::IExprBuilder {
 public:
  FakeBuilder() { mImpl = &impl_; }
  FakeExpr const* sym(char const* name) { return impl_.make(false, 0, name); }
  FakeExpr const* num(int64_t v) { return impl_.make(true, v, std::to_string(v)); }
  FakeBuilderImpl impl_;
};

std::string text_of(IDimensionExpr const* e) { return static_cast<FakeExpr const*>(e)->impl().text; }

DimsExprs exprs(std::initializer_list<IDimensionExpr const*> ds) {
  DimsExprs e{};
  e.nbDims = static_cast<int32_t>(ds.size());
  int i = 0;
  for (auto const* d : ds) e.d[i++] = d;
  return e;
}

Dims dims(std::initializer_list<int64_t> ds) {
  Dims d{};
  d.nbDims = static_cast<int32_t>(ds.size());
  int i = 0;
  for (int64_t v : ds) d.d[i++] = v;
  return d;
}

PluginTensorDesc desc(Dims d, DataType t, TensorFormat f = TensorFormat::kLINEAR) {
  PluginTensorDesc p{};
  p.dims = d;
  p.type = t;
  p.format = f;
  p.scale = -1.0f;
  return p;
}

DynamicPluginTensorDesc dyn(Dims d, DataType t, Dims mn, Dims opt, Dims mx) {
  DynamicPluginTensorDesc p{};
  p.desc = desc(d, t);
  p.min = mn;
  p.opt = opt;
  p.max = mx;
  return p;
}

PluginFieldCollection collection(std::vector<PluginField> const& f) {
  return PluginFieldCollection{static_cast<int32_t>(f.size()), f.data()};
}

template <class P>
std::unique_ptr<P> as_plugin(IPluginV3* p) {
  return std::unique_ptr<P>(p ? dynamic_cast<P*>(p) : nullptr);
}

std::unique_ptr<FastHashPlugin> make_fast_hash(int32_t m, int32_t tau) {
  FastHashCreator c;
  std::vector<PluginField> f = {PluginField("num_hash", &m, PluginFieldType::kINT32, 1),
                                PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)};
  auto fc = collection(f);
  return as_plugin<FastHashPlugin>(c.createPlugin("fh", &fc, nvinfer1::TensorRTPhase::kBUILD));
}

std::unique_ptr<LshCumulationPlugin> make_lsh(int32_t tau) {
  LshCumulationCreator c;
  std::vector<PluginField> f = {PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)};
  auto fc = collection(f);
  return as_plugin<LshCumulationPlugin>(c.createPlugin("lsh", &fc, nvinfer1::TensorRTPhase::kBUILD));
}

}  // namespace

// =============================================================================================
// Creators and fields
// =============================================================================================

YT_TEST(creators_identify_like_the_onnx_parser_expects) {
  FastHashCreator fh;
  LshCumulationCreator lsh;
  YT_CHECK(std::string(fh.getPluginName()) == "FastHash", "name");
  YT_CHECK(std::string(lsh.getPluginName()) == "LSHCumulation", "name");
  YT_CHECK(std::string(fh.getPluginVersion()) == "1" && std::string(lsh.getPluginVersion()) == "1", "version 1");
  YT_CHECK(std::string(fh.getPluginNamespace()).empty() && std::string(lsh.getPluginNamespace()).empty(),
           "namespace \"\" (the ONNX parser's default)");
  YT_CHECK(std::string(fh.getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE", "V3One creator");
  auto const* names = fh.getFieldNames();
  YT_CHECK(names->nbFields == 2, "two fields");
  YT_CHECK(std::string(names->fields[0].name) == "num_hash" && names->fields[0].type == PluginFieldType::kINT32 &&
               names->fields[0].length == 1,
           "num_hash int32");
  YT_CHECK(std::string(names->fields[1].name) == "hash_code_len" && names->fields[1].type == PluginFieldType::kINT32,
           "hash_code_len int32");
  auto const* lnames = lsh.getFieldNames();
  YT_CHECK(lnames->nbFields == 1 && std::string(lnames->fields[0].name) == "hash_code_len", "LSH field");
}

YT_TEST(fields_parse_and_validate) {
  reset_logs();
  int32_t m = 32, tau = 9;
  int64_t m64 = 32;
  int16_t tau16 = 9;
  float mf = 32.0f;
  int32_t two[2] = {1, 2};
  yoso::trt::FastHashAttrs a;
  auto parse = [&](std::vector<PluginField> const& f) {
    auto fc = collection(f);
    return yoso::trt::parse_fast_hash_fields(&fc, &a);
  };
  YT_CHECK(parse({PluginField("num_hash", &m, PluginFieldType::kINT32, 1),
                  PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)}) == "",
           "int32 fields");
  YT_CHECK(a.num_hash == 32 && a.hash_code_len == 9, "values");
  YT_CHECK(parse({PluginField("hash_code_len", &tau16, PluginFieldType::kINT16, 1),
                  PluginField("num_hash", &m64, PluginFieldType::kINT64, 1)}) == "",
           "int64/int16 fields in any order");
  std::string e = parse({PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("required field 'num_hash' is missing") != std::string::npos, e);
  e = parse({PluginField("num_hash", &mf, PluginFieldType::kFLOAT32, 1),
             PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("'num_hash' must be an integer field") != std::string::npos && e.find("kFLOAT32") != std::string::npos, e);
  e = parse({PluginField("num_hash", two, PluginFieldType::kINT32, 2),
             PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("exactly one integer; got length 2") != std::string::npos, e);
  e = parse({PluginField("num_hash", nullptr, PluginFieldType::kINT32, 1),
             PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("no data") != std::string::npos, e);
  e = parse({PluginField("num_hash", &m, PluginFieldType::kINT32, 1), PluginField("num_hash", &m, PluginFieldType::kINT32, 1),
             PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("given twice") != std::string::npos, e);
  int32_t zero = 0, big_tau = 31;
  e = parse({PluginField("num_hash", &zero, PluginFieldType::kINT32, 1),
             PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("'num_hash' must be in [1, 2^31-1]; got 0") != std::string::npos, e);
  e = parse({PluginField("num_hash", &m, PluginFieldType::kINT32, 1),
             PluginField("hash_code_len", &big_tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("'hash_code_len' must be in [1, 30]; got 31") != std::string::npos, e);
  int64_t huge = int64_t{1} << 40;
  e = parse({PluginField("num_hash", &huge, PluginFieldType::kINT64, 1),
             PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)});
  YT_CHECK(e.find("num_hash") != std::string::npos, e);
  // Unknown fields only warn (the TensorRT ONNX parser passes only the fields we list anyway).
  int32_t extra = 5;
  YT_CHECK(parse({PluginField("num_hash", &m, PluginFieldType::kINT32, 1), PluginField("plugin_flavour", &extra, PluginFieldType::kINT32, 1),
                  PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)}) == "",
           "unknown field tolerated");
  YT_CHECK(logged(yoso::trt::Severity::kWARNING, "ignoring unknown plugin field 'plugin_flavour'"), all_logs());
  YT_CHECK(yoso::trt::parse_fast_hash_fields(nullptr, &a).find("no plugin fields") != std::string::npos, "null fc");

  yoso::trt::LshAttrs l;
  auto parse_lsh = [&](int32_t t) {
    std::vector<PluginField> f = {PluginField("hash_code_len", &t, PluginFieldType::kINT32, 1)};
    auto fc = collection(f);
    return yoso::trt::parse_lsh_fields(&fc, &l);
  };
  YT_CHECK(parse_lsh(16) == "" && l.hash_code_len == 16, "tau 16 accepted");
  e = parse_lsh(17);
  YT_CHECK(e.find("above the CUDA backend's limit of 16") != std::string::npos, e);
  e = parse_lsh(0);
  YT_CHECK(e.find("must be in [1, 30]") != std::string::npos, e);
}

YT_TEST(create_plugin_rejects_bad_attributes_with_a_logged_reason) {
  reset_logs();
  FastHashCreator c;
  int32_t m = 0, tau = 4;
  std::vector<PluginField> f = {PluginField("num_hash", &m, PluginFieldType::kINT32, 1),
                                PluginField("hash_code_len", &tau, PluginFieldType::kINT32, 1)};
  auto fc = collection(f);
  IPluginV3* p = c.createPlugin("layer_7", &fc, nvinfer1::TensorRTPhase::kBUILD);
  YT_CHECK(p == nullptr, "refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "cannot create FastHash plugin 'layer_7'") &&
               logged(yoso::trt::Severity::kERROR, "num_hash"),
           all_logs());
  reset_logs();
  LshCumulationCreator lc;
  int32_t t20 = 20;
  std::vector<PluginField> lf = {PluginField("hash_code_len", &t20, PluginFieldType::kINT32, 1)};
  auto lfc = collection(lf);
  YT_CHECK(lc.createPlugin("l", &lfc, nvinfer1::TensorRTPhase::kBUILD) == nullptr, "tau 20 refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "hash_code_len=20 is above"), all_logs());
}

YT_TEST(serialize_deserialize_round_trip) {
  auto p = make_fast_hash(57, 7);
  YT_CHECK(p != nullptr, "created");
  if (!p) return;
  PluginFieldCollection const* fc = p->getFieldsToSerialize();
  YT_CHECK(fc->nbFields == 2, "two fields serialized");
  FastHashCreator c;
  auto q = as_plugin<FastHashPlugin>(c.createPlugin("fh", fc, nvinfer1::TensorRTPhase::kRUNTIME));
  YT_CHECK(q && q->attrs().num_hash == 57 && q->attrs().hash_code_len == 7, "FastHash round trip");
  YT_CHECK(q && std::string(q->getMetadataString()) == "FastHash:num_hash=57,hash_code_len=7", "metadata");
  YT_CHECK(q && std::string(q->getTimingCacheID()) == std::string(p->getTimingCacheID()), "timing cache id");

  auto l = make_lsh(11);
  YT_CHECK(l != nullptr, "created");
  if (!l) return;
  LshCumulationCreator lc;
  auto l2 = as_plugin<LshCumulationPlugin>(lc.createPlugin("lsh", l->getFieldsToSerialize(), nvinfer1::TensorRTPhase::kRUNTIME));
  YT_CHECK(l2 && l2->attrs().hash_code_len == 11, "LSH round trip");

  // Clones (and clones of clones) serialize their own attributes, not the original's storage.
  std::unique_ptr<IPluginV3> clone(p->clone());
  p.reset();
  auto* pc = dynamic_cast<FastHashPlugin*>(clone.get());
  YT_CHECK(pc != nullptr, "clone type");
  if (pc) {
    auto const* cfc = pc->getFieldsToSerialize();
    YT_CHECK(*static_cast<int32_t const*>(cfc->fields[0].data) == 57, "clone serializes num_hash");
    std::unique_ptr<IPluginV3> attached(pc->attachToContext(nullptr));
    YT_CHECK(dynamic_cast<FastHashPlugin*>(attached.get()) && attached.get() != clone.get(),
             "attachToContext returns a new clone");
  }
}

YT_TEST(capability_interfaces) {
  auto p = make_fast_hash(8, 4);
  if (!p) {
    YT_CHECK(false, "created");
    return;
  }
  using nvinfer1::PluginCapabilityType;
  auto* core = p->getCapabilityInterface(PluginCapabilityType::kCORE);
  auto* build = p->getCapabilityInterface(PluginCapabilityType::kBUILD);
  auto* run = p->getCapabilityInterface(PluginCapabilityType::kRUNTIME);
  YT_CHECK(core && std::string(static_cast<nvinfer1::IPluginV3OneCore*>(core)->getInterfaceInfo().kind) ==
                       "PLUGIN_V3ONE_CORE",
           "core");
  YT_CHECK(build && std::string(static_cast<nvinfer1::IPluginV3OneBuild*>(build)->getInterfaceInfo().kind) ==
                        "PLUGIN_V3ONE_BUILD",
           "build");
  YT_CHECK(run && std::string(static_cast<nvinfer1::IPluginV3OneRuntime*>(run)->getInterfaceInfo().kind) ==
                      "PLUGIN_V3ONE_RUNTIME",
           "runtime");
  auto* c = static_cast<nvinfer1::IPluginV3OneCore*>(core);
  YT_CHECK(std::string(c->getPluginName()) == "FastHash" && std::string(c->getPluginVersion()) == "1" &&
               std::string(c->getPluginNamespace()).empty(),
           "core identity");
  YT_CHECK(static_cast<nvinfer1::IPluginV3OneBuild*>(build)->getNbOutputs() == 1, "one output");
}

// =============================================================================================
// Types, shapes, formats
// =============================================================================================

YT_TEST(output_data_types) {
  reset_logs();
  auto p = make_fast_hash(8, 4);
  auto l = make_lsh(4);
  if (!p || !l) {
    YT_CHECK(false, "created");
    return;
  }
  DataType out = DataType::kBOOL;
  DataType fin[3] = {DataType::kHALF, DataType::kINT32, DataType::kFLOAT};
  YT_CHECK(p->getOutputDataTypes(&out, 1, fin, 3) == 0 && out == DataType::kINT32, "fp16 x -> int32 codes");
  fin[0] = DataType::kFLOAT;
  YT_CHECK(p->getOutputDataTypes(&out, 1, fin, 3) == 0 && out == DataType::kINT32, "fp32 x -> int32 codes");
  fin[0] = DataType::kBF16;
  YT_CHECK(p->getOutputDataTypes(&out, 1, fin, 3) != 0, "bf16 x refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "input 'x' (input 0) must be float32 or float16; got bfloat16"), all_logs());
  fin[0] = DataType::kFLOAT;
  fin[1] = DataType::kINT64;
  YT_CHECK(p->getOutputDataTypes(&out, 1, fin, 3) != 0, "int64 mask refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "'mask' (input 1) must be int32; got int64"), all_logs());
  YT_CHECK(p->getOutputDataTypes(&out, 1, fin, 2) != 0, "wrong input count");

  DataType lin[5] = {DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kHALF};
  YT_CHECK(l->getOutputDataTypes(&out, 1, lin, 5) == 0 && out == DataType::kHALF, "fp16 value -> fp16 output");
  lin[4] = DataType::kFLOAT;
  YT_CHECK(l->getOutputDataTypes(&out, 1, lin, 5) == 0 && out == DataType::kFLOAT, "fp32 value -> fp32 output");
  lin[4] = DataType::kINT32;
  YT_CHECK(l->getOutputDataTypes(&out, 1, lin, 5) != 0, "int32 value refused");
  lin[4] = DataType::kFLOAT;
  lin[2] = DataType::kFLOAT;
  YT_CHECK(l->getOutputDataTypes(&out, 1, lin, 5) != 0, "float query_mask refused");
}

YT_TEST(output_shapes_through_expr_builder) {
  reset_logs();
  auto p = make_fast_hash(32, 9);
  auto l = make_lsh(9);
  if (!p || !l) {
    YT_CHECK(false, "created");
    return;
  }
  FakeBuilder eb;
  auto const *B = eb.sym("B"), *S = eb.sym("S"), *H = eb.num(12), *D = eb.num(64);
  // P = ceil(32 / floor(64 / 9)) = ceil(32 / 7) = 5
  DimsExprs in[3] = {exprs({B, H, S, D}), exprs({B, S}), exprs({H, eb.num(3), eb.num(5), D})};
  DimsExprs out[1];
  YT_CHECK(p->getOutputShapes(in, 3, nullptr, 0, out, 1, eb) == 0, all_logs());
  YT_CHECK(out[0].nbDims == 4, "rank 4");
  YT_CHECK(out[0].d[0] == B && out[0].d[1] == H && out[0].d[2] == S, "B, H, S are x's expressions (dynamic B and S)");
  YT_CHECK(out[0].d[3] && out[0].d[3]->isConstant() && out[0].d[3]->getConstantValue() == 32, "m = num_hash constant");
  YT_CHECK(text_of(out[0].d[0]) == "B" && text_of(out[0].d[2]) == "S", "symbolic");

  // Static violations found at build time: D not a power of two, wrong P, mask/x mismatch, ranks.
  DimsExprs bad_d[3] = {exprs({B, H, S, eb.num(48)}), exprs({B, S}), exprs({H, eb.num(3), eb.num(5), eb.num(48)})};
  YT_CHECK(p->getOutputShapes(bad_d, 3, nullptr, 0, out, 1, eb) != 0, "D=48 refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "power of two in [1, 1024]; got D=48"), all_logs());
  DimsExprs bad_p[3] = {exprs({B, H, S, D}), exprs({B, S}), exprs({H, eb.num(3), eb.num(4), D})};
  YT_CHECK(p->getOutputShapes(bad_p, 3, nullptr, 0, out, 1, eb) != 0, "P=4 refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR,
                  "input 'signs' (input 2) must have shape [H,3,P,D] = [12,3,5,64] for x [?,12,?,64]"),
           all_logs());
  DimsExprs bad_mask[3] = {exprs({eb.num(2), H, eb.num(10), D}), exprs({eb.num(2), eb.num(11)}),
                           exprs({H, eb.num(3), eb.num(5), D})};
  YT_CHECK(p->getOutputShapes(bad_mask, 3, nullptr, 0, out, 1, eb) != 0, "mask S mismatch refused");
  {
    // One violation reads the same at TensorRT build time as in the run-time check every backend
    // uses (yoso_validate.h): here all sizes are known, so the texts are identical.
    const int64_t xd[4] = {2, 12, 10, 64}, md[2] = {2, 11}, sd[4] = {12, 3, 5, 64};
    yoso::FastHashDims fd;
    const std::string want = yoso::check_fast_hash_shapes(yoso::ShapeRef{xd, 4}, yoso::ShapeRef{md, 2},
                                                          yoso::ShapeRef{sd, 4}, 32, 9, &fd);
    YT_CHECK(!want.empty() && logged(yoso::trt::Severity::kERROR, want), want + "\n" + all_logs());
  }
  DimsExprs bad_rank[3] = {exprs({B, S, D}), exprs({B, S}), exprs({H, eb.num(3), eb.num(5), D})};
  YT_CHECK(p->getOutputShapes(bad_rank, 3, nullptr, 0, out, 1, eb) != 0, "rank 3 x refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "input 'x' (input 0) must have rank 4"), all_logs());
  DimsExprs big_tau[3] = {exprs({B, H, S, eb.num(8)}), exprs({B, S}), exprs({H, eb.num(3), eb.num(32), eb.num(8)})};
  YT_CHECK(p->getOutputShapes(big_tau, 3, nullptr, 0, out, 1, eb) != 0, "tau > D refused");

  // LSHCumulation: [B, H, Sq, Dv] from query_codes and value.
  auto const *Sq = eb.sym("Sq"), *Sk = eb.sym("Sk"), *m = eb.num(32), *Dv = eb.num(64);
  DimsExprs lin[5] = {exprs({B, H, Sq, m}), exprs({B, H, Sk, m}), exprs({B, Sq}), exprs({B, Sk}),
                      exprs({B, H, Sk, Dv})};
  YT_CHECK(l->getOutputShapes(lin, 5, nullptr, 0, out, 1, eb) == 0, all_logs());
  YT_CHECK(out[0].nbDims == 4 && out[0].d[0] == B && out[0].d[1] == H && out[0].d[2] == Sq && out[0].d[3] == Dv,
           "output [B,H,Sq,Dv]");
  DimsExprs lbad[5] = {exprs({B, H, Sq, m}), exprs({B, H, Sk, eb.num(16)}), exprs({B, Sq}), exprs({B, Sk}),
                       exprs({B, H, Sk, Dv})};
  YT_CHECK(l->getOutputShapes(lbad, 5, nullptr, 0, out, 1, eb) != 0, "m mismatch refused");
  YT_CHECK(logged(yoso::trt::Severity::kERROR,
                  "input 'key_codes' (input 1) must have shape [B,H,Sk,m] = [?,12,Sk,32] to match query_codes "
                  "[?,12,?,32]; got [?,12,?,16]"),
           all_logs());
  YT_CHECK(l->getOutputShapes(lin, 4, nullptr, 0, out, 1, eb) != 0, "4 inputs refused");
}

YT_TEST(format_combinations) {
  auto p = make_fast_hash(8, 4);
  auto l = make_lsh(4);
  if (!p || !l) {
    YT_CHECK(false, "created");
    return;
  }
  const DataType types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT32, DataType::kINT8, DataType::kBF16,
                            DataType::kINT64, DataType::kBOOL};
  // FastHash: x fp32/fp16, mask int32, signs fp32, codes int32; linear only.
  DynamicPluginTensorDesc io[6]{};
  const Dims d4 = dims({1, 1, 1, 8});
  auto expect_fh = [](int pos, DataType t) {
    switch (pos) {
      case 0: return t == DataType::kFLOAT || t == DataType::kHALF;
      case 1: return t == DataType::kINT32;
      case 2: return t == DataType::kFLOAT;
      default: return t == DataType::kINT32;
    }
  };
  int combos = 0;
  for (int pos = 0; pos < 4; ++pos) {
    for (DataType t : types) {
      for (TensorFormat f : {TensorFormat::kLINEAR, TensorFormat::kCHW32, TensorFormat::kHWC8}) {
        io[pos].desc = desc(d4, t, f);
        const bool want = f == TensorFormat::kLINEAR && expect_fh(pos, t);
        YT_CHECK(p->supportsFormatCombination(pos, io, 3, 1) == want,
                 "FastHash pos " + std::to_string(pos) + " type " + yoso::trt::data_type_name(t));
        ++combos;
      }
    }
    io[pos].desc = desc(d4, pos == 0 || pos == 2 ? DataType::kFLOAT : DataType::kINT32);
  }
  YT_CHECK(!p->supportsFormatCombination(4, io, 3, 1) && !p->supportsFormatCombination(0, io, 4, 1), "out of range");
  // LSHCumulation: int32 codes/masks, value fp32/fp16, output = value's type.
  for (DataType vt : {DataType::kFLOAT, DataType::kHALF}) {
    for (int i = 0; i < 4; ++i) io[i].desc = desc(d4, DataType::kINT32);
    io[4].desc = desc(d4, vt);
    for (int pos = 0; pos < 6; ++pos) {
      for (DataType t : types) {
        const DynamicPluginTensorDesc saved = io[pos];
        io[pos].desc = desc(d4, t);
        bool want;
        if (pos < 4) want = t == DataType::kINT32;
        else if (pos == 4) want = t == DataType::kFLOAT || t == DataType::kHALF;
        else want = t == vt;
        YT_CHECK(l->supportsFormatCombination(pos, io, 5, 1) == want,
                 "LSH pos " + std::to_string(pos) + " type " + yoso::trt::data_type_name(t) + " value " +
                     yoso::trt::data_type_name(vt));
        io[pos] = saved;
        ++combos;
      }
      io[pos].desc.format = TensorFormat::kCHW32;
      YT_CHECK(!l->supportsFormatCombination(pos, io, 5, 1), "non-linear refused");
      io[pos].desc.format = TensorFormat::kLINEAR;
    }
  }
  std::printf("  %d combinations\n", combos);
}

// =============================================================================================
// Configure, workspace, runtime
// =============================================================================================

YT_TEST(configure_and_workspace) {
  reset_logs();
  auto p = make_fast_hash(32, 9);
  auto l = make_lsh(9);
  if (!p || !l) {
    YT_CHECK(false, "created");
    return;
  }
  // Build-time dims with wildcards for B and S.
  DynamicPluginTensorDesc fin[3] = {
      dyn(dims({-1, 12, -1, 64}), DataType::kHALF, dims({1, 12, 1, 64}), dims({4, 12, 128, 64}), dims({8, 12, 4096, 64})),
      dyn(dims({-1, -1}), DataType::kINT32, dims({1, 1}), dims({4, 128}), dims({8, 4096})),
      dyn(dims({12, 3, 5, 64}), DataType::kFLOAT, dims({12, 3, 5, 64}), dims({12, 3, 5, 64}), dims({12, 3, 5, 64}))};
  DynamicPluginTensorDesc fout[1] = {dyn(dims({-1, 12, -1, 32}), DataType::kINT32, dims({1, 12, 1, 32}),
                                         dims({4, 12, 128, 32}), dims({8, 12, 4096, 32}))};
  YT_CHECK(p->configurePlugin(fin, 3, fout, 1) == 0, all_logs());
  YT_CHECK(p->getWorkspaceSize(fin, 3, fout, 1) == yoso::cuda::kErrorRecordBytes, "FastHash workspace = error record");
  fin[2].desc.dims = dims({12, 3, 6, 64});
  YT_CHECK(p->configurePlugin(fin, 3, fout, 1) != 0, "wrong P refused at configure");

  DynamicPluginTensorDesc lin[5] = {
      dyn(dims({-1, 12, -1, 32}), DataType::kINT32, dims({1, 12, 1, 32}), dims({4, 12, 128, 32}), dims({8, 12, 4096, 32})),
      dyn(dims({-1, 12, -1, 32}), DataType::kINT32, dims({1, 12, 1, 32}), dims({4, 12, 128, 32}), dims({8, 12, 4096, 32})),
      dyn(dims({-1, -1}), DataType::kINT32, dims({1, 1}), dims({4, 128}), dims({8, 4096})),
      dyn(dims({-1, -1}), DataType::kINT32, dims({1, 1}), dims({4, 128}), dims({8, 4096})),
      dyn(dims({-1, 12, -1, 64}), DataType::kHALF, dims({1, 12, 1, 64}), dims({4, 12, 128, 64}), dims({8, 12, 4096, 64}))};
  DynamicPluginTensorDesc lout[1] = {dyn(dims({-1, 12, -1, 64}), DataType::kHALF, dims({1, 12, 1, 64}),
                                         dims({4, 12, 128, 64}), dims({8, 12, 4096, 64}))};
  YT_CHECK(l->configurePlugin(lin, 5, lout, 1) == 0, all_logs());
  yoso::LshDims mx;
  mx.B = 8;
  mx.H = 12;
  mx.Sq = mx.Sk = 4096;
  mx.m = 32;
  mx.Dv = 64;
  mx.tau = 9;
  const size_t ws = l->getWorkspaceSize(lin, 5, lout, 1);
  YT_CHECK(ws == yoso::cuda::lsh_workspace_size(mx, yoso::cuda::DType::kFloat16), "workspace from the max shapes");
  yoso::LshDims opt = mx;
  opt.B = 4;
  opt.Sq = opt.Sk = 128;
  YT_CHECK(yoso::cuda::lsh_workspace_size(opt, yoso::cuda::DType::kFloat16) <= ws, "covers smaller shapes");
  YT_CHECK(ws <= (size_t{1} << 28), "bounded: " + std::to_string(ws));
  lin[1].desc.dims = dims({-1, 12, -1, 16});
  YT_CHECK(l->configurePlugin(lin, 5, lout, 1) != 0, "m mismatch refused at configure");
}

YT_TEST(enqueue_dispatches_to_the_cuda_launches) {
  reset_logs();
  yoso_test_stubs::reset();
  auto p = make_fast_hash(32, 9);
  auto l = make_lsh(9);
  if (!p || !l) {
    YT_CHECK(false, "created");
    return;
  }
  PluginTensorDesc fin[3] = {desc(dims({2, 12, 13, 64}), DataType::kHALF), desc(dims({2, 13}), DataType::kINT32),
                             desc(dims({12, 3, 5, 64}), DataType::kFLOAT)};
  PluginTensorDesc fout[1] = {desc(dims({2, 12, 13, 32}), DataType::kINT32)};
  int dummy[8];
  void const* inputs[5] = {&dummy[0], &dummy[1], &dummy[2], &dummy[3], &dummy[4]};
  void* outputs[1] = {&dummy[5]};
  auto* stream = reinterpret_cast<cudaStream_t>(&dummy[6]);
  YT_CHECK(p->onShapeChange(fin, 3, fout, 1) == 0, all_logs());
  YT_CHECK(p->enqueue(fin, fout, inputs, outputs, &dummy[7], stream) == 0, all_logs());
  auto const& fl = yoso_test_stubs::state().fast_hash;
  YT_CHECK(fl.calls == 1, "launched once");
  YT_CHECK(fl.fast_hash_dims.B == 2 && fl.fast_hash_dims.H == 12 && fl.fast_hash_dims.S == 13 &&
               fl.fast_hash_dims.D == 64 && fl.fast_hash_dims.m == 32 && fl.fast_hash_dims.P == 5 &&
               fl.fast_hash_dims.per_part == 7 && fl.fast_hash_dims.tau == 9,
           "dims");
  YT_CHECK(fl.type == yoso::cuda::DType::kFloat16, "fp16 x");
  YT_CHECK(fl.inputs[0] == inputs[0] && fl.inputs[1] == inputs[1] && fl.inputs[2] == inputs[2] &&
               fl.output == outputs[0] && fl.workspace == &dummy[7] && fl.stream == stream,
           "pointers and stream passed through");
  YT_CHECK(yoso_test_stubs::state().check_calls == 1, "inputs checked after the launch");

  // Invalid values found by the device checks fail the enqueue with the contract's message.
  yoso_test_stubs::state().check_message = "FastHash: input 'mask' (input 1) must hold only 0 or 1; got 3";
  YT_CHECK(p->enqueue(fin, fout, inputs, outputs, &dummy[7], stream) != 0, "invalid input -> enqueue fails");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "must hold only 0 or 1; got 3"), all_logs());
  yoso_test_stubs::state().check_message.clear();
  yoso_test_stubs::state().launch_result = cudaErrorLaunchFailure;
  YT_CHECK(p->enqueue(fin, fout, inputs, outputs, &dummy[7], stream) != 0, "launch error -> enqueue fails");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "kernel launch failed"), all_logs());
  yoso_test_stubs::state().launch_result = cudaSuccess;

  // Shape errors are caught before launching.
  const int before = fl.calls;
  PluginTensorDesc bad[3] = {fin[0], desc(dims({2, 14}), DataType::kINT32), fin[2]};
  YT_CHECK(p->onShapeChange(bad, 3, fout, 1) != 0, "onShapeChange refuses mask [2,14]");
  YT_CHECK(p->enqueue(bad, fout, inputs, outputs, &dummy[7], stream) != 0 && fl.calls == before, "no launch");
  YT_CHECK(logged(yoso::trt::Severity::kERROR, "input 'mask' (input 1) must have shape [B,S] = [2,13]"), all_logs());

  // LSHCumulation.
  PluginTensorDesc lin[5] = {desc(dims({2, 12, 13, 32}), DataType::kINT32), desc(dims({2, 12, 17, 32}), DataType::kINT32),
                             desc(dims({2, 13}), DataType::kINT32), desc(dims({2, 17}), DataType::kINT32),
                             desc(dims({2, 12, 17, 64}), DataType::kFLOAT)};
  PluginTensorDesc lout[1] = {desc(dims({2, 12, 13, 64}), DataType::kFLOAT)};
  YT_CHECK(l->onShapeChange(lin, 5, lout, 1) == 0, all_logs());
  YT_CHECK(l->enqueue(lin, lout, inputs, outputs, &dummy[7], stream) == 0, all_logs());
  auto const& ll = yoso_test_stubs::state().lsh;
  YT_CHECK(ll.calls == 1 && ll.lsh_dims.B == 2 && ll.lsh_dims.H == 12 && ll.lsh_dims.Sq == 13 && ll.lsh_dims.Sk == 17 &&
               ll.lsh_dims.m == 32 && ll.lsh_dims.Dv == 64 && ll.lsh_dims.tau == 9 &&
               ll.type == yoso::cuda::DType::kFloat32,
           "LSH dims and type");
  YT_CHECK(ll.workspace_bytes == yoso::cuda::lsh_workspace_size(ll.lsh_dims, yoso::cuda::DType::kFloat32),
           "workspace size for the actual shapes");
  for (int i = 0; i < 5; ++i) YT_CHECK(ll.inputs[i] == inputs[i], "input pointer " + std::to_string(i));
  lout[0].type = DataType::kHALF;
  YT_CHECK(l->enqueue(lin, lout, inputs, outputs, &dummy[7], stream) != 0, "output type must follow value");
  lout[0].type = DataType::kFLOAT;
  lin[1].dims = dims({2, 12, 17, 31});
  YT_CHECK(l->enqueue(lin, lout, inputs, outputs, &dummy[7], stream) != 0 && ll.calls == 1, "m mismatch, no launch");
}

int main(int argc, char** argv) { return yoso_test::run_all(argc, argv); }
