#!/usr/bin/env python3
"""Planted mutants that the test suite must kill: proof that the checks guarding correctness can fail.

Each mutant is a small, named source edit (one or more exact ``old -> new`` replacements, each ``old``
occurring exactly once in its file). For each mutant this script

1. applies the edit to a temporary copy of the repository (``git ls-files``: tracked and untracked,
   not ignored files; the working tree is never touched),
2. rebuilds ``libyoso_ort.so`` when the edit is native (one CMake build tree for the whole run, so a
   native mutant recompiles one or two translation units; Python mutants use the unmutated library
   built first),
3. runs only the mutant's targeted tests (``pytest -x``) in the copy, with ``PYTHONPATH`` and
   ``YOSO_ORT_LIBRARY`` pointing at the copy's sources and library,
4. restores the file.

It prints one line per mutant (killed / survived, the first failing test, seconds) and a table, and
exits 1 if any mutant survived, 2 if a mutant no longer applies, does not build or its tests could
not run (a collection error, no test selected), 0 when every mutant was killed. A crash (signal) or a
timeout of the targeted tests counts as killed.

    python scripts/dev/mutants.py                    # all mutants (CI: tests/package/test_mutants.py)
    python scripts/dev/mutants.py --list             # names, files, targeted tests
    python scripts/dev/mutants.py --only cache_never_read qa_no_max_context
    python scripts/dev/mutants.py --baseline         # first run every targeted test on the unmutated copy

Adding a mutant is one ``Mutant(...)`` entry in MUTANTS: a name, the file, the replacements, the tests
that must catch it and one line saying what it plants. Every check that guards correctness gets one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NATIVE_SUFFIXES = {".cc", ".h", ".cu", ".cuh", ".cpp", ".hpp", ".txt", ".cmake", ".map"}


@dataclass
class Mutant:
    name: str
    file: str  # relative to the repository root
    edits: list  # [(old, new)]: each old occurs exactly once in the file
    tests: list  # pytest arguments: node ids, files, "-k" expressions
    why: str  # what the mutant plants
    requires: str = ""  # "avx2" / "avx512": equivalent (cannot be caught) on a CPU without that instruction set
    timeout: int = 600
    env: dict = field(default_factory=dict)  # extra environment of the targeted tests (e.g. a forced kernel path)

    @property
    def native(self) -> bool:
        return Path(self.file).suffix in NATIVE_SUFFIXES


SIMD = "tests/plugins/test_ort_ops_simd.py"

MUTANTS = [
    # ---- the weak spots of the mutation audit (issue 18; item 3, expectation parity, follows with the
    # ---- parity rewrite) ----
    Mutant("isa_forced_scalar", "plugins/cpu/yoso_cpu.cc",
           [("return std::min(requested_isa(), best_isa());", "return Isa::kScalar;")],
           [f"{SIMD}::test_fast_hash_yoso4096_config"],
           "active_isa() always picks the scalar kernels: 'SIMD vs scalar' would compare scalar with scalar",
           requires="avx2"),
    Mutant("parallel_for_aborts_on_second_task", "plugins/ort/yoso_ort_common.h",
           [("  Ort::KernelContext(context).ParallelFor(fn, n_tasks, 0, job);", "  std::abort();")],
           ["tests/runtime/test_concurrency.py"],
           "any op call split into more than one task crashes (the concurrency tests ran one task per call)"),
    Mutant("qa_no_max_context", "yoso_deploy/runtime/base.py",
           [("cols[\"score\"].append(np.minimum(k, n - 1 - k) + 0.01 * n)", "cols[\"score\"].append(np.zeros(n))")],
           ["tests/runtime/test_default_model.py::test_windows_take_each_token_from_its_max_context_window"],
           "windows stitched without the max-context rule: a token takes its logits from the first window"),
    Mutant("qa_last_window_wins", "yoso_deploy/runtime/base.py",
           [("order = np.lexsort((w, -score, occ, end, start))", "order = np.lexsort((-w, occ, end, start))")],
           ["tests/runtime/test_default_model.py::test_windowed_answers_agree_with_one_window"],
           "a token takes its logits from the last window that holds it"),
    Mutant("cache_never_read", "yoso_deploy/runtime/session.py",
           [("        if cached.is_file():", "        if False:")],
           ["tests/runtime/test_runtime.py::test_optimized_model_cache"],
           "the optimised-model cache is written but never read"),
    Mutant("fp16_normalize_in_half", "yoso_deploy/modeling/attention.py",
           [("nn.functional.normalize(context.float(), p=2, dim=-1).to(context.dtype)",
             "nn.functional.normalize(context, p=2, dim=-1)")],
           ["tests/modeling/test_fp16.py::test_fp16_expectation_export_matches_float32_reference_on_cpu"],
           "attention output normalised in float16: padded batches of an fp16 export turn into NaN"),
    Mutant("fp16_reference_hashes_in_half", "yoso_deploy/modeling/ops.py",
           [("t = x.to(torch.float32).unsqueeze(2)", "t = x.unsqueeze(2)"),
            ("sg = signs.to(device=x.device, dtype=torch.float32)", "sg = signs.to(device=x.device, dtype=x.dtype)")],
           ["tests/modeling/test_fp16.py::test_reference_fast_hash_widens_float16_exactly"],
           "the reference FastHash transforms float16 input in float16 instead of widening it first"),
    Mutant("fp16_reference_lsh_sums_in_half", "yoso_deploy/modeling/ops.py",
           [("v = torch.where((key_mask != 0)[:, None, :, None], value.to(torch.float32), 0.0)",
             "v = torch.where((key_mask != 0)[:, None, :, None], value, 0.0)"),
            ("table = torch.zeros(uniq.numel(), dv, dtype=torch.float32, device=value.device)",
             "table = torch.zeros(uniq.numel(), dv, dtype=value.dtype, device=value.device)"),
            ("out = torch.zeros(b, h, sq, dv, dtype=torch.float32, device=value.device)",
             "out = torch.zeros(b, h, sq, dv, dtype=value.dtype, device=value.device)")],
           ["tests/modeling/test_fp16.py::test_reference_lsh_cumulation_float16_sums_in_float32_and_rounds_once"],
           "the reference LSHCumulation sums float16 values in float16"),
    Mutant("bench_layer_codes_wrong", "plugins/cpu/yoso_cpu_avx2.cc",
           [("    wht_pass_high<NR>(U, U, sh + (2 * P + p) * D);", "    wht_pass_high<NR>(U, U, sh + (P + p) * D);")],
           ["tests/bench/test_bench_cpu.py"],
           "AVX2 FastHash (8-token blocks) applies the second sign diagonal twice: the benchmark times wrong "
           "results (its smoke test now compares every backend's outputs; the AVX2 path forced, since an AVX-512 "
           "CPU would run the AVX-512 kernels)",
           requires="avx2", env={"YOSO_CPU_ISA": "avx2"}),
    Mutant("fast_hash_avx512_wrong_diagonal", "plugins/cpu/yoso_cpu_avx512.cc",
           [("    wht_pass_high<D>(U, U, sh + (2 * P + p) * D);", "    wht_pass_high<D>(U, U, sh + (P + p) * D);")],
           [SIMD, "-k", "avx512 and fast_hash"],
           "AVX-512 FastHash applies the second sign diagonal twice",
           requires="avx512"),
    # ---- one per op kernel ----
    Mutant("fast_hash_scalar_head0_signs", "plugins/cpu/yoso_cpu_scalar.cc",
           [("    const int64_t h = (row / d.S) % d.H;\n    const int64_t s = row % d.S;\n    const bool keep",
             "    const int64_t h = 0;\n    const int64_t s = row % d.S;\n    const bool keep")],
           [SIMD, "-k", "scalar and fast_hash"],
           "scalar FastHash hashes every head with head 0's signs"),
    Mutant("fast_hash_avx2_tail_wrong_diagonal", "plugins/cpu/yoso_cpu_avx2.cc",
           [("    const float* s2 = sh + (2 * P + p) * D;", "    const float* s2 = sh + (P + p) * D;")],
           [SIMD, "-k", "avx2 and fast_hash"],
           "AVX2 FastHash rows outside 8-token blocks apply the second sign diagonal twice",
           requires="avx2"),
    Mutant("lsh_scalar_table_not_cleared", "plugins/cpu/yoso_cpu_scalar.cc",
           [("    for (int64_t i = 0; i < ntouched; ++i)\n      std::memset(",
             "    for (int64_t i = 0; i < 0; ++i)\n      std::memset(")],
           [SIMD, "-k", "scalar and lsh"],
           "scalar LSHCumulation keeps the previous hash function's bucket sums"),
    Mutant("lsh_avx2_table_not_cleared", "plugins/cpu/yoso_cpu_avx2.cc",
           [("for (int u = 0; u < NV; ++u) _mm256_store_ps(row + 8 * u, zero);",
             "for (int u = 0; u < 0; ++u) _mm256_store_ps(row + 8 * u, zero);")],
           [SIMD, "-k", "avx2 and lsh"],
           "AVX2 LSHCumulation leaves the touched bucket rows non-zero for the next block and slice",
           requires="avx2"),
    Mutant("ort_no_shape_inference", "plugins/ort/yoso_ort_common.h",
           [("    op->InferOutputShapeFn = &InferOutputShape;", "    op->InferOutputShapeFn = nullptr;")],
           ["tests/plugins/test_ort_ops.py::test_shape_inference_gives_typed_shaped_outputs"],
           "the ops register no output shape inference: ONNX Runtime sees untyped, unshaped outputs"),
    Mutant("ort_float16_cpu_not_refused_at_creation", "plugins/ort/cpu/yoso_ort_cpu.cc",
           [('      if (init_error_.empty()) init_error_ = float16_cpu_error(kName, "x", 0);', "")],
           ["tests/plugins/test_ort_ops.py::test_float16_on_the_cpu_is_refused_with_the_fix"],
           "a float16 FastHash node on the CPU is accepted at session creation (fails only when run)"),
    Mutant("trt_static_checks_skip_known_dims", "plugins/common/yoso_validate.h",
           [("  if (known_differ(kc[0], B) || known_differ(kc[1], H) || known_differ(kc[3], m)) {",
             "  if (known_differ(kc[0], B) || known_differ(kc[1], H)) {")],
           ["tests/plugins/test_ort_ops.py::test_lsh_cumulation_rejects[m_mismatch]"],
           "key_codes' m is no longer compared with query_codes' (shared: ORT run time and shape inference, "
           "TensorRT build time)"),
    # ---- validator (plugins/common/yoso_validate.h and the value rules of yoso_core.h) ----
    Mutant("validate_code_range_off_by_one", "plugins/common/yoso_core.h",
           [("return c >= 0 && static_cast<int64_t>(c) < (int64_t{1} << tau);",
             "return c >= 0 && static_cast<int64_t>(c) <= (int64_t{1} << tau);")],
           ["tests/plugins/test_ort_ops.py::test_lsh_cumulation_rejects[qc_too_large]"],
           "code 2^tau passes validation (an out-of-bounds bucket read)"),
    Mutant("validate_codes_skip_last", "plugins/common/yoso_validate.h",
           [("  for (int64_t i = 0; i < n; ++i) {\n    if (!is_valid_code_value(",
             "  for (int64_t i = 0; i + 1 < n; ++i) {\n    if (!is_valid_code_value(")],
           ["tests/plugins/test_op_validation_extra.py::test_lsh_cumulation_rejects_more[kc_int32_max]"],
           "the last code of a tensor is never validated (kc_int32_max puts INT32_MAX there)"),
    # ---- QA decoder, manifest check, CLI error path, checkpoints, TensorRT library lookup ----
    Mutant("qa_end_from_start_logits", "yoso_deploy/runtime/qa.py",
           [("s_ctx, e_ctx = start_logits[owner, position], end_logits[owner, position]",
             "s_ctx, e_ctx = start_logits[owner, position], start_logits[owner, position]")],
           ["tests/runtime/test_default_model.py::test_heldout_exact_match_through_ort"],
           "the QA decoder scores span ends with the start logits"),
    Mutant("manifest_keys_not_checked", "yoso_deploy/manifest.py",
           [("    missing = [k for k in REQUIRED if k not in manifest]", "    missing = []")],
           ["tests/cli/test_cli_errors.py", "-k", "manifest"],
           "load_manifest accepts a manifest without task / inputs / outputs"),
    Mutant("cli_error_exit_code_zero", "yoso_deploy/cli/main.py",
           [("            ctx.exit(2)", "            ctx.exit(0)")],
           ["tests/cli/test_cli_errors.py", "-k", "manifest"],
           "a failing command prints its error line but exits 0"),
    Mutant("load_model_wrong_seed", "yoso_deploy/modeling/model.py",
           [("    model = convert_model(model, attention=attention, seed=seed, kernels=kernels)",
             "    model = convert_model(model, attention=attention, seed=seed + 1, kernels=kernels)")],
           ["tests/modeling/test_reference.py::test_checkpoint_round_trip"],
           "a loaded checkpoint hashes with other signs than the seed asks for"),
    Mutant("trt_library_error_without_build_hint", "yoso_deploy/backends/trt.py",
           [('f"{e} Note: {TRT_LIBRARY_NAME} is only built with YOSO_BUILD_TRT=ON and a real TENSORRT_ROOT "',
             'f"{e}"')],
           ["tests/backends/test_trt_python.py::test_trt_library_path_explains_how_to_build"],
           "the missing-TensorRT-library error no longer says how to build it"),
    # -- tie-aware parity (yoso_deploy/validation/parity.py, plugins/OPS.md section 5) --
    Mutant("parity_non_ties_pass_as_ties", "yoso_deploy/validation/parity.py",
           [("        non_tie = (bit_differs & (ratio > 1.0)).any(-1)",
             "        non_tie = (bit_differs & (ratio > 1e30)).any(-1)")],
           ["tests/validation/test_parity.py::test_flip_of_a_large_t_is_not_a_tie"],
           "a code bit that flips far from zero is counted as a near-tie"),
    Mutant("parity_kernel_check_skipped", "yoso_deploy/validation/parity.py",
           [("        kernel_bad = ops.codes_from_bit_values(v_be, mask) != codes_be",
             "        kernel_bad = torch.zeros_like(codes_be, dtype=torch.bool)")],
           ["tests/validation/test_parity.py::test_wrong_kernel_output_is_named"],
           "the backend's FastHash is never checked against the contract on its own input"),
    Mutant("parity_tie_bound_too_loose", "yoso_deploy/validation/parity.py",
           [("    return beta * float(scale)", "    return beta * float(scale) * 1e6")],
           ["tests/validation/test_parity.py::test_flip_of_a_large_t_is_not_a_tie",
            "tests/validation/test_parity.py::test_tie_bound_holds_for_two_float32_projections"],
           "the tie bound is a million times the float32 rounding bound: real bit errors pass as ties"),
    Mutant("parity_codes_not_injected", "yoso_deploy/validation/parity.py",
           [("            injected.append(torch.from_numpy(codes_be.astype(np.int32, copy=False)).to(x_ref.device))",
             "            injected.append(torch.ops.yoso.fast_hash(x_ref, mask, signs, module.num_hash, module.hash_code_len))")],
           ["tests/validation/test_parity.py::test_the_reference_attends_with_the_backend_codes"],
           "the reference uses its own codes instead of the backend's (a near-tie then fails the outputs)"),
    Mutant("parity_no_per_channel_rule", "yoso_deploy/validation/parity.py",
           [('    per_channel = kind in ("hidden", "tensor")', "    per_channel = False")],
           ["tests/validation/test_parity.py::test_per_channel_rule_sees_one_scaled_channel",
            "tests/export/test_export.py::test_expectation_exponent_change_fails_parity"],
           "hidden states and layer tensors are judged elementwise only (a LayerNorm weight x 1.001 passes)"),
    Mutant("parity_hidden_states_not_probed", "yoso_deploy/export/probes.py",
           [("    hidden = [module_output(emb[0])] if emb else [None]", "    hidden = [None]")],
           ["tests/export/test_export.py::test_expectation_exponent_change_fails_parity"],
           "layer outputs are not compared (a corruption too small to move the logits passes)"),
    Mutant("export_opset_not_checked", "yoso_deploy/export/exporter.py",
           [("        if opset < EXPORTER_OPSET and model_opset(model_proto) != opset:",
             "        if False:"),
            ("    if got != opset:\n", "    if False:\n")],
           ["tests/export/test_export_options.py::test_opset_asked_is_the_opset_written"],
           "--opset 17 writes an opset-18 model and the manifest says 17"),
    Mutant("export_task_head_not_checked", "yoso_deploy/modeling/model.py",
           [("    if require_head and missing and task != \"base\":", "    if False:")],
           ["tests/export/test_export_options.py::test_task_whose_head_the_checkpoint_lacks_is_refused"],
           "a task whose head the checkpoint lacks is exported with a random head"),
    Mutant("export_failed_check_not_marked", "yoso_deploy/validation/report.py",
           [('    return {"status": "passed" if report.passed else "failed", **extra,',
             '    return {"status": "passed", **extra,')],
           ["tests/export/test_export_options.py::test_failed_check_marks_the_manifest"],
           "an export whose post-export check failed looks like a good one to run/qa/bench/validate"),
]


# ------------------------------------------------------------------------------------------------


def cpu_has_avx512() -> bool:
    """AVX-512 F and BW (what the library's AVX-512 kernels need), with AVX2+FMA."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return {"avx2", "fma", "avx512f", "avx512bw"} <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def cpu_has_avx2_fma() -> bool:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return {"avx2", "fma"} <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


class MutantError(Exception):
    """A mutant that cannot be evaluated (no longer applies, does not build, its tests cannot run)."""


def source_files(root: Path) -> list[str]:
    r = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"mutants: 'git ls-files' failed in {root} (a git checkout is needed): {r.stderr.strip()}")
    return sorted({f for f in r.stdout.split("\0") if f and (root / f).is_file()})


