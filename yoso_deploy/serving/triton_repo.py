"""A Triton Inference Server model repository from an export (``yoso-deploy triton-repo``), torch-free.

::

    REPO/<name>/config.pbtxt          the model configuration (Triton's ModelConfig, protobuf text format)
    REPO/<name>/1/model.onnx          onnxruntime backend (or 1/model.plan: tensorrt backend)
    REPO/<name>/libyoso_ort.so        the custom-op library, named in config.pbtxt by model_operations
                                      (or libyoso_trt.so, the TensorRT plugins, loaded by the server)
    REPO/<name>/yoso_export.json      the export's manifest (provenance; Triton ignores it)

Inputs and outputs come from the export's manifest: the batch dim is Triton's (``max_batch_size`` > 0),
every other dynamic dim (sequence, number of choices) is -1, fixed dims (vocabulary, hidden size,
labels) are their sizes. Dynamic batching is on (``max_queue_delay_microseconds``); note that Triton's
dynamic batcher only batches requests of equal shape (pad on the client to a few lengths), unlike
``yoso-deploy serve``, which pads each batch to its longest sequence.

``op_library_filename`` is opened by the server process (``RegisterCustomOpsLibrary``, not relative to the
model directory), so it must be the library's path *as the server sees it*: ``server_repo`` (default:
the repository's absolute path here; ``/models`` for the usual ``docker run -v $PWD/REPO:/models``).

The TensorRT backend needs a serialized engine built by ``yoso-deploy build-engine`` on a machine with
TensorRT and the plugin library ``libyoso_trt.so`` (``LD_PRELOAD`` or
``--backend-config=tensorrt,plugins=...``): neither can be built or checked on a machine without TensorRT;
the repository layout and config are written from the given files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..constants import ENGINE_FILE, MODEL_FILE, TRITON_MAX_BATCH_SIZE, TRITON_QUEUE_DELAY_US
from ..errors import UsageError
from ..manifest import MANIFEST, check_usable, expand_path, load_manifest, model_file

BACKENDS = ("onnxruntime", "tensorrt")
TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
         "bool": "TYPE_BOOL", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "float64": "TYPE_FP64"}
ENUM_FIELDS = {"data_type", "kind"}  # written unquoted in text format
MAP_FIELDS = {"parameters"}  # protobuf maps: repeated {key, value} entries in text format


class TritonRepoError(UsageError):
    """The repository cannot be written as asked (the message names the fix)."""


def _dims(dims: list) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in dims[1:]]  # the batch dim is Triton's


def model_config(manifest: dict, name: str, max_batch_size: int = 8, backend: str = "onnxruntime",
                 instances: int = 1, queue_delay_us: int = 2000, op_library: str | None = None,
                 threads: int | None = None) -> dict:
    """Triton's ModelConfig of an export, as a dict (the JSON form; :func:`to_pbtxt` writes the text form)."""
    if backend not in BACKENDS:
        raise TritonRepoError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    for key, value in (("max_batch_size", max_batch_size), ("instances", instances)):
        if not isinstance(value, int) or value < 1:
            raise TritonRepoError(f"{key} must be an integer >= 1, got {value!r}")

    def tensor(t):
        if t["dtype"] not in TYPES:
            raise TritonRepoError(f"tensor {t['name']!r} has dtype {t['dtype']}, which this writer cannot map")
        return {"name": t["name"], "data_type": TYPES[t["dtype"]], "dims": _dims(t["dims"])}

    cfg = {"name": name, "backend": backend, "max_batch_size": int(max_batch_size),
           "input": [tensor(t) for t in manifest["inputs"]], "output": [tensor(t) for t in manifest["outputs"]],
           "dynamic_batching": {"max_queue_delay_microseconds": int(queue_delay_us)},
           "instance_group": [{"count": int(instances), "kind": "KIND_CPU" if backend == "onnxruntime" else "KIND_GPU"}]}
    if backend == "onnxruntime":
        cfg["default_model_filename"] = MODEL_FILE
        if op_library:
            cfg["model_operations"] = {"op_library_filename": [op_library]}
        if threads:
            cfg["parameters"] = {"intra_op_thread_count": {"string_value": str(int(threads))}}
    else:
        cfg["default_model_filename"] = ENGINE_FILE
    return cfg


