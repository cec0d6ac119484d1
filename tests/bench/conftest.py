"""The benchmark scripts' smoke tests (the numbers themselves live in docs/perf, not in tests)."""
