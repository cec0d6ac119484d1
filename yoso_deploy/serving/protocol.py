"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API): requests and responses (numpy + json).

This module is framework-free: it turns an HTTP body (and its headers) into named numpy arrays and
named arrays back into a body, exactly as Triton and ``tritonclient.http`` expect:

* JSON tensors: ``{"name", "shape", "datatype", "data"}`` with ``data`` flat in row-major order (nested
  lists are accepted and flattened);
* the binary tensor data extension: the request header ``Inference-Header-Content-Length: N`` says the
  first N bytes are the JSON header and the rest are the tensors' raw little-endian bytes, in input order,
  each input carrying ``"parameters": {"binary_data_size": n}``; outputs come back the same way when the
  request asks (``"parameters": {"binary_data": true}`` per output or ``"binary_data_output": true`` for
  all -- what ``tritonclient.http`` sends when no outputs are named);
* errors: ``{"error": "<one line>"}`` with a 4xx status (:class:`ProtocolError`).

Every malformed request is a :class:`ProtocolError` naming the field and the fix; nothing here raises
anything else on bad input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..constants import SERVE_MAX_JSON_DEPTH
from ..errors import UsageError

HEADER_LENGTH = "inference-header-content-length"  # compared lower-case; HTTP header names are case-insensitive

# Open Inference Protocol datatypes <-> numpy (BYTES has no fixed-size numpy type: refused for these models).
DATATYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
DATATYPE_OF = {v: k for k, v in DATATYPES.items()}


def datatype(dtype) -> str:
    """The protocol datatype of a numpy dtype (``int64`` -> ``INT64``)."""
    return DATATYPE_OF[np.dtype(dtype)]


