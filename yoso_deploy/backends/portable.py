"""Running an export without our library: stock ONNX Runtime and OpenVINO.

An export made with ``--portable functions`` (the default) carries standard-ONNX bodies of the two
``com.yoso`` ops as model-local functions; one made with ``--portable inline`` has the bodies
expanded into the graph (see :mod:`yoso_deploy.export.functions`). Either runs in

* :func:`create_portable_session` — an ``onnxruntime.InferenceSession`` with **no** custom-op
  library: ONNX Runtime inlines the function bodies because no kernel is registered for them;
* :func:`compile_openvino` — an OpenVINO ``CompiledModel``. OpenVINO does not read model-local
  functions, so a ``functions`` export is inlined in memory first (an ``inline`` export as is).

Both are far slower than the library (``docs/perf/portable.md``): they are for runtimes where
loading ``libyoso_ort.so`` is not possible, not a replacement for it. Neither imports torch; both read
the model with ``onnx`` (the ``[export]`` extra), which is why this is not part of the runtime package.
"""

from __future__ import annotations

from pathlib import Path

from ..constants import OP_DOMAIN  # noqa: F401 - re-exported
from ..constants import OP_NAMES as PORTABLE_OPS
from ..errors import NotFoundError, UsageError


class PortableModelError(UsageError):
    """The model has ``com.yoso`` nodes but no function bodies (exported with ``--portable off``)."""


def _missing_bodies_message(model_path: Path) -> str:
    return (f"{str(model_path)!r} has com.yoso nodes without function bodies (exported with --portable off), so "
            "it only runs with libyoso_ort.so; re-export it with 'yoso-deploy export --portable functions' "
            "(or --portable inline), or use create_session() with the library")


def portable_mode(model) -> str:
    """``"inline"`` (no com.yoso node), ``"functions"`` (every com.yoso op has a local function), else ``"off"``.

    ``model`` is an ``onnx.ModelProto`` or a path (read without external data).
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    used = {n.op_type for n in model.graph.node if n.domain == OP_DOMAIN}
    if not used:
        return "inline"
    bodies = {f.name for f in model.functions if f.domain == OP_DOMAIN}
    return "functions" if used <= bodies else "off"


def create_portable_session(model_path: str | Path, intra_op_threads: int | None = None,
                            inter_op_threads: int | None = None, session_options=None):
    """A CPU ``InferenceSession`` of stock ONNX Runtime, no custom-op library registered.

    The com.yoso nodes of a ``functions`` export run their standard-op bodies. A ``--portable off``
    export raises :class:`PortableModelError` naming the fix.
    """
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise NotFoundError(f"ONNX model {str(model_path)!r} does not exist; export one with 'yoso-deploy export'")
    so = session_options or ort.SessionOptions()
    for name, value in (("intra_op_threads", intra_op_threads), ("inter_op_threads", inter_op_threads)):
        if value is not None and int(value) < 0:
            raise UsageError(f"{name} must be >= 0 (0 = all cores), got {value}")
    if intra_op_threads is not None:
        so.intra_op_num_threads = int(intra_op_threads)
    if inter_op_threads is not None:
        so.inter_op_num_threads = int(inter_op_threads)
    try:
        return ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        text = str(e)
        if any(op in text for op in PORTABLE_OPS) and ("implementation" in text or OP_DOMAIN in text):
            raise PortableModelError(_missing_bodies_message(model_path)) from e
        raise


def openvino_model_bytes(model_path: str | Path) -> bytes:
    """The serialised model OpenVINO can read: a ``functions`` export with its com.yoso calls inlined."""
    import onnx
    import onnx.inliner

    model_path = Path(model_path)
    if not model_path.is_file():
        raise NotFoundError(f"ONNX model {str(model_path)!r} does not exist; export one with 'yoso-deploy export'")
    model = onnx.load(str(model_path))
    mode = portable_mode(model)
    if mode == "off":
        raise PortableModelError(_missing_bodies_message(model_path))
    if mode == "functions":
        model = onnx.inliner.inline_selected_functions(model, [(OP_DOMAIN, op) for op in PORTABLE_OPS])
        kept = [i for i in model.opset_import if i.domain != OP_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return model.SerializeToString()


def compile_openvino(model_path: str | Path, device: str = "CPU", threads: int | None = None, config: dict | None = None):
    """An OpenVINO ``CompiledModel`` of an export (fp32 inference precision, so hash codes stay exact).

    ``config`` (OpenVINO properties) overrides the defaults, e.g. ``{"INFERENCE_PRECISION_HINT": "bf16"}``;
    :func:`openvino_precision` reads back the precision the compiled model really runs at.
    """
    try:
        import openvino as ov
    except ImportError as e:
        raise ImportError("OpenVINO is not installed; pip install 'yoso-deploy[openvino]' (or 'openvino')") from e
    core = ov.Core()
    props = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        if int(threads) < 1:
            raise UsageError(f"threads must be >= 1, got {threads}")
        props["INFERENCE_NUM_THREADS"] = int(threads)
    props.update(config or {})
    return core.compile_model(core.read_model(openvino_model_bytes(model_path)), device, props)


_PRECISION_NAMES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "float64": "f64", "int8": "i8"}


def openvino_precision(compiled) -> str:
    """The inference precision a ``CompiledModel`` actually runs at: ``"f32"``, ``"bf16"``, ``"f16"``, ...
    (``"unknown"`` where it cannot be read back).

    Anything but ``"f32"`` flips LSH hash bits (projections near zero change sign), so parity with the
    reference is not expected; :func:`compile_openvino` asks for f32 unless its ``config`` says otherwise.
    """
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # noqa: BLE001 - a device or an OpenVINO without the property
        return "unknown"
    try:
        name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    except Exception:  # noqa: BLE001
        return "unknown"
    name = str(name).strip().lower()
    name = _PRECISION_NAMES.get(name, name)
    return name if name and name not in ("undefined", "dynamic") else "unknown"


def run_openvino(compiled, feeds: dict) -> dict:
    """Run a ``CompiledModel`` on numpy feeds; returns ``{output name: numpy array}``."""
    import numpy as np

    result = compiled({k: np.ascontiguousarray(v) for k, v in feeds.items()})
    return {out.get_any_name(): np.asarray(result[out]) for out in compiled.outputs}
