"""Helpers of the serving tests (the cluster and HTTP helpers live in support.servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.servers import free_port, ray_cluster, ray_environment, ray_sockets_on_loopback, request, wait_ready  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[2]


def require_ray_serve():
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as e:
        pytest.skip(f"Ray Serve is not installed ({e}); install the extra: pip install 'yoso-deploy[serve]'")
