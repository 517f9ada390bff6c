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

from dnnspec.autodiff.context import VjpContext, static_dims
from dnnspec.autodiff.rules.base import VJP, single
from dnnspec.graph.builder import Dim

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
        sizes = static_dims([shape[a] for a in reduced])
        if mean:
            if sizes is not None:
                count = math.prod(sizes)
                grad = b.op("Mul", [grad, ctx.scalar(1.0 / count, y)])
            else:
                kept = [d for a, d in enumerate(shape) if a not in reduced]
                grad = b.op("Mul", [grad, _dynamic_ratio(ctx, x, y, kept)])
        if not keepdims and reduced != list(range(len(reduced))):
            grad = b.op("Unsqueeze", [grad, ctx.int_const(reduced)])
        if sizes is not None:
            size_of = dict(zip(reduced, sizes, strict=True))
            target = ctx.int_const([size_of.get(a, 1) for a in range(rank)])
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


def _dynamic_ratio(ctx: VjpContext, x: str, y: str, kept: list[Dim] | None = None) -> str:
    """size(y) / size(x): the mean's 1 / count when the reduced dims are not static.
    `kept`: x's dims that are not reduced, when known; if they are all static, size(y) is
    a constant (a batch mean reduced to a scalar needs only size(x))."""
    b = ctx.b
    elem = ctx.elem(y)
    kept_sizes = static_dims(kept)
    if kept_sizes is not None:
        y_size = ctx.scalar(float(math.prod(kept_sizes)), y)
    else:
        y_size = b.op("Cast", [b.op("Size", [y])], to=elem)
    return b.op("Div", [y_size, b.op("Cast", [b.op("Size", [x])], to=elem)])


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
    if axes == [] and int(ctx.attr(node, "noop_with_empty_axes", 0)):
        grads[0] = dy
        return grads
    if not int(ctx.attr(node, "keepdims", 1)) and axes_in is not None:
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