class ProtocolError(UsageError):
    """A request the server refuses: ``status`` (400, 404, 405, 413, ...), a one-line message, and headers the
    response must carry (``Allow`` of a 405)."""

    def __init__(self, message: str, status: int = 400, headers: dict | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.status = status
        self.headers = dict(headers or {})


DEFAULT_MAX_JSON_DEPTH = SERVE_MAX_JSON_DEPTH


def json_depth(value, limit: int) -> int:
    """The nesting depth of a parsed JSON value (a scalar: 0), counted without recursion up to ``limit + 1``."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            depth = max(depth, d)
            if depth > limit:
                return depth
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


def parse_json(data: bytes | str, max_depth: int = DEFAULT_MAX_JSON_DEPTH, what: str = "the request body"):
    """``json.loads`` that refuses, as a :class:`ProtocolError` (400), text that is not UTF-8 JSON and values nested
    deeper than ``max_depth`` (``--max-json-depth``) -- also those deep enough to exhaust Python's recursion."""
    try:
        value = json.loads(data)
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ProtocolError(f"malformed JSON in {what} ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ProtocolError(f"{what} is nested more deeply than this server reads (limit {max_depth})",
                            fix="send flat data, or raise the limit with --max-json-depth") from None
    if json_depth(value, max_depth) > max_depth:
        raise ProtocolError(f"{what} is nested more than {max_depth} levels deep",
                            fix="send flat data, or raise the limit with --max-json-depth")
    return value


@dataclass
class InferRequest:
    inputs: dict  # name -> numpy array, in request order
    outputs: list | None  # requested output names (None: all)
    binary_outputs: set = field(default_factory=set)  # outputs to return as binary data
    id: str | None = None
    parameters: dict = field(default_factory=dict)
    all_binary: bool = False  # "binary_data_output": true -- every output not named otherwise goes as binary

    def binary(self, name: str) -> bool:
        return name in self.binary_outputs or (self.outputs is None and self.all_binary)


def _json_header(body: bytes, headers, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> tuple[dict, bytes]:
    length = None
    for k, v in (headers or {}).items():
        if k.lower() == HEADER_LENGTH:
            length = v
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise ProtocolError(f"header Inference-Header-Content-Length must be an integer, got {length!r}") from None
        if n < 0 or n > len(body):
            raise ProtocolError(f"header Inference-Header-Content-Length is {n} but the body has {len(body)} bytes; "
                                "it must be the size of the JSON header at the start of the body")
        head, rest = body[:n], body[n:]
    else:
        head, rest = body, b""
    if not head.strip():
        if length is not None:
            raise ProtocolError(f"header Inference-Header-Content-Length is {length}, which leaves the JSON header "
                                "empty; it must be the size of the JSON part at the start of the body")
        raise ProtocolError('the request body is empty; send a JSON object {"inputs": [...]}')
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the request is not UTF-8 JSON; binary tensors need the header "
                            "Inference-Header-Content-Length (the size of the JSON part)") from None
    obj = parse_json(head, max_depth)
    if not isinstance(obj, dict):
        raise ProtocolError(f'the request must be a JSON object {{"inputs": [...]}}, got a JSON {type(obj).__name__}')
    return obj, rest


def _shape(value, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise ProtocolError(f"{where}.shape must be a list of integers, got {value!r}")
    if any(d < 0 for d in value):
        raise ProtocolError(f"{where}.shape {value} has a negative dimension; give the tensor's actual shape")
    return value


INT64_MAX = np.iinfo(np.int64).max


def _check_range(arr: np.ndarray, where: str, dt: str) -> None:
    """Integer tensors reach the model as int64: a value no int64 holds (UINT64 above 2^63 - 1) is refused, never
    wrapped."""
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > INT64_MAX:
        raise ProtocolError(f"{where} holds {int(arr.max())}, which the model's int64 input cannot hold",
                            fix=f"send values up to {INT64_MAX} (token ids are small)")


def _flatten_json(data, where: str, dtype: np.dtype) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    try:
        arr = np.asarray(data)
    except ValueError:
        raise ProtocolError(f"{where}.data is ragged (nested lists of different lengths); send it flat, in "
                            "row-major order") from None
    if arr.dtype == object and all(isinstance(x, int) for x in arr.ravel()):  # beyond int64
        big = max(arr.ravel(), key=abs)
        raise ProtocolError(f"{where}.data holds {big}, outside the range of {DATATYPE_OF[dtype]}")
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise ProtocolError(f"{where}.data must hold numbers, got {arr.dtype.kind == 'U' and 'strings' or 'mixed values'}")
    if dtype.kind in "iu" and arr.size and arr.dtype.kind == "f":
        raise ProtocolError(f"{where}.data holds floating-point numbers for datatype {DATATYPE_OF[dtype]}",
                            fix="send integers (e.g. 5, not 5.0)")
    if dtype.kind == "b" and arr.size and arr.dtype.kind not in "b":
        raise ProtocolError(f"{where}.data must be true/false for datatype BOOL")
    if dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise ProtocolError(f"{where}.data holds {int(lo if lo < info.min else hi)}, outside the range of "
                                f"{DATATYPE_OF[dtype]}")
    out = arr.astype(dtype, copy=False).ravel()
    _check_range(out, f"{where}.data", DATATYPE_OF[dtype])
    return out


def parse_infer_request(body: bytes, headers=None, max_elements: int | None = None,
                        max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> InferRequest:
    """An ``InferRequest`` from the body and headers of ``POST /v2/models/{name}/infer``.

    ``max_elements`` bounds the elements of one tensor (a guard against a huge ``shape``); ``max_depth`` the
    nesting of the JSON header."""
    obj, rest = _json_header(body, headers, max_depth)
    raw_inputs = obj.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError('the request needs "inputs": a non-empty list of {"name", "shape", "datatype", "data"}')
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError('"parameters" must be a JSON object')
    inputs: dict = {}
    offset = 0
    for i, t in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(t, dict):
            raise ProtocolError(f"{where} must be an object {{name, shape, datatype, data}}")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"{where}.name is missing; name the model input (e.g. \"input_ids\")")
        where = f"input {name!r}"
        if name in inputs:
            raise ProtocolError(f"{where} is given twice; send each input once")
        shape = _shape(t.get("shape"), where)
        dt = t.get("datatype")
        if dt not in DATATYPES:
            hint = "; string inputs are not supported (send token ids)" if dt == "BYTES" else ""
            raise ProtocolError(f"{where}.datatype {dt!r} is not one of {', '.join(DATATYPES)}{hint}")
        dtype = DATATYPES[dt]
        count = math.prod(shape)
        if max_elements is not None and count > max_elements:
            raise ProtocolError(f"{where} has {count:,} elements, more than this server accepts ({max_elements:,})",
                                status=413, fix="send fewer rows (or serve with a larger --max-batch-size)")
        tparams = t.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise ProtocolError(f"{where}.parameters must be a JSON object")
        size = tparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"{where}.parameters.binary_data_size must be a non-negative integer, got {size!r}")
            if size != count * dtype.itemsize:
                raise ProtocolError(f"{where}: binary_data_size {size} does not match shape {shape} of {dt} "
                                    f"({count * dtype.itemsize} bytes)")
            if offset + size > len(rest):
                raise ProtocolError(f"{where}: the body holds {len(rest) - offset} bytes of binary data after the JSON "
                                    f"header, {size} needed; send every binary input's bytes in input order")
            arr = np.frombuffer(rest, dtype=dtype.newbyteorder("<"), count=count, offset=offset).astype(dtype)
            _check_range(arr, where, dt)
            offset += size
            if "data" in t:
                raise ProtocolError(f"{where} has both binary data and \"data\"; send one")
        else:
            if "data" not in t:
                raise ProtocolError(f"{where} has no \"data\" (and no parameters.binary_data_size); send its values")
            arr = _flatten_json(t["data"], where, dtype)
            if arr.size != count:
                raise ProtocolError(f"{where}.data has {arr.size} values but shape {shape} needs {count}")
        inputs[name] = arr.reshape(shape)
    if offset != len(rest):
        raise ProtocolError(f"the body has {len(rest) - offset} bytes of binary data that no input claims; "
                            "set each binary input's parameters.binary_data_size")
    outputs = None
    binary = set()
    all_binary = params.get("binary_data_output") is True
    raw_outputs = obj.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise ProtocolError('"outputs" must be a list of {"name"} objects')
        outputs = []
        for i, o in enumerate(raw_outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ProtocolError(f"outputs[{i}] must be an object with a \"name\"")
            outputs.append(o["name"])
            op = o.get("parameters") or {}
            if not isinstance(op, dict):
                raise ProtocolError(f"output {o['name']!r}.parameters must be a JSON object")
            if op.get("binary_data", all_binary) is True:
                binary.add(o["name"])
            if op.get("classification"):
                raise ProtocolError(f"output {o['name']!r}: the classification extension is not supported; "
                                    "use the task endpoint POST /v1/<model>/<task> for labels")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError('"id" must be a string')
    return InferRequest(inputs, outputs, binary, rid, params, all_binary)


def encode_infer_response(model_name: str, outputs: dict, binary: set | bool = (), request_id: str | None = None,
                          model_version: str = "1") -> tuple[bytes, dict]:
    """``(body, headers)`` of an infer response; outputs named in ``binary`` (or all, ``binary=True``) go
    as binary data after the JSON header."""
    tensors, blobs = [], []
    for name, arr in outputs.items():
        arr = np.ascontiguousarray(arr)
        t = {"name": name, "datatype": datatype(arr.dtype), "shape": list(arr.shape)}
        if binary is True or name in binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            t["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            t["data"] = arr.ravel().tolist()
        tensors.append(t)
    resp = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request_id is not None:
        resp["id"] = request_id
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream",
                                    "inference-header-content-length": str(len(head))}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def tensor_metadata(specs: list[dict], fixed: dict | None = None) -> list[dict]:
    """Manifest tensor specs -> metadata entries ``{"name", "datatype", "shape"}`` (-1 for dynamic dims,
    ``fixed`` maps symbolic dims with a known size)."""
    fixed = fixed or {}
    out = []
    for t in specs:
        shape = [d if isinstance(d, int) else int(fixed.get(d, -1)) for d in t["dims"]]
        out.append({"name": t["name"], "datatype": datatype(t["dtype"]), "shape": shape})
    return out
