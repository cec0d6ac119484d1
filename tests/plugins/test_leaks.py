"""Memory leaks of libyoso_ort.so (issue 8).

1. RSS (``VmRSS`` of /proc/self/status) around 10,000 runs of one session of a tiny exported QA
   model (1 layer, 2 heads, batch 2 x 8 tokens) and around 100 session create/run/destroy cycles,
   each after a warm-up (ONNX Runtime's arena, thread pools and python's allocator reach their
   steady state first). Measured in a fresh worker process (the model is exported here): in a
   long pytest process, freed heap left behind by earlier tests absorbs a leak without any RSS
   growth. Alongside RSS the worker reports glibc's in-use heap (``mallinfo2``: bytes allocated and
   not freed), which sees leaks far below RSS noise. Bounds and measurements: see below.
   ``test_measurement_detects_a_leak`` checks the method sees a deliberate 1 KB/run leak.
2. valgrind (``--leak-check=full --errors-for-leak-kinds=definite``) on tests/native/leak_harness.c,
   a C program that loads the onnxruntime wheel's libonnxruntime.so, registers libyoso_ort.so
   (RegisterCustomOpsLibrary_V2), creates a session on a tiny FastHash -> LSHCumulation model, runs
   it 3 times plus one failing run (invalid mask), and releases everything. No "definitely lost"
   block and no memory error may have a stack frame in libyoso_ort.so. Findings inside ONNX Runtime
   or glibc are not ours: they are printed (counted by kind), not failed on. ~15-25 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxruntime as ort
from yoso_deploy import ort_library_path
from yoso_deploy.modeling import ops

pytestmark = [pytest.mark.slow, pytest.mark.native]  # valgrind, 10k runs

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "native" / "leak_harness.c"
SMALL = dict(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=64, num_hash=8, hash_code_len=6, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0, pad_token_id=1)

RUNS = 10_000
CYCLES = 100
# Measured on the dev machine (fresh worker, 2 cores, onnxruntime 1.32, glibc 2.36; 3 runs each):
#   10,000 runs:          RSS +0.02 MB, in-use heap +0.001 to +0.002 MB
#   100 session cycles:   RSS +0.45 to +0.57 MB, in-use heap +1.06 MB. Not linear: over 4 blocks of
#                         100 cycles the heap grows 11-41 KB per block plus a one-time ~0.55 MB
#                         step in one block (ORT/glibc/python caches). Of the steady 0.1-0.4 KB per
#                         cycle, ~0.11 KB is the op domain libyoso_ort.so keeps per registration by
#                         design (sessions keep pointers into it; see yoso_ort.cc).
#   control, 1 KB/run leak: RSS +11.4 MB, in-use heap +10.0 MB
# Bounds: RSS ~10x the worst noise, catching per-run leaks >= 300 bytes and per-session leaks
# >= 60 KB (a leaked copy of the 190 KB model per session); in-use heap: per-run leaks >= 100
# bytes, per-session leaks >= 30 KB (above the one-time step).
RSS_RUN_BOUND_MB = 3.0
RSS_SESSION_BOUND_MB = 6.0
HEAP_RUN_BOUND_MB = 1.0
HEAP_SESSION_BOUND_MB = 3.0

WORKER = r"""
import ctypes, gc, json, sys
import numpy as np
from yoso_deploy.runtime import create_session

model, runs, cycles, leak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

_mallinfo2 = ctypes.CDLL(None).mallinfo2
_mallinfo2.restype = MallInfo2

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise SystemExit("no VmRSS in /proc/self/status")

def heap_mb():  # bytes malloc'ed and not freed (all arenas + mmapped chunks)
    m = _mallinfo2()
    return (m.uordblks + m.hblkhd) / 2**20

def snapshot():
    gc.collect()
    return rss_mb(), heap_mb()

rng = np.random.default_rng(0)
ids = rng.integers(3, 60, size=(2, 8)).astype(np.int64)
mask = np.ones((2, 8), np.int64)
mask[1, 5:] = 0
feeds = {"input_ids": ids, "attention_mask": mask}
result = {}

