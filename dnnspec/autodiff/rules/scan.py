"""Scan (a loop over the leading axis of its scan inputs) and ReverseSequence.

Scan's gradient is a second Scan that runs the body's own VJP backwards in time. The body is
differentiated by the engine itself; every forward-body value that VJP reads is a residual
the rule asks the engine for (`ctx.residuals.per_iteration`), which the forward Scan then
stores as an extra per-iteration output (what autograd keeps), so the backward body
recomputes nothing. The backward Scan carries the state gradients and one
accumulator per captured outer value that needs a gradient (a body's weights); its scan
inputs are the stored values and the output gradients, reversed along time with one
Gather each (of indices T - 1, ..., 0 computed once), and its scan outputs are the
gradients of the forward scan inputs.

A weight's per-step gradients are summed inside the loop, the running sum folded into the
Gemm that computes each as its C: one Gemm over all T * N rows after the loop saves no
more than storing its per-step factors costs (docs/performance.md).

Only axes 0 and forward directions are supported: onnx.reference implements no others,
and lowering reverses time explicitly (ReverseSequence) where it needs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dnnspec.autodiff.context import AutodiffError, VjpContext, captured, node_inputs
from dnnspec.autodiff.rules.base import VJP, single
from dnnspec.graph.builder import Dim, GraphBuilder

Grads = list[str | None]

FLOATS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16})


def _time_order(ctx: VjpContext, like: str) -> str:
    """Indices T - 1, ..., 0 for the leading axis of `like` (a constant when T is
    static, else T - CumSum of ones: a Slice with step -1 over a symbolic length is what
    tract cannot analyse)."""
    b = ctx.b
    shape = ctx.shape(like)
    if shape and isinstance(shape[0], int):
        return b.const(np.arange(shape[0] - 1, -1, -1), "int64", hint="time_reversed")
    length = b.op("Shape", [like], start=0, end=1)
    ones = b.op("ConstantOfShape", [length], value=numpy_helper.from_array(np.ones(1, np.int64)))
    return b.op("Sub", [length, b.op("CumSum", [ones, b.const(0, "int64")])], hint="time_reversed")


def _reverse(ctx: VjpContext, value: str, order: str) -> str:
    """`value` reversed along axis 0 (`order` from `_time_order`)."""
    return ctx.b.op("Gather", [value, order], hint=f"{value}_rev", axis=0)


def _value_info(name: str, elem: int, dims: tuple[Dim, ...] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None if dims is None else list(dims))


def _types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    return {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}


def _check_layout(node: onnx.NodeProto, ctx: VjpContext) -> None:
    for name in (
        "scan_input_axes",
        "scan_output_axes",
        "scan_input_directions",
        "scan_output_directions",
    ):
        values = ctx.attr(node, name, None)
        if values is not None and any(int(v) for v in values):
            raise AutodiffError(
                f"the Scan gradient supports axis 0 and forward direction only "
                f"(node '{node.name}' sets {name})"
            )


def _accumulate(bb: GraphBuilder, total: str, grad: str) -> str:
    """total + grad; a weight's per-step gradient that is a Gemm without C read nowhere
    else takes the running total as its C (beta = 1), which saves one pass over the
    weight per step (h' Wh's gradient is such a Gemm)."""
    producer = next((x for x in bb.nodes if grad in x.output), None)
    readers = [x for x in bb.nodes if grad in x.input]
    if (
        producer is not None
        and producer.op_type == "Gemm"
        and len(producer.input) == 2
        and not readers
        and float(VjpContext.attr(producer, "beta", 1.0)) == 1.0
    ):
        producer.input.append(total)
        return grad
    return bb.op("Add", [total, grad], hint=f"{total}_next")


@dataclass(frozen=True)
class _Layout:
    """The forward Scan's parts: `n` states, `m` scan inputs, the outer values its body
    captures, and the body's names for each."""

    node: onnx.NodeProto
    body: onnx.GraphProto
    n: int
    m: int
    caps: list[str]
    state_in: list[str]
    scan_in: list[str]
    state_out: list[str]
    scan_out: list[str]
    in_types: dict[str, onnx.TypeProto]
    out_types: dict[str, onnx.TypeProto]
    floats: list[int]
    """The float states, which carry a gradient."""


def _layout(ctx: VjpContext, node: onnx.NodeProto) -> _Layout:
    """The parts of `node`, once its axes and directions are checked."""
    _check_layout(node, ctx)
    body = ctx.attr(node, "body", None)
    assert isinstance(body, onnx.GraphProto)
    m = int(ctx.attr(node, "num_scan_inputs", 0))
    n = len(node.input) - m
    in_types = {v.name: v.type for v in body.input}
    state_in = [v.name for v in body.input[:n]]
    return _Layout(
        node=node,
        body=body,
        n=n,
        m=m,
        caps=node_inputs(node)[len(node.input) :],
        state_in=state_in,
        scan_in=[v.name for v in body.input[n:]],
        state_out=[v.name for v in body.output[:n]],
        scan_out=[v.name for v in body.output[n:]],
        in_types=in_types,
        out_types={v.name: v.type for v in body.output},
        floats=[j for j in range(n) if in_types[state_in[j]].tensor_type.elem_type in FLOATS],
    )


