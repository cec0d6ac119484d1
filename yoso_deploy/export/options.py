"""The options of an export and their checks -- light (no torch), so bad arguments are refused at once."""

from __future__ import annotations

from .. import tasks
from ..constants import ATTENTION_MODES, DEFAULT_OPSET, DEFAULT_PORTABLE  # noqa: F401 - re-exported
from ..errors import YosoDeployError

DTYPES = ("fp32", "fp16")
PORTABLE_MODES = ("functions", "off", "inline")  # see yoso_deploy.export.functions
MIN_OPSET = 17
EXPORTER_OPSET = 18  # torch.onnx's torchlib implements opset 18; 17 is reached by downgrade_opset


class ExportError(YosoDeployError, RuntimeError):
    """The export could not be produced (bad arguments or an exporter failure)."""


def check_opset(opset: int) -> int:
    import onnx  # the opsets this onnx knows

    max_opset = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset:
        raise ExportError(
            f"unsupported opset {opset!r}: choose {MIN_OPSET}..{max_opset} (LayerNormalization needs "
            f"{MIN_OPSET}; onnx {onnx.__version__} knows up to {max_opset}); default {DEFAULT_OPSET}"
        )
    return opset


def check_arguments(task: str | None, attention: str, opset: int, dtype: str, portable: str,
                    opset_known: bool = True) -> str | None:
    """Refuse arguments no export can have (before any file is touched); returns the canonical task.
    ``opset_known=False`` leaves the opset (which imports onnx to know the newest) to :func:`check_opset`."""
    if task is not None:
        task = tasks.canonical_task(task)
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if attention not in ATTENTION_MODES:
        raise ExportError(f"unknown attention mode {attention!r}; choose one of {', '.join(ATTENTION_MODES)}")
    if opset_known:
        check_opset(opset)
    if portable not in PORTABLE_MODES:
        raise ExportError(f"unknown portable mode {portable!r}; choose one of {', '.join(PORTABLE_MODES)}")
    return task
