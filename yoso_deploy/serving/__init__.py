"""Serving exported YOSO models: HTTP with the Open Inference Protocol, Ray Serve, batch, Triton.

    yoso-deploy serve --model out/qa --replicas 2           # the command line
    serve run yoso_deploy.serving:build_app model=out/qa    # Ray Serve's own CLI / config files

* :mod:`.protocol` -- Open Inference Protocol (KServe v2) requests and responses, JSON and binary tensors;
* :mod:`.batching` -- dynamic batching: pad to the batch's longest sequence, run, split, trim;
* :mod:`.server` -- the HTTP endpoints of one model over the runtime model and pipelines (no Ray);
* :mod:`.deployment` -- the Ray Serve deployment (``@serve.batch``) and :func:`build_app`;
* :mod:`.launch` -- ``yoso-deploy serve``: start or join Ray, run, shut down cleanly;
* :mod:`.batch` -- ``yoso-deploy batch``: a JSONL corpus through a pipeline, locally or on Ray Data;
* :mod:`.triton_repo` -- ``yoso-deploy triton-repo``: a Triton Inference Server model repository.

May import: the shared modules, :mod:`yoso_deploy.runtime` and :mod:`yoso_deploy.backends` (the TensorRT
library's path); Ray and starlette lazily -- never torch or transformers. ``build_app`` loads Ray lazily.
"""

from __future__ import annotations


def build_app(args: dict | None = None, **kwargs):
    """The Ray Serve application of an export (see :func:`yoso_deploy.serving.deployment.build_app`)."""
    from ..errors import require

    require("ray.serve", "serving")
    from .deployment import build_app as _build

    return _build(args, **kwargs)


__all__ = ["build_app"]
