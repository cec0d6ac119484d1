"""Serving exported YOSO models: HTTP with the Open Inference Protocol (asgi or Ray Serve), batch, Triton.

    yoso-deploy serve --model out/qa                        # uvicorn, no Ray (the [serve] extra)
    yoso-deploy serve --model out/qa --engine ray --replicas 2
    serve run yoso_deploy.serving:build_app model=out/qa    # Ray Serve's own CLI / config files ([ray])

* :mod:`.protocol` -- Open Inference Protocol (KServe v2) requests and responses, JSON and binary tensors;
* :mod:`.batching` -- dynamic batching: pad to the batch's longest sequence, run, split, trim;
* :mod:`.server` -- the HTTP endpoints of one model over the runtime model and pipelines (no framework);
* :mod:`.config` -- what ``serve`` is told, every client-controlled size bounded, for both engines;
* :mod:`.asgi` -- the default engine: the server behind uvicorn, limits enforced while reading;
* :mod:`.deployment` -- the Ray Serve deployment (``@serve.batch``) and :func:`build_app`;
* :mod:`.launch` -- ``yoso-deploy serve``: check the export, start the engine, shut down cleanly;
* :mod:`.ray_env` -- Ray bound to loopback;
* :mod:`.batch` -- ``yoso-deploy batch``: a JSONL corpus through a pipeline, locally or on Ray Data;
* :mod:`.triton_repo` -- ``yoso-deploy triton-repo``: a Triton Inference Server model repository.

May import: the shared modules, :mod:`yoso_deploy.runtime` and :mod:`yoso_deploy.backends` (the TensorRT
library's path); Ray and starlette lazily -- never torch or transformers. ``build_app`` loads Ray lazily.
"""

from __future__ import annotations


def build_app(args: dict | None = None, **kwargs):
    """The Ray Serve application of an export (see :func:`yoso_deploy.serving.deployment.build_app`)."""
    from ..errors import require

    require("ray.serve", "the Ray Serve application (build_app)")
    from .deployment import build_app as _build

    return _build(args, **kwargs)


__all__ = ["build_app"]
