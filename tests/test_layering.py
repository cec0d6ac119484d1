"""Layers point one way: the runtime (and the small modules it needs: task registry, manifest, specs) imports
neither torch nor transformers nor onnx/onnxscript/polygraphy -- checked in fresh interpreters running every
task's pipeline and the CLI's run/qa -- and every module imports on its own (no import cycles)."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import yoso_deploy

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "onnx", "onnxscript", "polygraphy")
LIGHT_MODULES = ["yoso_deploy", "yoso_deploy.tasks", "yoso_deploy.manifest", "yoso_deploy.iospec", "yoso_deploy._native",
                 "yoso_deploy._extras", "yoso_deploy._text", "yoso_deploy._report", "yoso_deploy.bench", "yoso_deploy.cli", "yoso_deploy.export",
                 "yoso_deploy.export.spec", "yoso_deploy.int8_parity"]
LIGHT_MODULES += [m.name for m in pkgutil.iter_modules([str(REPO / "yoso_deploy" / "runtime")], "yoso_deploy.runtime.")]
LIGHT_MODULES += ["yoso_deploy.runtime"]
# serving sits on the runtime: Ray Serve / Ray Data / tritonclient, never torch or transformers
LIGHT_MODULES += [m.name for m in pkgutil.iter_modules([str(REPO / "yoso_deploy" / "serving")], "yoso_deploy.serving.")]
LIGHT_MODULES += ["yoso_deploy.serving", "yoso_deploy.triton_repo", "yoso_deploy.batch", "yoso_deploy.cli_serving"]

PROBE = """
import atexit, json, sys
def _report():
    heavy = sorted({m.split('.')[0] for m in sys.modules} & set(%r))
    sys.stderr.write('\\nHEAVY=' + json.dumps(heavy) + '\\n')
atexit.register(_report)
"""


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE % (HEAVY,) + code], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


def _heavy(r: subprocess.CompletedProcess) -> list[str]:
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("HEAVY=")]
    assert line, r.stderr[-3000:]
    return json.loads(line[-1][len("HEAVY="):])


CALLS = {
    "qa": "p(question='Where did Ada move?', context='Ada moved to Oslo in 1999.', handle_impossible_answer=True)",
    "sequence-classification": "p(['a fine day', 'another'], text_pair='pair', top_k=None)",
    "token-classification": "[p('Ada Lovelace lives in London', aggregation_strategy=a) for a in "
                            "('none', 'simple', 'first', 'average', 'max')]",
    "mlm": "p(['Ada moved to [MASK].', 'Ada [MASK] to [MASK].'], targets=['oslo', 'lima'])",
    "base": "[p('some text', pooling=x, normalize=True) for x in ('mean', 'cls', 'none')]",
    "multiple-choice": "p('Ada moved to', ['Oslo.', 'Lima.', 'Accra.'])",
}


@pytest.mark.parametrize("task", sorted(CALLS))
def test_every_pipeline_runs_without_torch(task_exports, task):
    code = (f"from yoso_deploy.runtime import pipeline\np = pipeline({str(task_exports[task])!r})\n"
            f"res = {CALLS[task]}\nprint('RESULT', type(res).__name__)\n")
    r = _python(code)
    assert r.returncode == 0 and "RESULT" in r.stdout, r.stderr[-3000:]
    assert _heavy(r) == [], f"{task} pipeline imported {_heavy(r)}"


def test_cli_run_qa_and_missing_extra_without_torch(task_exports):
    cli = "from yoso_deploy.cli import main\nmain(%r)\n"
    qa = ["qa", "--model", str(task_exports["qa"]), "--question", "Where did Ada move?", "--context", "Ada moved to Oslo."]
    run = ["run", "--model", str(task_exports["token-classification"]), "--text", "Ada lives in London",
           "--aggregation", "simple"]
    raw = ["run", "--model", str(task_exports["mlm"]), "--input", '{"input_ids": [[0, 5, 4, 2]]}']
    for args in (qa, run, raw):
        r = _python(cli % (args,))
        assert r.returncode == 0, r.stderr[-3000:]
        assert _heavy(r) == [], f"{args[0]} imported {_heavy(r)}"
    # The same process, with torch made unimportable, names the extra to install for export.
    block = "import sys\nsys.modules['torch'] = None\n"
    r = _python(block + cli % (["export", "--output", "/tmp/never-written"],))
    assert r.returncode == 1 and "pip install 'yoso-deploy[export]'" in r.stderr, r.stderr[-3000:]
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1


def _module_names() -> list[str]:
    names = ["yoso_deploy"]
    for m in pkgutil.walk_packages(yoso_deploy.__path__, "yoso_deploy."):
        names.append(m.name)
    return names


FORK_IMPORTS = """
import importlib, json, os, sys, traceback
names, libs, path = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
sys.path[:0] = path
# Third-party libraries load once in the parent; each child imports one yoso_deploy module into a fresh
# set of yoso_deploy modules (none is loaded in the parent), so import cycles show exactly as in a new
# interpreter, for the price of a fork.
for lib in libs:
    importlib.import_module(lib)
assert not [m for m in sys.modules if m.startswith("yoso_deploy")]
failed = {}
for name in names:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().strip().splitlines()[-1].encode())
            code = 1
        os._exit(code)
    os.close(w)
    msg = os.read(r, 65536).decode()
    os.close(r)
    if os.waitpid(pid, 0)[1] != 0:
        failed[name] = msg
print(json.dumps(failed))
"""


def test_every_module_imports_alone():
    names = _module_names()
    assert {"yoso_deploy.parity", "yoso_deploy.runtime.models", "yoso_deploy.tasks", "yoso_deploy.hf"} <= set(names)
    libs = ["numpy", "onnxruntime", "tokenizers", "click", "torch", "torch.onnx", "transformers", "onnx", "onnxscript",
            "polygraphy", "transformers.models.yoso.modeling_yoso", "transformers.modeling_outputs"]
    r = subprocess.run([sys.executable, "-c", FORK_IMPORTS, json.dumps(names), json.dumps(libs)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    failed = json.loads(r.stdout.strip().splitlines()[-1])
    assert failed == {}, failed


def test_import_cycle_would_be_caught(tmp_path):
    """The check above fails on a real cycle: two modules importing names from each other."""
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("from .a import A\nB = 2\n")
    r = subprocess.run([sys.executable, "-c", FORK_IMPORTS, json.dumps(["cyc.a", "cyc"]), "[]", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    failed = json.loads(r.stdout.strip().splitlines()[-1])
    assert list(failed) == ["cyc.a"] and "ImportError" in failed["cyc.a"], r.stdout + r.stderr


def test_light_modules_never_import_heavy_ones():
    """Static: no import of torch/transformers/onnx/onnxscript/polygraphy anywhere in the light modules'
    source, lazy imports inside functions included (the subprocess tests cover the paths they run)."""
    offenders = []
    for name in LIGHT_MODULES:
        if name in ("yoso_deploy.bench", "yoso_deploy.cli"):  # commands on top: heavy imports only in their branches
            continue
        rel = name.replace(".", "/")
        path = REPO / (rel + ".py") if (REPO / (rel + ".py")).is_file() else REPO / rel / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            offenders += [f"{name}:{node.lineno} {m}" for m in mods if m.split(".")[0] in HEAVY]
    assert not offenders, offenders
    for name in LIGHT_MODULES:
        r = _python(f"import {name}\n")
        assert r.returncode == 0 and _heavy(r) == [], (name, _heavy(r), r.stderr[-2000:])
