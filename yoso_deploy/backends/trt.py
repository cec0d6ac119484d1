"""TensorRT engines for exported YOSO models: build (ONNX -> serialized plan) and run.

The TensorRT ONNX parser imports the ``com.yoso`` nodes ``FastHash`` and ``LSHCumulation`` as the
plugins of ``libyoso_trt.so`` (plugin name = op type, version ``"1"``, namespace ``""``; see
``plugins/trt/README.md``). That library must be loaded into the process before parsing or
deserializing, which :func:`load_plugins` does (``plugins="auto"`` finds the one installed with the
package, ``$YOSO_TRT_LIBRARY`` overrides).

* :func:`require_tensorrt` -- ``import tensorrt`` or a clear error saying what is missing;
* :func:`build_engine` -- strongly typed network by default (precisions come from the ONNX model),
  optimization profile from explicit min/opt/max shapes or from an export's manifest
  (:func:`profile_from_manifest`), workspace limit, timing cache, progress reporting;
* :func:`run_engine` / :func:`make_trt_runner` -- run a plan through polygraphy's ``TrtRunner``
  (device buffers, dynamic shapes), e.g. for ``yoso-deploy run --backend trt``.

Nothing here imports ``tensorrt`` at module import time: the module is importable (and its errors
testable) on machines without TensorRT.
"""

from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .._native import LibraryNotFoundError, _find
from ..constants import CONFIG_FILE, ENGINE_BATCH, ENGINE_FILE, TRT_LIBRARY_NAME
from ..constants import TRT_LIBRARY_ENV as _ENV_TRT
from ..errors import NotFoundError, UnavailableError, UsageError, YosoDeployError

TRT_DYN_LIBRARY_NAME = "libyoso_trt_dyn.so"
PLUGINS = (("FastHash", "1", ""), ("LSHCumulation", "1", ""))

TENSORRT_MISSING = (
    "TensorRT runtime not installed: pip install tensorrt (needs an NVIDIA GPU with a driver); "
    "libyoso_trt.so must be built with YOSO_BUILD_TRT=ON and a real TENSORRT_ROOT"
)

# Default optimization-profile ranges (min, opt, max) of the symbolic input dims of an export.
DEFAULT_BATCH = ENGINE_BATCH
DEFAULT_SEQUENCE = (1, 128, None)  # max: the export's max_sequence_length
DEFAULT_NUM_CHOICES = (2, 2, 4)


class TensorRTError(YosoDeployError, RuntimeError):
    """TensorRT could not parse the model or build the engine (the message carries TensorRT's words)."""


class TensorRTUnavailableError(UnavailableError):
    """The TensorRT Python runtime (package ``tensorrt``) cannot be imported."""


