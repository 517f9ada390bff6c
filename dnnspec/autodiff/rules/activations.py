"""Activations and normalised exponentials.

Where the derivative is a function of the output (Relu, Sigmoid, Tanh, Elu, Softmax,
LogSoftmax) the rule reads the forward output, so the input need not stay alive and no
forward work is repeated. Each formulation (Relu as Mul(dy, Cast(Greater(y, 0)))) is the
fastest of those timed, or the fewest nodes among equals (docs/performance.md).
"""

from __future__ import annotations

import math

import onnx

from dnnspec.autodiff.context import VjpContext
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


@VJP.register("Relu")
def relu(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    y, b = node.output[0], ctx.b
    positive = b.op("Greater", [y, ctx.scalar(0.0, y)])
    return [b.op("Mul", [single(dys), b.op("Cast", [positive], to=ctx.elem(y))])]


@VJP.register("Sigmoid")
def sigmoid(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    y, b = node.output[0], ctx.b
    slope = b.op("Mul", [y, b.op("Sub", [ctx.scalar(1.0, y), y])])
    return [b.op("Mul", [single(dys), slope])]


@VJP.register("Tanh")
def tanh(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    y, b = node.output[0], ctx.b
    slope = b.op("Sub", [ctx.scalar(1.0, y), b.op("Mul", [y, y])])
    return [b.op("Mul", [single(dys), slope])]


@VJP.register("LeakyRelu")
def leaky_relu(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """The input decides the branch (any alpha sign works)."""
    x, b, dy = node.input[0], ctx.b, single(dys)
    alpha = float(ctx.attr(node, "alpha", 0.01))
    positive = b.op("Greater", [x, ctx.scalar(0.0, x)])
    return [b.op("Where", [positive, dy, b.op("Mul", [dy, ctx.scalar(alpha, x)])])]


@VJP.register("Elu")
def elu(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """For x <= 0, y = alpha (e^x - 1) so dy/dx = y + alpha."""
    x, y, b, dy = node.input[0], node.output[0], ctx.b, single(dys)
    alpha = float(ctx.attr(node, "alpha", 1.0))
    positive = b.op("Greater", [x, ctx.scalar(0.0, x)])
    negative_side = b.op("Mul", [dy, b.op("Add", [y, ctx.scalar(alpha, y)])])
    return [b.op("Where", [positive, dy, negative_side])]


@VJP.register("Gelu")
def gelu(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Exact: Phi(x) + x phi(x). Tanh form: with s = c (x + a x^3), t = tanh(s),
    d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)."""
    x, b, dy = node.input[0], ctx.b, single(dys)
    half = b.op("Mul", [dy, ctx.scalar(0.5, x)])
    x2 = b.op("Mul", [x, x])
    if ctx.attr(node, "approximate", b"none") in (b"tanh", "tanh"):
        c, a = math.sqrt(2.0 / math.pi), 0.044715
        s = b.op(
            "Mul", [x, b.op("Add", [b.op("Mul", [x2, ctx.scalar(c * a, x)]), ctx.scalar(c, x)])]
        )
        t = b.op("Tanh", [s])
        ds = b.op("Add", [b.op("Mul", [x2, ctx.scalar(3.0 * c * a, x)]), ctx.scalar(c, x)])
        sech2 = b.op("Sub", [ctx.scalar(1.0, x), b.op("Mul", [t, t])])
        slope2 = b.op(
            "Add",
            [b.op("Add", [t, ctx.scalar(1.0, x)]), b.op("Mul", [b.op("Mul", [x, sech2]), ds])],
        )
    else:
        # 2 (Phi(x) + x phi(x)) = 1 + erf(x / sqrt 2) + sqrt(2 / pi) x exp(-x^2 / 2)
        erf = b.op("Erf", [b.op("Mul", [x, ctx.scalar(1.0 / math.sqrt(2.0), x)])])
        bump = b.op("Exp", [b.op("Mul", [x2, ctx.scalar(-0.5, x)])])
        xbump = b.op("Mul", [b.op("Mul", [x, bump]), ctx.scalar(math.sqrt(2.0 / math.pi), x)])
        slope2 = b.op("Add", [b.op("Add", [erf, ctx.scalar(1.0, x)]), xbump])
    return [b.op("Mul", [half, slope2])]


@VJP.register("Erf")
def erf(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """d erf(x) = 2 / sqrt(pi) exp(-x^2)."""
    x, b, dy = node.input[0], ctx.b, single(dys)
    bump = b.op("Exp", [b.op("Mul", [x, b.op("Neg", [x])])])
    return [b.op("Mul", [b.op("Mul", [dy, ctx.scalar(2.0 / math.sqrt(math.pi), x)]), bump])]


@VJP.register("Softplus")
def softplus(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    x, b = node.input[0], ctx.b
    return [b.op("Mul", [single(dys), b.op("Sigmoid", [x])])]


@VJP.register("Softmax")
def softmax(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """dx = y * dy - y * sum(y * dy) along the axis."""
    y, b = node.output[0], ctx.b
    axis = ctx.int_const([int(ctx.attr(node, "axis", -1))])
    p = b.op("Mul", [single(dys), y])
    total = b.op("ReduceSum", [p, axis], keepdims=1)
    return [b.op("Sub", [p, b.op("Mul", [y, total])])]


@VJP.register("LogSoftmax")
def log_softmax(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """dx = dy - exp(y) * sum(dy) along the axis."""
    y, b, dy = node.output[0], ctx.b, single(dys)
    axis = ctx.int_const([int(ctx.attr(node, "axis", -1))])
    total = b.op("ReduceSum", [dy, axis], keepdims=1)
    return [b.op("Sub", [dy, b.op("Mul", [b.op("Exp", [y]), total])])]
