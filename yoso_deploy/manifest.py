"""``yoso_export.json``, the manifest of an export directory: reading, writing, checking (torch-free).

An export directory holds ``model.onnx``, ``config.json``, the tokenizer files and this manifest. The
manifest is a JSON object; the keys every consumer relies on are checked here (:data:`REQUIRED`),
every other key is kept as it is (exports may carry more, e.g. the parity table), so newer
exporters can add fields without breaking older runtimes.

    manifest = load_manifest("out/qa")          # FileNotFoundError / ManifestError naming the fix
    check_usable(manifest)                      # ExportNotUsableError if its parity check failed
    spec = manifest_spec(manifest)              # IOSpec of inputs, outputs, debug outputs
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import tasks
from .constants import CONFIG_FILE, MANIFEST_FILE, MODEL_FILE
from .errors import NotFoundError, YosoDeployError
from .iospec import IOSpec, TensorSpec

MANIFEST = MANIFEST_FILE
FORMAT = "yoso-deploy-export"
FORMAT_VERSION = 1
REQUIRED = ("task", "attention", "inputs", "outputs", "max_sequence_length")
PARITY_STATES = ("passed", "failed", "skipped")
QUANTIZATION_METHODS = ("dynamic", "static")  # yoso_deploy.quantization.quantize


class ManifestError(YosoDeployError, ValueError):
    """A manifest that is missing, corrupt or not a yoso-deploy manifest."""


class ExportNotUsableError(YosoDeployError, RuntimeError):
    """The export's own parity check failed; it is refused unless explicitly allowed."""


def expand_path(path: str | os.PathLike) -> Path:
    """``Path(path)`` with a leading ``~`` / ``~user`` expanded (never a folder literally named ``~``)."""
    return Path(os.path.expanduser(os.fspath(path)))


def manifest_path(model_dir: str | os.PathLike) -> Path:
    return expand_path(model_dir) / MANIFEST


def _fix(model_dir) -> str:
    return f"re-export the model with 'yoso-deploy export --output {model_dir}'"


def _check_tensor_list(value: Any, key: str, where: str, fix: str) -> None:
    if not isinstance(value, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dtype"), str)
        and isinstance(t.get("dims"), list) for t in value
    ):
        raise ManifestError(f"{where}: {key!r} must be a list of {{name, dtype, dims}} objects; {fix}")


def validate_manifest(manifest: Any, where: str = "manifest", fix: str = "re-export the model") -> dict:
    """Check the keys and types every consumer relies on; returns the manifest (task canonicalised).

    Unknown keys are allowed and kept. Raises :class:`ManifestError` naming the key and the fix.
    """
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where} is not a yoso-deploy export manifest (it is a JSON "
                            f"{type(manifest).__name__}, not an object); {fix}")
    missing = [k for k in REQUIRED if k not in manifest]
    fmt = manifest.get("format", FORMAT)
    if missing or fmt != FORMAT:
        what = f"lacks {', '.join(missing)}" if missing else f"has format {fmt!r}"
        raise ManifestError(f"{where} is not a yoso-deploy export manifest (it {what}); {fix}")
    version = manifest.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ManifestError(f"{where} has format_version {version!r}, newer than this yoso-deploy reads "
                            f"({FORMAT_VERSION}); upgrade yoso-deploy or {fix}")
    try:
        manifest["task"] = tasks.canonical_task(manifest["task"])
    except tasks.UnknownTaskError as e:
        raise ManifestError(f"{where}: {e}; {fix}") from None
    for key in ("inputs", "outputs"):
        _check_tensor_list(manifest[key], key, where, fix)
    if "debug_outputs" in manifest:
        _check_tensor_list(manifest["debug_outputs"], "debug_outputs", where, fix)
    if not manifest["inputs"] or not manifest["outputs"]:
        raise ManifestError(f"{where} lists no inputs or no outputs; {fix}")
    msl = manifest["max_sequence_length"]
    if not isinstance(msl, int) or isinstance(msl, bool) or msl < 1:
        raise ManifestError(f"{where}: max_sequence_length must be a positive integer, got {msl!r}; {fix}")
    parity = manifest.get("parity")
    if parity is not None and (not isinstance(parity, dict) or parity.get("status") not in PARITY_STATES):
        raise ManifestError(f"{where}: parity must be an object whose status is one of {', '.join(PARITY_STATES)}, "
                            f"got {parity!r}; {fix}")
    quant = manifest.get("quantization")
    if quant is not None and (not isinstance(quant, dict) or quant.get("method") not in QUANTIZATION_METHODS):
        raise ManifestError(f"{where}: quantization must be an object whose method is one of "
                            f"{', '.join(QUANTIZATION_METHODS)}, got {quant!r}; {fix}")
    return manifest


