"""Ray on one machine, bound to loopback: what ``serve --engine ray`` and ``batch --ray`` start (light: Ray is
only touched if it is already imported)."""

from __future__ import annotations

import os
import sys


def loopback_only_env() -> None:
    """Make a Ray cluster started from this process bind its own servers to 127.0.0.1 only.

    Ray maps a loopback node address to the machine's outward IP and then listens there, unless it is told
    it runs a single-machine cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes the node address
    127.0.0.1 and Ray's gRPC servers listen on it alone; tested). Must run before ``ray.init``; Ray reads
    the variable when it is imported, so the already-imported constant is set too."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        constants.ENABLE_RAY_CLUSTER = False
