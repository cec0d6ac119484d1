# yoso_tensorrt.cmake -- TensorRT for the plugins (plugins/trt) and their host-logic tests.
#
# yoso_find_tensorrt([REQUIRED]) sets
#   YOSO_TRT_INCLUDE_DIR   directory with NvInfer.h ("" if none found and not REQUIRED)
#   YOSO_NVINFER_LIBRARY   libnvinfer of a real TensorRT install, or "" (compile-only headers)
#   YOSO_TRT_VERSION       e.g. 10.14.1
#   YOSO_TRT_SOURCE        where the headers came from (for messages)
# Search order: TENSORRT_ROOT (CMake variable, then environment), a system install
# (/usr/include/x86_64-linux-gnu, libnvinfer-dev), then scripts/dev/fetch_trt_headers.sh, which fetches
# TensorRT's public headers for COMPILE CHECKS ONLY (no library, no runtime).
#
# yoso_add_trt_plugins() defines the plugin libraries (see plugins/CMakeLists.txt).

function(_yoso_trt_version include_dir out)
  set(_v "")
  if(EXISTS "${include_dir}/NvInferVersion.h")
    file(READ "${include_dir}/NvInferVersion.h" _text)
    foreach(_part MAJOR MINOR PATCH)
      if(_text MATCHES "#define (TRT_${_part}_ENTERPRISE|NV_TENSORRT_${_part}) ([0-9]+)")
        list(APPEND _v "${CMAKE_MATCH_2}")
      endif()
    endforeach()
    list(JOIN _v "." _v)
  endif()
  set(${out} "${_v}" PARENT_SCOPE)
endfunction()

macro(yoso_find_tensorrt)
  cmake_parse_arguments(_yft "REQUIRED" "" "" ${ARGN})
  set(YOSO_TRT_INCLUDE_DIR "")
  set(YOSO_NVINFER_LIBRARY "")
  set(YOSO_TRT_SOURCE "")
  set(_yoso_trt_root "${TENSORRT_ROOT}")
  if(NOT _yoso_trt_root AND DEFINED ENV{TENSORRT_ROOT})
    set(_yoso_trt_root "$ENV{TENSORRT_ROOT}")
  endif()
  if(_yoso_trt_root)
    foreach(_cand "${_yoso_trt_root}/include" "${_yoso_trt_root}/include/x86_64-linux-gnu" "${_yoso_trt_root}")
      if(NOT YOSO_TRT_INCLUDE_DIR AND EXISTS "${_cand}/NvInfer.h")
        set(YOSO_TRT_INCLUDE_DIR "${_cand}")
      endif()
    endforeach()
    if(NOT YOSO_TRT_INCLUDE_DIR)
      message(FATAL_ERROR "TENSORRT_ROOT=${_yoso_trt_root} holds no include/NvInfer.h; point it at a TensorRT "
        "release (e.g. TensorRT-10.x.y.z) or unset it")
    endif()
    find_library(_yoso_nvinfer NAMES nvinfer PATHS "${_yoso_trt_root}/lib" "${_yoso_trt_root}/lib64"
      "${_yoso_trt_root}/lib/x86_64-linux-gnu" NO_DEFAULT_PATH)
    if(_yoso_nvinfer)
      set(YOSO_NVINFER_LIBRARY "${_yoso_nvinfer}")
    endif()
    set(YOSO_TRT_SOURCE "TENSORRT_ROOT=${_yoso_trt_root}")
  else()
    find_path(_yoso_sys_trt_inc NvInfer.h PATHS /usr/include/x86_64-linux-gnu /usr/local/include NO_CACHE)
    find_library(_yoso_sys_nvinfer NAMES nvinfer PATHS /usr/lib/x86_64-linux-gnu /usr/local/lib NO_CACHE)
    if(_yoso_sys_trt_inc AND _yoso_sys_nvinfer)
      set(YOSO_TRT_INCLUDE_DIR "${_yoso_sys_trt_inc}")
      set(YOSO_NVINFER_LIBRARY "${_yoso_sys_nvinfer}")
      set(YOSO_TRT_SOURCE "system TensorRT")
    else()
      execute_process(
        COMMAND bash "${PROJECT_SOURCE_DIR}/scripts/dev/fetch_trt_headers.sh"
        OUTPUT_VARIABLE _yoso_fetched
        ERROR_VARIABLE _yoso_fetch_err
        RESULT_VARIABLE _yoso_fetch_rc
        OUTPUT_STRIP_TRAILING_WHITESPACE)
      if(_yoso_fetch_rc EQUAL 0 AND EXISTS "${_yoso_fetched}/include/NvInfer.h")
        set(YOSO_TRT_INCLUDE_DIR "${_yoso_fetched}/include")
        set(YOSO_TRT_SOURCE "TensorRT headers for compile checks only (kernel-lens 2.0.1 wheel), no runtime")
      elseif(_yft_REQUIRED)
        message(FATAL_ERROR "TensorRT not found: set TENSORRT_ROOT to a TensorRT install (include/NvInfer.h, "
          "lib/libnvinfer.so). Fetching headers for compile checks failed too (exit ${_yoso_fetch_rc}): ${_yoso_fetch_err}")
      else()
        message(STATUS "TensorRT headers not available (${_yoso_fetch_err}); skipping what needs them")
      endif()
    endif()
  endif()
  set(YOSO_TRT_VERSION "")
  if(YOSO_TRT_INCLUDE_DIR)
    _yoso_trt_version("${YOSO_TRT_INCLUDE_DIR}" YOSO_TRT_VERSION)
    if(YOSO_NVINFER_LIBRARY)
      message(STATUS "TensorRT ${YOSO_TRT_VERSION}: ${YOSO_TRT_INCLUDE_DIR}, ${YOSO_NVINFER_LIBRARY} (${YOSO_TRT_SOURCE})")
    else()
      message(STATUS "TensorRT ${YOSO_TRT_VERSION} headers WITHOUT libnvinfer: ${YOSO_TRT_INCLUDE_DIR} (${YOSO_TRT_SOURCE}); "
        "TensorRT code is compile-checked only")
    endif()
    if(YOSO_TRT_VERSION VERSION_LESS 10.0)
      message(FATAL_ERROR "the plugins use IPluginV3 and need TensorRT >= 10; found ${YOSO_TRT_VERSION}")
    endif()
  endif()
