"""The values a parity check observes in an exported graph ("probes"), and a copy that outputs them.

Per encoder layer: both FastHash nodes' input (the padded query/key) and output (the codes), and
LSHCumulation's value input and output; plus every hidden state (the embeddings' output and each
layer's output, as transformers' ``hidden_states``); and the task head's intermediate tensors (the
output of every module of the head -- ``classifier.dense``, ``cls.predictions.transform.LayerNorm`` -- and
the input of every ``Linear`` in it, which is where a functional activation's output shows, e.g. the GELU
between ``classifier.dense`` and ``classifier.out_proj``). :func:`find_probes` locates them by the graph's
structure (the FastHash nodes feeding each LSHCumulation; torch.onnx's module-scope metadata for the
layer outputs and the head's modules); the exporter records them in the model's metadata (``yoso.probes``) before any
rewrite that removes the ``com.yoso`` nodes (``--portable inline``), and :func:`find_probes` reads
that record first. :func:`instrument` returns a copy with every probe as an extra graph output.
Only ``onnx`` is imported here (no torch: :mod:`yoso_deploy.quantization.quantize` uses it).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import asdict, dataclass, field

import onnx

from ..constants import OP_DOMAIN as _OP_DOMAIN
from ..errors import YosoDeployError

PROBES_METADATA_KEY = "yoso.probes"


class ProbeError(YosoDeployError, RuntimeError):
    """The ONNX graph lacks the structure the parity check needs (no FastHash feeding LSHCumulation...)."""


@dataclass
class LayerProbe:
    """The FastHash nodes of one encoder layer: their inputs (x) and outputs (codes), by value name."""

    layer: int
    query_codes: str
    key_codes: str
    query_input: str
    key_input: str
    value: str  # LSHCumulation's value input [B, H, S, d]
    context: str  # LSHCumulation's output [B, H, S, d]


@dataclass
class HeadProbe:
    """One tensor inside the task head: the output (or input) of the reference module ``module``.

    ``module`` is the module's path in the reference model (``classifier.dense``, ``qa_outputs``); ``value``
    the ONNX value that holds the same tensor; ``role`` ``"output"`` or ``"input"`` (the input of a
    ``Linear``: the output of whatever precedes it, e.g. a functional activation that is no module).
    """

    module: str
    value: str
    role: str = "output"

    @property
    def label(self) -> str:
        """How reports name it: ``classifier.dense output``, ``classifier.out_proj input``."""
        return f"{self.module} {self.role}"


@dataclass
class GraphProbes:
    layers: list[LayerProbe]
    hidden_states: list[str]  # value names: embeddings output, then each encoder layer's output (as HF hidden_states)
    hidden_note: str = ""  # why hidden states could not be located, if they could not
    heads: list[HeadProbe] = field(default_factory=list)  # the task head's tensors (empty: none located/recorded)
    head_note: str = ""  # why (some) head tensors are not compared, if so

    def names(self) -> list[str]:
        """The encoder's probed values (codes, layer tensors, hidden states); see :meth:`head_names`."""
        out = []
        for p in self.layers:
            out += [p.query_codes, p.key_codes, p.query_input, p.key_input, p.value, p.context]
        return out + list(self.hidden_states)

    def head_names(self) -> list[str]:
        return [h.value for h in self.heads]


_LAYER_RE = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)$")


def _module_scopes(node) -> list[str]:
    """Module paths of a node from torch.onnx's ``pkg.torch.onnx.name_scopes`` metadata (outermost first)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return []
            return [s for s in scopes[:-1] if isinstance(s, str) and s]  # the last entry is the node's own name
    return []


def record_probes(model: onnx.ModelProto, probes: GraphProbes) -> None:
    """Store ``probes`` in the model's metadata (``yoso.probes``), replacing an earlier record."""
    keep = [p for p in model.metadata_props if p.key != PROBES_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=PROBES_METADATA_KEY, value=json.dumps(
        {"layers": [asdict(p) for p in probes.layers], "hidden_states": probes.hidden_states,
         "hidden_note": probes.hidden_note, "heads": [asdict(h) for h in probes.heads]}))


