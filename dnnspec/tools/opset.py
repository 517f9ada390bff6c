"""Rewrite a graph written at opset 21 for another opset of the default ONNX domain, and
find the lowest opset a graph can be written at (`lowest_opset`, export's default).

Changing the number is not enough: between opsets 17 and the newest, some operators
changed their interface (ReduceMean-18 takes its axes as an input where ReduceMean-13
took an attribute; Pad-18 gained `axes`; Split-18 `num_outputs`; AveragePool-19
`dilations`; Cast-19 `saturate`) or accepted new attribute values (Resize-19's
`half_pixel_symmetric`, ScatterND-18's `min`/`max`, Pad-19's `wrap`). Every node is
checked against the schema of its operator at both opsets, version boundary by version
boundary: a change with an adapter below is rewritten, a change that only widens the types
(or, going up, only adds optional inputs and attributes) is kept, and anything else, or an
operator the target opset lacks, raises `OpsetError` naming the node, so the caller can name
the spec's layer. The result is checked by `onnx.checker` at the target opset by the caller.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from dnnspec.graph.builder import OPSET, fresh_namer

MIN_OPSET = 17
"""LayerNormalization, which the layer_norm layer lowers to, arrived in opset 17."""

MAX_IR_VERSION = 13
"""The newest IR version onnxruntime 1.31 loads (the onnx package writes newer ones)."""


class OpsetError(Exception):
    """A node that cannot be written at the target opset: `needs` is the opset it needs
    (None when no opset would do)."""

    def __init__(self, node: onnx.NodeProto, message: str, needs: int | None = None) -> None:
        super().__init__(message)
        self.node, self.message, self.needs = node, message, needs


@functools.cache
def newest_opset() -> int:
    """The newest opset both the installed onnx package and onnxruntime's CPU provider
    accept: probed once with a one-node model per opset, newest first."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    for opset in range(defs.onnx_opset_version(), OPSET, -1):
        x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version(opset)
        )
        try:
            ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001, S112 - onnxruntime's errors are untyped; try older
            continue
        return opset
    return OPSET


def ir_version(opset: int) -> int:
    """The IR version the onnx release that introduced `opset` wrote (no newer than
    onnxruntime reads)."""
    found = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return min(int(found), MAX_IR_VERSION)


def _schema(op: str, opset: int) -> defs.OpSchema | None:
    try:
        return defs.get_schema(op, opset, "")
    except defs.SchemaError:
        return None


def _interface(schema: defs.OpSchema) -> tuple[dict[str, bool], list[str], list[str]]:
    """Attribute names (required or not), input and output names: what a node may use."""
    attributes = {name: bool(a.required) for name, a in schema.attributes.items()}
    return attributes, [i.name for i in schema.inputs], [o.name for o in schema.outputs]


def _widens(old: defs.OpSchema, new: defs.OpSchema) -> bool:
    """Whether `new` accepts every node `old` did, with the same meaning: the same inputs
    and outputs in the same places (new optional ones at the end), every old attribute
    kept and no new required one. New types or attribute values also pass this test."""
    old_attrs, old_in, old_out = _interface(old)
    new_attrs, new_in, new_out = _interface(new)
    return (
        new_in[: len(old_in)] == old_in
        and all(
            i.option != defs.OpSchema.FormalParameterOption.Single
            for i in new.inputs[len(old_in) :]
        )
        and new_out[: len(old_out)] == old_out
        and set(old_attrs) <= set(new_attrs)
        and not any(required for name, required in new_attrs.items() if name not in old_attrs)
    )


