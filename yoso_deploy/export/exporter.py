"""PyTorch reference -> ONNX with ``com.yoso`` custom ops.

Exporter choice: the dynamo-based ``torch.onnx.export(..., dynamo=True)``. The two ops are
``torch.library.custom_op``s (``yoso::fast_hash``, ``yoso::lsh_cumulation``), so ``torch.export``
keeps each as one opaque node whatever its Python implementation does, and
``custom_translation_table`` maps each node to exactly one ``com.yoso`` node with the contract's
attributes. The TorchScript exporter (``symbolic`` on an ``autograd.Function``) would also work
today, but it is deprecated in torch 2.x, traces data-dependent Python, and needs
``dynamic_axes`` guesses; ``torch.export`` gives checked symbolic shapes (dynamic batch and
sequence) and is the path torch maintains.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxscript
import torch

from .. import __version__
from ..manifest import MANIFEST, load_manifest, source_model_entry, write_manifest  # noqa: F401 - load_manifest re-exported
from ..modeling import ATTENTION_MODES, canonical_task, load_model
from ..modeling.ops import OP_DOMAIN, OP_VERSION
from .functions import DEFAULT_PORTABLE, PORTABLE_MODES, attach_functions, portable_manifest
from .names import restore_parameter_names
from .opset import downgrade_opset, model_opset
from .probes import find_probes, record_probes
from .schemas import register_schemas
from .spec import IOSpec, io_spec, make_inputs
from .wrapper import ExportWrapper

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
MIN_OPSET = 17
DEFAULT_OPSET = 18
EXPORTER_OPSET = 18  # torch.onnx's torchlib implements opset 18; 17 is reached by downgrade_opset
# The post-export check: two short shapes, plus a padded batch of 2 at min(512, max positions).
SHORT_CHECK_SHAPES = ((2, 16), (3, 77))
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)

_yoso_opset = onnxscript.values.Opset(domain=OP_DOMAIN, version=OP_VERSION)


def _fast_hash_onnx(x, mask, signs, num_hash: int, hash_code_len: int):
    return _yoso_opset.FastHash(x, mask, signs, num_hash=num_hash, hash_code_len=hash_code_len)


def _lsh_cumulation_onnx(query_codes, key_codes, query_mask, key_mask, value, hash_code_len: int):
    return _yoso_opset.LSHCumulation(
        query_codes, key_codes, query_mask, key_mask, value, hash_code_len=hash_code_len
    )


def custom_translation_table() -> dict:
    return {
        torch.ops.yoso.fast_hash.default: _fast_hash_onnx,
        torch.ops.yoso.lsh_cumulation.default: _lsh_cumulation_onnx,
    }


class ExportError(RuntimeError):
    """The export could not be produced (bad arguments or an exporter failure)."""


class ParityError(RuntimeError):
    """The exported model disagrees with the PyTorch reference (the export is kept, marked as failed)."""

    def __init__(self, message: str, result: "ExportResult"):
        super().__init__(message)
        self.result = result


@dataclass
class ExportResult:
    output_dir: Path
    onnx_path: Path
    manifest: dict
    export_seconds: float
    parity: object = None  # yoso_deploy.parity.ParityReport of the post-export check
    parity_seconds: float = 0.0
    skipped_validation: str = ""
    check_shapes: tuple = ()
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.parity is None or self.parity.passed

    def parity_table(self) -> str:
        return "" if self.parity is None else self.parity.table()


def default_check_shapes(max_positions: int) -> tuple[tuple[int, int], ...]:
    """The post-export check's shapes: the short ones plus a padded batch of 2 at min(512, max positions)."""
    return SHORT_CHECK_SHAPES + ((2, min(512, int(max_positions))),)


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``"2x16,2x512"`` -> ((2, 16), (2, 512)); a clear ValueError otherwise."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        b, sep, s = part.partition("x")
        if not sep or not b.strip().isdigit() or not s.strip().isdigit() or int(b) < 1 or int(s) < 1:
            raise ValueError(f"bad shape {part!r}: write BATCHxSEQ with positive integers, e.g. 2x16,2x512")
        out.append((int(b), int(s)))
    if not out:
        raise ValueError("no shapes given: write BATCHxSEQ[,BATCHxSEQ...], e.g. 2x16,2x512")
    return tuple(out)