sess = create_session(model, intra_op_threads=2)
first = sess.run(None, feeds)
for _ in range(500):
    sess.run(None, feeds)
r0, h0 = snapshot()
kept = []
for _ in range(runs):
    out = sess.run(None, feeds)
    if leak:
        kept.append(ctypes.create_string_buffer(leak))
r1, h1 = snapshot()
assert all(np.array_equal(a, b) for a, b in zip(first, out))
result["runs"] = {"n": runs, "rss_before": r0, "rss_delta": r1 - r0, "heap_delta": h1 - h0}
del sess, kept

def cycle():
    s = create_session(model, intra_op_threads=2)
    o = s.run(None, feeds)
    del s
    return o

if cycles:
    for _ in range(10):
        cycle()
    r0, h0 = snapshot()
    for _ in range(cycles):
        out = cycle()
    r1, h1 = snapshot()
    assert all(np.array_equal(a, b) for a, b in zip(first, out))
    result["cycles"] = {"n": cycles, "rss_before": r0, "rss_delta": r1 - r0, "heap_delta": h1 - h0}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import YosoConfig, YosoForQuestionAnswering

    from yoso_deploy.workflow import export

    root = tmp_path_factory.mktemp("leaks")
    torch.manual_seed(0)
    YosoForQuestionAnswering(YosoConfig(**SMALL)).save_pretrained(str(root / "ckpt"))
    return export(root / "ckpt", root / "qa", task="qa", validate=False).onnx_path