@dataclass
class _Graph:
    """The graph a node sits in, with the constants it can see (outer graphs' too)."""

    graph: onnx.GraphProto
    constants: dict[str, np.ndarray]
    shapes: dict[str, list[int | None]]
    fresh: Callable[[str], str]

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def add_constant(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.constants[name] = value
        return name


Adapter = Callable[[onnx.NodeProto, _Graph], list[onnx.NodeProto]]
"""Rewrites one node for the opset just below a version boundary: the nodes replacing it."""


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _drop_attr(node: onnx.NodeProto, *names: str) -> None:
    kept = [a for a in node.attribute if a.name not in names]
    del node.attribute[:]
    node.attribute.extend(kept)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reduce_axes_to_attribute(node: onnx.NodeProto, g: _Graph) -> list[onnx.NodeProto]:
    """Reduce*-18 -> 13: constant axes become the attribute; ReduceMean and
    ReduceSumSquare with computed axes become ReduceSum-13 (which takes axes as an input)."""
    noop = _attr(node, "noop_with_empty_axes", 0)
    axes_name = node.input[1] if len(node.input) > 1 else ""
    _drop_attr(node, "noop_with_empty_axes")
    if not axes_name:
        if noop:
            raise OpsetError(node, f"{node.op_type} with noop_with_empty_axes needs opset 18", 18)
        return [node]
    axes = g.constant(axes_name)
    if axes is not None:
        if axes.size == 0 and noop:
            return [
                helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name)
            ]
        del node.input[1:]
        if axes.size:
            node.attribute.append(helper.make_attribute("axes", [int(a) for a in axes.ravel()]))
        return [node]
    if node.op_type not in ("ReduceMean", "ReduceSumSquare") or noop:
        raise OpsetError(node, f"{node.op_type} over axes computed at run time needs opset 18", 18)
    keep = int(_attr(node, "keepdims", 1))  # type: ignore[call-overload]
    x, out = node.input[0], node.output[0]
    nodes = []
    if node.op_type == "ReduceSumSquare":
        squared = g.fresh(f"{out}/squared")
        nodes.append(helper.make_node("Mul", [x, x], [squared], name=f"{node.name}/square"))
        x_in = squared
    else:
        x_in = x
    summed = g.fresh(f"{out}/sum") if node.op_type == "ReduceMean" else out
    nodes.append(
        helper.make_node(
            "ReduceSum", [x_in, axes_name], [summed], name=f"{node.name}/sum", keepdims=keep
        )
    )
    if node.op_type == "ReduceMean":
        # the count of reduced elements: Size(x) / Size(sum), in x's type
        size_x, size_s, count, count_f = (
            g.fresh(f"{out}/{k}") for k in ("size_x", "size_s", "count", "count_f")
        )
        nodes += [
            helper.make_node("Size", [x], [size_x], name=f"{node.name}/size_x"),
            helper.make_node("Size", [summed], [size_s], name=f"{node.name}/size_s"),
            helper.make_node("Div", [size_x, size_s], [count], name=f"{node.name}/count"),
            helper.make_node("CastLike", [count, x], [count_f], name=f"{node.name}/count_f"),
            helper.make_node("Div", [summed, count_f], [out], name=f"{node.name}/mean"),
        ]
    return nodes


