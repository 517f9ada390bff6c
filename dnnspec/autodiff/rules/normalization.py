"""LayerNormalization (opset 17) and BatchNormalization (inference form).

LayerNormalization: y = (x - mean) * inv_std * scale + bias over axes >= axis.

dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * scale and xhat the
normalised input; dscale = sum(dy * xhat) and dbias = sum(dy) over the leading axes. In
float32 graphs the rule asks the engine for the forward node's Mean and InvStdDev outputs
(it computes them anyway; their stash type is float32), which saves six nodes per step. In
float64 graphs onnxruntime has no kernel with a float64 stash, so the statistics are
recomputed from x (ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Reciprocal).

BatchNormalization normalises per channel (axis 1) by its mean and var inputs; batchnorm's
training graph passes x's own batch statistics, and the rule then differentiates through
them in closed form (its docstring).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from dnnspec.autodiff.context import AutodiffError, VjpContext, static_dims
from dnnspec.autodiff.rules.base import VJP, single
from dnnspec.graph.builder import GraphBuilder

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


def _centred_batch(ctx: VjpContext, node: onnx.NodeProto, axes: list[int]) -> str | None:
    """x - mean when the node's mean and var inputs are its input's own batch mean and
    biased variance over `axes` (batchnorm's training form: ReduceMean of x, then
    ReduceMean of the square of x - mean, a BatchNormalization of x with scale 1, shift
    -mean, mean 0, variance 1 and epsilon 0); else None."""
    x, mean, var = node.input[0], node.input[3], node.input[4]
    producers = {o: n for n in ctx.b.nodes for o in n.output}

    def reduces(name: str) -> onnx.NodeProto | None:
        p = producers.get(name)
        if p is None or p.op_type != "ReduceMean" or int(ctx.attr(p, "keepdims", 1)):
            return None
        return p if ctx.ints(ctx.input(p, 1)) == axes else None

    of_mean, of_var = reduces(mean), reduces(var)
    if of_mean is None or of_var is None or of_mean.input[0] != x:
        return None
    square = producers.get(of_var.input[0])
    if square is None or square.op_type != "Mul" or square.input[0] != square.input[1]:
        return None
    centring = producers.get(square.input[0])
    if centring is None or centring.op_type != "BatchNormalization" or centring.input[0] != x:
        return None
    shift = producers.get(centring.input[2])
    if shift is None or shift.op_type != "Neg" or shift.input[0] != mean:
        return None
    unit = [ctx.const_value(centring.input[i]) for i in (1, 3, 4)]
    if float(ctx.attr(centring, "epsilon", 1e-5)) != 0.0 or any(
        v is None or not np.all(v == k) for v, k in zip(unit, (1, 0, 1), strict=True)
    ):
        return None
    return str(square.input[0])


def _inverse_count(ctx: VjpContext, x: str, scale: str, reduced: list[int]) -> str:
    """1 / the number of values per channel: a constant where the reduced dims are static,
    else channels / Size(x)."""
    shape = ctx.shape(x)
    sizes = None if shape is None else static_dims([shape[a] for a in reduced])
    if sizes is not None:
        return ctx.scalar(1.0 / math.prod(sizes), x)
    channels = static_dims(ctx.shape(scale))
    elem = ctx.elem(x)
    numerator = (
        ctx.scalar(float(channels[0]), x)
        if channels is not None
        else ctx.b.op("Cast", [ctx.b.op("Size", [scale])], to=elem)
    )
    return ctx.b.op("Div", [numerator, ctx.b.op("Cast", [ctx.b.op("Size", [x])], to=elem)])


def _channel_constants(ctx: VjpContext, like: str) -> tuple[str, str]:
    """Zeros and ones shaped like the per-channel vector `like`."""
    channels = static_dims(ctx.shape(like))
    if channels is None:
        zeros = ctx.zeros_like(like)
        return zeros, ctx.b.op("Add", [zeros, ctx.scalar(1.0, like)])
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.elem(like))
    return ctx.b.const(np.zeros(channels, dtype)), ctx.b.const(np.ones(channels, dtype))


def _affine(b: GraphBuilder, v: str, scale: str, shift: str, zeros: str, ones: str) -> str:
    """v * scale + shift per channel (axis 1), as a BatchNormalization with mean 0,
    variance 1 and epsilon 0 (exact: it divides by sqrt(1)). onnxruntime broadcasts a
    [1, C, 1, 1] operand in spans of H * W, which at 8x8 made a Mul and an Add 2.5-5x
    slower than this one kernel (docs/performance.md, "Batch normalization")."""
    return b.op("BatchNormalization", [v, scale, shift, zeros, ones], epsilon=0.0)


@VJP.register("BatchNormalization")
def batch_normalization(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Inference form y = (x - mean) * scale / sqrt(var + eps) + B, per channel (axis 1).

    With s = scale * inv_std and c = x - mean: dx = dy * s, dscale = inv_std * sum(dy * c),
    dB = sum(dy), dmean = -s * dB, dvar = -s * inv_std * dscale / 2. Where mean and var are
    x's own batch statistics (batchnorm while training), dx is the closed form through
    them, s * (dy - mean(dy) - xhat * mean(dy * xhat)), and they get no gradient.
    """
    if int(ctx.attr(node, "training_mode", 0)):
        raise AutodiffError("BatchNormalization in training mode has no VJP rule")
    x, scale, mean, var = node.input[0], node.input[1], node.input[3], node.input[4]
    dy, b = single(dys), ctx.b
    rank = ctx.require_rank(x, "BatchNormalization")
    reduced = [0, *range(2, rank)]
    axes = ctx.int_const(reduced)
    eps = float(ctx.attr(node, "epsilon", 1e-5))
    per_channel = ctx.int_const([1, -1, *([1] * (rank - 2))])

    def channelwise(value: str) -> str:
        return value if rank == 2 else b.op("Reshape", [value, per_channel])

    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, ctx.scalar(eps, x)])])])
    s = b.op("Mul", [scale, inv])
    batch = _centred_batch(ctx, node, reduced)
    centred = batch or b.op("Sub", [x, channelwise(mean)])
    d_bias = b.op("ReduceSum", [dy, axes], keepdims=0)
    d_scale = b.op("Mul", [b.op("ReduceSum", [b.op("Mul", [dy, centred]), axes], keepdims=0), inv])
    grads: Grads = [None] * len(node.input)
    if ctx.needs(x):
        zeros, ones = _channel_constants(ctx, scale)
        dx = _affine(b, dy, s, zeros, zeros, ones)
        if batch is not None:  # minus (centred * s * inv * dscale + s * dB) / count
            per_count = b.op("Mul", [s, _inverse_count(ctx, x, scale, reduced)])
            slope = b.op("Mul", [per_count, b.op("Mul", [inv, d_scale])])
            offset = b.op("Mul", [per_count, d_bias])
            dx = b.op("Sub", [dx, _affine(b, centred, slope, offset, zeros, ones)])
        grads[0] = dx
    if ctx.needs(scale):
        grads[1] = d_scale
    if ctx.needs(node.input[2]):
        grads[2] = d_bias
    if batch is None and ctx.needs(mean):
        grads[3] = b.op("Neg", [b.op("Mul", [s, d_bias])])
    if batch is None and ctx.needs(var):
        grads[4] = b.op("Mul", [b.op("Mul", [s, inv]), b.op("Mul", [d_scale, ctx.scalar(-0.5, x)])])
    return grads
