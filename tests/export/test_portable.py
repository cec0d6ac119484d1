"""Portable exports: the com.yoso function bodies in stock ONNX Runtime, OpenVINO and onnx.reference.

Every task's export (``--portable functions``, the default) must run in an ONNX Runtime without
libyoso_ort.so and match the library (hash codes identical, outputs within 1e-5); with the library
registered its kernels — not the bodies — must run; the ``inline`` form must run in OpenVINO; and
``onnx.reference`` runs the bodies as a third implementation of the contract.
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from support.checkpoints import random_checkpoint, small_config
from onnx.reference import ReferenceEvaluator

from yoso_deploy.validation.backends import (
    PORTABLE_BACKENDS,
    make_openvino_runner,
    make_ort_portable_runner,
    make_portable_runner,
    portable_backend_status,
)
from yoso_deploy.cli.main import main
from yoso_deploy.export import ExportError
from yoso_deploy.workflow import export
from yoso_deploy.export.functions import BODY_PREFIX, CHECK_PREFIX, PortableError, attach_functions, op_model
from yoso_deploy.export.onnx_reference import REFERENCE_OPS
from yoso_deploy.export.onnx_reference import fast_hash as np_fast_hash
from yoso_deploy.export.onnx_reference import lsh_cumulation as np_lsh_cumulation
from yoso_deploy.modeling import TASK_CLASSES, ops
from yoso_deploy.runtime import create_session
from yoso_deploy.backends.portable import (
    PortableModelError,
    compile_openvino,
    create_portable_session,
    portable_mode,
    run_openvino,
)

TASKS = list(TASK_CLASSES)
SHAPES = [(1, 1), (2, 7), (3, 64)]
OUTPUT_ATOL = 1e-5
BODY_OPS = {"TopK", "Loop", "ScatterElements", "CumSum"}  # ops only the bodies use (the model has MatMul too)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    cache = {}

    def get(task, portable="functions", **cfg):
        key = (task, portable, tuple(sorted(cfg.items())))
        if key not in cache:
            base = tmp_path_factory.mktemp(f"{task}-{portable}")
            ckpt = random_checkpoint(base / "ckpt", task, **cfg)
            cache[key] = export(ckpt, base / "onnx", task=task, debug_codes=True, validate=False, portable=portable)
        return cache[key]

    return get


def _names(result):
    return [t["name"] for t in result.manifest["outputs"] + result.manifest["debug_outputs"]]


def _input_feeds(result, batch, seq, seed):
    cfg = json.loads((result.output_dir / "config.json").read_text())
    names = [t["name"] for t in result.manifest["inputs"]]
    shape = (batch, 2, seq) if result.manifest["task"] == "multiple-choice" else (batch, seq)
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, cfg["vocab_size"], size=shape, dtype=np.int64)
    mask = np.ones(shape, np.int64)
    flat = mask.reshape(-1, seq)
    for i in range(1, flat.shape[0]):  # right padding of every row but the first
        flat[i, int(rng.integers(1, seq + 1)):] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.zeros(shape, np.int64)
    return feeds


def assert_match(want: dict, got: dict, what: str, atol: float = OUTPUT_ATOL):
    assert set(want) == set(got), what
    for name, w in want.items():
        g = got[name]
        assert g.shape == w.shape, (what, name, g.shape, w.shape)
        if np.issubdtype(w.dtype, np.integer):
            assert np.array_equal(g, w), (what, name, f"{np.mean(g == w):.4%} identical")
        else:
            err = float(np.abs(g.astype(np.float64) - w).max(initial=0.0))
            assert err <= atol, (what, name, err)


def run_both(result, sess_a, sess_b, shapes=SHAPES):
    names = _names(result)
    assert any(n.startswith("query_codes") for n in names)  # the codes are really compared
    for i, (b, s) in enumerate(shapes):
        feeds = _input_feeds(result, b, s, seed=10 + i)
        yield (b, s), dict(zip(names, sess_a(names, feeds))), dict(zip(names, sess_b(names, feeds)))


# ------------------------------------------------------------------------------------------------
# whole exports, every task
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_stock_onnxruntime_runs_export_and_matches_library(exports, task):
    result = exports(task)
    assert result.manifest["portable"] == "functions"
    stock = create_portable_session(result.onnx_path, intra_op_threads=2)
    lib = create_session(result.onnx_path, intra_op_threads=2)
    for shape, want, got in run_both(result, lib.run, stock.run):
        assert_match(want, got, f"{task} {shape} stock ORT vs library")


def test_stock_onnxruntime_matches_library_other_config(exports):
    """Head dim 48 zero-padded to D 64 and m (4) < codes per part (64 // 5 = 12); the default config
    of the tests above has m (16) > codes per part (6) and tau not dividing D."""
    cfg = dict(hidden_size=96, num_attention_heads=2, num_hash=4)
    result = exports("qa", **cfg)
    stock = create_portable_session(result.onnx_path, intra_op_threads=2)
    lib = create_session(result.onnx_path, intra_op_threads=2)
    for shape, want, got in run_both(result, lib.run, stock.run, shapes=[(2, 13), (3, 40)]):
        assert_match(want, got, f"{cfg} {shape} stock ORT vs library")


def _profiled_ops(sess) -> tuple[set[str], set[str]]:
    path = sess.end_profiling()
    events = json.loads(open(path).read())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    return {e["args"]["op_name"] for e in nodes}, {e["name"] for e in nodes}


def _profiling_options(tmp_path, tag):
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / tag)
    so.intra_op_num_threads = 1
    return so


@pytest.mark.parametrize("task", TASKS)
def test_library_kernels_run_instead_of_bodies(exports, task, tmp_path):
    """ORT profiling: with libyoso_ort.so registered the com.yoso kernels run and no body op does."""
    from yoso_deploy.runtime.session import session_options

    result = exports(task)
    feeds = _input_feeds(result, 2, 9, seed=1)
    so = session_options(intra_op_threads=1)
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "lib")
    lib = ort.InferenceSession(str(result.onnx_path), so, providers=["CPUExecutionProvider"])
    lib.run(None, feeds)
    op_names, node_names = _profiled_ops(lib)
    assert {"FastHash", "LSHCumulation"} <= op_names
    assert not op_names & BODY_OPS, op_names & BODY_OPS
    assert not [n for n in node_names if any(p in n for p in (*BODY_PREFIX.values(), CHECK_PREFIX))]

    # The same probe on stock ORT sees the bodies and no kernel: the check above can fail.
    stock = create_portable_session(result.onnx_path, session_options=_profiling_options(tmp_path, "stock"))
    stock.run(None, feeds)
    op_names, node_names = _profiled_ops(stock)
    assert not {"FastHash", "LSHCumulation"} & op_names
    assert {"TopK", "Loop"} <= op_names
    assert any(BODY_PREFIX["FastHash"] in n for n in node_names) and any(BODY_PREFIX["LSHCumulation"] in n for n in node_names)


@pytest.mark.parametrize("task", TASKS)
def test_openvino_runs_inline_export_and_matches_library(exports, task):
    pytest.importorskip("openvino", reason="OpenVINO (pip install openvino) is needed for the openvino backend")
    result = exports(task)
    model = onnx.load(str(result.onnx_path))
    inline = attach_functions(model, "inline")  # what export(portable="inline") does to its graph
    assert portable_mode(inline) == "inline" and not inline.functions
    path = result.output_dir.parent / "inline.onnx"
    onnx.save(inline, str(path))
    compiled = compile_openvino(path, threads=2)
    lib = create_session(result.onnx_path, intra_op_threads=2)

    def ov_run(names, feeds):
        out = run_openvino(compiled, feeds)
        return [out[n] for n in names]

    for shape, want, got in run_both(result, lib.run, ov_run):
        assert_match(want, got, f"{task} {shape} OpenVINO vs library")


def test_openvino_inlines_a_functions_export_in_memory(exports):
    pytest.importorskip("openvino", reason="OpenVINO (pip install openvino) is needed for the openvino backend")
    result = exports("qa")
    compiled = compile_openvino(result.onnx_path, threads=1)  # OpenVINO cannot read the local functions itself
    lib = create_session(result.onnx_path)
    feeds = _input_feeds(result, 2, 16, seed=4)
    names = _names(result)
    assert_match(dict(zip(names, lib.run(names, feeds))), {n: run_openvino(compiled, feeds)[n] for n in names},
                 "OpenVINO (functions export)")


def test_reference_evaluator_runs_whole_export(exports):
    """onnx.reference expands the bodies (a third runtime); with REFERENCE_OPS it runs the numpy kernels."""
    result = exports("token-classification")
    lib = create_session(result.onnx_path)
    names = _names(result)
    feeds = _input_feeds(result, 2, 12, seed=5)
    want = dict(zip(names, lib.run(names, feeds)))
    bodies = ReferenceEvaluator(str(result.onnx_path))
    assert_match(want, dict(zip(names, bodies.run(names, feeds))), "onnx.reference bodies")

    calls = []

    def counting_run(self, *args, **kw):
        calls.append("FastHash")
        return REFERENCE_OPS[0]._run(self, *args, **kw)

    CountingFastHash = type("FastHash", (REFERENCE_OPS[0],), {"_run": counting_run})  # matched by class name

    kernels = ReferenceEvaluator(str(result.onnx_path), new_ops=[CountingFastHash, REFERENCE_OPS[1]])  # preferred to the functions
    assert_match(want, dict(zip(names, kernels.run(names, feeds))), "onnx.reference numpy kernels")
    assert len(calls) == 2 * small_config().num_hidden_layers


# ------------------------------------------------------------------------------------------------
# export modes
# ------------------------------------------------------------------------------------------------


def test_export_modes_and_manifest(exports, tmp_path):
    functions, off = exports("qa"), exports("qa", "off")
    # The inline export through the CLI, with the exporter's ORT-vs-PyTorch parity check of the inlined graph.
    ckpt = functions.output_dir.parent / "ckpt"
    r = CliRunner().invoke(main, ["export", "--model", str(ckpt), "--task", "qa", "--output", str(tmp_path / "inl"),
                                  "--debug-codes", "--portable", "inline"])
    assert r.exit_code == 0, r.output
    table = json.loads((tmp_path / "inl" / "yoso_export.json").read_text())["parity"]["table"]
    assert any("layer 0 query" in line for line in table) and "FAIL" not in r.output  # the inlined graph's codes
    inline_manifest = json.loads((tmp_path / "inl" / "yoso_export.json").read_text())
    models = {"functions": onnx.load(str(functions.onnx_path)), "off": onnx.load(str(off.onnx_path)),
              "inline": onnx.load(str(tmp_path / "inl" / "model.onnx"))}
    assert (functions.manifest["portable"], off.manifest["portable"], inline_manifest["portable"]) == (
        "functions", "off", "inline")
    for mode, model in models.items():
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["yoso.portable"] == mode
        assert portable_mode(model) == mode
    fm = models["functions"]
    assert sorted((f.domain, f.name) for f in fm.functions) == [("com.yoso", "FastHash"), ("com.yoso", "LSHCumulation")]
    assert {f.name: list(f.attribute) for f in fm.functions} == {
        "FastHash": ["num_hash", "hash_code_len"], "LSHCumulation": ["hash_code_len"]}
    for f in fm.functions:  # the function's default opset is the model's (ORT requires it)
        assert [(i.domain, i.version) for i in f.opset_import] == [("", 18)]
        assert not [n for n in f.node if n.domain not in ("", "ai.onnx")]
    assert not models["off"].functions
    im = models["inline"]
    assert not [n for n in im.graph.node if n.domain == "com.yoso"] and not im.functions
    assert "com.yoso" not in {i.domain for i in im.opset_import}
    assert inline_manifest["custom_ops"] == [] and off.manifest["custom_ops"] and functions.manifest["custom_ops"]
    # The com.yoso graph itself is the same in functions and off mode.
    assert [n.op_type for n in fm.graph.node] == [n.op_type for n in models["off"].graph.node]
    onnx.checker.check_model(im, full_check=True)
    # The inlined graph runs in stock ORT like the functions export.
    names = _names(functions)
    feeds = _input_feeds(functions, 2, 16, seed=2)
    want = dict(zip(names, create_session(functions.onnx_path).run(names, feeds)))
    got = dict(zip(names, create_portable_session(tmp_path / "inl" / "model.onnx").run(names, feeds)))
    assert_match(want, got, "inline export in stock ORT")

    bad = CliRunner().invoke(main, ["export", "--model", str(ckpt), "--output", str(tmp_path / "x"), "--portable", "all"])
    assert bad.exit_code == 2 and "--portable" in bad.output
    with pytest.raises(ExportError, match="portable mode"):
        export(ckpt, tmp_path / "y", portable="everything")


def test_off_export_is_refused_by_portable_runtimes(exports):
    off = exports("qa", "off")
    with pytest.raises(PortableModelError, match="--portable functions"):
        create_portable_session(off.onnx_path)
    with pytest.raises(PortableModelError, match="--portable functions"):
        compile_openvino(off.onnx_path)
    status = portable_backend_status(off.manifest)
    assert not status["ort-portable"][0] and "--portable functions" in status["ort-portable"][1]


def test_graph_without_custom_ops_gets_no_functions():
    """An expectation-attention graph (standard ops only) is already portable: nothing is attached."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    for mode in ("functions", "inline"):
        out = attach_functions(model, mode)
        assert not out.functions and [n.op_type for n in out.graph.node] == ["Relu"]
    assert portable_backend_status({"custom_ops": []})["ort-portable"] == (True, "")


def test_attach_functions_errors():
    model = op_model("LSHCumulation", hash_code_len=4, portable="off")
    with pytest.raises(PortableError, match="unknown portable mode"):
        attach_functions(model, "yes")
    model.graph.node.add().CopyFrom(onnx.helper.make_node("Frobnicate", ["x"], ["y"], domain="com.yoso"))
    with pytest.raises(PortableError, match="Frobnicate"):
        attach_functions(model)


# ------------------------------------------------------------------------------------------------
# polygraphy runner factories (the validate backends ort-portable / openvino)
# ------------------------------------------------------------------------------------------------


def test_portable_runner_factories_with_polygraphy(exports):
    pytest.importorskip("openvino", reason="OpenVINO (pip install openvino) is needed for the openvino backend")
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    from yoso_deploy.validation.validate import make_ort_runner

    result = exports("sequence-classification")
    assert set(portable_backend_status(result.manifest)) == set(PORTABLE_BACKENDS)
    assert all(ok for ok, _ in portable_backend_status(result.manifest).values())
    runners = [make_ort_runner(result.onnx_path, "cpu", "ort-cpu"), make_ort_portable_runner(result.onnx_path),
               make_openvino_runner(result.onnx_path, threads=1)]
    assert [r.name for r in runners] == ["ort-cpu", "ort-portable", "openvino"]
    cases = [_input_feeds(result, 2, 16, seed=7), _input_feeds(result, 1, 5, seed=8)]
    results = Comparator.run(runners, data_loader=cases)
    names = _names(result)
    atol = {n: (0.0 if n.endswith(tuple("0123456789")) else OUTPUT_ATOL) for n in names}
    with np.errstate(divide="ignore", invalid="ignore"):  # polygraphy's relative error of exact zeros
        accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=atol, rtol=0.0))
    assert bool(accuracy), accuracy
    with make_openvino_runner(result.onnx_path) as r:
        meta = r.get_input_metadata(use_numpy_dtypes=False)
        assert list(meta) == [t["name"] for t in result.manifest["inputs"]]
    assert make_portable_runner("ort-portable", result.onnx_path).name == "ort-portable"
    with pytest.raises(ValueError, match="unknown portable backend"):
        make_portable_runner("tvm", result.onnx_path)


