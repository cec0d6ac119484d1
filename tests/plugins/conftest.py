"""The native libraries: the ONNX Runtime ops (every rejection path, SIMD against scalar), the native PyTorch
ops, the CUDA kernels emulated on the CPU, sanitizers, valgrind, fuzzing, the C++ consumer, the contract's limits,
the supply chain of the headers."""