endmacro()

# Compile settings shared by every target that includes the TensorRT headers.
function(yoso_trt_compile_settings target)
  set_target_properties(${target} PROPERTIES
    CXX_STANDARD 17
    CXX_STANDARD_REQUIRED ON
    CXX_EXTENSIONS OFF
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)
  target_include_directories(${target} PRIVATE
    "${PROJECT_SOURCE_DIR}/plugins/common" "${PROJECT_SOURCE_DIR}/plugins/cuda" "${PROJECT_SOURCE_DIR}/plugins/trt")
  # TensorRT's headers include <cuda_runtime_api.h>; only headers are needed here.
  target_include_directories(${target} SYSTEM PRIVATE "${YOSO_TRT_INCLUDE_DIR}" ${YOSO_CUDA_INCLUDE_DIRS})
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -ffp-contract=off -fno-fast-math
    -fstack-protector-strong
    $<$<NOT:$<CONFIG:Debug>>:-O2>
    $<$<NOT:$<CONFIG:Debug>>:-U_FORTIFY_SOURCE>
    $<$<NOT:$<CONFIG:Debug>>:-D_FORTIFY_SOURCE=2>)
  if(YOSO_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

function(yoso_add_trt_plugins)
  add_library(yoso_trt_host OBJECT trt/yoso_trt_plugin.cc)
  yoso_trt_compile_settings(yoso_trt_host)

  if(YOSO_NVINFER_LIBRARY)
    set(_dir "${CMAKE_CURRENT_BINARY_DIR}")
    set(_static_name yoso_trt)
    set(_dyn_name yoso_trt_dyn)
  else()
    # Compile-only: linked without libnvinfer, kept out of the install and clearly named.
    set(_dir "${CMAKE_CURRENT_BINARY_DIR}/trt-compile-only")
    set(_static_name yoso_trt_COMPILE_ONLY)
    set(_dyn_name yoso_trt_dyn_COMPILE_ONLY)
    file(WRITE "${_dir}/README.txt"
      "Compile checks of the TensorRT plugins, built against ${YOSO_TRT_SOURCE} (TensorRT ${YOSO_TRT_VERSION}).\n"
      "No TensorRT installation was used: libyoso_trt_COMPILE_ONLY.so leaves libnvinfer's getPluginRegistry\n"
      "and getLogger undefined. Do not deploy these files; build with -DTENSORRT_ROOT=<TensorRT> instead.\n")
  endif()

  foreach(_kind static dyn)
    if(_kind STREQUAL "static")
      set(_tgt yoso_trt)
      set(_src trt/yoso_trt_register_static.cc)
      set(_map "${CMAKE_CURRENT_SOURCE_DIR}/trt/yoso_trt.map")
      set(_name ${_static_name})
    else()
      set(_tgt yoso_trt_dyn)
      set(_src trt/yoso_trt_register_dynamic.cc)
      set(_map "${CMAKE_CURRENT_SOURCE_DIR}/trt/yoso_trt_dyn.map")
      set(_name ${_dyn_name})
    endif()
    add_library(${_tgt} SHARED ${_src} $<TARGET_OBJECTS:yoso_trt_host> $<TARGET_OBJECTS:yoso_cuda_objs>)
    yoso_trt_compile_settings(${_tgt})
    set_target_properties(${_tgt} PROPERTIES
      OUTPUT_NAME ${_name}
      LIBRARY_OUTPUT_DIRECTORY "${_dir}"
      LINK_DEPENDS "${_map}")
    target_link_libraries(${_tgt} PRIVATE CUDA::cudart_static)
    target_link_options(${_tgt} PRIVATE "LINKER:--version-script=${_map}" "LINKER:-z,relro,-z,now")
    if(_kind STREQUAL "static")
      if(YOSO_NVINFER_LIBRARY)
        target_link_libraries(${_tgt} PRIVATE "${YOSO_NVINFER_LIBRARY}")
        target_link_options(${_tgt} PRIVATE "LINKER:--no-undefined")
      endif()
      # compile-only: getPluginRegistry / getLogger stay undefined (checked by scripts/dev/build_gpu_code.sh)
    else()
      # getCreators / setLoggerFinder use no libnvinfer symbol: fully linked in every mode.
      target_link_options(${_tgt} PRIVATE "LINKER:--no-undefined")
    endif()
  endforeach()

  if(YOSO_NVINFER_LIBRARY)
    install(TARGETS yoso_trt yoso_trt_dyn LIBRARY DESTINATION yoso_deploy/lib)
  endif()
endfunction()
