"""The shared modules: the task registry, the manifest, tensor specs, checkpoints (torch-free except where a
test builds a checkpoint)."""