def quantization_info(manifest: dict) -> dict | None:
    """The ``quantization`` object of an int8 export (method, options, nodes, ``source_export``), else None."""
    q = manifest.get("quantization")
    return q if isinstance(q, dict) else None


def approximation_info(manifest: dict) -> dict | None:
    """What makes an export an approximation of an exact source export, judged by the int8 criteria against it:
    its ``quantization`` (int8), else an ``optimization`` at a level that approximates (O3: FastGelu); else None."""
    q = quantization_info(manifest)
    if q is not None:
        return q
    o = manifest.get("optimization")
    return o if isinstance(o, dict) and o.get("level") in APPROXIMATE_LEVELS else None


APPROXIMATE_LEVELS = ("O3",)  # optimization levels that change the function (yoso_deploy.optimization)


def load_manifest(model_dir: str | os.PathLike) -> dict:
    """Read and check ``yoso_export.json`` of an export directory (``~`` expanded; clear errors naming the fix)."""
    model_dir = expand_path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise NotFoundError(f"export directory {str(model_dir)!r} does not exist",
                            fix=f"make it with 'yoso-deploy export --output {model_dir}' or pass --model EXPORT_DIR")
    if not path.is_file():
        what = ("a checkpoint, not an export" if (model_dir / CONFIG_FILE).is_file() and not (model_dir / MODEL_FILE).is_file()
                else "not an export directory")
        raise NotFoundError(f"{str(model_dir)!r} has no {MANIFEST}: it is {what}",
                            fix=f"make an export with 'yoso-deploy export --model CHECKPOINT --output {model_dir}' "
                                "or pass --model EXPORT_DIR")
    fix = _fix(model_dir)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{str(path)!r} is corrupt (not valid JSON: {e}); {fix}") from e
    return validate_manifest(manifest, where=repr(str(path)), fix=fix)


def write_manifest(model_dir: str | os.PathLike, manifest: dict) -> Path:
    """Check ``manifest`` and write it to ``model_dir/yoso_export.json`` atomically (no partial file)."""
    model_dir = expand_path(model_dir)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    validate_manifest(manifest, where="the manifest to write", fix="fix the exporter")
    path = model_dir / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def parity_state(manifest: dict) -> str:
    """The post-export check's verdict: ``"passed"``, ``"failed"``, ``"skipped"``, or ``"unknown"`` (older exports)."""
    parity = manifest.get("parity")
    return parity.get("status", "unknown") if isinstance(parity, dict) else "unknown"


def check_usable(manifest: dict, allow_failed: bool = False, model_dir: str | os.PathLike | None = None) -> str:
    """Refuse an export whose post-export parity check failed, unless ``allow_failed``.

    Returns the parity state (see :func:`parity_state`). Raises :class:`ExportNotUsableError` naming
    the first failing check and the fix.
    """
    state = parity_state(manifest)
    if state == "failed" and not allow_failed:
        where = repr(str(model_dir)) if model_dir is not None else "this export"
        first = manifest["parity"].get("first_failure")
        if manifest["parity"].get("kind") == "int8":
            raise ExportNotUsableError(
                f"{where} failed its post-quantization check (int8 criteria against the fp32 export; first failure: "
                f"{first or 'see parity in ' + MANIFEST}): quantize again with other options (e.g. --qk fp32, "
                "--exclude, --method), investigate with 'yoso-deploy validate --allow-failed-export', or pass "
                "--allow-failed-export (allow_failed_export=True) to use it anyway"
            )
        raise ExportNotUsableError(
            f"{where} failed its post-export parity check (first failure: {first or 'see parity in ' + MANIFEST}); "
            "it does not compute what the PyTorch model computes: fix and re-export it (investigate with "
            "'yoso-deploy validate --allow-failed-export'), or pass --allow-failed-export (allow_failed_export=True) "
            "to use it anyway"
        )
    return state


def model_file(manifest: dict, model_dir: str | os.PathLike, must_exist: bool = True) -> Path:
    """The ONNX file of an export (``model_file`` in the manifest, default ``model.onnx``); a
    :class:`~yoso_deploy.errors.NotFoundError` naming the directory, the file and the fix if it is missing."""
    path = expand_path(model_dir) / manifest.get("model_file", MODEL_FILE)
    if must_exist and not path.is_file():
        raise NotFoundError(f"export directory {str(model_dir)!r} has a manifest but no {path.name}",
                            fix=f"re-export it: yoso-deploy export --output {model_dir}")
    return path


