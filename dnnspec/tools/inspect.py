"""`dnnspec inspect`: what is inside an ONNX graph, a run directory or a spec's graphs.

For each graph: opset and IR version, producer and metadata, inputs and outputs with
their (symbolic) shapes, op counts, initializers and the parameters they hold. A training
step also counts apart what it carries (parameters, optimizer state: from its
`dnnspec.carried` metadata) and its forward, backward (`grad/...` nodes, named by the
autodiff engine after the node they differentiate) and remaining nodes (loss, metrics
and the update). `to_dot` draws a graph in Graphviz's language with one cluster per layer
of the spec (node names carry the layer they were lowered for).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from dnnspec.assemble.steps import build_inference
from dnnspec.autodiff.engine import GRAD_SCOPE
from dnnspec.errors import error
from dnnspec.files import read_bytes
from dnnspec.frontend import load_spec
from dnnspec.metadata import CarriedMeta, ModelMetadata
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.trainer import initial_values

MAX_MODEL_BYTES = 2 << 30
"""The largest ONNX file inspect reads: the protobuf format's own limit."""

RUN_GRAPHS = ("model.onnx", "train_step.onnx", "eval_step.onnx")


@dataclass
class ValueSummary:
    name: str
    dtype: str
    shape: list[int | str] | None

    def text(self) -> str:
        dims = "?" if self.shape is None else ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass
class GraphSummary:
    """What `inspect` reports about one graph."""

    path: str
    graph: str
    opset: dict[str, int]
    ir_version: int
    producer: str
    inputs: list[ValueSummary]
    outputs: list[ValueSummary]
    ops: dict[str, int]
    nodes: int
    initializers: int
    initializer_elements: int
    metadata: dict[str, str]
    parameters: list[str] = field(default_factory=list)
    parameter_elements: int = 0
    state: dict[str, str] = field(default_factory=dict)
    state_elements: int = 0
    node_kinds: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["inputs"] = [v.__dict__ for v in self.inputs]
        out["outputs"] = [v.__dict__ for v in self.outputs]
        return out


def _dtype(elem: int, name: str, path: str) -> str:
    if elem == 0:
        return "?"
    if elem == onnx.TensorProto.STRING:
        return "string"
    try:
        return helper.tensor_dtype_to_np_dtype(elem).name
    except KeyError:
        raise error(
            f"'{path}' is not a valid ONNX model: '{name}' has element type {elem}, which "
            "ONNX does not define"
        ) from None


def _dims(dims: list[int], name: str, path: str) -> list[int]:
    """Sizes as declared; a negative one is no size at all (counting it would give a
    negative number of values)."""
    bad = next((d for d in dims if d < 0), None)
    if bad is not None:
        raise error(f"'{path}' is not a valid ONNX model: '{name}' has dimension {bad}")
    return dims


def _value(info: onnx.ValueInfoProto, path: str) -> ValueSummary:
    tensor = info.type.tensor_type
    shape: list[int | str] | None = None
    if tensor.HasField("shape"):
        shape = [
            _dims([d.dim_value], info.name, path)[0]
            if d.HasField("dim_value")
            else (d.dim_param or "?")
            for d in tensor.shape.dim
        ]
    return ValueSummary(info.name, _dtype(tensor.elem_type, info.name, path), shape)


def _elements(shape: list[int | str] | None) -> int:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return 0
    return math.prod(int(d) for d in shape)


def load_model(path: Path) -> onnx.ModelProto:
    """An ONNX file, read as carefully as every other file a user hands us."""
    data = read_bytes(path, "ONNX model", MAX_MODEL_BYTES)
    model: onnx.ModelProto | None
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception:  # protobuf raises DecodeError and, for some inputs, other types
        model = None
    if model is None or not model.HasField("graph"):
        raise error(
            f"'{path}' is not an ONNX model",
            help="inspect takes .onnx files, run directories or .dnn specs",
        )
    return model


def summarize(model: onnx.ModelProto, path: str) -> GraphSummary:
    graph = model.graph
    metadata = {p.key: p.value for p in model.metadata_props}
    meta = ModelMetadata.from_model(model, path)
    inputs = [_value(v, path) for v in graph.input]
    outputs = [_value(v, path) for v in graph.output]
    init_elements = sum(math.prod(_dims(list(t.dims), t.name, path)) for t in graph.initializer)
    summary = GraphSummary(
        path=path,
        graph=graph.name,
        opset={o.domain or "ai.onnx": o.version for o in model.opset_import},
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=inputs,
        outputs=outputs,
        ops=dict(sorted(Counter(n.op_type for n in graph.node).items(), key=lambda kv: -kv[1])),
        nodes=len(graph.node),
        initializers=len(graph.initializer),
        initializer_elements=init_elements,
        metadata=metadata,
    )
    carried = meta.carried or meta.parameters or []
    roles = {c.name: c.kind if isinstance(c, CarriedMeta) else "parameter" for c in carried}
    shapes = {v.name: v.shape for v in inputs}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    summary.parameters = [name for name, kind in roles.items() if kind == "parameter"]
    summary.state = {name: kind for name, kind in roles.items() if kind != "parameter"}
    summary.parameter_elements = sum(_elements(shapes.get(n)) for n in summary.parameters)
    summary.state_elements = sum(_elements(shapes.get(n)) for n in summary.state)
    if summary.state or any(n.name.startswith(GRAD_SCOPE) for n in graph.node):
        kinds = Counter(_node_kind(n) for n in graph.node)
        summary.node_kinds = {k: kinds.get(k, 0) for k in ("forward", "backward", "loss/update")}
    return summary


