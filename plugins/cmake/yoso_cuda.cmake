# yoso_cuda.cmake -- the CUDA language for yoso-deploy (included by the top-level CMakeLists.txt,
# which is the directory common to every target with CUDA sources).
#
#   YOSO_BUILD_CUDA          OFF (default) | ON | AUTO (ON when a CUDA compiler is found)
#   YOSO_CUDA_ARCHITECTURES  "80;86;89;90" (sm_80 A100, sm_86 RTX 30xx/A10, sm_89 L4/RTX 40xx,
#                            sm_90 H100; with PTX of the newest for later GPUs)
#   CMAKE_CUDA_COMPILER / $CUDACXX   nvcc to use; if neither is set and nvcc is not on PATH,
#                            /usr/local/cuda/bin/nvcc, then the newest /usr/local/cuda-*/bin/nvcc
#
# Result: YOSO_WITH_CUDA (ON/OFF), the CUDA language enabled and CUDA::cudart_static available;
# YOSO_CUDA_INCLUDE_DIRS: the CUDA runtime headers (also without YOSO_WITH_CUDA when a toolkit is
# installed: TensorRT's headers include <cuda_runtime_api.h>, and the TensorRT host-logic tests
# need nothing else), or "" if there are none.

set(YOSO_BUILD_CUDA OFF CACHE STRING "Build the CUDA kernels and CUDA execution provider ops: ON, OFF or AUTO")
set_property(CACHE YOSO_BUILD_CUDA PROPERTY STRINGS ON OFF AUTO)
set(YOSO_CUDA_ARCHITECTURES "80;86;89;90" CACHE STRING "CUDA architectures of the kernels (CMAKE_CUDA_ARCHITECTURES syntax)")

function(_yoso_find_nvcc out)
  if(CMAKE_CUDA_COMPILER)
    set(${out} "${CMAKE_CUDA_COMPILER}" PARENT_SCOPE)
    return()
  endif()
  if(DEFINED ENV{CUDACXX} AND NOT "$ENV{CUDACXX}" STREQUAL "")
    set(${out} "$ENV{CUDACXX}" PARENT_SCOPE)
    return()
  endif()
  find_program(_yoso_nvcc_on_path nvcc)
  if(_yoso_nvcc_on_path)
    set(${out} "${_yoso_nvcc_on_path}" PARENT_SCOPE)
    return()
  endif()
  set(_cands "/usr/local/cuda/bin/nvcc")
  file(GLOB _versioned LIST_DIRECTORIES false "/usr/local/cuda-*/bin/nvcc")
  if(_versioned)
    list(SORT _versioned COMPARE NATURAL ORDER DESCENDING)
    list(APPEND _cands ${_versioned})
  endif()
  foreach(_c IN LISTS _cands)
    if(EXISTS "${_c}")
      set(${out} "${_c}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

# A macro: enable_language() must run at directory scope.
macro(yoso_enable_cuda)
  set(YOSO_WITH_CUDA OFF)
  string(TOUPPER "${YOSO_BUILD_CUDA}" _yoso_cuda_mode)
  if(_yoso_cuda_mode STREQUAL "AUTO" OR YOSO_BUILD_CUDA)
    _yoso_find_nvcc(_yoso_nvcc)
    if(_yoso_nvcc)
      set(CMAKE_CUDA_COMPILER "${_yoso_nvcc}" CACHE FILEPATH "CUDA compiler")
      set(YOSO_WITH_CUDA ON)
    elseif(_yoso_cuda_mode STREQUAL "AUTO")
      message(STATUS "YOSO_BUILD_CUDA=AUTO: no CUDA compiler found; building without the CUDA kernels")
    else()
      message(FATAL_ERROR "YOSO_BUILD_CUDA=ON but no CUDA compiler was found: set CMAKE_CUDA_COMPILER "
        "(e.g. -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc) or CUDACXX, or configure with -DYOSO_BUILD_CUDA=OFF")
    endif()
  endif()
  if(YOSO_WITH_CUDA)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "${YOSO_CUDA_ARCHITECTURES}")
    endif()
    if(NOT DEFINED CMAKE_CUDA_HOST_COMPILER AND CMAKE_CXX_COMPILER)
      set(CMAKE_CUDA_HOST_COMPILER "${CMAKE_CXX_COMPILER}")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(YOSO_CUDA_INCLUDE_DIRS ${CUDAToolkit_INCLUDE_DIRS})
    message(STATUS "CUDA kernels: ${CMAKE_CUDA_COMPILER} (CUDA ${CUDAToolkit_VERSION}), architectures ${YOSO_CUDA_ARCHITECTURES}")
  else()
    _yoso_find_nvcc(_yoso_nvcc_for_headers)
    set(_yoso_hdr_hints "")
    if(_yoso_nvcc_for_headers)
      get_filename_component(_yoso_nvcc_dir "${_yoso_nvcc_for_headers}" DIRECTORY)
      list(APPEND _yoso_hdr_hints "${_yoso_nvcc_dir}/../include")
    endif()
    find_path(YOSO_CUDA_RUNTIME_HEADER_DIR cuda_runtime_api.h
      HINTS ${_yoso_hdr_hints} ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES include
      PATHS /usr/local/cuda/include /usr/include)
    if(YOSO_CUDA_RUNTIME_HEADER_DIR)
      set(YOSO_CUDA_INCLUDE_DIRS "${YOSO_CUDA_RUNTIME_HEADER_DIR}")
    else()
      set(YOSO_CUDA_INCLUDE_DIRS "")
    endif()
  endif()
endmacro()
