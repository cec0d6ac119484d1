"""PyTorch -> ONNX: every task and attention mode exported and run in ONNX Runtime against the reference, the
export options, the portable (function-body) exports."""

