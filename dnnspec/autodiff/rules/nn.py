"""Dropout (the ONNX op; dnnspec's own lowering multiplies by an in-graph mask instead).

In training mode y = x * mask / (1 - ratio), so dx = dy * mask / (1 - ratio). The rule
needs the mask: it asks the engine for the node's mask output, which the engine adds when
the node has none (a Dropout computes it anyway), so lowering need not ask for it.
"""

from __future__ import annotations

import onnx

from dnnspec.autodiff.context import VjpContext
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


@VJP.register("Dropout")
def dropout(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    x, y = node.input[0], node.output[0]
    dy, b = single(dys), ctx.b
    ratio_in, training_in = ctx.input(node, 1), ctx.input(node, 2)
    grads: Grads = [None] * len(node.input)
    training = ctx.const_value(training_in)
    if training_in is None or (training is not None and not bool(training)):
        grads[0] = dy
        return grads
    ratio = ctx.const_value(ratio_in) if ratio_in else 0.5
    if ratio is not None:
        keep = 1.0 - float(ratio)
        scale = ctx.scalar(1.0 / keep if keep > 0.0 else 0.0, y)
    else:
        assert ratio_in is not None
        r = (
            ratio_in
            if ctx.elem(ratio_in) == ctx.elem(y)
            else b.op("Cast", [ratio_in], to=ctx.elem(y))
        )
        scale = b.op("Div", [ctx.scalar(1.0, y), b.op("Sub", [ctx.scalar(1.0, y), r])])
    if training is None:
        scale = b.op("Where", [training_in, scale, ctx.scalar(1.0, y)])
    mask = ctx.residuals.output(node, 1, f"{y}_mask")
    grads[0] = b.op("Where", [mask, b.op("Mul", [dy, scale]), ctx.scalar(0.0, x)])
    return grads
