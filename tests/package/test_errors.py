"""One error family: every exception class yoso-deploy defines derives from YosoDeployError, and the command
line turns one into a single ``error:`` line (exit 2), a failed check into ``FAILED:`` (exit 1), and anything
else -- a bug -- into its traceback."""

import importlib
import inspect
import pickle
import pkgutil

import click
import pytest
from click.testing import CliRunner

import yoso_deploy
from yoso_deploy import errors
from yoso_deploy.cli.main import YosoGroup


def _exception_classes(package) -> dict[str, type]:
    """Every exception class defined in the package's modules (imported one by one), by qualified name."""
    found = {}
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith(".__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def _outside_the_family(classes: dict[str, type]) -> list[str]:
    return sorted(name for name, cls in classes.items() if not issubclass(cls, errors.YosoDeployError))


def test_every_exception_class_is_a_yoso_deploy_error():
    classes = _exception_classes(yoso_deploy)
    assert len(classes) >= 30, sorted(classes)  # the walk reached every stage
    assert _outside_the_family(classes) == []


def test_the_walk_finds_a_class_outside_the_family(tmp_path, monkeypatch):
    """Control: a module defining an exception that does not derive from YosoDeployError is reported."""
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("from yoso_deploy.errors import UsageError\n"
                                        "class Good(UsageError): pass\nclass Stray(ValueError): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakepkg

    assert _outside_the_family(_exception_classes(fakepkg)) == ["fakepkg.sub.mod.Stray"]


def test_kinds_are_also_the_builtin_a_caller_expects():
    assert issubclass(errors.UsageError, ValueError) and issubclass(errors.NotFoundError, FileNotFoundError)
    assert issubclass(errors.MissingExtraError, ImportError) and issubclass(errors.OptionError, TypeError)
    e = errors.NotFoundError("no model.onnx in 'x'", fix="run 'yoso-deploy export --output x'")
    assert str(e) == "no model.onnx in 'x' — run 'yoso-deploy export --output x'"
    assert (e.what, e.fix) == ("no model.onnx in 'x'", "run 'yoso-deploy export --output x'")
    back = pickle.loads(pickle.dumps(e))  # Ray and multiprocessing carry errors between processes
    assert type(back) is errors.NotFoundError and str(back) == str(e) and back.fix == e.fix


def _group(exc: BaseException):
    @click.group(cls=YosoGroup)
    @click.option("--debug", is_flag=True)
    @click.pass_context
    def cli(ctx, debug):
        ctx.ensure_object(dict)["debug"] = debug

    @cli.command()
    def boom():
        raise exc

    return cli


@pytest.mark.parametrize("exc,code,line", [
    (errors.UsageError("--top-k 0 is not >= 1", fix="pass --top-k 1 or more"), 2,
     "error: --top-k 0 is not >= 1 — pass --top-k 1 or more"),
    (errors.CheckFailedError("validation FAILED for ort-cpu:layer 0 query"), 1,
     "FAILED: validation FAILED for ort-cpu:layer 0 query"),
    (ImportError("No module named 'torch'", name="torch"), 2,
     "error: 'yoso-deploy boom' needs torch, which is not installed; install the extra: pip install 'yoso-deploy[export]'"),
])
def test_the_cli_boundary(exc, code, line):
    r = CliRunner().invoke(_group(exc), ["boom"])
    assert r.exit_code == code and r.output.strip() == line, r.output
    d = CliRunner().invoke(_group(exc), ["--debug", "boom"])  # --debug: the exception itself
    assert d.exception is exc


def test_anything_else_is_a_bug_with_its_traceback():
    exc = KeyError("internal")
    r = CliRunner().invoke(_group(exc), ["boom"])
    assert r.exit_code == 1 and r.exception is exc and "error:" not in r.output
