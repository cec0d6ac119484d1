"""int8 quantization of an export for CPU serving (``yoso-deploy quantize``), torch-free.

    from yoso_deploy.quantization.quantize import quantize
    res = quantize("out/qa", "out/qa-int8")                    # dynamic, Q/K projections int8
    res = quantize("out/qa", "out/qa-int8", method="static", calibration="texts.txt")

The input is an fp32 export directory; the output is an export directory like any other (``model.onnx``,
``config.json``, tokenizer files, ``yoso_export.json``) that ``run``, ``qa``, ``bench``, ``validate``,
the runtime model classes and pipelines accept: the int8 graph uses standard ONNX / ONNX Runtime
operators (``DynamicQuantizeLinear`` + ``MatMulInteger``, or ``QuantizeLinear``/``DequantizeLinear``
pairs), and its ``com.yoso`` nodes, their function bodies and the probe record (``yoso.probes``) are
kept as they were. The manifest's ``quantization`` object records the method, every option, the
quantized and the excluded nodes and the source export; its ``parity`` object is the verdict of the
post-quantization check (the int8 criteria of :mod:`yoso_deploy.validation.int8_criteria` against the fp32 export
on generated inputs), so a failed quantization is refused by every command as a failed export is.

What is quantized: the dense projections -- every ``MatMul`` whose second input is a 2-D weight
initializer (Q, K, V, attention output, FFN in/out, the task head). Never the ``com.yoso`` ops, the
embeddings, layer norms, the convolution on values, or anything inside the ops' function bodies.
``qk="fp32"`` keeps the query and key projections fp32 (their outputs are what the LSH codes are
computed from); ``exclude`` keeps any other projection fp32.

Methods (both from ``onnxruntime.quantization``):

* ``dynamic`` -- int8 weights, activations quantized per call from their own range (uint8); no
  calibration. ONNX Runtime fuses each projection into ``DynamicQuantizeMatMul`` /
  ``MatMulIntegerToFloat``.
* ``static`` -- QDQ format, activation ranges from calibration data: the export's tokenizer on a text
  file (one example per line; a tab separates a pair, e.g. question and context), or generated inputs.
  The calibration runs in this process with ``libyoso_ort.so`` registered (ONNX Runtime's own
  calibrator cannot register a custom-op library), and its ranges go to ``quantize_static`` through a
  calibration cache. Activation Q/DQ pairs feed the quantized projections only: any other consumer of
  the same tensor (the residual ``Add``, an excluded projection) keeps reading the fp32 value.

Presets set the data types and ``reduce_range`` for a CPU family, as ONNX Runtime's documentation
advises: ``avx2`` (no VNNI: 7-bit weights against the saturation of ``vpmaddubsw``), ``avx512-vnni``,
``arm64`` (symmetric int8 activations for static quantization). Explicit options override the preset.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..constants import CONFIG_FILE, MODEL_FILE, QUANTIZE_METHOD, QUANTIZE_QK, __version__
from ..errors import CheckFailedError, UsageError
from ..iospec import make_inputs
from ..manifest import (
    MANIFEST,
    check_usable,
    copy_export_files,
    expand_path,
    load_manifest,
    manifest_spec,
    model_file,
    prepare_derived_output,
    quantization_info,
    source_model_dir,
    source_model_entry,
    write_manifest,
)
from ..model_card import write_model_card
from ..validation.int8_criteria import DEFAULT_THRESHOLDS, Int8Report, Int8Thresholds, judge_int8, values_from_probes

METHODS = ("dynamic", "static")
DEFAULT_METHOD = QUANTIZE_METHOD
QK_MODES = ("int8", "fp32")
DEFAULT_QK = QUANTIZE_QK
TYPES = ("int8", "uint8")
PRESETS = {
    # name: (description, {option: value}) -- ONNX Runtime's advice for CPU inference (quantize_static doc)
    "avx2": ("x86-64 without VNNI: uint8 activations, int8 weights, 7-bit weight range (reduce_range) against "
             "vpmaddubsw saturation", {"activation_type": "uint8", "weight_type": "int8", "reduce_range": True}),
    "avx512-vnni": ("x86-64 with AVX512-VNNI / AVX-VNNI: uint8 activations, int8 weights, full range",
                    {"activation_type": "uint8", "weight_type": "int8", "reduce_range": False}),
    "arm64": ("ARM64: int8 weights, full range; static quantization uses symmetric int8 activations",
              {"activation_type": "int8", "weight_type": "int8", "reduce_range": False}),
}
AUTO_PRESET = "auto"  # the preset of the CPU at hand (cpu_preset)


def cpu_preset(machine: str | None = None, flags: set[str] | None = None) -> str:
    """The preset for this CPU, following ONNX Runtime's guidance: ARM64 -> ``arm64``; x86-64 with AVX512-VNNI or
    AVX-VNNI -> ``avx512-vnni`` (full-range int8 weights); other x86-64 -> ``avx2`` (7-bit weights, so that
    ``vpmaddubsw`` cannot saturate). ``machine``/``flags`` default to this machine's (``/proc/cpuinfo``)."""
    import platform

    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if flags is None:
        flags = set()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        except OSError:
            pass
    return "avx512-vnni" if flags & {"avx512_vnni", "avx_vnni", "avx512vnni"} else "avx2"


