"""Indexing: Gather, whose gradient is a scatter-add of dy into zeros of the data's shape.

ScatterND(reduction = add) beats OneHot(ids) and a Gemm with dy, whose cost grows with the
vocabulary, for the embedding gradient (docs/performance.md).
"""

from __future__ import annotations

import onnx

from dnnspec.autodiff.context import VjpContext
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


@VJP.register("Gather")
def gather(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """ScatterND(zeros, ids[..., None], dy, reduction = add) with the gathered axis moved
    to the front (a Transpose either side when axis != 0). Negative ids count from the end
    in Gather; ScatterND's are mapped the same way."""
    data, ids = node.input[0], node.input[1]
    if not ctx.needs(data):
        return [None, None]
    dy, b = single(dys), ctx.b
    rank = ctx.require_rank(data, "Gather")
    q = ctx.require_rank(ids, "Gather")
    axis = int(ctx.attr(node, "axis", 0)) % rank
    zeros = ctx.zeros_like(data)
    if axis:
        front = [axis, *range(axis), *range(axis + 1, rank)]
        zeros = b.op("Transpose", [zeros], perm=front)
        perm = [*range(axis, axis + q), *range(axis), *range(axis + q, rank - 1 + q)]
        dy = b.op("Transpose", [dy], perm=perm)
    index = b.op("Unsqueeze", [ids, ctx.int_const([-1])])
    if ctx.elem(ids) != onnx.TensorProto.INT64:
        index = b.op("Cast", [index], to=onnx.TensorProto.INT64)
    grad = b.op("ScatterND", [zeros, index, dy], reduction="add")
    if axis:
        back = [0] * rank
        for i, p in enumerate(front):
            back[p] = i
        grad = b.op("Transpose", [grad], perm=back)
    return [grad, None]
