"""Reverse-mode differentiation of the forward nodes already in a GraphBuilder.

onnxruntime-training is frozen and emits Microsoft-domain ops, so dnnspec differentiates
its own graphs with per-op VJP rules that emit standard ONNX nodes. Only nodes on a path
from a `wrt` value to a seed are differentiated, so an unrelated branch, integer
bookkeeping (shapes, RNG state) and the loss nodes past the seed cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dnnspec.autodiff.context import (
    AutodiffError,
    Shape,
    ValueType,
    VjpContext,
    body_values,
    node_inputs,
)
from dnnspec.autodiff.rules import VJP
from dnnspec.graph.builder import Dim, GraphBuilder

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
)
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})


GRAD_SCOPE = "grad/"
"""Backward nodes are named `grad/<layer>/<op>`, after the forward node they differentiate."""


def _layer_of(node: onnx.NodeProto) -> str:
    """The scope of a forward node (`dense_1` for `dense_1/Gemm`), or `graph` outside any."""
    scope, _, _ = node.name.rpartition("/")
    return scope or "graph"


def gradients(
    b: GraphBuilder,
    seeds: dict[str, str],
    wrt: Sequence[str],
    *,
    value_types: dict[str, tuple[int, tuple[Dim, ...]]] | None = None,
) -> dict[str, str]:
    """Append the backward pass of `b`'s nodes to `b`; return wrt name -> gradient name.

    `seeds` maps values to the names of their incoming gradients (`{"loss": one}` or
    `{"logits": dlogits}`); several seeds add up. Static shapes come from ONNX shape
    inference on `b.model()` unless `value_types` (name -> (elem type, dims)) is given. A
    wrt value with no path to any seed gets zeros of its shape. Forward nodes change only
    where a rule asks for a residual (`ctx.residuals`: Dropout's mask, a Scan body's values
    at every step).
    """
    forward = list(b.nodes)  # topological: the builder appends producers before consumers
    for node in forward:  # a body built elsewhere: new names must not shadow its values
        b.claim(body_values(node))
    types: dict[str, ValueType] = _static_types(b) if value_types is None else dict(value_types)
    for name, tensor in b.initializers.items():
        types.setdefault(name, (tensor.data_type, tuple(tensor.dims)))

    def differentiable(name: str) -> bool:
        entry = types.get(name)
        return entry is None or entry[0] in FLOAT_TYPES

    inputs = {id(node): node_inputs(node) for node in forward}
    reach = {w for w in wrt if differentiable(w)}
    for node in forward:
        if any(i in reach for i in inputs[id(node)]):
            reach.update(o for o in node.output if o and differentiable(o))
    live = set(seeds)
    active: list[onnx.NodeProto] = []
    for node in reversed(forward):
        if any(o in live and o in reach for o in node.output):
            active.append(node)
            live.update(i for i in inputs[id(node)] if i in reach)
    needed = reach & live

    start = len(b.nodes)
    ctx = VjpContext(b, types, needed, _constants(b, forward), gradients)
    pending: dict[str, list[str]] = {name: [grad] for name, grad in seeds.items()}

    def total(name: str) -> str | None:
        parts = pending.get(name)
        if not parts:
            return None
        if len(parts) > 1:
            parts[:] = _chain_gemms(b, parts, start)
        if len(parts) > 1:
            op = "Add" if len(parts) == 2 else "Sum"
            parts[:] = [b.op(op, parts, hint=f"d_{name}")]
        return parts[0]

    for node in active:
        out_grads = [total(o) if o in needed else None for o in node.output]
        if all(g is None for g in out_grads):
            continue
        if node.domain not in STANDARD_DOMAINS or node.op_type not in VJP:
            raise AutodiffError(
                f"no VJP rule for {node.domain or 'ai.onnx'}::{node.op_type} "
                f"(node '{node.name}', output '{node.output[0]}')"
            )
        with b.scope(GRAD_SCOPE + _layer_of(node)):
            in_grads = VJP.get(node.op_type)(ctx, node, out_grads)
        for name, grad in zip(inputs[id(node)], in_grads, strict=False):
            if grad is not None and name in needed:
                pending.setdefault(name, []).append(grad)
    return {w: total(w) or ctx.zeros_like(w) for w in wrt}


def _chain_gemms(b: GraphBuilder, parts: list[str], start: int) -> list[str]:
    """Gradient contributions computed by C-less Gemms (a weight used at several places,
    such as each step of an unrolled recurrence) are summed by chaining them, each Gemm
    taking the previous one's result as its C: no Sum pass over the weight's gradient."""
    producers = {o: node for node in b.nodes[start:] for o in node.output}
    read = {i for node in b.nodes[start:] for i in node.input}
    gemms = [
        p
        for p in parts
        if (node := producers.get(p)) is not None
        and node.op_type == "Gemm"
        and len(node.input) == 2
        and all(a.name != "beta" for a in node.attribute)
        and p not in read
    ]
    if len(gemms) < 2:
        return parts
    for previous, current in zip(gemms, gemms[1:], strict=False):
        producers[current].input.append(previous)
    return [p for p in parts if p not in gemms] + [gemms[-1]]


def _dims(value_type: onnx.TypeProto) -> Shape | None:
    tensor = value_type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or None)
    return tuple(dims)


def _static_types(b: GraphBuilder) -> dict[str, ValueType]:
    """Element types and (symbolic) shapes of every value, from ONNX shape inference."""
    graph = onnx.shape_inference.infer_shapes(b.model(), data_prop=True).graph
    types: dict[str, ValueType] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = (info.type.tensor_type.elem_type, _dims(info.type))
    return types


def _constants(b: GraphBuilder, nodes: Sequence[onnx.NodeProto]) -> dict[str, np.ndarray]:
    """Values known before run time: initializers and Constant node outputs."""
    consts = {name: numpy_helper.to_array(t) for name, t in b.initializers.items()}
    for node in nodes:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            attribute = node.attribute[0]
            value = helper.get_attribute_value(attribute)
            if isinstance(value, onnx.TensorProto):
                consts[node.output[0]] = numpy_helper.to_array(value)
            elif attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
                consts[node.output[0]] = np.asarray(value)
    return consts
