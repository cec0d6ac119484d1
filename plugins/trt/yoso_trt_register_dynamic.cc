// yoso_trt_register_dynamic.cc -- entry points for TensorRT's plugin-library loader:
// libyoso_trt_dyn.so.
//
// IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, --setPluginsToSerialize for
// version-compatible engines, Python: registry.load_library) calls setLoggerFinder() and then
// getCreators(), and registers the creators itself under their namespace (""). Nothing is
// registered at load time and no libnvinfer symbol is used, so this library does not link
// libnvinfer. Do not also load libyoso_trt.so into the process: the second registration of the same
// creators fails.
#include <atomic>
#include <cstdint>

#include "yoso_trt_plugin.h"

namespace {

std::atomic<nvinfer1::ILoggerFinder*> g_logger_finder{nullptr};

void finder_log_sink(yoso::trt::Severity severity, char const* message) {
  nvinfer1::ILoggerFinder* finder = g_logger_finder.load();
  if (finder == nullptr) return;
  if (nvinfer1::ILogger* logger = finder->findLogger()) logger->log(severity, message);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators);

extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  g_logger_finder.store(finder);
  yoso::trt::set_log_sink(finder != nullptr ? &finder_log_sink : nullptr);
}

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static yoso::trt::FastHashCreator fast_hash;
  static yoso::trt::LshCumulationCreator lsh_cumulation;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&fast_hash, &lsh_cumulation};
  nbCreators = 2;
  return creators;
}
