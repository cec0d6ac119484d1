"""Backends other than the runtime's ONNX Runtime session: TensorRT engines and the portable exports.

* :mod:`.trt` -- building TensorRT engines with the plugins of ``libyoso_trt.so`` and running them (needs the
  ``tensorrt`` package and an NVIDIA GPU; every entry point says so when it is missing);
* :mod:`.portable` -- an export's standard-ONNX function bodies in stock ONNX Runtime (no custom-op library)
  and in OpenVINO (at float32 inference precision unless asked otherwise).

May import: the shared modules and :mod:`yoso_deploy.runtime`; never torch or transformers.
"""
