"""int8: quantize (torch-free, proven in tests/package/test_torch_free.py), the int8 criteria, validate on int8
exports. The fixtures export with torch; the command under test does not need it."""