def require_tensorrt():
    """Return the ``tensorrt`` module, or raise :class:`TensorRTUnavailableError` saying what is missing."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, GPU-only dependency
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libnvinfer cannot be loaded
        raise TensorRTUnavailableError(TENSORRT_MISSING) from e
    return trt


def trt_library_path() -> Path:
    """Path of ``libyoso_trt.so`` (``$YOSO_TRT_LIBRARY`` overrides)."""
    try:
        return _find(TRT_LIBRARY_NAME, _ENV_TRT)
    except LibraryNotFoundError as e:
        raise LibraryNotFoundError(
            f"{e} Note: {TRT_LIBRARY_NAME} is only built with YOSO_BUILD_TRT=ON and a real TENSORRT_ROOT "
            "(see plugins/trt/README.md)."
        ) from None


_loaded: dict[str, object] = {}


def load_plugins(plugins: str | Path | None = "auto") -> Path | None:
    """Load the com.yoso TensorRT plugins into this process (once per library path).

    ``plugins``: ``"auto"`` (the installed ``libyoso_trt.so``), a path, or ``None``/``"none"`` (the
    caller registered them). ``libyoso_trt.so`` registers itself when loaded (``ctypes.CDLL``);
    ``libyoso_trt_dyn.so`` is handed to TensorRT's ``IPluginRegistry.load_library``. Never load
    both: TensorRT refuses to register the same plugins twice.
    """
    if plugins is None or str(plugins) == "none":
        return None
    trt = require_tensorrt()
    path = trt_library_path() if str(plugins) == "auto" else Path(plugins)
    if not path.is_file():
        raise NotFoundError(f"TensorRT plugin library {str(path)!r} does not exist")
    key = str(path.resolve())
    if key not in _loaded:
        if path.name.startswith("libyoso_trt_dyn"):
            handle = trt.get_plugin_registry().load_library(key)
            if handle is None:
                raise UnavailableError(f"IPluginRegistry.load_library({key!r}) failed (are the plugins already registered?)")
            _loaded[key] = handle
        else:
            _loaded[key] = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
    registry = trt.get_plugin_registry()
    get = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    missing = [f"{n}/{v}" for n, v, ns in PLUGINS if get(n, v, ns) is None]
    if missing:
        raise UnavailableError(
            f"{path.name} was loaded but TensorRT has no plugin {', '.join(missing)} (namespace \"\"); "
            "was it built against compile-only TensorRT headers? Rebuild with -DTENSORRT_ROOT=<TensorRT>."
        )
    return path


# ------------------------------------------------------------------------------------------------
# Shapes
# ------------------------------------------------------------------------------------------------


def parse_shapes(text: str | None) -> dict[str, tuple[int, ...]]:
    """trtexec-style shapes ``"input_ids:1x128,attention_mask:1x128"`` -> ``{name: (1, 128)}``."""
    out: dict[str, tuple[int, ...]] = {}
    if not text:
        return out
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise UsageError(f"shape {item!r} must look like NAME:DxDx... (e.g. input_ids:1x128)")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise UsageError(f"shape {item!r}: dimensions must be integers separated by 'x'") from None
        if any(d < 0 for d in shape):
            raise UsageError(f"shape {item!r}: dimensions must be >= 0")
        out[name] = shape
    return out


def profile_from_manifest(
    manifest: Mapping,
    batch: tuple[int, int, int] = DEFAULT_BATCH,
    sequence: tuple[int, int, int | None] = DEFAULT_SEQUENCE,
    num_choices: tuple[int, int, int] = DEFAULT_NUM_CHOICES,
) -> tuple[dict, dict, dict]:
    """(min, opt, max) shapes for every input of an export (``yoso_export.json``)."""
    max_seq = sequence[2] if sequence[2] is not None else int(manifest.get("max_sequence_length", 512))
    ranges = {"batch": batch, "sequence": (sequence[0], min(sequence[1], max_seq), max_seq), "num_choices": num_choices}
    mins, opts, maxs = {}, {}, {}
    for t in manifest["inputs"]:
        dims = [d if isinstance(d, int) else ranges.get(d) for d in t["dims"]]
        if any(d is None for d in dims):
            raise UsageError(f"input {t['name']!r} has a symbolic dim of unknown range: {t['dims']}")
        for k, store in enumerate((mins, opts, maxs)):
            store[t["name"]] = tuple(d if isinstance(d, int) else d[k] for d in dims)
    return mins, opts, maxs


def _profile_triple(name, net_shape, min_shapes, opt_shapes, max_shapes):
    given = [s.get(name) if s else None for s in (min_shapes, opt_shapes, max_shapes)]
    if all(g is None for g in given):
        if any(d < 0 for d in net_shape):
            raise UsageError(
                f"input {name!r} has dynamic shape {list(net_shape)}: give its min/opt/max shapes "
                "(e.g. --min-shapes/--opt-shapes/--max-shapes, or build from an export directory)"
            )
        return tuple(net_shape), tuple(net_shape), tuple(net_shape)
    mn, opt, mx = given
    opt = opt or mx or mn
    mn = mn or opt
    mx = mx or opt
    for label, shape in (("min", mn), ("opt", opt), ("max", mx)):
        if len(shape) != len(net_shape):
            raise UsageError(f"{label} shape of {name!r} has rank {len(shape)}; the network input is {list(net_shape)}")
        for d, n in zip(shape, net_shape):
            if n >= 0 and d != n:
                raise UsageError(f"{label} shape {list(shape)} of {name!r} contradicts the static network shape {list(net_shape)}")
    if not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
        raise UsageError(f"input {name!r}: need min <= opt <= max, got {list(mn)}, {list(opt)}, {list(mx)}")
    return tuple(mn), tuple(opt), tuple(mx)


# ------------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------------


@dataclass
class BuildResult:
    engine_path: Path
    seconds: float
    tensorrt_version: str
    plugins: str | None
    strongly_typed: bool
    fp16: bool
    profile: dict = field(default_factory=dict)  # name -> (min, opt, max)


def _progress_monitor(trt, emit: Callable[[str], None]):
    """An ``IProgressMonitor`` printing phase starts/ends (TensorRT >= 10), or None."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self):
            base.__init__(self)
            self._t = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._t[phase_name] = time.perf_counter()
            indent = "  " if parent_phase else ""
            emit(f"{indent}[trt] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            dt = time.perf_counter() - self._t.pop(phase_name, time.perf_counter())
            emit(f"[trt] {phase_name} done in {dt:.1f}s")

    return _Monitor()


def build_engine(
    onnx_path: str | Path,
    output: str | Path,
    plugins: str | Path | None = "auto",
    min_shapes: Mapping[str, tuple] | None = None,
    opt_shapes: Mapping[str, tuple] | None = None,
    max_shapes: Mapping[str, tuple] | None = None,
    fp16: bool = False,
    workspace_mb: int | None = None,
    timing_cache: str | Path | None = None,
    strongly_typed: bool | None = None,
    verbose: bool = False,
    progress: bool | Callable[[str], None] = False,
) -> BuildResult:
    """Build a serialized TensorRT engine (plan) from an ONNX model with the com.yoso plugins.

    * ``strongly_typed`` (default: ``not fp16``): a strongly typed network takes every precision
      from the ONNX model (export it in float16 for an fp16 engine). ``fp16=True`` instead builds a
      weakly typed network with ``BuilderFlag.FP16`` and lets TensorRT choose (the plugins take
      float16 ``x``/``value``); combining both is an error.
    * shapes: ``{input name: shape tuple}`` for min/opt/max; missing entries fall back to the given
      ones (opt -> max -> min); dynamic inputs need at least one.
    * ``workspace_mb``: limit of TensorRT's workspace pool (the plugins' scratch is part of it).
    * ``timing_cache``: file to read (if it exists) and update with layer timings.
    * ``progress``: True prints build phases to stderr (via ``IProgressMonitor``), or a callable.
    """
    trt = require_tensorrt()
    onnx_path, output = Path(onnx_path), Path(output)
    if not onnx_path.is_file():
        raise NotFoundError(f"ONNX model {str(onnx_path)!r} does not exist")
    if strongly_typed is None:
        strongly_typed = not fp16
    if strongly_typed and fp16:
        raise UsageError(
            "fp16=True cannot be combined with a strongly typed network: strong typing takes the precisions "
            "from the ONNX model (export it in float16 instead), or build weakly typed to let TensorRT use fp16"
        )
    emit = progress if callable(progress) else (lambda msg: print(msg, file=sys.stderr, flush=True))
    plugin_path = load_plugins(plugins)

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if flag is None:
            raise UnavailableError(f"TensorRT {trt.__version__} has no strongly typed networks (needs >= 9.1)")
        flags |= 1 << int(flag)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        hint = ""
        if any("Plugin not found" in e or "FastHash" in e or "LSHCumulation" in e for e in errors):
            hint = " (are the com.yoso plugins loaded? plugins='auto' loads libyoso_trt.so)"
        raise TensorRTError(f"TensorRT could not parse {onnx_path}{hint}: " + " | ".join(errors))

    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)

    profile_shapes = {}
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if any(-1 in tuple(t.shape) for t in inputs) or min_shapes or opt_shapes or max_shapes:
        profile = builder.create_optimization_profile()
        for t in inputs:
            triple = _profile_triple(t.name, tuple(t.shape), min_shapes, opt_shapes, max_shapes)
            profile.set_shape(t.name, *triple)
            profile_shapes[t.name] = triple
        config.add_optimization_profile(profile)

    cache = None
    if timing_cache:
        cache_path = Path(timing_cache)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    if progress:
        monitor = _progress_monitor(trt, emit)
        if monitor is not None:
            config.progress_monitor = monitor
        else:
            emit(f"[trt] building {output.name} (TensorRT {trt.__version__} reports no progress)")

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise TensorRTError("TensorRT engine build failed; rerun with verbose=True (--verbose) for TensorRT's log")
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as f:
        f.write(serialized)
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return BuildResult(output, seconds, trt.__version__, str(plugin_path) if plugin_path else None,
                       bool(strongly_typed), bool(fp16), profile_shapes)


