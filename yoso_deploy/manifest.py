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
from .iospec import IOSpec, TensorSpec

MANIFEST = "yoso_export.json"
FORMAT = "yoso-deploy-export"
FORMAT_VERSION = 1
REQUIRED = ("task", "attention", "inputs", "outputs", "max_sequence_length")
PARITY_STATES = ("passed", "failed", "skipped")


class ManifestError(ValueError):
    """A manifest that is missing, corrupt or not a yoso-deploy manifest."""


class ExportNotUsableError(RuntimeError):
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
    if parity is not None and parity not in PARITY_STATES:
        raise ManifestError(f"{where}: parity must be one of {', '.join(PARITY_STATES)}, got {parity!r}; {fix}")
    return manifest


def load_manifest(model_dir: str | os.PathLike) -> dict:
    """Read and check ``yoso_export.json`` of an export directory (``~`` expanded; clear errors naming the fix)."""
    model_dir = expand_path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise FileNotFoundError(f"export directory {str(model_dir)!r} does not exist; run 'yoso-deploy export' first")
    if not path.is_file():
        raise FileNotFoundError(f"{str(model_dir)!r} has no {MANIFEST}; pass a directory made by 'yoso-deploy export'")
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


def _failed_outputs(manifest: dict) -> list[str]:
    rows = manifest.get("parity_table") or manifest.get("parity_results") or []
    out = []
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, dict) and (r.get("ok") is False or str(r.get("status", "ok")).lower() in ("fail", "failed")):
            out.append(str(r.get("output") or r.get("name") or "?"))
    return out


def check_usable(manifest: dict, allow_failed: bool = False, model_dir: str | os.PathLike | None = None) -> str:
    """Refuse an export whose post-export parity check failed, unless ``allow_failed``.

    Returns the parity state (``"passed"``, ``"failed"`` (allowed), ``"skipped"`` or ``"unknown"`` for
    exports that predate the field). Raises :class:`ExportNotUsableError` naming the fix.
    """
    state = manifest.get("parity") or "unknown"
    if state == "failed" and not allow_failed:
        where = f"export {str(model_dir)!r}" if model_dir is not None else "this export"
        bad = _failed_outputs(manifest)
        detail = f" on {', '.join(bad)}" if bad else ""
        raise ExportNotUsableError(
            f"{where} failed its parity check (ONNX Runtime disagreed with PyTorch{detail}); re-export it and "
            "investigate with 'yoso-deploy validate', or pass allow_failed_export=True (--allow-failed-export) "
            "to use it anyway"
        )
    return state


def model_file(manifest: dict, model_dir: str | os.PathLike) -> Path:
    """The ONNX file of an export (``model_file`` in the manifest, default ``model.onnx``)."""
    return expand_path(model_dir) / manifest.get("model_file", "model.onnx")


def source_model_dir(manifest: dict, model_dir: str | os.PathLike) -> Path | None:
    """The checkpoint the export was made from: ``source_model`` as written, or relative to the export's
    parent directory (so an export and its checkpoint can move together); ``None`` if neither exists."""
    src = manifest.get("source_model")
    if not src:
        return None
    p = expand_path(src)
    candidates = [p] if p.is_absolute() else [expand_path(model_dir).parent / p, expand_path(model_dir) / p, p]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    return None


def manifest_spec(manifest: dict) -> IOSpec:
    """The :class:`~yoso_deploy.iospec.IOSpec` a manifest describes."""
    def ts(items):
        return [TensorSpec(t["name"], t["dtype"], list(t["dims"])) for t in items]

    return IOSpec(manifest["task"], ts(manifest["inputs"]), ts(manifest["outputs"]), ts(manifest.get("debug_outputs", [])))
