"""Parity: the tie-aware comparison, `validate` on every backend, corrupted exports named by their first failing
layer (also at 4096 tokens)."""