def _recorded(model: onnx.ModelProto) -> GraphProbes | None:
    for p in model.metadata_props:
        if p.key == PROBES_METADATA_KEY:
            try:
                data = json.loads(p.value)
                probes = GraphProbes([LayerProbe(**layer) for layer in data["layers"]], list(data["hidden_states"]),
                                     data.get("hidden_note", ""))
            except (ValueError, KeyError, TypeError) as e:
                raise ProbeError(f"the model's {PROBES_METADATA_KEY} metadata is corrupt ({e}); re-export it") from e
            values = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
            missing = [n for n in probes.names() if n not in values]
            if missing:
                raise ProbeError(f"the model's {PROBES_METADATA_KEY} metadata names values the graph does not have "
                                 f"({', '.join(missing[:3])}); re-export it")
            if "heads" in data:
                try:
                    heads = [HeadProbe(**h) for h in data["heads"]]
                except TypeError as e:
                    raise ProbeError(f"the model's {PROBES_METADATA_KEY} metadata is corrupt ({e}); re-export it") from e
            else:  # recorded before head probes existed: locate them now (needs the scope metadata)
                heads, probes.head_note = find_head_probes(model)
            # A rewrite after the export (quantization, a graph optimizer) may fuse head nodes away: those
            # tensors are not compared (a note says so); the model's outputs still are.
            gone = [h for h in heads if h.value not in values]
            probes.heads = [h for h in heads if h.value in values]
            if gone:
                probes.head_note = (f"head tensors {', '.join(h.label for h in gone[:3])} are no longer in the graph "
                                    "(rewritten after export)")
            return probes
    return None


def find_probes(model: onnx.ModelProto) -> GraphProbes:
    """Locate every layer's FastHash nodes (by the LSHCumulation they feed) and every layer's output.

    The exporter's record (``yoso.probes`` metadata) is used when present. Otherwise layers are
    ordered by their ``encoder.layer.N`` module scope when the graph has torch.onnx's scope metadata,
    else by graph order. Raises :class:`ProbeError` if an LSHCumulation is not fed by FastHash.
    """
    recorded = _recorded(model)
    if recorded is not None:
        return recorded
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    layers = []
    for pos, n in enumerate(x for x in g.node if x.domain == _OP_DOMAIN and x.op_type == "LSHCumulation"):
        fh = []
        for slot in (0, 1):
            p = producer.get(n.input[slot])
            if p is None or p.op_type != "FastHash" or p.domain != _OP_DOMAIN:
                raise ProbeError(f"LSHCumulation node {n.name!r} input {slot} is not produced by a com.yoso FastHash node")
            fh.append(p)
        index = pos
        for s in _module_scopes(n):
            m = _LAYER_RE.search(s)
            if m:
                index = int(m.group(1))
        layers.append(LayerProbe(index, fh[0].output[0], fh[1].output[0], fh[0].input[0], fh[1].input[0],
                                 n.input[4], n.output[0]))
    layers.sort(key=lambda p: p.layer)

    # Hidden states: the float value each module (embeddings, encoder.layer.N) hands to the rest of the graph.
    order = {id(n): i for i, n in enumerate(g.node)}
    scope_of = {id(n): _module_scopes(n) for n in g.node}
    graph_outputs = {o.name for o in g.output}
    modules: dict[str, list] = {}
    for n in g.node:
        for s in scope_of[id(n)]:
            if s.endswith(".embeddings") or _LAYER_RE.search(s):
                modules.setdefault(s, []).append(n)
    if not modules:
        return GraphProbes(layers, [], "the graph carries no module scopes (pkg.torch.onnx.name_scopes); "
                                       "re-export with this version of yoso-deploy to compare hidden states")
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    types = _value_types(model)

    def module_output(scope: str) -> str | None:
        inside = {id(n) for n in modules.get(scope, [])}
        best = None
        for n in modules.get(scope, []):
            for o in n.output:
                leaves = o in graph_outputs or any(id(c) not in inside for c in consumers.get(o, []))
                if leaves and types.get(o, onnx.TensorProto.FLOAT) in float_types:
                    if best is None or order[id(n)] > order[id(best[0])]:
                        best = (n, o)
        return None if best is None else best[1]

    emb = [s for s in modules if s.endswith(".embeddings")]
    enc = sorted((int(_LAYER_RE.search(s).group(1)), s) for s in modules if _LAYER_RE.search(s))
    hidden = [module_output(emb[0])] if emb else [None]
    hidden += [module_output(s) for _, s in enc]
    heads, head_note = find_head_probes(model)
    if None in hidden or len(hidden) < 2:
        return GraphProbes(layers, [], "could not locate every encoder layer's output in the graph", heads, head_note)
    return GraphProbes(layers, hidden, heads=heads, head_note=head_note)


_WRAPPER_SCOPE = "model"  # the export wrapper's attribute holding the transformers model (ExportWrapper.model)
_ENCODER = "yoso"  # the encoder's attribute in every Yoso* task class
_LINEAR_CLASS = "torch.nn.modules.linear.Linear"