def _split_num_outputs(node: onnx.NodeProto, g: _Graph) -> list[onnx.NodeProto]:
    """Split-18 -> 13: `num_outputs` parts are Split-13's equal parts when the size
    divides, else explicit sizes (ceil(size / n) each, the last one smaller)."""
    parts = _attr(node, "num_outputs")
    if parts is None:
        return [node]
    _drop_attr(node, "num_outputs")
    shape = g.shapes.get(node.input[0])
    axis = int(_attr(node, "axis", 0))  # type: ignore[call-overload]
    size = shape[axis % len(shape)] if shape else None
    if size is None:
        raise OpsetError(
            node, "Split by num_outputs along a dimension of unknown size needs opset 18", 18
        )
    n = int(parts)  # type: ignore[call-overload]
    if size % n:
        chunk = -(-size // n)
        sizes = np.array([min(chunk, size - i * chunk) for i in range(n)], np.int64)
        inputs = [node.input[0], g.add_constant(f"{node.output[0]}_sizes", sizes)]
        del node.input[:]
        node.input.extend(inputs)
    return [node]


def _pad_axes(node: onnx.NodeProto, g: _Graph) -> list[onnx.NodeProto]:
    """Pad-18 -> 13: pads over chosen axes become pads over every axis (zeros elsewhere)."""
    axes_name = node.input[3] if len(node.input) > 3 else ""
    if not axes_name:
        return [node]
    axes, pads = g.constant(axes_name), g.constant(node.input[1])
    shape = g.shapes.get(node.input[0])
    rank = None if shape is None else len(shape)
    if axes is None or pads is None or rank is None:
        raise OpsetError(node, "Pad over axes or pads computed at run time needs opset 18", 18)
    full = np.zeros(2 * rank, np.int64)
    for i, axis in enumerate(int(a) % rank for a in axes.ravel()):
        full[axis], full[rank + axis] = pads[i], pads[len(axes.ravel()) + i]
    name = g.add_constant(f"{node.input[1]}_all_axes", full)
    inputs = [node.input[0], name, *(v for v in node.input[2:3] if v)]
    del node.input[:]
    node.input.extend(inputs)
    return [node]


def _refuse_values(attribute: str, values: tuple[str, ...], version: int) -> Adapter:
    def adapt(node: onnx.NodeProto, g: _Graph) -> list[onnx.NodeProto]:
        value = _attr(node, attribute)
        if value is not None and _text(value) in values:
            raise OpsetError(
                node,
                f"{node.op_type} with {attribute} = '{_text(value)}' needs opset {version}",
                version,
            )
        return [node]

    return adapt


def _resize_18(node: onnx.NodeProto, g: _Graph) -> list[onnx.NodeProto]:
    """Resize-18 -> 13: the new attributes only at their defaults (which Resize-13 means)."""
    if (
        _attr(node, "antialias", 0)
        or _attr(node, "axes") is not None
        or _text(_attr(node, "keep_aspect_ratio_policy", "stretch")) != "stretch"
    ):
        raise OpsetError(
            node, "Resize with antialias, axes or keep_aspect_ratio_policy needs opset 18", 18
        )
    _drop_attr(node, "antialias", "axes", "keep_aspect_ratio_policy")
    return [node]


def _average_pool_19(node: onnx.NodeProto, g: _Graph) -> list[onnx.NodeProto]:
    dilations = _attr(node, "dilations")
    if dilations is not None and any(int(d) != 1 for d in dilations):  # type: ignore[attr-defined]
        raise OpsetError(node, "AveragePool with dilations needs opset 19", 19)
    _drop_attr(node, "dilations")
    return [node]


def _cast_19(node: onnx.NodeProto, g: _Graph) -> list[onnx.NodeProto]:
    """`saturate` only concerns float8 targets, which opsets before 19 lack anyway."""
    _drop_attr(node, "saturate")
    return [node]


_REDUCTIONS = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceProd", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
)  # fmt: skip

DOWN: dict[tuple[str, int], Adapter] = {
    **{(op, 18): _reduce_axes_to_attribute for op in _REDUCTIONS},
    ("Split", 18): _split_num_outputs,
    ("Pad", 18): _pad_axes,
    ("Pad", 19): _refuse_values("mode", ("wrap",), 19),
    ("Resize", 18): _resize_18,
    ("Resize", 19): _refuse_values("coordinate_transformation_mode", ("half_pixel_symmetric",), 19),
    ("ScatterND", 18): _refuse_values("reduction", ("min", "max"), 18),
    ("ScatterElements", 18): _refuse_values("reduction", ("min", "max"), 18),
    ("AveragePool", 19): _average_pool_19,
    ("Cast", 19): _cast_19,
}
"""(operator, the opset that changed it) -> the rewrite to the version before that opset.
Boundaries not listed here must be type-only changes (`_widens` both ways)."""


def _boundaries(op: str, low: int, high: int) -> list[int]:
    """The opsets in (low, high] at which `op` got a new version, newest first."""
    found = []
    for opset in range(high, low, -1):
        schema = _schema(op, opset)
        if schema is not None and schema.since_version > low and schema.since_version not in found:
            found.append(schema.since_version)
    return found


