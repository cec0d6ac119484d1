"""Layers point one way, read from the source and proven in fresh interpreters.

* The import graph (tests/support/import_graph.py: ``ast``, nothing imported; imports inside functions,
  ``importlib.import_module``, ``require`` and the packages' lazy tables included) has no cycle between modules
  or between stages, and every edge between stages is one the layering allows:
  modeling -> export -> validation / quantization / optimization; runtime <- backends <- serving; the CLI on top.
* What runtime, backends, serving and quantization can load -- imports in functions included -- and what the
  CLI loads at start-up never reaches torch, transformers or onnxscript.
* Every task's pipeline and the CLI's run/qa run in fresh interpreters without importing them; every module
  imports on its own.
"""

import ast  # noqa: F401 - the graph is read with ast (support.import_graph)
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import import_graph as ig

import yoso_deploy

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "onnx", "onnxscript", "polygraphy")
FORBIDDEN = ("torch", "transformers", "onnxscript")  # what the torch-free layers must never reach

# stage -> the stages its modules may import (the shared modules at the top are the stage "core")
ALLOWED = {
    "core": set(),
    "modeling": {"core"},
    "export": {"core", "modeling"},
    "runtime": {"core"},
    "backends": {"core", "runtime"},
    "validation": {"core", "modeling", "export", "runtime", "backends"},
    "quantization": {"core", "runtime", "export", "validation"},
    "optimization": {"core", "runtime", "export"},
    "serving": {"core", "runtime", "backends"},
    "bench": {"core", "runtime", "backends", "validation", "modeling"},
    "hf": {"core", "runtime"},
    "workflow": {"core", "export", "validation", "quantization", "optimization"},
    "cli": {"core", "export", "validation", "quantization", "optimization", "runtime", "backends", "serving", "bench",
            "workflow"},
}
TORCH_FREE_STAGES = ("runtime", "backends", "serving", "quantization", "optimization")


@pytest.fixture(scope="module")
def graph():
    return ig.build()


def _stage_violations(g) -> list[str]:
    out = []
    for e in g.edges:
        if e.target in g.modules:
            a, b = ig.stage(e.source), ig.stage(e.target)
            if a != b and b not in ALLOWED[a]:
                out.append(f"{e.source}:{e.lineno} imports {e.target} ({a} -> {b})")
    return out


def _stage_cycles(g) -> list[str]:
    sg = g.stage_graph()
    out = []
    for a, targets in sg.items():
        for b in targets:
            seen, todo = set(), [b]
            while todo:
                x = todo.pop()
                if x == a:
                    out.append(f"{a} -> {b} -> ... -> {a}")
                    break
                if x not in seen:
                    seen.add(x)
                    todo.extend(sg.get(x, ()))
    return out


def test_no_import_cycle_between_modules_or_stages(graph):
    assert len(graph.modules) > 50 and len(graph.edges) > 200  # the whole package was read
    assert graph.cycles() == []
    assert _stage_cycles(graph) == []


def test_every_edge_between_stages_is_allowed(graph):
    assert set(ig.stage(m) for m in graph.modules) == set(ALLOWED)  # every stage is named above
    assert _stage_violations(graph) == []


def test_the_shared_modules_stand_at_the_bottom(graph):
    internal = graph.internal(tables=True)
    assert internal["yoso_deploy.errors"] == set() and internal["yoso_deploy.constants"] == set()
    assert graph.external("yoso_deploy.constants") <= {"__future__"}
    assert graph.external("yoso_deploy.errors") <= {"__future__", "importlib"}


@pytest.mark.parametrize("stage", TORCH_FREE_STAGES)
def test_torch_free_layers_never_reach_torch(graph, stage):
    """Everything these stages can load, imports inside functions included, stays away from torch."""
    for module in (m for m in graph.modules if ig.stage(m) == stage):
        reach = graph.third_party_closure(module)
        bad = {lib: " -> ".join(chain) for lib, chain in reach.items() if lib in FORBIDDEN}
        assert bad == {}, f"{module} can import {bad}"


def test_cli_start_up_never_reaches_torch(graph):
    reach = graph.third_party_closure("yoso_deploy.cli", eager_only=True)
    bad = {lib: " -> ".join(chain) for lib, chain in reach.items() if lib in FORBIDDEN + ("onnx", "onnxruntime")}
    assert bad == {}, bad


def test_the_checks_fail_on_a_broken_house(tmp_path):
    """The graph checks see a cycle through a lazy import, a runtime module reaching torch through a function-level
    import of the exporter, and an import that runs back up a layer."""
    pkg = tmp_path / "yoso_deploy"
    for d in ("runtime", "export", "modeling"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "modeling" / "model.py").write_text("import torch\n")
    (pkg / "export" / "exporter.py").write_text("from ..modeling import model\n")
    (pkg / "runtime" / "models.py").write_text("def f():\n    from ..export import exporter\n")
    (pkg / "runtime" / "a.py").write_text("import importlib\nX = 1\ndef g():\n    importlib.import_module('.b', __package__)\n")
    (pkg / "runtime" / "b.py").write_text("from .a import X\n")
    g = ig.build(pkg)
    assert ["yoso_deploy.runtime.a", "yoso_deploy.runtime.b"] in g.cycles()
    assert "torch" in g.third_party_closure("yoso_deploy.runtime.models")
    assert "torch" not in g.third_party_closure("yoso_deploy.runtime.models", eager_only=True)
    assert any("runtime -> export" in v for v in _stage_violations(g))
    assert _stage_violations(ig.build()) == []  # the real house, for contrast


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
    cli = "from yoso_deploy.cli.main import main\nmain(%r)\n"
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
    assert r.returncode == 2 and "pip install 'yoso-deploy[export]'" in r.stderr, r.stderr[-3000:]
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1


def _module_names() -> list[str]:
    names = ["yoso_deploy"]
    for m in pkgutil.walk_packages(yoso_deploy.__path__, "yoso_deploy."):
        if not m.name.endswith(".__main__"):  # runs the command line when imported
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
    assert {"yoso_deploy.validation.parity", "yoso_deploy.runtime.models", "yoso_deploy.tasks", "yoso_deploy.hf"} <= set(names)
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
