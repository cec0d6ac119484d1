"""TensorRT: the Python side without a TensorRT runtime (clear errors), the plugins' host logic against the
headers (marked ``trt``)."""
