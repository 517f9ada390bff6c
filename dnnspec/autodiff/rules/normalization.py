"""LayerNormalization (opset 17): y = (x - mean) * inv_std * scale + bias over axes >= axis.

dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * scale and xhat the
normalised input; dscale = sum(dy * xhat) and dbias = sum(dy) over the leading axes. In
float32 graphs the rule asks the engine for the forward node's Mean and InvStdDev outputs
(it computes them anyway; their stash type is float32), which saves six nodes per step. In
float64 graphs onnxruntime has no kernel with a float64 stash, so the statistics are
recomputed from x (ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Reciprocal).
"""

from __future__ import annotations

import onnx

from dnnspec.autodiff.context import VjpContext
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


def _statistics(ctx: VjpContext, node: onnx.NodeProto, axes: str) -> tuple[str, str]:
    """(mean, inv_std) of the node's input, keeping the reduced axes."""
    x, b = node.input[0], ctx.b
    if ctx.elem(x) == onnx.TensorProto.FLOAT and int(ctx.attr(node, "stash_type", 1)) == 1:
        y = node.output[0]
        mean = ctx.residuals.output(node, 1, f"{y}_mean")
        return mean, ctx.residuals.output(node, 2, f"{y}_inv_std")
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    mean = b.op("ReduceMean", [x, axes], keepdims=1)
    centred = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Mul", [centred, centred]), axes], keepdims=1)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, ctx.scalar(eps, x)])])])
    return mean, inv


@VJP.register("LayerNormalization")
def layer_normalization(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    x, scale, bias = node.input[0], node.input[1], ctx.input(node, 2)
    dy, b = single(dys), ctx.b
    rank = ctx.require_rank(x, "LayerNormalization")
    axis = int(ctx.attr(node, "axis", -1)) % rank
    axes = ctx.int_const(list(range(axis, rank)))
    shape = ctx.shape(x)
    mean, inv = _statistics(ctx, node, axes)
    xhat = b.op("Mul", [b.op("Sub", [x, mean]), inv])
    grads: Grads = [None] * len(node.input)
    if ctx.needs(x):
        g = b.op("Mul", [dy, scale])
        m1 = b.op("ReduceMean", [g, axes], keepdims=1)
        m2 = b.op("ReduceMean", [b.op("Mul", [g, xhat]), axes], keepdims=1)
        centred = b.op("Sub", [b.op("Sub", [g, m1]), b.op("Mul", [xhat, m2])])
        grads[0] = b.op("Mul", [centred, inv])
    if ctx.needs(scale):
        grads[1] = ctx.reduce_to(b.op("Mul", [dy, xhat]), shape, scale)
    if bias is not None and ctx.needs(bias):
        grads[2] = ctx.reduce_to(dy, shape, bias)
    return grads