def _node_kind(node: onnx.NodeProto) -> str:
    if node.name.startswith(GRAD_SCOPE):
        return "backward"
    if "/" in node.name:
        return "forward"
    return "loss/update"


def inspect_path(path: Path) -> list[GraphSummary]:
    """Summaries of an .onnx file, of the graphs in a run directory, or of a spec's graphs
    (compiled in a temporary directory: the spec's data is loaded to size its schedule)."""
    if path.is_dir():
        found = [path / name for name in RUN_GRAPHS if (path / name).is_file()]
        if not found:
            raise error(
                f"'{path}' holds no {', '.join(RUN_GRAPHS)}",
                help="inspect a run directory written by `dnnspec train`",
            )
        return [summarize(load_model(p), str(p)) for p in found]
    if path.suffix == ".dnn":
        program = prepare(load_spec(path)).program
        params = initial_values(program, program.train.seed, params_only=True)
        model = build_inference(program.typed, program.slots, params, program.metadata)
        graphs = [("model", model), ("train step", program.train_step)]
        graphs.append(("eval step", program.eval_step))
        return [summarize(g, f"{path} ({what}, initial weights)") for what, g in graphs]
    return [summarize(load_model(path), str(path))]


def _cluster(node: onnx.NodeProto) -> str:
    """The layer a node belongs to (`grad dense_1` for its backward nodes), or ''."""
    name = node.name
    backward = name.startswith(GRAD_SCOPE)
    if backward:
        name = name[len(GRAD_SCOPE) :]
    scope = name.rpartition("/")[0]
    if not scope or scope == "graph":
        return ""
    return f"grad {scope}" if backward else scope


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items()) + "]"


INPUT_STYLE = {"shape": "ellipse", "fillcolor": "#e6f4e6"}
OUTPUT_STYLE = {"shape": "ellipse", "fillcolor": "#fbeee6"}
NODE_STYLE = 'node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];'


def to_dot(model: onnx.ModelProto) -> str:
    """Graphviz DOT of a graph: one box per node, clustered by layer; graph inputs and
    outputs as ellipses; constants and parameters (initializers) left out as clutter."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    producer: dict[str, str] = {}
    lines = [f"digraph {_quote(graph.name or 'graph')} {{", "  rankdir=TB;", f"  {NODE_STYLE}"]
    for value in graph.input:
        if value.name not in constants:
            producer[value.name] = f"in:{value.name}"
            lines.append(
                f"  {_quote(producer[value.name])} {_attrs(label=value.name, **INPUT_STYLE)};"
            )
    clusters: dict[str, list[str]] = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            producer[out] = f"n{index}"
        box = f"{_quote(f'n{index}')} {_attrs(label=node.op_type, tooltip=node.name)};"
        clusters.setdefault(_cluster(node), []).append(box)
    for number, (name, members) in enumerate(clusters.items()):
        if not name:
            lines += [f"  {m}" for m in members]
            continue
        lines.append(f"  subgraph cluster_{number} {{")
        lines.append(f'    label={_quote(name)}; style=rounded; color="#9aa7bd";')
        lines += [f"    {m}" for m in members]
        lines.append("  }")
    for index, node in enumerate(graph.node):
        lines += [
            f"  {_quote(producer[v])} -> {_quote(f'n{index}')};"
            for v in node.input
            if v in producer
        ]
    for value in graph.output:
        key = f"out:{value.name}"
        lines.append(f"  {_quote(key)} {_attrs(label=value.name, **OUTPUT_STYLE)};")
        if value.name in producer:
            lines.append(f"  {_quote(producer[value.name])} -> {_quote(key)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


GRAPH_FILES = {"model": "model.onnx", "train": "train_step.onnx", "eval": "eval_step.onnx"}


def graph_of(path: Path, which: str = "model") -> onnx.ModelProto:
    """One graph of an .onnx file (itself), a run directory or a spec (`which` of them)."""
    if which not in GRAPH_FILES:
        raise error(f"unknown graph '{which}'", help="choose model, train or eval")
    if path.is_dir():
        return load_model(path / GRAPH_FILES[which])
    if path.suffix == ".dnn":
        program = prepare(load_spec(path)).program
        if which == "train":
            return program.train_step
        if which == "eval":
            return program.eval_step
        params = initial_values(program, program.train.seed, params_only=True)
        return build_inference(program.typed, program.slots, params, program.metadata)
    return load_model(path)


def render_dot(dot: str, out: Path) -> None:
    """Draw DOT text as `out` (.svg or .png) with Graphviz's `dot` program."""
    import shutil
    import subprocess

    kind = out.suffix.lstrip(".")
    if kind not in ("svg", "png"):
        raise error(f"'{out}': a picture is written as .svg or .png")
    program = shutil.which("dot")
    if program is None:
        raise error(
            "drawing a picture needs Graphviz's `dot` program, which is not installed",
            help="install Graphviz (e.g. apt install graphviz), or write --dot FILE and draw it "
            "elsewhere",
        )
    done = subprocess.run(
        [program, f"-T{kind}", "-o", str(out)], input=dot.encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise error(f"Graphviz could not draw '{out}': {reason[-1] if reason else 'failed'}")