# ------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------


def make_trt_runner(engine_path: str | Path, plugins: str | Path | None = "auto", name: str = "trt"):
    """A polygraphy ``TrtRunner`` for a serialized engine, with the plugins loaded (e.g. for validation)."""
    require_tensorrt()
    load_plugins(plugins)
    try:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError as e:  # pragma: no cover - polygraphy is an optional dependency
        raise UnavailableError("running TensorRT engines needs polygraphy: pip install 'polygraphy>=0.49'") from e
    path = Path(engine_path)
    if not path.is_file():
        raise NotFoundError(f"TensorRT engine {str(path)!r} does not exist", fix="build it with 'yoso-deploy build-engine'")
    return TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name=name)


def run_engine(engine_path: str | Path, feeds: Mapping, plugins: str | Path | None = "auto") -> dict:
    """Run a serialized engine once on host arrays ``{input name: ndarray}``; returns host arrays."""
    import numpy as np

    with make_trt_runner(engine_path, plugins) as runner:
        outputs = runner.infer(feed_dict={k: np.ascontiguousarray(v) for k, v in feeds.items()})
    return {k: np.asarray(v) for k, v in outputs.items()}


def run_export(model_dir: str | Path, feeds: Mapping, engine_path: str | Path | None = None,
               plugins: str | Path | None = "auto") -> tuple[dict, float]:
    """An export's TensorRT engine (default ``<model_dir>/model.plan``) on ``feeds``, checked as the ONNX Runtime
    path checks them; returns the export's outputs by name and the milliseconds of the engine run."""
    import json
    import time

    import numpy as np

    from ..manifest import load_manifest
    from ..runtime.models import prepare_inputs

    require_tensorrt()
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    config_path = model_dir / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    feeds = prepare_inputs(dict(feeds), manifest, config)  # the checks the ORT path makes, before TensorRT sees them
    runner = make_trt_runner(engine_path or model_dir / ENGINE_FILE, plugins=plugins)
    with runner:  # engine deserialization and buffer setup stay outside the timing
        t0 = time.perf_counter()
        raw = runner.infer(feed_dict=feeds)
        ms = 1000 * (time.perf_counter() - t0)
    names = [t["name"] for t in manifest["outputs"]] + [t["name"] for t in manifest.get("debug_outputs", [])]
    return {n: np.asarray(raw[n]) for n in names if n in raw}, ms


