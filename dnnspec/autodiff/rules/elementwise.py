"""Elementwise arithmetic: broadcasting binary ops, Where, Max/Min, unary math, Cast.

Broadcast operands get their gradient summed back to their own shape (`ctx.reduce_to`),
and the reduction is applied before any Neg so the negation runs on the smaller tensor.
Unary rules reuse the forward output where the derivative is a function of it (Exp, Sqrt).
"""

from __future__ import annotations

import onnx

from dnnspec.autodiff.context import VjpContext
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


@VJP.register("Add")
def add(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    dy = single(dys)
    shape = ctx.shape(node.output[0])
    return [ctx.reduce_to(dy, shape, x) if ctx.needs(x) else None for x in node.input]


VJP.add("Sum", add)


@VJP.register("Sub")
def sub(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    a, b_ = node.input
    dy = single(dys)
    shape = ctx.shape(node.output[0])
    da = ctx.reduce_to(dy, shape, a) if ctx.needs(a) else None
    db = ctx.b.op("Neg", [ctx.reduce_to(dy, shape, b_)]) if ctx.needs(b_) else None
    return [da, db]


@VJP.register("Mul")
def mul(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    a, b_ = node.input
    dy = single(dys)
    shape = ctx.shape(node.output[0])
    if a == b_:
        # x * x: one 2 dy x instead of two products summed by the engine
        if not ctx.needs(a):
            return [None, None]
        half = ctx.b.op("Mul", [ctx.unexpanded(dy, shape, a), a])
        return [ctx.b.op("Add", [half, half]), None]
    grads: Grads = []
    for x, other in ((a, b_), (b_, a)):
        if ctx.needs(x):
            product = ctx.b.op("Mul", [ctx.unexpanded(dy, shape, other), other])
            grads.append(ctx.reduce_to(product, shape, x))
        else:
            grads.append(None)
    return grads


@VJP.register("Div")
def div(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """y = a / b: da = dy / b, db = -(dy / b) * y, sharing dy / b."""
    a, b_ = node.input
    dy = single(dys)
    y, shape = node.output[0], ctx.shape(node.output[0])
    if not (ctx.needs(a) or ctx.needs(b_)):
        return [None, None]
    q = ctx.b.op("Div", [dy, b_])
    da = ctx.reduce_to(q, shape, a) if ctx.needs(a) else None
    db = None
    if ctx.needs(b_):
        db = ctx.b.op("Neg", [ctx.reduce_to(ctx.b.op("Mul", [q, y]), shape, b_)])
    return [da, db]


@VJP.register("Neg")
def neg(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    dy = single(dys)
    return [ctx.b.op("Neg", [dy])]


@VJP.register("Identity")
def identity(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    return [dys[0]]


@VJP.register("Cast")
def cast(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Float-to-float casts pass the gradient back in the input's type; integer inputs
    never need one (the engine does not differentiate w.r.t. them)."""
    x = node.input[0]
    dy = single(dys)
    if not ctx.needs(x):
        return [None]
    to = ctx.elem(x)
    return [dy if to == ctx.elem(node.output[0]) else ctx.b.op("Cast", [dy], to=to)]


@VJP.register("Where")
def where(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    cond, a, b_ = node.input
    dy = single(dys)
    shape = ctx.shape(node.output[0])
    zero = ctx.scalar(0.0, node.output[0])
    da = db = None
    if ctx.needs(a):
        da = ctx.reduce_to(ctx.b.op("Where", [cond, dy, zero]), shape, a)
    if ctx.needs(b_):
        db = ctx.reduce_to(ctx.b.op("Where", [cond, zero, dy]), shape, b_)
    return [None, da, db]


def _select(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Max/Min: each element's gradient goes to the first input equal to the result
    (ties go to the earliest input, so the gradients always sum to dy)."""
    dy = single(dys)
    y, shape = node.output[0], ctx.shape(node.output[0])
    zero = ctx.scalar(0.0, y)
    last = max((i for i, x in enumerate(node.input) if ctx.needs(x)), default=-1)
    grads: Grads = [None] * len(node.input)
    rest = dy
    for i, x in enumerate(node.input[: last + 1]):
        if i == len(node.input) - 1:
            grads[i] = ctx.reduce_to(rest, shape, x)
            break
        hit = ctx.b.op("Equal", [x, y])
        if ctx.needs(x):
            mine = ctx.b.op("Where", [hit, rest, zero])
            grads[i] = ctx.reduce_to(mine, shape, x)
            if i < last:
                rest = ctx.b.op("Sub", [rest, mine])
        elif i < last:
            rest = ctx.b.op("Where", [hit, zero, rest])
    return grads


VJP.add("Max", _select)
VJP.add("Min", _select)


@VJP.register("Pow")
def pow_(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """y = a ** e: da = dy * e * a ** (e - 1) (a constant e is folded, e = 2 needs no Pow);
    de = dy * y * log(a)."""
    a, e = node.input
    dy = single(dys)
    y, shape = node.output[0], ctx.shape(node.output[0])
    b = ctx.b
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.elem(a))
    da = de = None
    if ctx.needs(a):
        exponent = ctx.const_value(e)
        if exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0:
            local = b.op("Mul", [a, ctx.scalar(2.0, a)])
        elif exponent is not None:
            exponent = exponent.astype(dtype)
            local = b.op(
                "Mul", [b.op("Pow", [a, b.const(exponent - 1, dtype)]), b.const(exponent, dtype)]
            )
        else:
            ef = e if ctx.elem(e) == ctx.elem(a) else b.op("Cast", [e], to=ctx.elem(a))
            local = b.op("Mul", [ef, b.op("Pow", [a, b.op("Sub", [ef, ctx.scalar(1.0, a)])])])
        da = ctx.reduce_to(b.op("Mul", [dy, local]), shape, a)
    if ctx.needs(e):
        de = ctx.reduce_to(b.op("Mul", [dy, b.op("Mul", [y, b.op("Log", [a])])]), shape, e)
    return [da, de]


@VJP.register("Sqrt")
def sqrt(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """d sqrt(x) = dy * 0.5 / y, reusing the forward output."""
    dy = single(dys)
    y = node.output[0]
    return [ctx.b.op("Div", [ctx.b.op("Mul", [dy, ctx.scalar(0.5, y)]), y])]


@VJP.register("Abs")
def abs_(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    dy = single(dys)
    return [ctx.b.op("Mul", [dy, ctx.b.op("Sign", [node.input[0]])])]


@VJP.register("Exp")
def exp(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    dy = single(dys)
    return [ctx.b.op("Mul", [dy, node.output[0]])]


@VJP.register("Log")
def log(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    dy = single(dys)
    return [ctx.b.op("Div", [dy, node.input[0]])]
