"""The PyTorch reference: the ops against the contract, the reference model, fp16 semantics, the native kernels
in PyTorch."""

