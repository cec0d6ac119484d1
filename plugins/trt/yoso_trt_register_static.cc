// yoso_trt_register_static.cc -- static registration of the com.yoso plugins: libyoso_trt.so.
//
// Loading the library (dlopen / ctypes.CDLL / trtexec --staticPlugins / polygraphy --plugins)
// runs the registrars below, which add both creators to TensorRT's global plugin registry under
// namespace "" (REGISTER_TENSORRT_PLUGIN). This calls getPluginRegistry() and getLogger() from
// libnvinfer, so the library links libnvinfer (in compile-only builds those two symbols stay
// undefined). Do not load libyoso_trt_dyn.so into the same process: TensorRT refuses to register
// the same creators twice.
#include "yoso_trt_plugin.h"

namespace {

void nvinfer_log_sink(yoso::trt::Severity severity, char const* message) {
  if (nvinfer1::ILogger* logger = getLogger()) logger->log(severity, message);
}

// Defined before the registrars, so it is constructed first (same translation unit).
struct InstallLogSink {
  InstallLogSink() noexcept { yoso::trt::set_log_sink(&nvinfer_log_sink); }
} const g_install_log_sink;

using yoso::trt::FastHashCreator;
using yoso::trt::LshCumulationCreator;

}  // namespace

REGISTER_TENSORRT_PLUGIN(FastHashCreator);
REGISTER_TENSORRT_PLUGIN(LshCumulationCreator);