def _convert_node(
    node: onnx.NodeProto, g: _Graph, source: int, target: int
) -> list[onnx.NodeProto]:
    if node.domain not in ("", "ai.onnx"):
        raise OpsetError(node, f"{node.op_type} of domain '{node.domain}' is not converted")
    introduced = _schema(node.op_type, source)
    if introduced is None:
        raise OpsetError(node, f"{node.op_type} is not an operator of opset {source}")
    if _schema(node.op_type, target) is None:
        raise OpsetError(
            node,
            f"{node.op_type} arrived in opset {introduced.since_version}",
            introduced.since_version,
        )
    nodes = [node]
    if target < source:
        for version in _boundaries(node.op_type, target, source):
            old, new = _schema(node.op_type, version - 1), _schema(node.op_type, version)
            assert old is not None and new is not None
            adapter = DOWN.get((node.op_type, version))
            if adapter is not None:
                nodes = [
                    out
                    for n in nodes
                    for out in (adapter(n, g) if n.op_type == node.op_type else [n])
                ]
            elif not (_widens(old, new) and _widens(new, old)):
                raise OpsetError(
                    node, f"{node.op_type}-{version} has no conversion to opset {version - 1}"
                )
    else:
        for version in reversed(_boundaries(node.op_type, source, target)):
            old = _schema(node.op_type, version - 1)
            new = _schema(node.op_type, version)
            assert old is not None and new is not None
            if not _widens(old, new):
                raise OpsetError(
                    node, f"{node.op_type} changed in opset {version} in a way not converted"
                )
    return nodes


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """The shape of every value shape inference can tell, loop bodies included (None for
    an unknown size); the Split and Pad adapters need sizes and ranks."""
    shapes: dict[str, list[int | None]] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for info in [*graph.input, *graph.value_info, *graph.output]:
            if info.type.tensor_type.HasField("shape"):
                shapes[info.name] = [
                    d.dim_value if d.HasField("dim_value") else None
                    for d in info.type.tensor_type.shape.dim
                ]
        for init in graph.initializer:
            shapes[init.name] = list(init.dims)
        for node in graph.node:
            for body in _subgraphs(node):
                visit(body)

    visit(onnx.shape_inference.infer_shapes(model).graph)
    return shapes


def _convert_graph(
    graph: onnx.GraphProto, outer: dict[str, np.ndarray], shapes: dict[str, list[int | None]],
    fresh: Callable[[str], str], source: int, target: int,
) -> None:  # fmt: skip
    constants = dict(outer)
    constants.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    g = _Graph(graph, constants, shapes, fresh)
    converted: list[onnx.NodeProto] = []
    for node in graph.node:
        for body in _subgraphs(node):
            _convert_graph(body, constants, shapes, fresh, source, target)
        converted += _convert_node(node, g, source, target)
    del graph.node[:]
    graph.node.extend(converted)


def _names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        names.update(i.name for i in graph.input)
        names.update(t.name for t in graph.initializer)
        for node in graph.node:
            names.update(node.output)
            for body in _subgraphs(node):
                visit(body)

    visit(model.graph)
    return names


def _source_opset(model: onnx.ModelProto) -> int:
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def lowest_opset(model: onnx.ModelProto, floor: int) -> int:
    """The lowest opset from `floor` that `model` converts to (at most its own): each
    opset is tried, skipping to the one a refusing node says it needs."""
    source = _source_opset(model)
    target = floor
    while target < source:
        try:
            convert(model, target)
        except OpsetError as exc:
            target = max(target + 1, exc.needs or 0)
            continue
        return target
    return source


def convert(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """A copy of `model` (default domain only) rewritten for opset `target`."""
    source = _source_opset(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if target != source:
        fresh = fresh_namer(_names(out))

        shapes = _shapes(out) if target < source else {}
        _convert_graph(out.graph, {}, shapes, fresh, source, target)
    del out.opset_import[:]
    out.opset_import.append(helper.make_opsetid("", target))
    out.ir_version = ir_version(target)
    return out