DEFAULT_CALIBRATION_SAMPLES = 32
QK_RE = re.compile(r"\.attention\.self\.(query|key)\.weight(\.T)?$")


class QuantizeError(UsageError):
    """The export cannot be quantized as asked (the message names the fix)."""


class QuantizationCheckError(CheckFailedError):
    """The int8 export failed its post-quantization check (files kept, manifest marked failed)."""

    def __init__(self, message: str, result: "QuantizeResult"):
        super().__init__(message)
        self.result = result


@dataclass
class DenseNode:
    """A ``MatMul`` with a weight initializer: a dense projection of the model."""

    node: str  # node name
    weight: str  # initializer name, e.g. yoso.encoder.layer.0.attention.self.query.weight.T
    activation: str  # its activation input

    @property
    def parameter(self) -> str:
        """The checkpoint module, e.g. ``yoso.encoder.layer.0.attention.self.query``."""
        w = self.weight[:-2] if self.weight.endswith(".T") else self.weight
        return w[: -len(".weight")] if w.endswith(".weight") else w

    @property
    def is_qk(self) -> bool:
        return QK_RE.search(self.weight) is not None


@dataclass
class QuantizeResult:
    output_dir: Path
    onnx_path: Path
    manifest: dict
    seconds: float
    quantized: list[DenseNode] = field(default_factory=list)
    excluded: list[DenseNode] = field(default_factory=list)
    report: Int8Report | None = None
    check_seconds: float = 0.0
    check_shapes: tuple = ()
    calibration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.report is None or self.report.passed

    def table(self) -> str:
        return "" if self.report is None else self.report.table()


# ------------------------------------------------------------------------------------------------
# Checks of the input
# ------------------------------------------------------------------------------------------------


def _require_onnx():
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization  # noqa: F401
    except ImportError as e:
        from ..errors import MissingExtraError

        raise MissingExtraError(f"'yoso-deploy quantize' needs {getattr(e, 'name', None) or 'onnx'}, which is not "
                                "installed; install the extra: pip install 'yoso-deploy[quantize]'") from e


def resolve_options(method: str, preset: str | None, activation_type: str | None, weight_type: str | None,
                    reduce_range: bool | None) -> dict:
    """Method, preset and explicit options -> ``{activation_type, weight_type, reduce_range}`` (or a QuantizeError)."""
    if method not in METHODS:
        raise QuantizeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    opts = {"activation_type": "uint8", "weight_type": "int8", "reduce_range": False}
    if preset == AUTO_PRESET:
        preset = cpu_preset()
    if preset is not None:
        if preset not in PRESETS:
            raise QuantizeError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}, {AUTO_PRESET} (or "
                                "none: uint8 activations, int8 weights, full range)")
        opts.update(PRESETS[preset][1])
    for key, value in (("activation_type", activation_type), ("weight_type", weight_type),
                       ("reduce_range", reduce_range)):
        if value is not None:
            opts[key] = value
    for key in ("activation_type", "weight_type"):
        if opts[key] not in TYPES:
            raise QuantizeError(f"unknown {key.replace('_', ' ')} {opts[key]!r}; choose int8 or uint8")
    if method == "dynamic" and opts["activation_type"] != "uint8":
        if activation_type is not None:
            raise QuantizeError("dynamic quantization computes uint8 activations (ONNX Runtime's "
                                "DynamicQuantizeLinear); drop --activation-type int8 or use --method static")
        opts["activation_type"] = "uint8"  # a preset's static choice; dynamic has only uint8
    return opts