def _measure(model, runs, cycles, leak_bytes=0) -> dict:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    r = subprocess.run([sys.executable, "-c", WORKER, str(model), str(runs), str(cycles), str(leak_bytes)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"leak worker failed (rc {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout + r.stderr
    return json.loads(line[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def measured(tiny_model):
    return _measure(tiny_model, RUNS, CYCLES)


def test_rss_stable_over_10k_runs(measured):
    m = measured["runs"]
    print(f"{m['n']} runs: RSS {m['rss_before']:.1f} MB {m['rss_delta']:+.2f} MB (bound {RSS_RUN_BOUND_MB}), "
          f"in-use heap {m['heap_delta']:+.3f} MB (bound {HEAP_RUN_BOUND_MB})")
    assert m["rss_delta"] < RSS_RUN_BOUND_MB, f"RSS grew by {m['rss_delta']:.2f} MB over {m['n']} runs"
    assert m["heap_delta"] < HEAP_RUN_BOUND_MB, f"in-use heap grew by {m['heap_delta']:.3f} MB over {m['n']} runs"


def test_rss_stable_over_100_session_cycles(measured):
    m = measured["cycles"]
    print(f"{m['n']} session create/run/destroy cycles: RSS {m['rss_before']:.1f} MB {m['rss_delta']:+.2f} MB "
          f"(bound {RSS_SESSION_BOUND_MB}), in-use heap {m['heap_delta']:+.3f} MB (bound {HEAP_SESSION_BOUND_MB})")
    assert m["rss_delta"] < RSS_SESSION_BOUND_MB, f"RSS grew by {m['rss_delta']:.2f} MB over {m['n']} cycles"
    assert m["heap_delta"] < HEAP_SESSION_BOUND_MB, f"in-use heap grew by {m['heap_delta']:.3f} MB over {m['n']} cycles"


def test_measurement_detects_a_leak(tiny_model):
    """Control: the same worker with a deliberate 1 KB leak per run exceeds both run bounds."""
    m = _measure(tiny_model, RUNS, 0, leak_bytes=1024)["runs"]
    print(f"control, 1 KB/run leak: RSS {m['rss_delta']:+.2f} MB, in-use heap {m['heap_delta']:+.3f} MB")
    assert m["rss_delta"] > RSS_RUN_BOUND_MB and m["heap_delta"] > HEAP_RUN_BOUND_MB, m


# ------------------------------------------------------------------------------------------------
# valgrind
# ------------------------------------------------------------------------------------------------

H, S, D, DV, M, TAU = 2, 6, 8, 4, 4, 3  # as in leak_harness.c


def _harness_model(path: Path) -> None:
    signs = ops.draw_signs(H, M, TAU, D, generator=torch.Generator().manual_seed(0)).numpy()
    nodes = [
        helper.make_node("FastHash", ["q", "mask", "signs"], ["qc"], domain=ops.OP_DOMAIN, num_hash=M, hash_code_len=TAU),
        helper.make_node("FastHash", ["k", "mask", "signs"], ["kc"], domain=ops.OP_DOMAIN, num_hash=M, hash_code_len=TAU),
        helper.make_node("LSHCumulation", ["qc", "kc", "mask", "mask", "v"], ["out"], domain=ops.OP_DOMAIN,
                         hash_code_len=TAU),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "leak_harness",
        [vi("q", TensorProto.FLOAT, [1, H, S, D]), vi("k", TensorProto.FLOAT, [1, H, S, D]),
         vi("mask", TensorProto.INT32, [1, S]), vi("v", TensorProto.FLOAT, [1, H, S, DV])],
        [vi("out", TensorProto.FLOAT, [1, H, S, DV])],
        initializer=[numpy_helper.from_array(signs, "signs")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _harness_inputs():
    i = np.arange(H * S * D)
    q = (((i * 7) % 11) - 5).astype(np.float32).reshape(1, H, S, D)
    k = (((i * 5) % 13) - 6).astype(np.float32).reshape(1, H, S, D)
    v = ((np.arange(H * S * DV) % 7) - 3).astype(np.float32).reshape(1, H, S, DV)
    mask = (np.arange(S) < S - 1).astype(np.int32).reshape(1, S)
    return {"q": q, "k": k, "mask": mask, "v": v}


def _ort_headers() -> Path:
    cands = []
    if os.environ.get("ONNXRUNTIME_ROOT"):
        root = Path(os.environ["ONNXRUNTIME_ROOT"])
        cands += [root / "include" / "onnxruntime", root / "include"]
    cands += [Path("/usr/include/onnxruntime")]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yoso-deploy"
    cands += sorted(cache.glob("onnxruntime-headers-*/include/onnxruntime"), reverse=True)
    for c in cands:
        if (c / "onnxruntime_c_api.h").is_file():
            return c
    # Same source the build uses: the pinned, checksummed download (cached after the first time).
    r = subprocess.run(["bash", str(REPO / "scripts" / "dev" / "fetch_ort_headers.sh")], capture_output=True, text=True,
                       timeout=600)
    inc = Path(r.stdout.strip()) / "include" / "onnxruntime"
    assert r.returncode == 0 and (inc / "onnxruntime_c_api.h").is_file(), f"no ONNX Runtime headers: {r.stderr[-2000:]}"
    return inc


def _onnxruntime_so() -> Path:
    cands = sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so*"))
    assert cands, f"the onnxruntime package at {Path(ort.__file__).parent} ships no capi/libonnxruntime.so*"
    return cands[0].resolve()


def _clean_env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


def _build_harness(tmp_path: Path) -> Path:
    cc = shutil.which(os.environ.get("CC", "gcc"))
    assert cc, "a C compiler (gcc or $CC) is required to build tests/native/leak_harness.c"
    inc = _ort_headers()
    flags = ["-std=c99", "-O1", "-g", "-Wall", "-Wextra"]
    exe = tmp_path / "leak_harness"
    r = subprocess.run([cc, *flags, f"-I{inc}", str(HARNESS), "-o", str(exe), "-ldl"], capture_output=True, text=True,
                       env=_clean_env(), timeout=300)
    assert r.returncode == 0, f"compiling {HARNESS} failed:\n{r.stderr[-3000:]}"
    return exe


_VG_LINE = re.compile(r"^==\d+== ?(.*)$")


def parse_valgrind(text: str) -> list[dict]:
    """valgrind's log -> records {"title": first line, "frames": [...], "kind": "leak" | "error"}."""
    records, cur = [], None
    for line in text.splitlines():
        m = _VG_LINE.match(line)
        if not m:
            continue
        body = m.group(1)
        if not body.strip():
            if cur:
                records.append(cur)
            cur = None
            continue
        frame = re.match(r"\s+(at|by) 0x[0-9A-Fa-f]+: (.*)", body)
        if frame:
            if cur is not None:
                cur["frames"].append(frame.group(2))
            continue
        if cur is None:
            kind = "leak" if "are definitely lost" in body or "are possibly lost" in body else "error"
            cur = {"title": body.strip(), "frames": [], "kind": kind}
    if cur:
        records.append(cur)
    return [r for r in records if r["frames"]]  # headers/summaries have no stack


def ours(record: dict) -> bool:
    return any("libyoso_ort.so" in f or re.search(r"\byoso_(ort|cpu|core|validate)\.(cc|h)\b", f)
               for f in record["frames"])


def test_valgrind_parser_attributes_frames():
    log = """==7== 64 bytes in 1 blocks are definitely lost in loss record 3 of 9
==7==    at 0x483B7F3: malloc (vg_replace_malloc.c:381)
==7==    by 0x5A1B2C3: ??? (in /x/site-packages/yoso_deploy/lib/libyoso_ort.so)
==7==    by 0x4A00000: ??? (in /x/libonnxruntime.so.1.32.0)
==7==
==7== Invalid read of size 8
==7==    at 0x4023C6C: strncmp (strcmp-sse2.S:160)
==7==    by 0x4004BEE: is_dst (dl-load.c:216)
==7==
==7== LEAK SUMMARY:
==7==    definitely lost: 64 bytes in 1 blocks
"""
    recs = parse_valgrind(log)
    assert [(r["kind"], ours(r)) for r in recs] == [("leak", True), ("error", False)]


def test_valgrind_no_leaks_in_our_library(tmp_path):
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is required for this test (apt-get install valgrind)"
    exe = _build_harness(tmp_path)
    model = tmp_path / "leak.onnx"
    _harness_model(model)
    lib = str(ort_library_path())
    log = tmp_path / "valgrind.log"
    cmd = [valgrind, "--leak-check=full", "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
           "--num-callers=40", f"--log-file={log}", str(exe), str(_onnxruntime_so()), lib, str(model), "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=600)
    text = log.read_text()
    assert r.returncode == 0, f"harness failed under valgrind (rc {r.returncode}):\n{r.stdout}\n{r.stderr}\n{text[-4000:]}"
    assert r.stdout.rstrip().endswith("done"), r.stdout

    # The harness really ran the ops: its output equals ONNX Runtime's in this process, and the
    # invalid mask was refused by FastHash.
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    want = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]).run(None, _harness_inputs())[0]
    got = np.array([float(ln.split()[2]) for ln in r.stdout.splitlines() if ln.startswith("out ")], np.float32)
    np.testing.assert_allclose(got, want.reshape(-1), rtol=1e-6, atol=1e-6)
    assert np.abs(got).max() > 0, "all-zero output: the harness did not exercise the ops"
    assert "status:" in r.stdout and "FastHash" in r.stdout and "'mask'" in r.stdout, r.stdout

    records = parse_valgrind(text)
    mine = [rec for rec in records if ours(rec)]
    theirs = [rec for rec in records if not ours(rec)]
    summary = re.search(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
    errors = re.search(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts", text)
    kinds: dict = {}
    for rec in theirs:
        key = re.sub(r"0x[0-9a-fA-F]+|\d+", "N", rec["title"])
        kinds[key] = kinds.get(key, 0) + 1
    print(f"valgrind: definitely lost {summary.group(1) if summary else '?'} bytes in "
          f"{summary.group(2) if summary else '?'} blocks; {errors.group(0) if errors else 'no error summary'}; "
          f"records in libyoso_ort.so: {len(mine)}; elsewhere (ONNX Runtime / glibc, not ours): {kinds or 'none'}")
    assert summary and errors, f"unexpected valgrind log:\n{text[-3000:]}"
    assert not mine, "valgrind findings with frames in libyoso_ort.so:\n" + "\n\n".join(
        rec["title"] + "\n  " + "\n  ".join(rec["frames"]) for rec in mine)
