"""Scan (a loop over the leading axis of its scan inputs) and ReverseSequence.

Scan's gradient is a second Scan that runs the body's own VJP backwards in time. The body is
differentiated by the engine itself; every forward-body value that VJP reads is stored by
the forward Scan as an extra per-iteration output (what autograd keeps), so the backward
body recomputes nothing. The backward Scan carries the state gradients and one
accumulator per captured outer value that needs a gradient (a body's weights); its scan
inputs are the stored values and the output gradients, reversed along time with one
Gather each (of indices T - 1, ..., 0 computed once), and its scan outputs are the
gradients of the forward scan inputs.

A weight's per-step gradients are summed inside the loop, the running sum folded into the
Gemm that computes each as its C. Moving them out of the loop instead (the per-step
factors as extra scan outputs, then one Gemm over all T * N rows) measured 0.95-0.99x of
that on lstm(128), T = 32, batch 64: the stored factors cost what the larger Gemm saves.

Only axes 0 and forward directions are supported: onnx.reference implements no others,
and lowering reverses time explicitly (ReverseSequence) where it needs to.
"""

from __future__ import annotations

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


@VJP.register("Scan")
def scan(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    _check_layout(node, ctx)
    if ctx.differentiate is None:
        raise AutodiffError("the Scan gradient needs the engine to differentiate its body")
    b = ctx.b
    body = ctx.attr(node, "body", None)
    assert isinstance(body, onnx.GraphProto)
    m = int(ctx.attr(node, "num_scan_inputs", 0))
    n = len(node.input) - m
    caps = node_inputs(node)[len(node.input) :]
    for name in [
        *(v.name for v in body.input),
        *(t.name for t in body.initializer),
        *(o for x in body.node for o in x.output),
    ]:
        b._used.add(name)  # a body written elsewhere must not collide with new names
    state_in = [v.name for v in body.input[:n]]
    scan_in = [v.name for v in body.input[n:]]
    state_out = [v.name for v in body.output[:n]]
    scan_out = [v.name for v in body.output[n:]]
    k = len(scan_out)
    out_types = {v.name: v.type for v in body.output}
    in_types = {v.name: v.type for v in body.input}

    def is_float(type_: onnx.TypeProto) -> bool:
        return type_.tensor_type.elem_type in FLOATS

    floats = [j for j in range(n) if is_float(in_types[state_in[j]])]

    # the body, its captured values as inputs (for types), seeds for its outputs
    fb = b.subgraph("scan_body_grad")
    fb.inputs.extend(body.input)
    for c in caps:
        fb.inputs.append(_value_info(c, ctx.elem(c), ctx.shape(c)))
    fb.initializers.update({t.name: t for t in body.initializer})
    for x in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(x)
        fb.nodes.append(copy)
    seed_parts: dict[str, list[str]] = {}
    d_state = {}
    for j in floats:
        d_state[j] = fb.fresh(f"d_{state_out[j]}")
        fb.inputs.append(helper.make_value_info(d_state[j], out_types[state_out[j]]))
        seed_parts.setdefault(state_out[j], []).append(d_state[j])
    d_scan = {}
    for i in range(k):
        if dys[n + i] is not None:
            d_scan[i] = fb.fresh(f"d_{scan_out[i]}")
            fb.inputs.append(helper.make_value_info(d_scan[i], out_types[scan_out[i]]))
            seed_parts.setdefault(scan_out[i], []).append(d_scan[i])
    seeds = {
        name: parts[0] if len(parts) == 1 else fb.op("Sum", parts)
        for name, parts in seed_parts.items()
    }
    wanted_x = [i for i in range(m) if ctx.needs(node.input[n + i])]
    wanted_c = [c for c in caps if ctx.needs(c)]
    wrt = [*(state_in[j] for j in floats), *(scan_in[i] for i in wanted_x), *wanted_c]
    start = len(fb.nodes)
    grads = ctx.differentiate(fb, seeds, wrt)
    backward = fb.nodes[start:]
    types = _types(fb.model())

    # forward-body values the backward nodes read: stored per iteration by the forward Scan
    produced = {o for x in body.node for o in x.output}
    forward_values = set(state_in) | set(scan_in) | produced
    read: list[str] = []
    results = list(grads.values())
    for x in backward:
        inner = [
            name
            for a in x.attribute
            if a.type == onnx.AttributeProto.GRAPH
            for name in captured(a.g)
        ]
        for name in [*x.input, *inner]:
            if name in forward_values and name not in read:
                read.append(name)
    for name in results:
        if name in forward_values and name not in read:
            read.append(name)

    while len(node.output) < n + k:
        node.output.append("")
    sequence: dict[str, str] = {}  # forward-body value -> outer per-iteration tensor
    for name in read:
        if name in scan_in:
            sequence[name] = node.input[n + scan_in.index(name)]
            continue
        if name in scan_out and node.output[n + scan_out.index(name)]:
            sequence[name] = node.output[n + scan_out.index(name)]
            continue
        source = name
        if name in state_in or name in state_out or name in scan_out:
            source = b.fresh(f"{name}_kept")
            body.node.append(helper.make_node("Identity", [name], [source]))
        body.output.append(helper.make_value_info(source, types[name]))
        outer = b.fresh(f"{name}_steps")
        node.output.append(outer)
        sequence[name] = outer

    # the backward body
    bb = b.subgraph("scan_grad")
    inputs: list[onnx.ValueInfoProto] = []
    initial: list[str] = []
    for j in floats:
        inputs.append(helper.make_value_info(d_state[j], out_types[state_out[j]]))
        dy = dys[j]
        if dy is None:
            dy = ctx.zeros_like(node.output[j] or node.input[j])
        initial.append(dy)
    accumulators = {}
    for c in wanted_c:
        accumulators[c] = bb.fresh(f"{c}_grad_sum")
        inputs.append(_value_info(accumulators[c], ctx.elem(c), ctx.shape(c)))
        initial.append(ctx.zeros_like(c))
    scanned: list[str] = []
    order = _time_order(ctx, node.input[n])
    for i, name in d_scan.items():
        inputs.append(helper.make_value_info(name, out_types[scan_out[i]]))
        scanned.append(_reverse(ctx, single(dys[n + i : n + i + 1]), order))
    for name in read:
        inputs.append(helper.make_value_info(name, types[name]))
        scanned.append(_reverse(ctx, sequence[name], order))
    if not scanned:  # Scan needs one scan input to know the trip count
        dummy = bb.fresh("steps")
        inputs.append(helper.make_value_info(dummy, in_types[scan_in[0]]))
        scanned.append(node.input[n])
    body_constants = {t.name for t in body.initializer}
    renamed: dict[str, str] = {}
    for x in backward:  # sibling bodies must not define the same name
        for idx, name in enumerate(x.input):
            if name in body_constants:
                renamed.setdefault(name, bb.fresh(f"{name}_bwd"))
                x.input[idx] = renamed[name]
    for old, new in renamed.items():
        tensor = onnx.TensorProto()
        tensor.CopyFrom(fb.initializers[old])
        tensor.name = new
        bb.initializers[new] = tensor
    used = {name for x in backward for name in x.input}
    for name, tensor in fb.initializers.items():
        if name in used and name not in body_constants:
            bb.initializers[name] = tensor
    bb.nodes.extend(backward)
    bound = {v.name for v in inputs}

    def output(value: str, type_: onnx.TypeProto) -> None:
        if value in bound or value in caps or value in {o.name for o in bb.outputs}:
            value = bb.op("Identity", [value])
        bb.outputs.append(helper.make_value_info(value, type_))

    for j in floats:
        output(grads[state_in[j]], in_types[state_in[j]])
    for c in wanted_c:
        total = _accumulate(bb, accumulators[c], grads[c])
        bb.outputs.append(_value_info(total, ctx.elem(c), ctx.shape(c)))
    for i in wanted_x:
        output(grads[scan_in[i]], in_types[scan_in[i]])
    bb.inputs.extend(inputs)

    carried = len(floats) + len(wanted_c)
    outs = [b.fresh("d_scan_state") for _ in range(carried)]
    outs += [b.fresh("d_scan_input_rev") for _ in wanted_x]
    b.op_multi(
        "Scan",
        [*initial, *scanned],
        outs,
        body=bb.graph(),
        num_scan_inputs=len(scanned),
    )
    result: Grads = [None] * (n + m + len(caps))
    for pos, j in enumerate(floats):
        if ctx.needs(node.input[j]):
            result[j] = outs[pos]
    for pos, c in enumerate(wanted_c):
        result[n + m + caps.index(c)] = outs[len(floats) + pos]
    for pos, i in enumerate(wanted_x):
        result[n + i] = _reverse(ctx, outs[carried + pos], order)
    return result


@VJP.register("ReverseSequence")
def reverse_sequence(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """The reversal is its own inverse: the same node on dy."""
    attrs = {a: ctx.attr(node, a, d) for a, d in (("batch_axis", 1), ("time_axis", 0))}
    return [ctx.b.op("ReverseSequence", [single(dys), node.input[1]], **attrs), None]