def test_portable_backend_status_reasons(monkeypatch):
    import importlib.util

    assert portable_backend_status({"custom_ops": [1], "portable": "functions"}) == {
        "ort-portable": (True, ""), "openvino": (True, "")}
    old = portable_backend_status({"custom_ops": [1]})  # an export from before --portable existed
    assert not old["ort-portable"][0] and "re-export" in old["ort-portable"][1]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    ov = portable_backend_status({"custom_ops": [1], "portable": "inline"})["openvino"]
    assert ov[0] is False and "pip install" in ov[1]


# ------------------------------------------------------------------------------------------------
# the op bodies alone: stock ORT and onnx.reference vs the library and the numpy/PyTorch references
# ------------------------------------------------------------------------------------------------


def _lib_session(model):
    from yoso_deploy.runtime.session import session_options

    so = session_options(intra_op_threads=2)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _stock_session(model, threads=2):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _fast_hash_feeds(rng, b, h, s, d, m, tau, dtype=np.float32):
    p = ops.num_parts(m, d, tau)
    x = rng.standard_normal((b, h, s, d)).astype(dtype)
    if b and s:
        x[0, 0, 0] = 0.0  # all-zero vector: every projection is +-0, every bit 0
        x[-1, -1, -1, 0] = -0.0
    mask = np.ones((b, s), np.int32)
    if b > 1 and s > 1:
        mask[1, s // 2:] = 0  # right padding
    signs = (rng.integers(0, 2, (h, 3, p, d)) * 2 - 1).astype(np.float32)
    return {"x": x, "mask": mask, "signs": signs}


FAST_HASH_CASES = [
    # (B, H, S, D, m, tau)
    (2, 2, 13, 32, 16, 5),  # tau does not divide D (2 unused entries), m > per_part (6): 3 parts
    (2, 3, 9, 32, 4, 5),  # m < per_part
    (2, 2, 9, 32, 6, 5),  # m == per_part: one part
    (2, 2, 9, 32, 20, 8),  # 5 parts
    (1, 1, 1, 32, 16, 5),  # S = 1
    (0, 2, 5, 32, 16, 5),  # B = 0
    (2, 2, 0, 32, 16, 5),  # S = 0
    (1, 2, 7, 1, 3, 1),  # D = 1, no butterfly stage
    (2, 2, 33, 64, 64, 9),  # the yoso-4096 hashing shape (D 64, m 64, tau 9)
    (1, 1, 3, 1024, 8, 30),  # largest D and tau
]


@pytest.mark.parametrize("case", FAST_HASH_CASES, ids=lambda c: "B{}H{}S{}D{}m{}t{}".format(*c))
def test_fast_hash_body_codes_bit_identical(case):
    b, h, s, d, m, tau = case
    feeds = _fast_hash_feeds(np.random.default_rng(sum(case)), *case)
    model = op_model("FastHash", hash_dim=d, num_hash=m, hash_code_len=tau)
    want = ops.fast_hash(*(torch.from_numpy(feeds[k]) for k in ("x", "mask", "signs")), m, tau).numpy()
    results = {
        "library": _lib_session(model).run(None, feeds)[0],
        "stock ORT": _stock_session(model).run(None, feeds)[0],
        "stock ORT 1 thread": _stock_session(model, 1).run(None, feeds)[0],
        "numpy kernel": np_fast_hash(feeds["x"], feeds["mask"], feeds["signs"], m, tau),
    }
    if b * s * d <= 4096:  # onnx.reference is slow; small shapes only
        results["onnx.reference bodies"] = ReferenceEvaluator(model).run(None, feeds)[0]
    for name, got in results.items():
        assert got.shape == want.shape and got.dtype == np.int32, name
        assert np.array_equal(got, want), (name, f"{np.mean(got == want):.4%} identical")


def test_fast_hash_body_float16_and_other_opsets():
    rng = np.random.default_rng(3)
    feeds = _fast_hash_feeds(rng, 2, 2, 11, 32, 16, 5, dtype=np.float16)
    want = ops.fast_hash(*(torch.from_numpy(feeds[k]) for k in ("x", "mask", "signs")), 16, 5).numpy()
    got = _stock_session(op_model("FastHash", hash_dim=32, num_hash=16, hash_code_len=5,
                                  value_type=onnx.TensorProto.FLOAT16)).run(None, feeds)[0]
    assert np.array_equal(got, want)
    feeds = _fast_hash_feeds(rng, 2, 2, 11, 32, 16, 5)
    want = ops.fast_hash(*(torch.from_numpy(feeds[k]) for k in ("x", "mask", "signs")), 16, 5).numpy()
    for opset in (17, 21, onnx.defs.onnx_opset_version()):
        model = op_model("FastHash", hash_dim=32, num_hash=16, hash_code_len=5, opset=opset)
        try:
            sess = _stock_session(model)
        except Exception as e:  # noqa: BLE001 - a newer onnx may know opsets this onnxruntime does not
            if "opset" in str(e).lower() and opset > 21:
                print(f"opset {opset}: onnxruntime {ort.__version__} does not support it yet ({str(e)[:80]})")
                continue
            raise
        assert np.array_equal(sess.run(None, feeds)[0], want), opset


def _lsh_feeds(rng, b, h, sq, sk, m, tau, dv, dtype=np.float32):
    hi = 1 << tau
    qc = rng.integers(0, hi, (b, h, sq, m)).astype(np.int32)
    kc = rng.integers(0, hi, (b, h, sk, m)).astype(np.int32)
    if sq and sk:
        qc[..., : min(sq, sk), :] = kc[..., : min(sq, sk), :]  # real collisions even for large tau
    qm = np.ones((b, sq), np.int32)
    km = np.ones((b, sk), np.int32)
    if b > 1:
        qm[1, sq // 2:] = 0
        km[1, sk // 3:] = 0
    v = rng.standard_normal((b, h, sk, dv)).astype(dtype)
    if b and sk > 1:
        v[0, 0, -1] = np.inf  # behind the mask: must not reach any output
        km[0, -1] = 0
    return {"query_codes": qc, "key_codes": kc, "query_mask": qm, "key_mask": km, "value": v}


LSH_CASES = [
    # (B, H, Sq, Sk, m, tau, Dv)
    (2, 3, 17, 29, 16, 2, 24),  # Sq != Sk, crowded buckets, padded masks
    (2, 2, 40, 40, 8, 30, 5),  # tau = 30: no dense 2^tau table
    (1, 1, 1, 1, 1, 1, 1),  # S = 1, m = 1
    (0, 2, 5, 5, 4, 3, 8),  # B = 0
    (2, 2, 0, 5, 4, 3, 8),  # Sq = 0
    (2, 2, 5, 0, 4, 3, 8),  # Sk = 0: zeros
    (1, 12, 300, 300, 64, 9, 64),  # yoso-4096 head shapes, 300 tokens, two threads
]


@pytest.mark.parametrize("case", LSH_CASES, ids=lambda c: "B{}H{}Sq{}Sk{}m{}t{}Dv{}".format(*c))
def test_lsh_cumulation_body_matches(case):
    b, h, sq, sk, m, tau, dv = case
    feeds = _lsh_feeds(np.random.default_rng(sum(case)), *case)
    model = op_model("LSHCumulation", hash_code_len=tau)
    names = ("query_codes", "key_codes", "query_mask", "key_mask", "value")
    want = ops.lsh_cumulation(*(torch.from_numpy(feeds[k]) for k in names), tau).numpy()
    results = {"library": _lib_session(model).run(None, feeds)[0], "stock ORT": _stock_session(model).run(None, feeds)[0]}
    if b * h * (sq + sk) * m <= 20000:
        results["onnx.reference bodies"] = ReferenceEvaluator(model).run(None, feeds)[0]
        results["numpy kernel"] = np_lsh_cumulation(*(feeds[k] for k in names), tau)
    for name, got in results.items():
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert np.isfinite(got).all(), name
        assert float(np.abs(got - want).max(initial=0.0)) <= 1e-5, name
    if b and sq and sk:
        assert np.abs(want).max() > 0  # the case really cumulates something
    if b > 1 and sq > 1:
        assert not results["stock ORT"][1, :, sq // 2:].any()  # masked queries are exactly 0


def test_lsh_cumulation_body_float16():
    feeds = _lsh_feeds(np.random.default_rng(9), 2, 2, 13, 17, 8, 4, 16, dtype=np.float16)
    feeds["value"][np.isinf(feeds["value"])] = 0
    model = op_model("LSHCumulation", hash_code_len=4, value_type=onnx.TensorProto.FLOAT16)
    names = ("query_codes", "key_codes", "query_mask", "key_mask", "value")
    want = ops.lsh_cumulation(*(torch.from_numpy(feeds[k]) for k in names), 4).numpy()
    got = _stock_session(model).run(None, feeds)[0]
    assert got.dtype == np.float16 and float(np.abs(got.astype(np.float32) - want).max()) <= 1e-3


# ------------------------------------------------------------------------------------------------
# the bodies refuse what the contract forbids (stock ORT and onnx.reference raise; never read out of bounds)
# ------------------------------------------------------------------------------------------------


def _broken(feeds, **changes):
    out = dict(feeds)
    out.update(changes)
    return out


def test_fast_hash_body_checks_raise():
    feeds = _fast_hash_feeds(np.random.default_rng(5), 2, 2, 6, 32, 16, 5)
    model = op_model("FastHash", hash_dim=32, num_hash=16, hash_code_len=5)
    sess, ref = _stock_session(model), ReferenceEvaluator(model)
    sess.run(None, feeds)  # the unbroken input passes
    cases = {
        "mask_is_0_or_1": _broken(feeds, mask=feeds["mask"] * 2),
        "signs_are_plus_minus_1": _broken(feeds, signs=feeds["signs"] * 0.5),
        "signs_shape_is_H_3_P_D": _broken(feeds, signs=np.ascontiguousarray(feeds["signs"][:, :, :2])),
        "mask_shape_is_B_S": _broken(feeds, mask=np.ascontiguousarray(feeds["mask"][:, :4])),
    }
    for check, bad in cases.items():
        with pytest.raises(Exception, match=f"{CHECK_PREFIX}FastHash_{check}"):
            sess.run(None, bad)
        with pytest.raises(Exception):
            ref.run(None, bad)
    # Attributes outside the contract (tau > D, m = 0) are refused by the body as well.
    for m, tau, check in ((16, 40, "hash_code_len_in_1_30"), (0, 5, "num_hash_ge_1")):
        bad_model = op_model("FastHash", hash_dim=32, num_hash=m, hash_code_len=tau)
        with pytest.raises(Exception, match=check):
            _stock_session(bad_model).run(None, feeds)


def test_lsh_cumulation_body_checks_raise():
    feeds = _lsh_feeds(np.random.default_rng(6), 2, 2, 6, 7, 4, 5, 8)
    model = op_model("LSHCumulation", hash_code_len=5)
    sess, ref = _stock_session(model), ReferenceEvaluator(model)
    sess.run(None, feeds)
    kc, qc = feeds["key_codes"], feeds["query_codes"]
    cases = {
        "key_codes_in_0_2pow_tau": _broken(feeds, key_codes=np.where(kc == kc.max(), 32, kc).astype(np.int32)),
        "query_codes_in_0_2pow_tau": _broken(feeds, query_codes=(qc - 1).astype(np.int32)),
        "query_mask_is_0_or_1": _broken(feeds, query_mask=feeds["query_mask"] * 2),
        "key_mask_is_0_or_1": _broken(feeds, key_mask=-feeds["key_mask"]),
        "value_shape_is_B_H_Sk_Dv": _broken(feeds, value=np.ascontiguousarray(feeds["value"][:1])),
        "key_codes_shape_is_B_H_Sk_m": _broken(feeds, key_codes=np.ascontiguousarray(kc[..., :2])),
        "key_mask_shape_is_B_Sk": _broken(feeds, key_mask=np.ascontiguousarray(feeds["key_mask"][:, :3])),
    }
    for check, bad in cases.items():
        with pytest.raises(Exception, match=f"{CHECK_PREFIX}LSHCumulation_{check}"):
            sess.run(None, bad)
        with pytest.raises(Exception):
            ref.run(None, bad)
    # A masked token's code is checked too (the contract: every code, masked included).
    masked_bad = _broken(feeds, key_codes=kc.copy())
    masked_bad["key_mask"] = feeds["key_mask"].copy()
    masked_bad["key_mask"][1, -1] = 0
    masked_bad["key_codes"][1, :, -1, 0] = 1 << 5
    with pytest.raises(Exception, match="key_codes_in_0_2pow_tau"):
        sess.run(None, masked_bad)
