// yoso_ort_consumer: run a yoso-deploy export from C++ with the ONNX Runtime C++ API.
//
//   yoso_ort_consumer --model out/qa/model.onnx --library .../libyoso_ort.so --input ids.txt
//                     [--threads N] [--pad-id 1] [--num-choices C] [--no-library]
//
// The input file holds token ids, one sequence per line (whitespace separated; '#' starts a
// comment). Shorter lines are right-padded with --pad-id and get attention_mask 0 there; a
// token_type_ids input, if the model has one, is all zeros. With --num-choices C (multiple-choice
// exports) every C consecutive lines are the choices of one example. The program registers
// libyoso_ort.so with SessionOptions::RegisterCustomOpsLibrary (or, with --no-library, runs the
// export's standard-ONNX function bodies in stock ONNX Runtime) and prints every output:
//
//   output <name> <float32|int32|int64|float16> [d0,d1,...]
//   <values, row-major, space separated, %.9g>
//
// Errors are one line "error: ..." on stderr and exit code 1.

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string model, library, input;
  int threads = 1;
  int64_t pad_id = 1;
  int64_t num_choices = 0;
  bool use_library = true;
};

[[noreturn]] void usage_error(const std::string& msg) {
  throw std::invalid_argument(msg + " (usage: yoso_ort_consumer --model M.onnx --library libyoso_ort.so "
                              "--input ids.txt [--threads N] [--pad-id ID] [--num-choices C] [--no-library])");
}

int64_t parse_int(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    long long v = std::stoll(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    usage_error(flag + " needs an integer, got '" + text + "'");
  }
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--model") a.model = value();
    else if (flag == "--library") a.library = value();
    else if (flag == "--input") a.input = value();
    else if (flag == "--threads") a.threads = static_cast<int>(parse_int(flag, value()));
    else if (flag == "--pad-id") a.pad_id = parse_int(flag, value());
    else if (flag == "--num-choices") a.num_choices = parse_int(flag, value());
    else if (flag == "--no-library") a.use_library = false;
    else usage_error("unknown option '" + flag + "'");
  }
  if (a.model.empty() || a.input.empty()) usage_error("--model and --input are required");
  if (a.use_library && a.library.empty()) usage_error("--library is required (or --no-library)");
  if (a.threads < 0) usage_error("--threads must be >= 0");
  if (a.num_choices < 0) usage_error("--num-choices must be >= 0");
  return a;
}

std::vector<std::vector<int64_t>> read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read input file '" + path + "'");
  std::vector<std::vector<int64_t>> rows;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::vector<int64_t> row;
    std::string w;
    while (words >> w) {
      try {
        size_t used = 0;
        long long v = std::stoll(w, &used);
        if (used != w.size()) throw std::invalid_argument(w);
        row.push_back(v);
      } catch (const std::exception&) {
        throw std::runtime_error(path + ":" + std::to_string(lineno) + ": '" + w + "' is not a token id");
      }
    }
    if (!row.empty()) rows.push_back(std::move(row));
  }
  if (rows.empty()) throw std::runtime_error("input file '" + path + "' holds no token ids");
  return rows;
}

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400u)) { man <<= 1; --exp; }
      bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void print_output(const std::string& name, const Ort::Value& v) {
  auto info = v.GetTensorTypeAndShapeInfo();
  std::vector<int64_t> shape = info.GetShape();
  size_t n = info.GetElementCount();
  const char* type = nullptr;
  switch (info.GetElementType()) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: type = "float32"; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: type = "float16"; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: type = "int32"; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: type = "int64"; break;
    default: throw std::runtime_error("output '" + name + "' has an element type this program does not print");
  }
  std::printf("output %s %s [", name.c_str(), type);
  for (size_t i = 0; i < shape.size(); ++i) std::printf(i ? ",%lld" : "%lld", static_cast<long long>(shape[i]));
  std::printf("]\n");
  for (size_t i = 0; i < n; ++i) {
    if (i) std::fputc(' ', stdout);
    switch (info.GetElementType()) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: std::printf("%.9g", v.GetTensorData<float>()[i]); break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
        std::printf("%.9g", half_to_float(v.GetTensorData<uint16_t>()[i]));
        break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: std::printf("%d", v.GetTensorData<int32_t>()[i]); break;
      default: std::printf("%lld", static_cast<long long>(v.GetTensorData<int64_t>()[i])); break;
    }
  }
  std::printf("\n");
}

int run(const Args& a) {
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "yoso_ort_consumer");
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(a.threads);
  if (a.use_library) so.RegisterCustomOpsLibrary(a.library.c_str());  // the com.yoso kernels
  Ort::Session session(env, a.model.c_str(), so);

  // Inputs [B, S] (or [B, C, S] with --num-choices), right-padded.
  auto rows = read_ids(a.input);
  size_t seq = 0;
  for (const auto& r : rows) seq = r.size() > seq ? r.size() : seq;
  const size_t choices = a.num_choices > 0 ? static_cast<size_t>(a.num_choices) : 1;
  if (rows.size() % choices) {
    throw std::runtime_error(std::to_string(rows.size()) + " lines do not split into examples of --num-choices " +
                             std::to_string(choices));
  }
  std::vector<int64_t> shape = {static_cast<int64_t>(rows.size() / choices)};
  if (a.num_choices > 0) shape.push_back(a.num_choices);
  shape.push_back(static_cast<int64_t>(seq));
  std::vector<int64_t> ids(rows.size() * seq, a.pad_id), mask(rows.size() * seq, 0), types(rows.size() * seq, 0);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t t = 0; t < rows[r].size(); ++t) {
      ids[r * seq + t] = rows[r][t];
      mask[r * seq + t] = 1;
    }
  }

  Ort::AllocatorWithDefaultOptions alloc;
  Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::AllocatedStringPtr> in_names_owned, out_names_owned;
  std::vector<const char*> in_names, out_names;
  std::vector<Ort::Value> inputs;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    in_names_owned.push_back(session.GetInputNameAllocated(i, alloc));
    std::string name = in_names_owned.back().get();
    std::vector<int64_t>* data = name == "input_ids" ? &ids : name == "attention_mask" ? &mask
                               : name == "token_type_ids" ? &types : nullptr;
    if (!data) throw std::runtime_error("model input '" + name + "' is not one this program can fill");
    in_names.push_back(in_names_owned.back().get());
    inputs.push_back(Ort::Value::CreateTensor<int64_t>(mem, data->data(), data->size(), shape.data(), shape.size()));
  }
  for (size_t i = 0; i < session.GetOutputCount(); ++i) {
    out_names_owned.push_back(session.GetOutputNameAllocated(i, alloc));
    out_names.push_back(out_names_owned.back().get());
  }
  auto outputs = session.Run(Ort::RunOptions{nullptr}, in_names.data(), inputs.data(), inputs.size(),
                             out_names.data(), out_names.size());
  for (size_t i = 0; i < outputs.size(); ++i) print_output(out_names[i], outputs[i]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const Ort::Exception& e) {
    std::fprintf(stderr, "error: ONNX Runtime: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
