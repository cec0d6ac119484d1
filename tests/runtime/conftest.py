"""The torch-free runtime: sessions, task models and their input checks, tokenizer, every pipeline (compared
with transformers where it has one), concurrency, the trained default model."""