def _scoped_classes(node) -> list[tuple[str, str]]:
    """``(module path, module class)`` pairs of a node from torch.onnx's ``pkg.torch.onnx.name_scopes`` and
    ``pkg.torch.onnx.class_hierarchy`` metadata (outermost first; the class is "" when not recorded)."""
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))[:-1]
        classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))[:-1]
    except (ValueError, SyntaxError):
        return []
    if len(classes) != len(scopes):
        classes = [""] * len(scopes)
    return [(s, c if isinstance(c, str) else "") for s, c in zip(scopes, classes) if isinstance(s, str) and s]


def _head_path(scope: str) -> str | None:
    """``model.classifier.dense`` -> ``classifier.dense``; None for the wrapper, the model and the encoder."""
    if scope == _WRAPPER_SCOPE or not scope.startswith(_WRAPPER_SCOPE + "."):
        return None
    path = scope[len(_WRAPPER_SCOPE) + 1:]
    if path == _ENCODER or path.startswith(_ENCODER + "."):
        return None
    return path


def find_head_probes(model: onnx.ModelProto) -> tuple[list[HeadProbe], str]:
    """The task head's tensors: the output of every module outside the encoder (by torch.onnx's scope
    metadata) and the input of every ``Linear`` among them, one probe per ONNX value (named after the
    innermost module). Returns ``(probes, note)``; the note says why none were found, if none were."""
    g = model.graph
    initializers = {i.name for i in g.initializer}
    constants = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    graph_outputs = {o.name for o in g.output}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    types = _value_types(model)
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    order = {id(n): i for i, n in enumerate(g.node)}
    modules: dict[str, list] = {}
    linear: set[str] = set()
    any_scope = has_encoder = False
    for n in g.node:
        scoped = _scoped_classes(n)
        any_scope = any_scope or bool(scoped)
        for s, cls in scoped:
            has_encoder = has_encoder or s == f"{_WRAPPER_SCOPE}.{_ENCODER}"
            path = _head_path(s)
            if path is None:
                continue
            modules.setdefault(path, []).append(n)
            if cls == _LINEAR_CLASS:
                linear.add(path)
    if not any_scope:
        return [], "the graph carries no module scopes (pkg.torch.onnx.name_scopes); re-export to compare the head"
    if not modules or not has_encoder:
        return [], ""  # the encoder alone (task "base": the wrapped model is YosoModel): no head

    def is_float(v: str) -> bool:
        return types.get(v, onnx.TensorProto.FLOAT) in float_types

    found: dict[str, HeadProbe] = {}

    def add(path: str, value: str, role: str) -> None:
        # one probe per value: a module's output rather than the next one's input, and the innermost
        # module (classifier.out_proj, not classifier)
        new = HeadProbe(path, value, role)
        rank = lambda h: (h.role == "output", h.module.count("."))  # noqa: E731
        if value not in found or rank(new) > rank(found[value]):
            found[value] = new

    for path, nodes in modules.items():
        inside = {id(n) for n in nodes}
        best = None
        for n in nodes:
            for o in n.output:
                leaves = o in graph_outputs or any(id(c) not in inside for c in consumers.get(o, []))
                if leaves and is_float(o) and (best is None or order[id(n)] > order[id(best[0])]):
                    best = (n, o)
        if best is not None:
            add(path, best[1], "output")
        if path in linear:
            produced = {o for n in nodes for o in n.output}
            ins = list(dict.fromkeys(i for n in nodes for i in n.input if i and i not in produced
                                     and i not in initializers and i not in constants and is_float(i)))
            if len(ins) == 1:
                add(path, ins[0], "input")
    # graph order (of the value's producer) so reports list the head from its input to its output
    producer = {o: order[id(n)] for n in g.node for o in n.output}
    return sorted(found.values(), key=lambda h: (producer.get(h.value, -1), h.role != "input")), ""


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    out = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        out[init.name] = init.data_type
    return out


def instrument(model: onnx.ModelProto, probes: GraphProbes) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs every probed value (types from shape inference)."""
    from .schemas import register_schemas

    register_schemas()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    wanted = [n for n in dict.fromkeys(probes.names() + probes.head_names()) if n not in existing]
    if not wanted:
        return m
    typed = {vi.name: vi for vi in m.graph.value_info}
    if any(n not in typed for n in wanted):
        try:
            inferred = onnx.shape_inference.infer_shapes(m)
            typed = {vi.name: vi for vi in inferred.graph.value_info}
        except Exception:  # noqa: BLE001 - fall back to the types we know
            pass
    for name in wanted:
        vi = typed.get(name)
        if vi is not None:
            m.graph.output.append(vi)
        else:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return m
