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
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxscript
import torch

from ..checkpoint import default_checkpoint_dir as default_model_dir  # noqa: F401 - re-exported
from ..constants import MODEL_FILE, OP_DOMAIN, OP_NAMES, OP_VERSION, __version__
from ..iospec import IOSpec, io_spec, make_inputs
from ..manifest import MANIFEST, source_model_entry, write_manifest
from ..modeling import load_model
from .functions import attach_functions, portable_manifest
from .names import restore_parameter_names
from .opset import downgrade_opset, model_opset
from .options import DEFAULT_OPSET, DEFAULT_PORTABLE, EXPORTER_OPSET, ExportError, check_arguments  # noqa: F401
from .probes import find_probes, record_probes
from .rewrites import reduce_l2_as_sum
from .schemas import register_schemas
from .tokenizer import export_tokenizer
from .wrapper import ExportWrapper

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}

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


@dataclass
class ConvertResult:
    """What :func:`convert` wrote, and the reference it converted (the post-export check runs it)."""

    output_dir: Path
    onnx_path: Path
    manifest: dict
    seconds: float
    reference: object  # the PyTorch reference model (yoso_deploy.modeling), in eval mode
    spec: IOSpec
    notes: list[str] = field(default_factory=list)


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


def convert(
    model: str | Path | None,
    output: str | Path,
    task: str | None = None,
    attention: str = "lsh",
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    debug_codes: bool = False,
    verbose: bool = False,
    dtype: str = "fp32",
    portable: str = DEFAULT_PORTABLE,
    tokenizer: str | Path | None = None,
) -> ConvertResult:
    """Convert a YOSO checkpoint directory to ``output/model.onnx`` with its config, tokenizer and manifest.

    ``output`` must be a new or empty directory (:func:`yoso_deploy.workflow.export` builds in a staging
    directory beside the final one and renames it at the end). ``task`` defaults to the checkpoint's
    ``architectures``; a task whose head the checkpoint lacks is refused (``base`` is always allowed).
    ``portable`` (``functions``, ``off``, ``inline``): standard-ONNX bodies of the custom ops, see
    :mod:`yoso_deploy.export.functions`. ``tokenizer``: a directory whose tokenizer the export takes instead of the
    checkpoint's (:func:`yoso_deploy.export.tokenizer.export_tokenizer` converts slow files). The manifest's
    ``parity`` says ``skipped`` until the post-export check (:func:`yoso_deploy.validation.post_export.check_export`)
    records its verdict.
    """
    task = check_arguments(task, attention, opset, dtype, portable)
    src = Path(model) if model is not None else default_model_dir()
    out = _prepare_output_dir(Path(output))
    register_schemas()

    t0 = time.perf_counter()
    ref = load_model(src, task=task, attention=attention, seed=seed, dtype=TORCH_DTYPES[dtype], require_head=True)
    task = ref.yoso_task
    config = ref.config
    notes = []
    if attention == "lsh" and getattr(config, "use_expectation", False):
        notes.append("the checkpoint's config says use_expectation: true (trained with exact YOSO-E attention); "
                     "this export uses LSH attention (--attention lsh): pass --attention expectation for YOSO-E")
    spec = io_spec(config, task, debug_codes=debug_codes, attention=attention, dtype=dtype)
    wrapper = ExportWrapper(ref, spec, debug_codes).eval()
    onnx_path = out / MODEL_FILE
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
        "model_file": MODEL_FILE,
        "inputs": [t.to_json() for t in spec.inputs],
        "outputs": [t.to_json() for t in spec.outputs],
        "debug_outputs": [t.to_json() for t in spec.debug_outputs],
        "custom_ops": (
            [{"domain": OP_DOMAIN, "version": OP_VERSION, "ops": list(OP_NAMES)}]
            if attention == "lsh" else []
        ),
        "max_sequence_length": int(config.max_position_embeddings),
        "hash": {"num_hash": int(config.num_hash), "hash_code_len": int(config.hash_code_len)},
        "parity": {"status": "skipped", "reason": "not checked"},
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
    reduce_l2_as_sum(model_proto)  # so that ONNX Runtime's transformer optimizer can infer shapes (rewrites.py)
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
    tok = export_tokenizer(src, out, max_length=int(config.max_position_embeddings), input_names=spec.input_names,
                           vocab_size=int(config.vocab_size), tokenizer_dir=tokenizer)
    manifest["tokenizer"] = tok.manifest
    notes += tok.notes
    write_manifest(out, manifest)
    return ConvertResult(out, onnx_path, manifest, time.perf_counter() - t0, ref, spec, notes)