def check_quantizable(manifest: dict, model_dir: Path) -> None:
    """Refuse what cannot or must not be quantized, each with one line naming the fix."""
    q = quantization_info(manifest)
    if q is not None:
        src = q.get("source_export") or "its fp32 source export"
        raise QuantizeError(f"{str(model_dir)!r} is already an int8 export (quantized {q.get('method', '')} from "
                            f"{src!r}); quantize the fp32 export instead: yoso-deploy quantize --model "
                            f"{_source_export_hint(q, model_dir)} --output DIR")
    if manifest.get("dtype", "fp32") != "fp32":
        raise QuantizeError(f"{str(model_dir)!r} is a {manifest.get('dtype')} export (for GPU backends); int8 "
                            "quantization starts from fp32: re-export with 'yoso-deploy export --dtype fp32' (the "
                            "default) and quantize that")
    try:
        check_usable(manifest, model_dir=model_dir)
    except Exception as e:  # ExportNotUsableError: same facts, the fix for quantize
        first = (manifest.get("parity") or {}).get("first_failure")
        raise QuantizeError(f"{str(model_dir)!r} failed its post-export parity check (first failure: "
                            f"{first or 'see ' + MANIFEST}); quantizing it would hide that: fix and re-export it "
                            f"('yoso-deploy export --output {model_dir}'), then quantize") from e


def _source_export_hint(q: dict, model_dir: Path) -> str:
    src = q.get("source_export")
    if not src:
        return "FP32_EXPORT"
    p = expand_path(src)
    return str(p if p.is_absolute() else (model_dir / p).resolve())


# ------------------------------------------------------------------------------------------------
# Which nodes
# ------------------------------------------------------------------------------------------------