def _scalar(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if key in ENUM_FIELDS:
        return str(value)
    return json.dumps(str(value))  # a JSON string literal is a valid text-format string literal


def to_pbtxt(cfg: dict, indent: int = 0) -> str:
    """A config dict (:func:`model_config`) in protobuf text format, as Triton's config.pbtxt."""
    pad = "  " * indent
    lines = []
    for key, value in cfg.items():
        if key in MAP_FIELDS and isinstance(value, dict):
            for k, v in value.items():
                lines.append(f"{pad}{key} {{\n{pad}  key: {json.dumps(k)}\n{pad}  value {{\n"
                             f"{to_pbtxt(v, indent + 2)}{pad}  }}\n{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            blocks = [f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(blocks) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ " + ", ".join(_scalar(key, v) for v in value) + " ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}")
    return "".join(line + "\n" for line in lines)


def parse_config(text: str):
    """Parse config.pbtxt with Triton's own schema (``tritonclient.grpc.model_config_pb2.ModelConfig``;
    needs the ``[triton]`` extra). Raises ``google.protobuf.text_format.ParseError`` on a bad field or enum."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _schema_available() -> bool:
    try:
        import google.protobuf.text_format  # noqa: F401
        from tritonclient.grpc import model_config_pb2  # noqa: F401
    except Exception:  # noqa: BLE001 - optional: the [triton] extra
        return False
    return True


def write_repo(model_dir, output, name: str | None = None, backend: str = "onnxruntime", instances: int = 1,
               max_batch_size: int = TRITON_MAX_BATCH_SIZE, queue_delay_us: int = TRITON_QUEUE_DELAY_US, plan=None, plugins: str | None = "auto",
               server_repo: str | None = None, threads: int | None = None, allow_failed_export: bool = False) -> dict:
    """Write ``output/<name>/`` (module doc) and return ``{"model_dir", "config", "files", "schema_checked"}``.

    ``plan``: the TensorRT engine (tensorrt backend; default ``<export>/model.plan``); ``plugins``: the
    plugin or custom-op library to copy beside it (``"auto"``: the installed one; ``"none"``: the server
    loads it on its own -- tensorrt only)."""
    model_dir = expand_path(model_dir)
    manifest = load_manifest(model_dir)
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    if backend not in BACKENDS:
        raise TritonRepoError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    name = name or model_dir.resolve().name
    if not name or "/" in name or name.startswith("."):
        raise TritonRepoError(f"model name {name!r} is not a directory name; pass --name")
    output = expand_path(output)
    if output.exists() and not output.is_dir():
        raise TritonRepoError(f"--output {str(output)!r} is a file; give a directory for the model repository")
    target = output / name
    if target.is_symlink():
        raise TritonRepoError(f"{str(target)!r} is a symbolic link; replacing it would write where it points -- "
                              "remove the link, or choose another --output or --name")
    if target.exists() and not target.is_dir():
        raise TritonRepoError(f"{str(target)!r} is a file, not a model directory; choose another --output or --name")
    if target.exists() and any(target.iterdir()) and not (target / "config.pbtxt").is_file():
        raise TritonRepoError(f"{str(target)!r} exists and is not a model of a Triton repository; choose another "
                              "--output or --name")
    server_root = (server_repo or str(output.resolve())).rstrip("/")

    if backend == "onnxruntime":
        from .._native import ort_library_path

        source = model_file(manifest, model_dir)
        if not source.is_file():
            raise TritonRepoError(f"{str(source)!r} is missing; re-export the model")
        lib = ort_library_path() if plugins in (None, "auto") else expand_path(plugins)
        if plugins == "none" or not Path(lib).is_file():
            raise TritonRepoError(f"the custom-op library {str(lib)!r} is needed beside the model (Triton's "
                                  "onnxruntime backend loads it through model_operations); pass --plugins PATH to "
                                  "libyoso_ort.so")
        files = {"1/model.onnx": source, lib.name: lib}
        info = lib.with_name("yoso_ort_build.json")
        if info.is_file():
            files[info.name] = info
        op_library = f"{server_root}/{name}/{lib.name}"
    else:
        plan_path = expand_path(plan) if plan else model_dir / ENGINE_FILE
        if not plan_path.is_file():
            raise TritonRepoError(
                f"no TensorRT engine at {str(plan_path)!r}: build one with 'yoso-deploy build-engine --model "
                f"{model_dir}' on a machine with TensorRT (TensorRT is not installed here), then pass --plan FILE")
        files = {"1/model.plan": plan_path}
        if plugins != "none":
            try:
                from ..backends.trt import trt_library_path

                lib = trt_library_path() if plugins in (None, "auto") else expand_path(plugins)
            except FileNotFoundError as e:
                raise TritonRepoError(f"{str(e).splitlines()[0]} Pass --plugins PATH to libyoso_trt.so, or "
                                      "--plugins none if the server loads the plugins itself") from None
            if not Path(lib).is_file():
                raise TritonRepoError(f"TensorRT plugin library {str(lib)!r} does not exist; pass --plugins PATH to "
                                      "libyoso_trt.so, or --plugins none")
            files[Path(lib).name] = Path(lib)
        op_library = None
    cfg = model_config(manifest, name, max_batch_size=max_batch_size, backend=backend, instances=instances,
                       queue_delay_us=queue_delay_us, op_library=op_library, threads=threads)
    text = to_pbtxt(cfg)
    checked = False
    if _schema_available():
        parse_config(text)  # a bug here must not produce a repository Triton refuses
        checked = True

    # Write into a temporary sibling, then swap it in: no half-written model directory, nothing left behind.
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{name}.{os.getpid()}.tmp"
    old = output / f".{name}.{os.getpid()}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "1").mkdir(parents=True)
        for rel, src in files.items():
            shutil.copy2(src, tmp / rel)
        shutil.copy2(model_dir / MANIFEST, tmp / MANIFEST)
        (tmp / "config.pbtxt").write_text(text)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except OSError as e:
        raise TritonRepoError(f"cannot write the model repository at {str(target)!r}: {e.strerror or e}",
                              fix="choose a writable --output") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return {"model_dir": target, "config": cfg, "config_text": text, "files": sorted([*files, MANIFEST, "config.pbtxt"]),
            "schema_checked": checked, "server_root": server_root, "op_library": op_library}


def server_command(result: dict, backend: str) -> str:
    """The ``tritonserver`` command line that serves a repository written by :func:`write_repo`."""
    root = result["server_root"]
    if backend == "onnxruntime":
        return f"tritonserver --model-repository={root}"
    lib = next((f for f in result["files"] if f.startswith("libyoso_trt")), "libyoso_trt.so")
    return (f"tritonserver --model-repository={root} "
            f"--backend-config=tensorrt,plugins=\"{root}/{result['model_dir'].name}/{lib}\"")