def default_model_dir() -> Path:
    """The embedded default checkpoint (``model/`` of the source tree, or its installed copy)."""
    here = Path(__file__).resolve().parent.parent
    for p in (here / "default_model", here.parent / "model"):
        if (p / "config.json").is_file():
            return p
    raise FileNotFoundError(
        "the embedded default model is missing from this installation; pass --model DIR "
        "(a Hugging Face YOSO checkpoint directory)"
    )


@contextlib.contextmanager
def _quiet_logger(name: str, verbose: bool):
    logger = logging.getLogger(name)
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_opset(opset: int) -> int:
    max_opset = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset:
        raise ExportError(
            f"unsupported opset {opset!r}: choose {MIN_OPSET}..{max_opset} (LayerNormalization needs "
            f"{MIN_OPSET}; onnx {onnx.__version__} knows up to {max_opset}); default {DEFAULT_OPSET}"
        )
    return opset


def _prepare_output_dir(output: Path) -> Path:
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ExportError(f"output {str(output)!r} exists and is not a directory; choose a directory path")
    if output.is_dir() and any(output.iterdir()) and not (output / MANIFEST).is_file():
        raise ExportError(
            f"output directory {str(output)!r} is not empty and holds no previous export; "
            "choose an empty or new directory so nothing is overwritten"
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ExportError(
            f"cannot write to output directory {str(output)!r}: {e.strerror or e}; choose a writable directory path"
        ) from e
    return output


def _sample_args(spec: IOSpec, config) -> tuple:
    # Sizes > 1 and all different, so torch.export does not specialise any dynamic axis.
    feeds = make_inputs(spec, batch=2, seq_len=11, vocab_size=config.vocab_size, num_choices=3,
                        pad_token_id=config.pad_token_id or 0)
    return tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)


def _dynamic_shapes(spec: IOSpec, config):
    batch = torch.export.Dim("batch", max=1 << 20)
    seq = torch.export.Dim("sequence", max=int(config.max_position_embeddings))
    if spec.task == "multiple-choice":
        choices = torch.export.Dim("num_choices", max=1 << 10)
        dims = {0: batch, 1: choices, 2: seq}
    else:
        dims = {0: batch, 1: seq}
    # ExportWrapper.forward takes *args: torch.export sees one tuple argument holding the inputs.
    return (tuple(dims for _ in spec.inputs),)


def _finalize(model_proto: onnx.ModelProto, spec: IOSpec, manifest: dict) -> onnx.ModelProto:
    model_proto.producer_name = "yoso-deploy"
    model_proto.producer_version = __version__
    model_proto.doc_string = f"YOSO {manifest['task']} ({manifest['attention']} attention) exported by yoso-deploy"
    meta = {p.key: p.value for p in model_proto.metadata_props}
    meta.update({
        "yoso.task": manifest["task"],
        "yoso.attention": manifest["attention"],
        "yoso.seed": str(manifest["seed"]),
        "yoso.op_domain": OP_DOMAIN,
        "yoso.op_version": str(OP_VERSION),
    })
    del model_proto.metadata_props[:]
    for k, v in meta.items():
        model_proto.metadata_props.add(key=k, value=v)
    # Inputs/outputs get the manifest's symbolic names (torch.export may call them s0, s1, ...).
    by_name = {t.name: t for t in spec.inputs + spec.outputs + spec.debug_outputs}
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        t = by_name.get(vi.name)
        if t is None:
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == len(t.dims):
            for d, want in zip(dims, t.dims):
                if isinstance(want, str):
                    d.dim_param = want
    return model_proto


def _check(path: Path) -> onnx.ModelProto:
    register_schemas()
    onnx.checker.check_model(str(path), full_check=True)
    model_proto = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True)
    typed = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for node in inferred.graph.node:
        if node.domain == OP_DOMAIN:
            for out in node.output:
                vi = typed.get(out)
                if vi is None or not vi.type.tensor_type.elem_type:
                    raise ExportError(f"shape inference left {node.op_type} output {out!r} untyped")
    return inferred