def dense_nodes(model) -> list[DenseNode]:
    """Every graph-level ``MatMul`` whose second input is a 2-D float initializer (function bodies excluded)."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "MatMul" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        w = inits.get(n.input[1])
        if w is None or len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            continue
        out.append(DenseNode(n.name, w.name, n.input[0]))
    return out


def select_nodes(dense: list[DenseNode], qk: str = DEFAULT_QK, exclude=()) -> tuple[list[DenseNode], list[DenseNode]]:
    """(nodes to quantize, nodes kept fp32). ``exclude``: node names, checkpoint module or weight names, or
    shell-style patterns of either (``*.attention.output.dense``, ``node_MatMul_*``); a pattern matching no
    dense node is an error (a typo must not silently quantize everything)."""
    if qk not in QK_MODES:
        raise QuantizeError(f"unknown --qk {qk!r}; choose int8 (quantize the query/key projections) or fp32 (keep them)")
    patterns = [p.strip() for p in exclude if p and p.strip()]
    names = lambda d: (d.node, d.weight, d.parameter)  # noqa: E731
    for p in patterns:
        if not any(fnmatch.fnmatchcase(x, p) for d in dense for x in names(d)):
            examples = ", ".join(f"{d.node} / {d.parameter}" for d in dense[:2])
            raise QuantizeError(f"--exclude {p!r} matches no dense projection; give node names or checkpoint "
                                f"modules (or patterns of them), e.g. {examples}")
    keep, quant = [], []
    for d in dense:
        fp32 = (qk == "fp32" and d.is_qk) or any(fnmatch.fnmatchcase(x, p) for p in patterns for x in names(d))
        (keep if fp32 else quant).append(d)
    if not quant:
        raise QuantizeError("every dense projection is excluded, so nothing would be quantized; exclude fewer nodes")
    return quant, keep


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------


def calibration_feeds(model_dir: Path, manifest: dict, text_file: str | os.PathLike | None = None,
                      samples: int | None = None, seq_len: int | None = None, seed: int = 0) -> tuple[list[dict], dict]:
    """Calibration inputs: the export's tokenizer on ``text_file`` (one example per line, a tab between the
    parts of a pair; at most ``samples`` lines), else ``samples`` generated inputs of ``seq_len`` tokens
    (default min(512, max positions)). Returns (feeds, description for the manifest)."""
    spec = manifest_spec(manifest)
    max_len = int(manifest["max_sequence_length"])
    if samples is not None and samples < 1:
        raise QuantizeError(f"--calibration-samples must be >= 1, got {samples}")
    if text_file is not None:
        from ..runtime.tokenizer import Tokenizer

        path = expand_path(text_file)
        if not path.is_file():
            raise QuantizeError(f"--calibration {str(path)!r} does not exist; give a UTF-8 text file with one example "
                                "per line (a tab between question and context)")
        try:
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except UnicodeDecodeError as e:
            raise QuantizeError(f"--calibration {str(path)!r} is not UTF-8 text ({e.reason}); convert it to UTF-8") from None
        if not lines:
            raise QuantizeError(f"--calibration {str(path)!r} holds no text; give one example per line")
        if samples is not None:
            lines = lines[:samples]
        tok = Tokenizer.from_dir(model_dir)
        feeds = []
        limit = min(max_len, int(seq_len)) if seq_len else max_len
        for ln in lines:
            parts = ln.split("\t")
            if spec.task == "multiple-choice":
                choices = parts[1:] or [""]
                enc = tok([parts[0]] * len(choices), choices, max_length=limit, truncation="longest_first",
                          padding="longest")
                f = {k: v[None] for k, v in enc.model_inputs(spec.input_names).items()}
            else:
                enc = tok(parts[0], parts[1] if len(parts) > 1 else None, max_length=limit, truncation="longest_first")
                f = enc.model_inputs(spec.input_names)
            feeds.append({n: np.ascontiguousarray(f[n], dtype=np.int64) for n in spec.input_names if n in f})
        return feeds, {"source": "text", "file": str(path), "samples": len(feeds),
                       "tokens": int(sum(f["input_ids"].size for f in feeds))}
    n = samples or DEFAULT_CALIBRATION_SAMPLES
    s = min(max_len, int(seq_len or 512))
    cfg = json.loads((model_dir / CONFIG_FILE).read_text())
    feeds = [make_inputs(spec, 1, s, int(cfg["vocab_size"]), seed=seed + i, padding=False,
                         pad_token_id=int(cfg.get("pad_token_id") or 0)) for i in range(n)]
    return feeds, {"source": "generated", "samples": n, "seq_len": s,
                   "note": "random token ids; calibrate on real text (--calibration FILE) for real traffic"}


def calibrate_ranges(model, tensors: list[str], feeds: list[dict], threads: int | None = None,
                     progress: Callable[[int, int, float], None] | None = None) -> dict[str, tuple]:
    """Min and max of each tensor over the calibration inputs, run with ``libyoso_ort.so`` registered."""
    import onnx

    from ..runtime import create_session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for name in tensors:
        if name not in existing:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = create_session(m.SerializeToString(), intra_op_threads=threads)
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    t0 = time.perf_counter()
    for i, f in enumerate(feeds):
        outs = sess.run(tensors, f)
        for t, v in zip(tensors, outs):
            lo[t] = min(lo[t], float(np.min(v)))
            hi[t] = max(hi[t], float(np.max(v)))
        if progress is not None:
            progress(i + 1, len(feeds), time.perf_counter() - t0)
    return {t: (np.array(lo[t], dtype=np.float32), np.array(hi[t], dtype=np.float32)) for t in tensors}


# ------------------------------------------------------------------------------------------------
# Quantizing
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_quantizer():
    """ONNX Runtime's quantizer logs advice ("consider pre-processing") through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _restore_fp32_consumers(model, quantized: set[str]) -> int:
    """QDQ: ``quantize_static`` points *every* consumer of a quantized activation at its DequantizeLinear; point
    the consumers that are not quantized projections (residual adds, excluded projections) back at the fp32
    tensor. Returns how many inputs were restored."""
    q_input = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_source = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in q_input:
            dq_source[n.output[0]] = q_input[n.input[0]]
    restored = 0
    for n in model.graph.node:
        if n.name in quantized or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(n.input):
            if name in dq_source:
                n.input[i] = dq_source[name]
                restored += 1
    return restored


