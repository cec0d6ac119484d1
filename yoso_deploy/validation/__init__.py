"""Does an export compute what the PyTorch reference computes? Parity, ``validate``, int8 criteria, reports.

Owns:

* :mod:`.parity` -- the tie-aware comparison (plugins/OPS.md section 5): hash codes may differ only in near-tie
  bits; with the backend's codes injected, every layer tensor, hidden state and output within tolerance;
* :mod:`.post_export` -- the check every export gets (ONNX Runtime against the reference, recorded in the manifest);
* :mod:`.validate` -- ``yoso-deploy validate``: every available backend through polygraphy;
* :mod:`.backends` -- which backends can run here, and their polygraphy runners;
* :mod:`.int8_criteria` and :mod:`.int8` -- how an int8 export is judged (torch-free criteria; the comparison);
* :mod:`.report` -- what every check report shares, and plain-text tables.

May import: the shared modules, :mod:`yoso_deploy.modeling` (the reference), :mod:`yoso_deploy.export`
(probes, the export wrapper), :mod:`yoso_deploy.runtime` and :mod:`yoso_deploy.backends`. Nothing here is
imported by the package itself: import the module you need (``from yoso_deploy.validation.validate import
compare``), so that the torch-free parts (:mod:`.int8_criteria`, :mod:`.report`) stay light.
"""