@dataclass(frozen=True)
class _BodyVjp:
    """The body's backward nodes, built in a copy of the body by the engine: the names of
    the incoming gradients (`d_state` per float state, `d_scan` per differentiated scan
    output) and of the gradients it computes, with the values' types."""

    grads: dict[str, str]
    backward: list[onnx.NodeProto]
    constants: dict[str, onnx.TensorProto]
    types: dict[str, onnx.TypeProto]
    d_state: dict[int, str]
    d_scan: dict[int, str]
    wanted_x: list[int]
    wanted_c: list[str]


def _differentiate_body(ctx: VjpContext, s: _Layout, dys: Grads) -> _BodyVjp:
    """Differentiate one iteration: the body with its captured values as inputs, seeded
    at its outputs by new inputs, with respect to its float states, the scan inputs and
    captured values that need a gradient."""
    assert ctx.differentiate is not None
    fb = ctx.b.subgraph("scan_body_grad")
    fb.inputs.extend(s.body.input)
    for c in s.caps:
        fb.inputs.append(_value_info(c, ctx.elem(c), ctx.shape(c)))
    fb.initializers.update({t.name: t for t in s.body.initializer})
    for x in s.body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(x)
        fb.nodes.append(copy)
    seed_parts: dict[str, list[str]] = {}
    d_state = {}
    for j in s.floats:
        d_state[j] = fb.fresh(f"d_{s.state_out[j]}")
        fb.inputs.append(helper.make_value_info(d_state[j], s.out_types[s.state_out[j]]))
        seed_parts.setdefault(s.state_out[j], []).append(d_state[j])
    d_scan = {}
    for i, out in enumerate(s.scan_out):
        if dys[s.n + i] is not None:
            d_scan[i] = fb.fresh(f"d_{out}")
            fb.inputs.append(helper.make_value_info(d_scan[i], s.out_types[out]))
            seed_parts.setdefault(out, []).append(d_scan[i])
    seeds = {
        name: parts[0] if len(parts) == 1 else fb.op("Sum", parts)
        for name, parts in seed_parts.items()
    }
    wanted_x = [i for i in range(s.m) if ctx.needs(s.node.input[s.n + i])]
    wanted_c = [c for c in s.caps if ctx.needs(c)]
    wrt = [*(s.state_in[j] for j in s.floats), *(s.scan_in[i] for i in wanted_x), *wanted_c]
    start = len(fb.nodes)
    grads = ctx.differentiate(fb, seeds, wrt)
    backward = fb.nodes[start:]
    types = _types(fb.model())
    return _BodyVjp(grads, backward, fb.initializers, types, d_state, d_scan, wanted_x, wanted_c)


def _forward_reads(s: _Layout, vjp: _BodyVjp) -> list[str]:
    """The forward body's values that its backward nodes read (or return as gradients),
    in first-use order: the residuals the backward Scan takes at every step."""
    produced = {o for x in s.body.node for o in x.output}
    forward_values = set(s.state_in) | set(s.scan_in) | produced
    read: list[str] = []
    for x in vjp.backward:
        inner = [
            name
            for a in x.attribute
            if a.type == onnx.AttributeProto.GRAPH
            for name in captured(a.g)
        ]
        for name in [*x.input, *inner]:
            if name in forward_values and name not in read:
                read.append(name)
    for name in vjp.grads.values():
        if name in forward_values and name not in read:
            read.append(name)
    return read


@dataclass
class _Backward:
    """The backward Scan's body inputs with the outer values they start from (carried) or
    run over (scanned, reversed in time)."""

    inputs: list[onnx.ValueInfoProto]
    initial: list[str]
    scanned: list[str]
    accumulators: dict[str, str]
    order: str


def _backward_inputs(
    ctx: VjpContext,
    bb: GraphBuilder,
    s: _Layout,
    vjp: _BodyVjp,
    read: list[str],
    stacked: dict[str, str],
    dys: Grads,
) -> _Backward:
    """Carried: the state gradients (zeros where the output has none), then one running
    sum per captured value that needs a gradient. Scanned: the output gradients and the
    stored forward values, reversed in time."""
    inputs: list[onnx.ValueInfoProto] = []
    initial: list[str] = []
    for j in s.floats:
        inputs.append(helper.make_value_info(vjp.d_state[j], s.out_types[s.state_out[j]]))
        dy = dys[j]
        if dy is None:
            dy = ctx.zeros_like(s.node.output[j] or s.node.input[j])
        initial.append(dy)
    accumulators = {}
    for c in vjp.wanted_c:
        accumulators[c] = bb.fresh(f"{c}_grad_sum")
        inputs.append(_value_info(accumulators[c], ctx.elem(c), ctx.shape(c)))
        initial.append(ctx.zeros_like(c))
    scanned: list[str] = []
    order = _time_order(ctx, s.node.input[s.n])
    for i, name in vjp.d_scan.items():
        inputs.append(helper.make_value_info(name, s.out_types[s.scan_out[i]]))
        scanned.append(_reverse(ctx, single(dys[s.n + i : s.n + i + 1]), order))
    for name in read:
        inputs.append(helper.make_value_info(name, vjp.types[name]))
        scanned.append(_reverse(ctx, stacked[name], order))
    if not scanned:  # Scan needs one scan input to know the trip count
        dummy = bb.fresh("steps")
        inputs.append(helper.make_value_info(dummy, s.in_types[s.scan_in[0]]))
        scanned.append(s.node.input[s.n])
    return _Backward(inputs, initial, scanned, accumulators, order)


