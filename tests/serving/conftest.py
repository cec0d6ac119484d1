"""Serving: the server core, the Open Inference Protocol, Ray Serve (marked ``ray``), `serve`, `batch`, the
Triton repository. Servers bind 127.0.0.1 and are started and stopped by the tests."""
