"""Environments of other processes: virtual environments of other stacks, built once and cached under
``build/venvs`` (git-ignored) -- Optimum's, which pins transformers 4.57 and cannot share the project's venv
(transformers 5) -- and this venv with torch, transformers and onnxscript made unimportable."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import REPO

# optimum-onnx 0.1.0 pins transformers 4.57; torch 2.13.0 is the CPU build on this machine's disk (without the pin
# pip picks a CUDA build of several GB); sentencepiece: transformers 4's slow SentencePiece tokenizers.
OPTIMUM_REQUIREMENTS = ("optimum-onnx[onnxruntime]==0.1.0", "torch==2.13.0", "sentencepiece>=0.2")


def cached_venv(name: str, requirements, timeout: int = 900) -> Path:
    """The python of a venv holding ``requirements``, under ``build/venvs/<name>-<hash>``; built when missing
    (a stamp file marks a finished install, so an interrupted one is rebuilt)."""
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    root = REPO / "build" / "venvs" / f"{name}-{key}"
    python = root / "bin" / "python"
    stamp = root / ".installed"
    if stamp.is_file() and python.is_file():
        return python
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} into {root} failed:\n{r.stderr[-3000:]}")
    stamp.write_text("\n".join(requirements) + "\n")
    return python


def source_env() -> dict:
    """Environment for running this source tree's yoso_deploy from another venv (runtime parts only): the repo on
    PYTHONPATH and the custom-op library of the project's venv."""
    import yoso_deploy

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(REPO)
    env["YOSO_ORT_LIBRARY"] = str(yoso_deploy.ort_library_path())
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


BLOCKED = ("torch", "transformers", "onnxscript")


def blocked_env(shadow: Path, blocked=BLOCKED) -> dict:
    """An environment in which ``blocked`` cannot be imported (a directory on PYTHONPATH shadows each with a module
    that raises ImportError) and this source tree's yoso_deploy is imported; checked before it is returned."""
    for name in blocked:
        (shadow / name).mkdir(parents=True, exist_ok=True)
        (shadow / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked in this test: the command must not need it', name='{name}')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST"))}
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), str(REPO)])  # Ray's workers inherit it too
    env["RAY_ADDRESS"] = "127.0.0.1:1"  # never join a cluster found on the machine
    check = subprocess.run([sys.executable, "-c", f"import {blocked[0]}"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "blocked in this test" in check.stderr  # the shadow works
    return env