def _backward_body(
    ctx: VjpContext, bb: GraphBuilder, s: _Layout, vjp: _BodyVjp, io: _Backward
) -> None:
    """The backward body: the body's VJP nodes (its constants renamed, since sibling
    bodies must not define the same name), outputs the input gradients of one step."""
    body_constants = {t.name for t in s.body.initializer}
    renamed: dict[str, str] = {}
    for x in vjp.backward:
        for idx, name in enumerate(x.input):
            if name in body_constants:
                renamed.setdefault(name, bb.fresh(f"{name}_bwd"))
                x.input[idx] = renamed[name]
    for old, new in renamed.items():
        tensor = onnx.TensorProto()
        tensor.CopyFrom(vjp.constants[old])
        tensor.name = new
        bb.initializers[new] = tensor
    used = {name for x in vjp.backward for name in x.input}
    for name, tensor in vjp.constants.items():
        if name in used and name not in body_constants:
            bb.initializers[name] = tensor
    bb.nodes.extend(vjp.backward)
    bound = {v.name for v in io.inputs}

    def output(value: str, type_: onnx.TypeProto) -> None:
        if value in bound or value in s.caps or value in {o.name for o in bb.outputs}:
            value = bb.op("Identity", [value])
        bb.outputs.append(helper.make_value_info(value, type_))

    for j in s.floats:
        output(vjp.grads[s.state_in[j]], s.in_types[s.state_in[j]])
    for c in vjp.wanted_c:
        total = _accumulate(bb, io.accumulators[c], vjp.grads[c])
        bb.outputs.append(_value_info(total, ctx.elem(c), ctx.shape(c)))
    for i in vjp.wanted_x:
        output(vjp.grads[s.scan_in[i]], s.in_types[s.scan_in[i]])
    bb.inputs.extend(io.inputs)


def _emit(ctx: VjpContext, bb: GraphBuilder, s: _Layout, vjp: _BodyVjp, io: _Backward) -> Grads:
    """The backward Scan, and its results as one gradient per forward input (captured
    values last); the scan inputs' gradients come out reversed and are turned back."""
    b = ctx.b
    carried = len(s.floats) + len(vjp.wanted_c)
    outs = [b.fresh("d_scan_state") for _ in range(carried)]
    outs += [b.fresh("d_scan_input_rev") for _ in vjp.wanted_x]
    b.op_multi(
        "Scan",
        [*io.initial, *io.scanned],
        outs,
        body=bb.graph(),
        num_scan_inputs=len(io.scanned),
    )
    result: Grads = [None] * (s.n + s.m + len(s.caps))
    for pos, j in enumerate(s.floats):
        if ctx.needs(s.node.input[j]):
            result[j] = outs[pos]
    for pos, c in enumerate(vjp.wanted_c):
        result[s.n + s.m + s.caps.index(c)] = outs[len(s.floats) + pos]
    for pos, i in enumerate(vjp.wanted_x):
        result[s.n + i] = _reverse(ctx, outs[carried + pos], io.order)
    return result


@VJP.register("Scan")
def scan(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Differentiate one iteration, ask the engine for the forward values that reads at
    every step, and run the iteration's VJP backwards over them in a second Scan."""
    if ctx.differentiate is None:
        raise AutodiffError("the Scan gradient needs the engine to differentiate its body")
    layout = _layout(ctx, node)
    vjp = _differentiate_body(ctx, layout, dys)
    read = _forward_reads(layout, vjp)
    stacked = ctx.residuals.per_iteration(node, read, vjp.types)
    bb = ctx.b.subgraph("scan_grad")
    io = _backward_inputs(ctx, bb, layout, vjp, read, stacked, dys)
    _backward_body(ctx, bb, layout, vjp, io)
    return _emit(ctx, bb, layout, vjp, io)


@VJP.register("ReverseSequence")
def reverse_sequence(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """The reversal is its own inverse: the same node on dy."""
    attrs = {a: ctx.attr(node, a, d) for a, d in (("batch_axis", 1), ("time_axis", 0))}
    return [ctx.b.op("ReverseSequence", [single(dys), node.input[1]], **attrs), None]
