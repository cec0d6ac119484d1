"""Helpers of the test suite (never shipped in the wheel): checkpoints, servers, native builds, the import graph.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so tests and scripts write
``from support.checkpoints import small_config``.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