def build_export_engine(model_dir: str | Path, output: str | Path | None = None, plugins: str | Path | None = "auto",
                        batch=DEFAULT_BATCH, sequence=None, min_shapes: str | None = None, opt_shapes: str | None = None,
                        max_shapes: str | None = None, **build_options) -> BuildResult:
    """An export's TensorRT engine (default ``<model_dir>/model.plan``): the profile from ``batch``/``sequence``
    (min, opt, max; the sequence's max defaults to the export's ``max_sequence_length``) or from explicit
    trtexec-style ``min_shapes``/``opt_shapes``/``max_shapes``; ``build_options`` go to :func:`build_engine`."""
    from ..manifest import load_manifest, model_file

    require_tensorrt()  # "TensorRT runtime not installed: ..." before anything else
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    if min_shapes or opt_shapes or max_shapes:
        mins, opts, maxs = (parse_shapes(s) for s in (min_shapes, opt_shapes, max_shapes))
    else:
        mins, opts, maxs = profile_from_manifest(manifest, batch=batch, sequence=sequence or DEFAULT_SEQUENCE)
    return build_engine(model_file(manifest, model_dir), output or model_dir / ENGINE_FILE, plugins=plugins,
                        min_shapes=mins, opt_shapes=opts, max_shapes=maxs, **build_options)
