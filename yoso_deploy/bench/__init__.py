"""Latency benchmarks of an export (``yoso-deploy bench``): p50/p90/p99, throughput and peak memory per backend,
batch and sequence length, through the runtime's own inference path.

May import: the shared modules, :mod:`yoso_deploy.runtime`, :mod:`yoso_deploy.backends`, and for the torch
backend :mod:`yoso_deploy.modeling` and :mod:`yoso_deploy.validation` (lazily).
"""

from .runner import BenchError, BenchResult, machine_info, run, write_report

__all__ = ["BenchError", "BenchResult", "machine_info", "run", "write_report"]