def _drop_unused_qdq(model) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads any more (after :func:`_restore_fp32_consumers`)."""
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


def _quantize_model(src_path: Path, out_path: Path, method: str, nodes: list[DenseNode], opts: dict, per_channel: bool,
                    ranges: dict | None, work: Path) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        TensorsData,
        quantize_dynamic,
        quantize_static,
        save_tensors_data,
    )

    names = [d.node for d in nodes]
    with _quiet_quantizer():
        if method == "dynamic":
            quantize_dynamic(str(src_path), str(out_path), op_types_to_quantize=["MatMul"], nodes_to_quantize=names,
                             per_channel=per_channel, reduce_range=opts["reduce_range"],
                             weight_type=_qtype(opts["weight_type"]),
                             extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
            return
        cache = work / "calibration.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)
        quantize_static(str(src_path), str(work / "qdq.onnx"), calibration_data_reader=None,
                        calibration_cache_path=str(cache), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=names, per_channel=per_channel,
                        reduce_range=opts["reduce_range"], activation_type=_qtype(opts["activation_type"]),
                        weight_type=_qtype(opts["weight_type"]), calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"MatMulConstBOnly": True, "OpTypesToExcludeOutputQuantization": ["MatMul"],
                                       "DefaultTensorType": onnx.TensorProto.FLOAT,
                                       "ActivationSymmetric": opts["activation_type"] == "int8",
                                       "WeightSymmetric": True})
    model = onnx.load(str(work / "qdq.onnx"))
    _restore_fp32_consumers(model, set(names))
    _drop_unused_qdq(model)
    onnx.save(model, str(out_path))


def _keep_probes(model, source_model) -> None:
    """The probe record survives quantization: the same values feed and leave every ``com.yoso`` node."""
    from ..export.probes import ProbeError, find_probes, record_probes

    try:
        before = find_probes(source_model)
    except ProbeError:
        return  # no com.yoso nodes and no record (an expectation export without scopes): nothing to keep
    values = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    missing = [n for n in before.names() if n not in values]
    if missing:
        raise QuantizeError(f"quantization renamed the probed values {', '.join(missing[:3])}; the int8 export could "
                            "not be validated: report this with the onnxruntime version")
    record_probes(model, before)
    after = find_probes(model)
    if after.names() != before.names():
        raise QuantizeError("quantization changed the graph's probe structure; report this with the onnxruntime version")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_check_shapes(max_positions: int) -> tuple[tuple[int, int], ...]:
    """The post-quantization check's shapes: those of the post-export check (2x16, 3x77, 2x min(512, max))."""
    return ((2, 16), (3, 77), (2, min(512, int(max_positions))))


