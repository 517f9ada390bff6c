"""Data movement: Reshape, Flatten, Squeeze/Unsqueeze, Transpose, Concat, Split, Slice, Expand.

Each inverts the movement on the gradient with constants taken from static shapes where
known (a Reshape target with one -1 for a symbolic batch, Split sizes, Pad amounts), so
Shape nodes appear only for genuinely dynamic sizes.
"""

from __future__ import annotations

import numpy as np
import onnx

from dnnspec.autodiff.context import AutodiffError, VjpContext, static_dims
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


def _reshape_back(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    x = node.input[0]
    grads: Grads = [None] * len(node.input)
    grads[0] = ctx.b.op("Reshape", [single(dys), ctx.shape_tensor(x)])
    return grads


VJP.add("Reshape", _reshape_back)
VJP.add("Flatten", _reshape_back)


@VJP.register("Squeeze")
def squeeze(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Unsqueeze with the same axes (negative axes refer to the input's rank in both)."""
    axes = ctx.input(node, 1)
    if axes is None:
        return _reshape_back(ctx, node, dys)
    return [ctx.b.op("Unsqueeze", [single(dys), axes]), None]


@VJP.register("Unsqueeze")
def unsqueeze(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    return [ctx.b.op("Squeeze", [single(dys), node.input[1]]), None]


@VJP.register("Transpose")
def transpose(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    perm = ctx.attr(node, "perm", None)
    if perm is None:
        perm = list(reversed(range(ctx.require_rank(node.input[0], "Transpose"))))
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    dy = single(dys)
    made = next((n for n in reversed(ctx.b.nodes) if dy in n.output), None)
    if made is not None and made.op_type == "Transpose":
        undone = list(ctx.attr(made, "perm", []))
        if len(undone) == len(perm) and [undone[q] for q in inverse] == list(range(len(perm))):
            return [made.input[0]]  # dy is a Transpose this one undoes (MatMul's views)
    return [ctx.b.op("Transpose", [dy], perm=inverse)]


@VJP.register("Concat")
def concat(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """One Slice when a single input needs a gradient, else one Split (sizes from static
    dims, or gathered from the inputs' shapes)."""
    dy, b = single(dys), ctx.b
    rank = ctx.require_rank(node.output[0], "Concat")
    axis = int(ctx.attr(node, "axis", 0)) % rank
    inputs = list(node.input)
    needed = [i for i, x in enumerate(inputs) if ctx.needs(x)]
    sizes = static_dims([(ctx.shape(x) or (None,) * rank)[axis] for x in inputs])
    grads: Grads = [None] * len(inputs)
    if sizes is not None:
        offsets = np.cumsum([0, *sizes]).tolist()
        if len(needed) == 1:
            i = needed[0]
            grads[i] = b.op(
                "Slice",
                [
                    dy,
                    ctx.int_const([offsets[i]]),
                    ctx.int_const([offsets[i + 1]]),
                    ctx.int_const([axis]),
                ],
            )
            return grads
        split = ctx.int_const(sizes)
    else:
        split = b.op(
            "Concat", [b.op("Shape", [x], start=axis, end=axis + 1) for x in inputs], axis=0
        )
    parts = b.op_multi("Split", [dy, split], len(inputs), hint="d_concat", axis=axis)
    for i in needed:
        grads[i] = parts[i]
    return grads


def _slice_range(start: int, end: int, step: int, dim: int) -> range:
    """The indices ONNX Slice selects along one axis (its clamping rules)."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return range(start, end, step)


@VJP.register("Slice")
def slice_(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Place dy back into zeros of the input's shape without ScatterND.

    Static case: one Pad (before/after amounts of contiguous axes; strided or reversed axes
    get one trailing zero) and, per strided or reversed axis, a Gather whose index maps every
    input position to its dy slot or to the zero. Dynamic sizes/bounds work for unit steps:
    the Pad amounts are computed from Shape and the clamped starts/ends.
    """
    x = node.input[0]
    dy, b = single(dys), ctx.b
    starts, ends = ctx.ints(node.input[1]), ctx.ints(node.input[2])
    axes_in, steps_in = ctx.input(node, 3), ctx.input(node, 4)
    steps = ctx.ints(steps_in) if steps_in else None
    count = len(starts) if starts is not None else len(ends) if ends is not None else None
    if steps_in is None and count is not None:
        steps = [1] * count
    axes = ctx.ints(axes_in) if axes_in else (list(range(count)) if count is not None else None)
    shape = ctx.shape(x)
    grads: Grads = [None] * len(node.input)
    if (
        starts is not None
        and ends is not None
        and axes is not None
        and steps is not None
        and shape is not None
        and all(isinstance(shape[a], int) for a in axes)
    ):
        before, after, gathers = [], [], []
        for a, s, e, k in zip(axes, starts, ends, steps, strict=True):
            dim = shape[a]
            assert isinstance(dim, int)
            picked = _slice_range(s, e, k, dim)
            if k == 1 or len(picked) <= 1:
                first = picked[0] if len(picked) else 0
                before.append(first)
                after.append(dim - first - len(picked))
            else:
                index = np.full(dim, len(picked), np.int64)
                index[list(picked)] = np.arange(len(picked))
                before.append(0)
                after.append(1)
                gathers.append((a, index))
        grad = dy
        if any(before) or any(after):
            grad = b.op("Pad", [dy, ctx.int_const(before + after), "", ctx.int_const(axes)])
        for a, index in gathers:
            grad = b.op("Gather", [grad, b.const(index, "int64", hint="g_i")], axis=a)
        grads[0] = grad
        return grads
    if steps is None or any(k != 1 for k in steps):
        raise AutodiffError(
            f"the Slice gradient for '{x}' needs constant steps of 1, or "
            "constant starts/ends/axes/steps and static sliced dims"
        )
    axes_t = axes_in or b.op(
        "Range", [b.const(0, "int64"), b.op("Size", [node.input[1]]), b.const(1, "int64")]
    )
    dims = b.op("Gather", [ctx.shape_of(x), axes_t], axis=0)
    zero = ctx.int_const([0])

    def clamp(bound: str) -> str:
        bound = (
            bound
            if ctx.elem(bound) == onnx.TensorProto.INT64
            else b.op("Cast", [bound], to=onnx.TensorProto.INT64)
        )
        wrapped = b.op("Where", [b.op("Less", [bound, zero]), b.op("Add", [bound, dims]), bound])
        return b.op("Min", [b.op("Max", [wrapped, zero]), dims])

    start = clamp(node.input[1])
    end = b.op("Max", [clamp(node.input[2]), start])
    pads = b.op("Concat", [start, b.op("Sub", [dims, end])], axis=0)
    grads[0] = b.op("Pad", [dy, pads, "", axes_t])
    return grads


@VJP.register("Expand")
def expand(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    x = node.input[0]
    return [ctx.reduce_to(single(dys), ctx.shape(node.output[0]), x), None]


def _zeros(ctx: VjpContext, name: str) -> str:
    """Zeros shaped like `name`: a constant when static, else from its run-time shape."""
    shape = ctx.shape(name)
    dims = [d for d in shape or () if isinstance(d, int)]
    if shape is not None and len(dims) == len(shape):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.elem(name))
        return ctx.b.const(np.zeros(dims, dtype), dtype, hint="g_zeros")
    return ctx.zeros_like(name)


@VJP.register("Split")
def split(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Concat of the outputs' gradients along the axis (zeros for outputs without one)."""
    x = node.input[0]
    if not ctx.needs(x):
        return [None] * len(node.input)
    rank = ctx.require_rank(x, "Split")
    axis = int(ctx.attr(node, "axis", 0)) % rank
    parts = [
        dy if dy is not None else _zeros(ctx, y) for y, dy in zip(node.output, dys, strict=True)
    ]
    return [ctx.b.op("Concat", parts, axis=axis), *([None] * (len(node.input) - 1))]
