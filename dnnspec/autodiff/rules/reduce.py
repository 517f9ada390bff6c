"""ReduceSum and ReduceMean (opset 18+: axes as an optional input).

The gradient broadcasts dy back over the reduced axes with one Expand. With keepdims=0
the reduced axes are re-inserted first, unless they lead (right-aligned broadcasting
restores them). The Expand target uses the reduced dims and 1 elsewhere, so only the
reduced dims must be static to avoid a Shape node; ReduceMean scales dy before the
Expand, on the smaller tensor.
"""

from __future__ import annotations

import math

import onnx

from dnnspec.autodiff.context import VjpContext
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


def _reduce(ctx: VjpContext, node: onnx.NodeProto, dys: Grads, mean: bool) -> Grads:
    x, y = node.input[0], node.output[0]
    dy, b = single(dys), ctx.b
    axes_in = ctx.input(node, 1)
    keepdims = int(ctx.attr(node, "keepdims", 1))
    grads: Grads = [None] * len(node.input)
    axes = ctx.ints(axes_in) if axes_in else []
    if axes == [] and int(ctx.attr(node, "noop_with_empty_axes", 0)):
        grads[0] = dy
        return grads
    shape = ctx.shape(x)
    if axes is not None and shape is not None:
        rank = len(shape)
        reduced = sorted({a % rank for a in axes}) if axes else list(range(rank))
        grad = dy
        sizes = [shape[a] for a in reduced]
        static = all(isinstance(d, int) for d in sizes)
        if mean:
            if static:
                count = math.prod(d for d in sizes if isinstance(d, int))
                grad = b.op("Mul", [grad, ctx.scalar(1.0 / count, y)])
            else:
                grad = b.op("Mul", [grad, _dynamic_ratio(ctx, x, y)])
        if not keepdims and reduced != list(range(len(reduced))):
            grad = b.op("Unsqueeze", [grad, ctx.int_const(reduced)])
        if static:
            target = ctx.int_const([shape[a] if a in reduced else 1 for a in range(rank)])
        else:
            target = ctx.shape_of(x)
        grads[0] = b.op("Expand", [grad, target])
        return grads
    # axes computed at run time (or unknown rank): Unsqueeze accepts the same axes input
    grad = dy
    if mean:
        grad = b.op("Mul", [grad, _dynamic_ratio(ctx, x, y)])
    if not keepdims and axes_in is not None:
        grad = b.op("Unsqueeze", [grad, axes_in])
    grads[0] = b.op("Expand", [grad, ctx.shape_of(x)])
    return grads


def _dynamic_ratio(ctx: VjpContext, x: str, y: str) -> str:
    """size(y) / size(x): the mean's 1 / count when the reduced dims are not static."""
    b = ctx.b
    elem = ctx.elem(y)
    return b.op(
        "Div",
        [b.op("Cast", [b.op("Size", [y])], to=elem), b.op("Cast", [b.op("Size", [x])], to=elem)],
    )


@VJP.register("ReduceSum")
def reduce_sum(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    return _reduce(ctx, node, dys, mean=False)


@VJP.register("ReduceMean")
def reduce_mean(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    return _reduce(ctx, node, dys, mean=True)


@VJP.register("ReduceMax")
def reduce_max(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """dy goes to the elements equal to the maximum, split evenly among ties (PyTorch's
    amax convention): mask * dy / count, broadcast back over the reduced axes."""
    x, y = node.input[0], node.output[0]
    dy, b = single(dys), ctx.b
    axes_in = ctx.input(node, 1)
    grads: Grads = [None] * len(node.input)
    axes = ctx.ints(axes_in) if axes_in else []
    if axes == [] and int(ctx.attr(node, "noop_with_empty_axes", 0)):  # type: ignore[call-overload]
        grads[0] = dy
        return grads
    if not int(ctx.attr(node, "keepdims", 1)) and axes_in is not None:  # type: ignore[call-overload]
        if axes is not None and ctx.rank(x) is not None:
            rank = ctx.require_rank(x, "ReduceMax")
            axes_in = ctx.int_const(sorted(a % rank for a in axes))
        y = b.op("Unsqueeze", [y, axes_in])
        dy = b.op("Unsqueeze", [dy, axes_in])
    mask = b.op("Cast", [b.op("Equal", [x, y])], to=ctx.elem(x))
    reduce_axes = [axes_in] if axes_in is not None else []
    count = b.op("ReduceSum", [mask, *reduce_axes], keepdims=1)
    grads[0] = b.op("Mul", [mask, b.op("Div", [dy, count])])
    return grads