def quantize(
    model: str | os.PathLike,
    output: str | os.PathLike,
    method: str = DEFAULT_METHOD,
    per_channel: bool = False,
    reduce_range: bool | None = None,
    calibration: str | os.PathLike | None = None,
    calibration_samples: int | None = None,
    calibration_seq_len: int | None = None,
    exclude=(),
    preset: str | None = None,
    qk: str = DEFAULT_QK,
    activation_type: str | None = None,
    weight_type: str | None = None,
    validate: bool = True,
    check_shapes=None,
    thresholds: Int8Thresholds = DEFAULT_THRESHOLDS,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize the fp32 export ``model`` into the export directory ``output`` (see the module doc).

    With ``validate`` the int8 export is judged against the fp32 export on generated, padded inputs of
    ``check_shapes`` by the int8 criteria (:mod:`yoso_deploy.validation.int8_criteria`, ``thresholds``); the verdict goes
    to the manifest (``parity``), and a failure raises :class:`QuantizationCheckError` with the files kept
    and the manifest marked ``failed``. ``progress`` receives one-line messages (calibration, check).
    """
    _require_onnx()
    import onnx
    import onnxruntime

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    src = expand_path(model)
    manifest = load_manifest(src)
    check_quantizable(manifest, src)
    opts = resolve_options(method, preset, activation_type, weight_type, reduce_range)
    if method == "dynamic" and (calibration is not None or calibration_samples is not None):
        raise QuantizeError("dynamic quantization takes no calibration data (activation ranges are computed per "
                            "call); drop --calibration/--calibration-samples or use --method static")
    src_path = model_file(manifest, src)
    source = onnx.load(str(src_path))
    dense = dense_nodes(source)
    if not dense:
        raise QuantizeError(f"{str(src_path)!r} has no dense projection (MatMul with a weight initializer) to quantize")
    quant, keep = select_nodes(dense, qk, exclude)
    if check_shapes:
        too_long = [s for _, s in check_shapes if s > manifest["max_sequence_length"]]
        if too_long:
            raise QuantizeError(f"check shape sequence length {too_long[0]} exceeds the model's maximum "
                                f"{manifest['max_sequence_length']}; choose shorter --check-shapes")
    feeds, calib_desc, ranges = None, None, None
    calib_seconds = 0.0
    if method == "static":
        feeds, calib_desc = calibration_feeds(src, manifest, calibration, calibration_samples, calibration_seq_len)
        tensors = sorted({d.activation for d in quant})
        say(f"calibrating {len(tensors)} activations on {len(feeds)} {calib_desc['source']} inputs ...")
        t1 = time.perf_counter()
        last = [0.0]

        def tick(done, total, seconds):
            if done == total or seconds - last[0] >= 2.0:
                last[0] = seconds
                say(f"  calibration {done}/{total} inputs, {seconds:.1f} s")

        ranges = calibrate_ranges(source, tensors, feeds, threads, tick)
        calib_seconds = time.perf_counter() - t1
    out = prepare_derived_output(src, output, QuantizeError)
    onnx_path = out / MODEL_FILE
    say(f"quantizing {len(quant)} of {len(dense)} dense projections ({method}) ...")
    with tempfile.TemporaryDirectory(prefix="yoso-quantize-") as tmp:
        work = Path(tmp)
        _quantize_model(src_path, work / "int8.onnx", method, quant, opts, per_channel, ranges, work)
        qmodel = onnx.load(str(work / "int8.onnx"))
    _keep_probes(qmodel, source)
    meta = {p.key: p.value for p in qmodel.metadata_props}
    meta["yoso.quantization"] = json.dumps({"method": method, "qk": qk})
    del qmodel.metadata_props[:]
    for k, v in meta.items():
        qmodel.metadata_props.add(key=k, value=v)
    qmodel.producer_version = f"{qmodel.producer_version} (quantized by yoso-deploy {__version__})".strip()
    tmp_path = out / ".model.onnx.partial"
    onnx.save(qmodel, str(tmp_path))
    os.replace(tmp_path, onnx_path)
    del qmodel, source
    copy_export_files(src, out)  # config, tokenizer files, model card (rewritten after)

    new = {k: v for k, v in manifest.items() if k not in ("parity",)}
    ref = source_model_dir(manifest, src)
    if ref is not None:
        new["source_model"] = source_model_entry(ref, out)
    new["model_file"] = MODEL_FILE
    new["versions"] = {**manifest.get("versions", {}), "onnxruntime_quantization": onnxruntime.__version__,
                       "yoso_deploy_quantize": __version__}
    new["quantization"] = {
        "method": method,
        "format": "QDQ" if method == "static" else "integer ops (DynamicQuantizeLinear + MatMulInteger)",
        "weight_type": opts["weight_type"],
        "activation_type": opts["activation_type"],
        "per_channel": bool(per_channel),
        "reduce_range": bool(opts["reduce_range"]),
        "preset": f"{preset} ({cpu_preset()})" if preset == AUTO_PRESET else preset,
        "qk": qk,
        "exclude": [p for p in exclude if p],
        "quantized_nodes": [d.node for d in quant],
        "excluded_nodes": [d.node for d in keep],
        "excluded_modules": [d.parameter for d in keep],
        "calibration": calib_desc,
        "source_export": source_model_entry(src, out),
        "source_model_sha256": _sha256(src_path),
    }
    new["parity"] = {"status": "skipped", "kind": "int8", "reason": "not checked (--no-validate)"}
    write_manifest(out, new)
    write_model_card(out)
    result = QuantizeResult(out, onnx_path, new, time.perf_counter() - t0, quant, keep,
                            calibration_seconds=calib_seconds)
    if validate:
        shapes = tuple(check_shapes) if check_shapes else default_check_shapes(manifest["max_sequence_length"])
        say(f"checking the int8 export against the fp32 export on {', '.join(f'{b}x{s}' for b, s in shapes)} ...")
        t2 = time.perf_counter()
        result.report = check_against_fp32(out, new, src, manifest, shapes, thresholds, threads)
        result.check_seconds = time.perf_counter() - t2
        result.check_shapes = shapes
        first = result.report.first_failure()
        new["parity"] = {
            "status": "passed" if result.ok else "failed", "kind": "int8", "against": "fp32 export",
            "shapes": [f"{b}x{s}" for b, s in shapes], "thresholds": thresholds.to_json(),
            "summary": result.report.summary().get("fp32 export", {}),
            "first_failure": None if first is None else f"{first.backend} {first.case} {first.name}",
            "table": result.report.table().splitlines(),
        }
        write_manifest(out, new)
        write_model_card(out)
        result.manifest = new
        if not result.ok:
            raise QuantizationCheckError(f"the int8 export is too far from the fp32 export ({first.case}, first at "
                                         f"{first.name}: {first.error}); it is marked failed in {MANIFEST}", result)
    result.seconds = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------------
# Running both exports with their probes
# ------------------------------------------------------------------------------------------------


def probed_run(model_dir: Path, manifest: dict, threads: int | None = None):
    """``(probes, run)`` for an export: ``run(feeds) -> RunValues`` on an in-memory copy whose probes are graph
    outputs, through the runtime model classes (the one inference path)."""
    import onnx

    from ..export.probes import ProbeError, find_probes, instrument
    from ..runtime.models import YosoOrtModel

    proto = onnx.load(str(model_file(manifest, model_dir)))
    try:
        probes = find_probes(proto)
        proto = instrument(proto, probes)
    except ProbeError:
        probes = None
    m = YosoOrtModel.from_model(proto, manifest, model_dir=model_dir, intra_op_threads=threads)
    del proto
    names = [t["name"] for t in manifest["outputs"]]

    def run(feeds):
        return values_from_probes(probes, m.run(feeds), names)

    return probes, run


def check_against_fp32(int8_dir: Path, int8_manifest: dict, fp32_dir: Path, fp32_manifest: dict, shapes,
                       thresholds: Int8Thresholds = DEFAULT_THRESHOLDS, threads: int | None = None,
                       cases: list[dict] | None = None, backend: str = "ort-cpu int8") -> Int8Report:
    """The int8 export against its fp32 export, both in ONNX Runtime, on generated padded inputs (or ``cases``)."""
    spec = manifest_spec(int8_manifest)
    if cases is None:
        cfg = json.loads((int8_dir / CONFIG_FILE).read_text())
        cases = [make_inputs(spec, b, s, int(cfg["vocab_size"]), seed=i, pad_token_id=int(cfg.get("pad_token_id") or 0))
                 for i, (b, s) in enumerate(shapes)]
    _, run_fp32 = probed_run(fp32_dir, fp32_manifest, threads)
    ref = [run_fp32(f) for f in cases]
    del run_fp32
    _, run_int8 = probed_run(int8_dir, int8_manifest, threads)
    got = [run_int8(f) for f in cases]
    report = Int8Report()
    report.comparisons = judge_int8(spec.task, list(zip(cases, got, ref)), backend, "fp32 export", thresholds)
    return report
