"""Input/output specifications of exported models (moved to :mod:`yoso_deploy.iospec`, which is
torch-free; kept here so existing imports keep working)."""

from ..iospec import IOSpec, TensorSpec, io_spec, make_inputs

__all__ = ["IOSpec", "TensorSpec", "io_spec", "make_inputs"]
