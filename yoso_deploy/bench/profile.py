"""Where an export's time goes: ONNX Runtime's profiler, summed per op type (``yoso-deploy bench --profile``).

    from yoso_deploy.bench.profile import profile_export
    prof = profile_export("out/qa", batch=1, seq_len=2048)
    print(prof.table())      # op type, ms per run, share of the node time, node count

The session is the runtime's own (``libyoso_ort.so`` registered, ONNX Runtime's full graph optimization), run on
generated inputs of the export's spec; the first runs are warm-up and left out of the sums. Shares are of the time
spent inside nodes (ONNX Runtime's "Node" events), so they add up to 100 %; ``small_ops_share`` is everything but
MatMul-like ops and the ``com.yoso`` ops (the unfused glue optimization levels remove).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..iospec import make_inputs
from ..manifest import expand_path, load_manifest, manifest_spec, model_file

# MatMul-like work (the GEMM floor) and the custom ops: the rest is the "small ops" an optimization level targets.
LARGE_OPS = ("MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
             "QLinearMatMul", "FastHash", "LSHCumulation", "Attention", "MultiHeadAttention")


@dataclass
class OpProfile:
    batch: int
    seq_len: int
    runs: int
    per_op: dict = field(default_factory=dict)  # op type -> (total microseconds over the runs, nodes)
    wall_ms: float = 0.0  # mean wall time of one run (from the profiler's model_run events)

    @property
    def node_ms(self) -> float:
        return sum(us for us, _ in self.per_op.values()) / 1000.0 / self.runs

    def shares(self) -> list[tuple[str, float, float, int]]:
        """``(op type, ms per run, share, nodes)``, largest first."""
        total = sum(us for us, _ in self.per_op.values()) or 1.0
        rows = [(op, us / 1000.0 / self.runs, us / total, n) for op, (us, n) in self.per_op.items()]
        return sorted(rows, key=lambda r: -r[1])

    @property
    def small_ops_share(self) -> float:
        return sum(share for op, _, share, _ in self.shares() if op not in LARGE_OPS)

    def table(self) -> str:
        head = f"batch {self.batch}, S {self.seq_len}: {self.wall_ms:.1f} ms per run, {self.node_ms:.1f} ms in nodes"
        lines = [f"{head}; small ops {100 * self.small_ops_share:.1f} % (all but MatMul and the com.yoso ops)",
                 f"{'op type':<28}{'ms/run':>10}{'share':>9}{'nodes':>7}"]
        lines += [f"{op:<28}{ms:>10.2f}{100 * share:>8.1f}%{n:>7}" for op, ms, share, n in self.shares()]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"batch": self.batch, "seq_len": self.seq_len, "runs": self.runs, "wall_ms": self.wall_ms,
                "node_ms": self.node_ms, "small_ops_share": self.small_ops_share,
                "ops": [{"op": op, "ms": ms, "share": share, "nodes": n} for op, ms, share, n in self.shares()]}


def summarize(trace: list, runs: int, skip_runs: int) -> tuple[dict, float]:
    """Per op type ``(microseconds, nodes)`` of the "Node" events after the first ``skip_runs`` model runs, and the
    mean wall time (ms) of the counted runs; ``trace`` is ONNX Runtime's profile (a list of Chrome trace events)."""
    model_runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    if len(model_runs) < skip_runs + runs:
        raise UsageError(f"the profile holds {len(model_runs)} model runs, expected {skip_runs + runs}")
    counted = model_runs[skip_runs:skip_runs + runs]
    start = counted[0]["ts"]
    per_op: dict = {}
    nodes: dict = {}
    for e in trace:
        if e.get("cat") != "Node" or e["ts"] < start or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        us, _ = per_op.get(op, (0, 0))
        per_op[op] = (us + int(e.get("dur", 0)), 0)
        nodes.setdefault(op, set()).add(e["name"])
    per_op = {op: (us, len(nodes[op])) for op, (us, _) in per_op.items()}
    return per_op, sum(e["dur"] for e in counted) / 1000.0 / len(counted)


def profile_export(model_dir: str | Path, batch: int = 1, seq_len: int = 512, runs: int = 3, warmup: int = 1,
                   threads: int | None = None, allow_failed_export: bool = False) -> OpProfile:
    """Profile the export ``model_dir`` on one generated input of ``batch`` x ``seq_len`` (see the module doc)."""
    import onnxruntime as ort

    from ..manifest import check_usable
    from ..runtime.session import session_options

    model_dir = expand_path(model_dir)
    manifest = load_manifest(model_dir)
    if not allow_failed_export:
        check_usable(manifest, model_dir=model_dir)
    if runs < 1 or warmup < 0:
        raise UsageError("profile runs must be >= 1 and warm-up runs >= 0")
    msl = int(manifest["max_sequence_length"])
    if not 1 <= seq_len <= msl or batch < 1:
        raise UsageError(f"profile shape {batch}x{seq_len} is outside the export's limits",
                         fix=f"use batch >= 1 and 1 <= S <= {msl}")
    cfg = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    feeds = make_inputs(manifest_spec(manifest), batch, seq_len, int(cfg.get("vocab_size", 100)), seed=0,
                        pad_token_id=int(cfg.get("pad_token_id") or 0))
    with tempfile.TemporaryDirectory(prefix="yoso-profile-") as tmp:
        so = session_options(intra_op_threads=threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(model_file(manifest, model_dir)), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for _ in range(warmup + runs):
            sess.run(names, feeds)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    per_op, wall = summarize(trace, runs, warmup)
    return OpProfile(batch, seq_len, runs, per_op, wall)
