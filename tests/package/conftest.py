"""The package as a whole: layering and import cycles, the error family, the torch-free commands, the bare
install, the planted mutants, the device check's dry run."""
