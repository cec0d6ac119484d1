"""Fixtures every stage shares. Nothing here imports torch: a stage's tests import what they need, so the
runtime, serving and CLI tests run where only the runtime is installed.

Tests by stage live in ``tests/<stage>/`` (mirroring ``yoso_deploy/``), helpers in ``tests/support/``. Markers
(pyproject.toml): ``slow`` (left out of the fast tier ``pytest -m "not slow"``), ``gpu``, ``trt``, ``ray``,
``native`` (builds or runs the C++ libraries directly).
"""

import pytest


@pytest.fixture
def config():
    from support.checkpoints import small_config

    return small_config()


@pytest.fixture(scope="session")
def yoso4096_export(tmp_path_factory):
    """A 2-layer yoso-4096-sized QA checkpoint (random weights) and its LSH export (no post-export check)."""
    from support.checkpoints import yoso4096_qa_export

    return yoso4096_qa_export(tmp_path_factory.mktemp("yoso4096"))


@pytest.fixture(scope="session")
def task_exports(tmp_path_factory):
    """Every task: a tiny checkpoint and its export (no parity check: tests/export covers it)."""
    from support.checkpoints import task_exports

    return task_exports(tmp_path_factory.mktemp("task-exports"))