def export(
    model: str | Path | None = None,
    output: str | Path = "yoso-onnx",
    task: str | None = None,
    attention: str = "lsh",
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    debug_codes: bool = False,
    validate: bool = True,
    atol: float = 1e-4,
    check_shapes: tuple[tuple[int, int], ...] | None = None,
    verbose: bool = False,
    dtype: str = "fp32",
    rtol: float = 1e-3,
    tolerances=None,
    portable: str = DEFAULT_PORTABLE,
) -> ExportResult:
    """Export a YOSO checkpoint directory to ``output/model.onnx`` with its config, tokenizer and manifest.

    ``task`` defaults to the checkpoint's ``architectures``; a task whose head the checkpoint lacks is
    refused (``base`` is always allowed). With ``validate`` the export is run in ONNX Runtime
    (``libyoso_ort.so`` registered) on generated, padded inputs of ``check_shapes`` (batch, sequence;
    default :func:`default_check_shapes`) and judged against the PyTorch reference by
    :mod:`yoso_deploy.parity` (tie-aware for LSH, layer by layer). The manifest records the verdict
    (``parity``); on failure :class:`ParityError` is raised, the files are kept and the manifest says
    ``failed`` so that other commands refuse the export. ``portable`` (``functions``, ``off``,
    ``inline``): standard-ONNX bodies of the custom ops, see :mod:`yoso_deploy.export.functions`.
    """
    if task is not None:
        task = canonical_task(task)
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if attention not in ATTENTION_MODES:
        raise ExportError(f"unknown attention mode {attention!r}; choose one of {', '.join(ATTENTION_MODES)}")
    opset = _check_opset(opset)
    if portable not in PORTABLE_MODES:
        raise ExportError(f"unknown portable mode {portable!r}; choose one of {', '.join(PORTABLE_MODES)}")
    src = Path(model) if model is not None else default_model_dir()
    out = _prepare_output_dir(Path(output))
    register_schemas()

    t0 = time.perf_counter()
    ref = load_model(src, task=task, attention=attention, seed=seed, dtype=DTYPES[dtype], require_head=True)
    task = ref.yoso_task
    config = ref.config
    notes = []
    if attention == "lsh" and getattr(config, "use_expectation", False):
        notes.append("the checkpoint's config says use_expectation: true (trained with exact YOSO-E attention); "
                     "this export uses LSH attention (--attention lsh): pass --attention expectation for YOSO-E")
    spec = io_spec(config, task, debug_codes=debug_codes, attention=attention, dtype=dtype)
    wrapper = ExportWrapper(ref, spec, debug_codes).eval()
    onnx_path = out / "model.onnx"
    tmp_path = out / ".model.onnx.partial"
    log = io.StringIO()
    try:
        quiet = contextlib.redirect_stdout(log) if not verbose else contextlib.nullcontext()
        with quiet, warnings.catch_warnings(), _quiet_logger("torch.onnx", verbose), _quiet_logger("onnxscript", verbose):
            if not verbose:
                warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper,
                _sample_args(spec, config),
                dynamo=True,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_shapes=_dynamic_shapes(spec, config),
                custom_translation_table=custom_translation_table(),
                opset_version=max(opset, EXPORTER_OPSET),
                external_data=False,
                verbose=verbose,
            )
    except Exception as e:  # the exporter raises many types; keep its message, add ours
        raise ExportError(f"torch.onnx export failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

    manifest = {
        "format": "yoso-deploy-export",
        "format_version": 1,
        "task": task,
        "attention": attention,
        "opset": opset,
        "seed": int(seed),
        "dtype": dtype,
        "source_model": source_model_entry(src, out),
        "model_file": "model.onnx",
        "inputs": [t.to_json() for t in spec.inputs],
        "outputs": [t.to_json() for t in spec.outputs],
        "debug_outputs": [t.to_json() for t in spec.debug_outputs],
        "custom_ops": (
            [{"domain": OP_DOMAIN, "version": OP_VERSION, "ops": ["FastHash", "LSHCumulation"]}]
            if attention == "lsh" else []
        ),
        "max_sequence_length": int(config.max_position_embeddings),
        "hash": {"num_hash": int(config.num_hash), "hash_code_len": int(config.hash_code_len)},
        "parity": {"status": "skipped", "reason": "not checked (--no-validate)"},
        "versions": {
            "yoso_deploy": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "python": platform.python_version(),
        },
    }
    model_proto = _finalize(program.model_proto, spec, manifest)
    restore_parameter_names(model_proto, wrapper)
    try:
        if opset < EXPORTER_OPSET and model_opset(model_proto) != opset:
            model_proto = downgrade_opset(model_proto, opset)
    except ValueError as e:
        raise ExportError(f"cannot make an opset-{opset} model: {e}; use --opset {DEFAULT_OPSET} (the default)") from e
    got = model_opset(model_proto)
    if got != opset:
        raise ExportError(f"the exporter produced opset {got}, not the requested {opset} (torch {torch.__version__}, "
                          f"onnxscript {onnxscript.__version__}); use --opset {DEFAULT_OPSET} (the default)")
    # The values parity checks observe, named before inlining (--portable inline) removes the com.yoso nodes.
    record_probes(model_proto, find_probes(model_proto))
    model_proto = attach_functions(model_proto, portable)
    manifest.update(portable_manifest(portable, model_proto))
    onnx.save(model_proto, str(tmp_path))
    try:
        _check(tmp_path)
    except Exception as e:
        tmp_path.unlink(missing_ok=True)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = f"; use --opset {DEFAULT_OPSET} (the default)" if opset != DEFAULT_OPSET else ""
        raise ExportError(f"the exported opset-{opset} model failed onnx.checker/shape inference: {detail}{hint}") from e
    os.replace(tmp_path, onnx_path)
    config.save_pretrained(str(out))
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    write_manifest(out, manifest)
    result = ExportResult(out, onnx_path, manifest, time.perf_counter() - t0, notes=notes)

    if validate and dtype == "fp16" and not _cuda_ep_available():
        result.skipped_validation = (
            "fp16 exports are for GPU backends (ORT CUDA / TensorRT): this onnxruntime has no "
            "CUDAExecutionProvider and the CPU custom ops are fp32, so the parity check was skipped"
        )
        manifest["parity"] = {"status": "skipped", "reason": result.skipped_validation}
        write_manifest(out, manifest)
    elif validate:
        from ..parity import Tolerances

        shapes = tuple(check_shapes) if check_shapes else default_check_shapes(config.max_position_embeddings)
        too_long = [s for _, s in shapes if s > config.max_position_embeddings]
        if too_long:
            raise ExportError(f"check shape sequence length {too_long[0]} exceeds the model's maximum "
                              f"{config.max_position_embeddings}; choose shorter --check-shapes")
        tol = tolerances or Tolerances(atol=atol, rtol=rtol)
        result.check_shapes = shapes
        t1 = time.perf_counter()
        result.parity = check_parity(ref, spec, onnx_path, config, shapes, tol)
        result.parity_seconds = time.perf_counter() - t1
        first = result.parity.first_failure()
        manifest["parity"] = {
            "status": "passed" if result.ok else "failed",
            "shapes": [f"{b}x{s}" for b, s in shapes],
            "first_failure": None if first is None else f"{first.backend} {first.case} {first.name}",
            "table": result.parity.table().splitlines(),
        }
        write_manifest(out, manifest)
        if not result.ok:
            raise ParityError(f"ONNX Runtime disagrees with the PyTorch reference ({first.backend} {first.case}, "
                              f"first at {first.name}: {first.error}); the export is marked failed in {MANIFEST}",
                              result)
    return result


def _cuda_ep_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def check_parity(ref, spec: IOSpec, onnx_path: Path, config, shapes, tolerances=None):
    """ORT (with libyoso_ort.so) vs the PyTorch reference over ``shapes`` -> a ``parity.ParityReport``."""
    from ..parity import Tolerances, check_onnxruntime

    cases = [make_inputs(spec, batch, seq, config.vocab_size, seed=i, pad_token_id=config.pad_token_id or 0)
             for i, (batch, seq) in enumerate(shapes)]
    return check_onnxruntime(ref, spec, onnx_path, cases, tolerances or Tolerances())
