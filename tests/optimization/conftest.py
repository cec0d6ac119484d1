"""Graph optimization levels (``yoso-deploy optimize``, ``export --optimize``): torch-free, like quantize. The fixtures
export with torch; the parity check of O1/O2 uses the PyTorch reference where it is installed."""
