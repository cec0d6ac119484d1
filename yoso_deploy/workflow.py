"""The export job, end to end: convert, check, optionally quantize, publish -- what ``yoso-deploy export`` runs.

    from yoso_deploy.workflow import export
    result = export("path/to/checkpoint", "out/qa", task="qa")        # ONNX + the post-export parity check
    print(result.parity_table())

The stages stay apart (:mod:`yoso_deploy.export` converts, :mod:`yoso_deploy.validation` judges,
:mod:`yoso_deploy.quantization` quantizes); this module is the one place that runs them in order. It builds
the export in a staging directory beside ``output`` and renames it into place at the end, so a failed export
leaves nothing behind and never half-overwrites a previous one. A check that runs and fails is different: the
files are published, marked ``failed`` in the manifest (every command then refuses them unless
``--allow-failed-export``), and :class:`ParityError` (or the quantization's check error) is raised.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .constants import DEFAULT_ATOL, DEFAULT_EXPORT_DIR, DEFAULT_RTOL, MANIFEST_FILE, MODEL_FILE
from .errors import CheckFailedError, NotFoundError, UsageError
from .manifest import expand_path


class ParityError(CheckFailedError):
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
    parity: object = None  # yoso_deploy.validation.parity.ParityReport of the post-export check
    parity_seconds: float = 0.0
    skipped_validation: str = ""
    check_shapes: tuple = ()
    notes: list[str] = field(default_factory=list)
    optimized: object | None = None  # OptimizeJobResult of export(optimize_level=...)
    quantized: object = None  # yoso_deploy.quantization.QuantizeResult of ``quantize="int8"``

    @property
    def ok(self) -> bool:
        return self.parity is None or self.parity.passed

    def parity_table(self) -> str:
        return "" if self.parity is None else self.parity.table()


def _staging_dir(output: Path) -> tuple[Path, list[Path]]:
    """A new directory beside ``output`` to build in, and the parent directories made for it (removed again
    if the export fails). Refuses an ``output`` that is a file or a non-empty directory holding no export."""
    from .export.exporter import ExportError

    if output.exists() and not output.is_dir():
        raise ExportError(f"output {str(output)!r} exists and is not a directory; choose a directory path")
    if output.is_dir() and any(output.iterdir()) and not (output / MANIFEST_FILE).is_file():
        raise ExportError(f"output directory {str(output)!r} is not empty and holds no previous export; "
                          "choose an empty or new directory so nothing is overwritten")
    made, parent = [], output.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    try:
        if not parent.is_dir():  # a path under a regular file
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        staging.mkdir()  # as any directory the user makes (umask), unlike mkdtemp's 0700
    except OSError as e:
        _remove_made(made)
        raise ExportError(f"cannot write to output directory {str(output)!r}: {e.strerror or e}; "
                          "choose a writable directory path") from e
    return staging, made


def _remove_made(made: list[Path]) -> None:
    for d in made:  # deepest first
        try:
            d.rmdir()
        except OSError:
            break


def _publish(staging: Path, output: Path) -> None:
    """Put ``staging`` where ``output`` is: the old export (if any) is moved aside, then removed."""
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.{os.getpid()}.old")
        os.replace(output, old)
    os.replace(staging, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _moved(path: Path, staging: Path, output: Path) -> Path:
    return output / path.relative_to(staging)


def export(
    model: str | Path | None = None,
    output: str | Path = DEFAULT_EXPORT_DIR,
    task: str | None = None,
    attention: str = "lsh",
    opset: int | None = None,
    seed: int = 0,
    debug_codes: bool = False,
    validate: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    tolerances=None,
    check_shapes=None,
    verbose: bool = False,
    dtype: str = "fp32",
    portable: str | None = None,
    quantize: str | None = None,
    quantize_options: dict | None = None,
    progress: Callable[[str], None] | None = None,
    tokenizer: str | Path | None = None,
    optimize_level: str | None = None,
) -> ExportResult:
    """Export the YOSO checkpoint ``model`` (default: the embedded model) to the directory ``output``.

    Converts (:func:`yoso_deploy.export.exporter.convert`), then with ``validate`` runs the post-export check
    (:func:`yoso_deploy.validation.post_export.check_export`: ONNX Runtime against the PyTorch reference on
    ``check_shapes``, tie-aware, layer by layer, within ``atol``/``rtol`` or ``tolerances``). With
    ``quantize="int8"`` the checked fp32 export goes to ``output/fp32`` and its int8 quantization
    (:func:`yoso_deploy.quantization.quantize`, ``quantize_options``) to ``output``. ``progress`` receives
    one-line messages. ``tokenizer``: a directory whose tokenizer the export takes instead of the checkpoint's
    (slow files are converted to ``tokenizer.json``; see :mod:`yoso_deploy.export.tokenizer`). Each export gets a
    model card (``README.md``, :mod:`yoso_deploy.model_card`). ``optimize_level`` (O1, O2, O3): the checked export
    goes to ``output/fp32`` and its optimization (:func:`optimize`) to ``output`` -- or, with ``quantize`` too, to
    ``output/<level>`` and its int8 quantization to ``output``. A failed check raises :class:`ParityError` (or
    ``QuantizationCheckError``) after
    publishing the files marked failed; any other failure leaves ``output`` as it was.
    """
    from .checkpoint import (
        TOKENIZER_FILES_HELP,
        check_checkpoint_dir,
        checkpoint_task,
        default_checkpoint_dir,
        find_tokenizer,
    )
    from .export.options import DEFAULT_OPSET, DEFAULT_PORTABLE, check_arguments, check_opset
    from .model_card import write_model_card

    # Everything that can be checked without torch is, first: a mistake is answered at once.
    say = progress or (lambda msg: None)
    opset = DEFAULT_OPSET if opset is None else opset
    portable = DEFAULT_PORTABLE if portable is None else portable
    task = check_arguments(task, attention, opset, dtype, portable, opset_known=False)
    if quantize not in (None, "int8"):
        raise UsageError(f"unknown quantization {quantize!r}", fix="choose int8 (or none)")
    if quantize and dtype != "fp32":
        raise UsageError("--quantize int8 starts from an fp32 export", fix="drop --dtype fp16")
    if optimize_level is not None:
        from .optimization import LEVELS

        if optimize_level not in LEVELS:
            raise UsageError(f"unknown optimization level {optimize_level!r}", fix=f"choose one of {', '.join(LEVELS)}")
        if dtype != "fp32":
            raise UsageError("--optimize fuses fp32 graphs for the CPU", fix="drop --dtype fp16")
    source = check_checkpoint_dir(model if model is not None else default_checkpoint_dir())
    task = checkpoint_task(source, task, require_head=True)
    check_opset(opset)
    if tokenizer is not None:
        tokenizer = expand_path(tokenizer)
        if not tokenizer.is_dir():
            raise NotFoundError(f"--tokenizer {str(tokenizer)!r} is not a directory",
                                fix=f"pass a directory with {TOKENIZER_FILES_HELP}")
        if find_tokenizer(tokenizer) is None:
            raise NotFoundError(f"--tokenizer {str(tokenizer)!r} holds no tokenizer",
                                fix=f"pass a directory with {TOKENIZER_FILES_HELP}")
    output = expand_path(output)
    staging, made = _staging_dir(output)
    try:
        from .export.exporter import convert  # torch, transformers, onnx, onnxscript

        target = staging / "fp32" if quantize or optimize_level else staging
        say(f"converting {model or 'the embedded default model'} ({task}) to ONNX ...")
        converted = convert(source, target, task=task, attention=attention, opset=opset, seed=seed,
                            debug_codes=debug_codes, verbose=verbose, dtype=dtype, portable=portable,
                            tokenizer=tokenizer)
        result = ExportResult(converted.output_dir, converted.onnx_path, converted.manifest, converted.seconds,
                              notes=list(converted.notes))
        if validate:
            from .validation.parity import Tolerances
            from .validation.post_export import check_export, failure_message

            say("checking ONNX Runtime against the PyTorch reference ...")
            check = check_export(converted, check_shapes, tolerances or Tolerances(atol=atol, rtol=rtol))
            result.parity, result.parity_seconds = check.report, check.seconds
            result.check_shapes, result.skipped_validation = check.shapes, check.skipped
            write_model_card(converted.output_dir)
            if not check.ok:
                _publish(staging, output)
                result.output_dir = _moved(result.output_dir, staging, output)
                result.onnx_path = _moved(result.onnx_path, staging, output)
                raise ParityError(failure_message(check), result)
        else:
            result.skipped_validation = "not checked (validate=False / --no-validate)"
            converted.manifest["parity"] = {"status": "skipped", "reason": result.skipped_validation}
            from .manifest import write_manifest

            write_manifest(converted.output_dir, converted.manifest)
            write_model_card(converted.output_dir)
        del converted
        source = target
        if optimize_level:
            source = staging / optimize_level.lower() if quantize else staging
            say(f"optimizing at {optimize_level} ...")
            try:
                result.optimized = optimize(target, source, level=optimize_level, validate=validate, progress=say)
            except OptimizeCheckError:
                _publish(staging, output)
                raise
        if quantize:
            from .quantization import QuantizationCheckError
            from .quantization import quantize as quantize_export

            say("quantizing to int8 ...")
            try:
                result.quantized = quantize_export(source, staging, validate=validate, progress=say,
                                                   **(quantize_options or {}))
            except QuantizationCheckError as e:
                _publish(staging, output)
                e.result.output_dir = output
                e.result.onnx_path = output / MODEL_FILE
                raise
            result.quantized.output_dir = output
            result.quantized.onnx_path = output / MODEL_FILE
        _publish(staging, output)
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            _remove_made(made)
        raise
    result.output_dir = _moved(result.output_dir, staging, output)
    result.onnx_path = _moved(result.onnx_path, staging, output)
    if result.optimized is not None:
        opt = result.optimized.optimized
        opt.output_dir, opt.onnx_path = _moved(opt.output_dir, staging, output), _moved(opt.onnx_path, staging, output)
    return result


@dataclass
class OptimizeJobResult:
    """What :func:`optimize` made: the optimization and, where torch is installed, its parity check."""

    optimized: object  # yoso_deploy.optimization.OptimizeResult
    check: object | None = None  # the (first failed) report: a ParityReport, or an Int8Report for O3
    skipped_validation: str | None = None

    @property
    def ok(self) -> bool:
        return self.check is None or self.check.passed


def optimize(
    model: str | Path,
    output: str | Path,
    level: str = "O2",
    validate: bool = True,
    threads: int | None = None,
    check_shapes=None,
    progress: Callable[[str], None] | None = None,
) -> OptimizeJobResult:
    """Optimize the export ``model`` at ``level`` into ``output`` (:func:`yoso_deploy.optimization.optimize`), then,
    with ``validate`` and where torch is installed, judge it against the PyTorch reference as ``yoso-deploy
    validate`` does (ONNX Runtime CPU, tie-aware, layer by layer; O3's approximation by the int8 criteria against
    its exact source export, torch-free) on ``check_shapes`` (default: the post-export check's), recording the
    verdict in its manifest and model card. A failed check raises :class:`OptimizeCheckError` after the files are
    written (marked failed)."""
    from .iospec import default_check_shapes
    from .manifest import load_manifest
    from .optimization import optimize as optimize_export

    say = progress or (lambda msg: None)
    res = optimize_export(model, output, level=level, threads=threads, progress=say)
    job = OptimizeJobResult(res)
    out = res.output_dir
    if not validate:
        job.skipped_validation = "not checked (validate=False / --no-validate)"
    elif level != "O3" and not _reference_available():
        job.skipped_validation = ("not checked: the PyTorch reference needs the [export] and [validate] extras; run "
                                  f"'yoso-deploy validate --model {out}' where they are installed")
    if job.skipped_validation:
        res.manifest["parity"] = {"status": "skipped", "reason": job.skipped_validation}
        write_manifest_and_card(out, res.manifest)
        return job
    manifest = load_manifest(out)
    shapes = tuple(check_shapes) if check_shapes else default_check_shapes(manifest["max_sequence_length"])
    from .validation.report import parity_entry  # torch-free

    if level == "O3":  # an approximation: judged like int8, by the int8 criteria against its exact source export
        from .quantization.quantize import check_against_fp32

        say(f"checking the {level} export against its source export (int8 criteria) ...")
        src = expand_path(model)
        report = check_against_fp32(out, manifest, src, load_manifest(src), shapes, threads=threads,
                                    backend=f"ort-cpu {level}")
        against, kind = "its source export (int8 criteria)", f"approximate {level} vs its exact source export"
    else:  # the post-export check itself: the reference loaded once, the same cases and judgement
        from .validation.post_export import check_export_dir  # torch: the reference

        say(f"checking the {level} export against the PyTorch reference ...")
        report = check_export_dir(out, shapes).report
        against, kind = "the PyTorch reference", f"optimized {level} vs the PyTorch reference"
    job.check = report
    res.manifest["parity"] = parity_entry(report, shapes, kind=f"{kind} ({'int8 criteria' if level == 'O3' else 'parity'})")
    write_manifest_and_card(out, res.manifest)
    if not report.passed:
        raise OptimizeCheckError(f"the {level} export disagrees with {against} (first at "
                                 f"{res.manifest['parity']['first_failure']}); it is marked failed in {MANIFEST_FILE}",
                                 job)
    return job


def _reference_available() -> bool:
    """Whether the PyTorch reference and polygraphy can be imported here (the [export] and [validate] extras)."""
    try:
        import polygraphy  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


class OptimizeCheckError(CheckFailedError):
    """The optimized export failed its parity check (``result`` holds it; the files are written, marked failed)."""

    def __init__(self, message: str, result: OptimizeJobResult):
        super().__init__(message)
        self.result = result


def write_manifest_and_card(export_dir: Path, manifest: dict) -> None:
    from .manifest import write_manifest
    from .model_card import write_model_card

    write_manifest(export_dir, manifest)
    write_model_card(export_dir)