def source_model_entry(source: str | os.PathLike, model_dir: str | os.PathLike) -> str:
    """``source_model`` as an export records it: relative to the export directory when the checkpoint sits
    inside the export's parent directory (so both can move together), else absolute."""
    src, out = expand_path(source).resolve(), expand_path(model_dir).resolve()
    return os.path.relpath(src, out) if src.is_relative_to(out.parent) else str(src)


def source_model_dir(manifest: dict, model_dir: str | os.PathLike) -> Path | None:
    """The checkpoint the export was made from (``source_model``: absolute, or relative to the export
    directory), or ``None`` if it is not there any more (see :func:`require_source_model_dir`)."""
    src = manifest.get("source_model")
    if not src:
        return None
    p = expand_path(src)
    if not p.is_absolute():
        p = (expand_path(model_dir) / p).resolve()
    return p if (p / CONFIG_FILE).is_file() else None


def require_source_model_dir(manifest: dict, model_dir: str | os.PathLike) -> Path:
    """:func:`source_model_dir`, or a FileNotFoundError that says where it looked and what to pass instead."""
    p = source_model_dir(manifest, model_dir)
    if p is not None:
        return p
    entry = manifest.get("source_model")
    if not entry:
        raise NotFoundError(f"{str(model_dir)!r}'s manifest names no source_model; pass --reference DIR")
    looked = expand_path(entry) if expand_path(entry).is_absolute() else (expand_path(model_dir) / entry).resolve()
    raise NotFoundError(
        f"the source checkpoint of {str(model_dir)!r} is gone (source_model {entry!r} -> {str(looked)!r} has no "
        "config.json); pass --reference DIR with the checkpoint it was exported from"
    )


def source_export_dir(manifest: dict, model_dir: str | os.PathLike) -> Path | None:
    """The exact export an approximate one (int8, O3) was made from, or None if it is not (any more) there."""
    q = approximation_info(manifest)
    if not q or not q.get("source_export"):
        return None
    p = expand_path(q["source_export"])
    if not p.is_absolute():
        p = (expand_path(model_dir) / p).resolve()
    return p if (p / MANIFEST).is_file() else None


def manifest_spec(manifest: dict) -> IOSpec:
    """The :class:`~yoso_deploy.iospec.IOSpec` a manifest describes."""
    def ts(items):
        return [TensorSpec(t["name"], t["dtype"], list(t["dims"])) for t in items]

    return IOSpec(manifest["task"], ts(manifest["inputs"]), ts(manifest["outputs"]), ts(manifest.get("debug_outputs", [])))


def prepare_derived_output(src: Path, out: Path, error=YosoDeployError) -> Path:
    """Create ``out`` for an export derived from the export ``src`` (quantized, optimized): a new or empty directory,
    a previous export (replaced), or one holding nothing but exports (``export --quantize``: OUTPUT/fp32 is the
    source, OUTPUT/o2 the optimized one). Anything else raises ``error`` naming the fix, before anything is written."""
    out = expand_path(out)
    if out.exists() and not out.is_dir():
        raise error(f"output {str(out)!r} exists and is not a directory; choose a directory path")
    if out.resolve() == Path(src).resolve():
        raise error(f"--output is the source export itself ({str(src)!r}); choose another directory")
    others = [p for p in out.iterdir() if p.resolve() != Path(src).resolve()
              and not (p.is_dir() and (p / MANIFEST).is_file())] if out.is_dir() else []
    if others and not (out / MANIFEST).is_file():
        raise error(f"output directory {str(out)!r} is not empty and holds no previous export; choose an "
                    "empty or new directory so nothing is overwritten")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create output directory {str(out)!r}: {e.strerror or e}; choose a writable path") from e
    return out


MODEL_SUFFIXES = (".onnx", ".data", ".plan", ".engine")  # model files a derived export does not copy


def copy_export_files(src: Path, out: Path) -> None:
    """Copy what a derived export (quantized, optimized) keeps of its source: config, tokenizer files, the model
    card (rewritten later) -- not the model, its external data, engines, the manifest or hidden files."""
    import shutil

    for f in Path(src).iterdir():
        if f.is_file() and f.name != MANIFEST and not f.name.endswith(MODEL_SUFFIXES) and not f.name.startswith("."):
            shutil.copy2(f, Path(out) / f.name)