def copy_tree(root: Path, dest: Path) -> None:
    for rel in source_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def check_applies(m: Mutant, text: str) -> None:
    for old, _ in m.edits:
        n = text.count(old)
        if n != 1:
            raise MutantError(f"{m.name}: {old!r} occurs {n} times in {m.file} (must be exactly once): update the mutant")


def mutate(m: Mutant, text: str) -> str:
    check_applies(m, text)
    for old, new in m.edits:
        text = text.replace(old, new, 1)
    return text


def run(cmd, cwd=None, env=None, timeout=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def child_cpu_seconds() -> float:
    """User + system CPU time of the finished child processes (compiler, pytest), a load-independent cost."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Builder:
    """One CMake build tree of the copy's libyoso_ort.so, rebuilt incrementally per native mutant."""

    def __init__(self, src: Path, build: Path, jobs: str):
        self.src, self.build, self.jobs = src, build, jobs
        self.lib = build / "plugins" / "libyoso_ort.so"

    def configure(self) -> None:
        cmake = shutil.which("cmake")
        if cmake is None:
            raise SystemExit("mutants: cmake is required to build libyoso_ort.so (README: CMake >= 3.18)")
        args = [cmake, "-S", self.src, "-B", self.build, "-DCMAKE_BUILD_TYPE=Release", "-DYOSO_BUILD_CUDA=OFF",
                "-DYOSO_BUILD_TRT=OFF"]
        if shutil.which("ccache"):
            args.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
        r = run(args, timeout=900)
        if r.returncode != 0:
            raise SystemExit(f"mutants: cmake configure of the copy failed:\n{(r.stdout + r.stderr)[-4000:]}")

    def build_lib(self) -> tuple[bool, str]:
        r = run([shutil.which("cmake"), "--build", self.build, "-j", self.jobs, "--target", "yoso_ort"], timeout=900)
        return r.returncode == 0, (r.stdout + r.stderr)[-4000:]


FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def run_tests(m: Mutant, src: Path, lib: Path, timeout: int) -> tuple[str, str, str]:
    """Runs the mutant's tests in the copy -> (status, detail, output tail)."""
    env = dict(os.environ)
    for k in ("YOSO_KERNEL_REPORT", "YOSO_FORCE_SCALAR", "YOSO_CPU_ISA", "PYTEST_ADDOPTS"):
        env.pop(k, None)
    env.update(PYTHONPATH=str(src), YOSO_ORT_LIBRARY=str(lib), PYTHONDONTWRITEBYTECODE="1", **m.env)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *m.tests]
    try:
        r = run(cmd, cwd=src, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "killed", f"timeout after {timeout}s", out[-3000:]
    out = r.stdout + r.stderr
    if r.returncode < 0:
        return "killed", f"crash ({signal.Signals(-r.returncode).name})", out[-3000:]
    if r.returncode == 0:
        return "survived", "all targeted tests passed", out[-3000:]
    if r.returncode == 1:
        first = FAILED.search(out)
        return "killed", first.group(1) if first else "tests failed", out[-3000:]
    what = {2: "interrupted (collection error?)", 3: "pytest internal error", 4: "pytest usage error",
            5: "no tests collected"}.get(r.returncode, f"exit {r.returncode}")
    # A crash inside pytest's worker (abort) also shows up as a signal exit of python itself.
    if r.returncode in (134, 139) or "Fatal Python error" in out:
        return "killed", f"crash (exit {r.returncode})", out[-3000:]
    raise MutantError(f"{m.name}: the targeted tests could not run: {what}\n{out[-3000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--check", action="store_true", help="only check that every mutant applies to this tree")
    ap.add_argument("--baseline", action="store_true", help="first run all targeted tests on the unmutated copy")
    ap.add_argument("--jobs", default=os.environ.get("YOSO_JOBS", "2"), help="parallel compile jobs (default 2)")
    ap.add_argument("--json", type=Path, help="write the results to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = ap.parse_args(argv)

    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "duplicate mutant names"
    selected = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            ap.error(f"unknown mutants: {', '.join(unknown)} (see --list)")
        selected = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in selected:
            print(f"{m.name:40s} {m.file:36s} {' '.join(m.tests)}\n{'':40s} {m.why}")
        return 0
    errors = []
    for m in selected:
        try:
            check_applies(m, (ROOT / m.file).read_text())
        except (MutantError, FileNotFoundError) as e:
            errors.append(str(e))
    if errors:
        print("mutants: " + "\nmutants: ".join(errors), file=sys.stderr)
        return 2
    if args.check:
        print(f"mutants: all {len(selected)} mutants apply to {ROOT}")
        return 0

    t_start = time.perf_counter()
    has_avx2, has_avx512 = cpu_has_avx2_fma(), cpu_has_avx512()
    tmp = Path(tempfile.mkdtemp(prefix="yoso-mutants-"))
    src, build = tmp / "src", tmp / "build"
    results = []
    try:
        copy_tree(ROOT, src)
        builder = Builder(src, build, args.jobs)
        t0 = time.perf_counter()
        builder.configure()
        ok, log = builder.build_lib()
        if not ok:
            raise SystemExit(f"mutants: the unmutated copy does not build:\n{log}")
        base_lib = tmp / "baseline" / "libyoso_ort.so"
        base_lib.parent.mkdir()
        for f in builder.lib.parent.glob("yoso_ort_build.json"):
            shutil.copy2(f, base_lib.parent / f.name)
        shutil.copy2(builder.lib, base_lib)
        print(f"mutants: copy {src}, library built in {time.perf_counter() - t0:.1f}s", flush=True)

        if args.baseline:
            t0 = time.perf_counter()
            seen, failed = set(), []
            for m in selected:
                key = (tuple(m.tests), tuple(sorted(m.env.items())))
                if key in seen:
                    continue
                seen.add(key)
                status, detail, out = run_tests(m, src, base_lib, m.timeout)
                if status != "survived":
                    failed.append(f"{' '.join(m.tests)}: {detail}\n{out[-1500:]}")
            print(f"mutants: baseline ({len(seen)} test selections) in {time.perf_counter() - t0:.1f}s", flush=True)
            if failed:
                print("mutants: the targeted tests fail WITHOUT a mutant:\n" + "\n".join(failed), file=sys.stderr)
                return 2

        for m in selected:
            t0, c0 = time.perf_counter(), child_cpu_seconds()
            row = {"name": m.name, "file": m.file, "tests": " ".join(m.tests), "why": m.why}
            if (m.requires == "avx2" and not has_avx2) or (m.requires == "avx512" and not has_avx512):
                row.update(status="skipped", detail=f"this CPU has no {m.requires.upper()}: the mutant is equivalent "
                           "here", seconds=0.0, cpu_seconds=0.0)
                results.append(row)
                print(f"mutants: SKIPPED  {m.name}: {row['detail']}", flush=True)
                continue
            path = src / m.file
            original = path.read_text()
            try:
                path.write_text(mutate(m, original))
                lib = base_lib
                if m.native:
                    ok, log = builder.build_lib()
                    if not ok:
                        raise MutantError(f"{m.name}: the mutated library does not build:\n{log}")
                    lib = builder.lib
                t_tests = time.perf_counter()
                status, detail, out = run_tests(m, src, lib, m.timeout)
                row["test_seconds"] = round(time.perf_counter() - t_tests, 1)
            except MutantError as e:
                status, detail, out = "error", str(e).splitlines()[0], str(e)
            finally:
                path.write_text(original)
            row.update(status=status, detail=detail, seconds=round(time.perf_counter() - t0, 1),
                       cpu_seconds=round(child_cpu_seconds() - c0, 1))
            results.append(row)
            print(f"mutants: {status.upper():8s} {m.name} ({row['seconds']:.1f}s, {row['cpu_seconds']:.1f}s CPU): {detail}",
                  flush=True)
            if status in ("survived", "error"):
                print("    " + out[-2500:].replace("\n", "\n    "), flush=True)
    finally:
        if args.keep:
            print(f"mutants: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    total = time.perf_counter() - t_start
    print("\n| mutant | file | targeted tests | result | seconds | CPU s |\n|---|---|---|---|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['file']} | {r['tests']} | {r['status']}: {r['detail']} | {r['seconds']:.1f} "
              f"| {r['cpu_seconds']:.1f} |")
    counts = {s: sum(r["status"] == s for r in results) for s in ("killed", "survived", "skipped", "error")}
    print(f"\nmutants: {counts['killed']} killed, {counts['survived']} survived, {counts['skipped']} skipped, "
          f"{counts['error']} errors, of {len(results)}; {total:.0f}s in all, {child_cpu_seconds():.0f}s CPU")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "seconds": round(total, 1), **counts}, indent=2))
    if counts["error"]:
        return 2
    return 1 if counts["survived"] else 0


if __name__ == "__main__":
    sys.exit(main())
