"""Elementwise activations and the two normalising ones (softmax, log_softmax).

Every activation is one call to `_activation`: a float tensor in, the same type out, one
FLOP per element, lowered to a single ONNX node whose attributes are the layer's arguments
(silu is the exception: x * Sigmoid(x), two nodes, so it needs no VJP rule of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, LowerFn, TensorType
from dnnspec.layers.common import normalize_axis, per_sample, require_float
from dnnspec.schema import ArgSpec, Signature


def _one_node(op: str) -> LowerFn:
    """Lowering to `op` applied to the input, with the node's arguments as attributes."""

    def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
        attrs: dict[str, Any] = dict(node.args)
        return ctx.b.op(op, [inputs[0]], hint=node.name, **attrs)

    return lower


def _silu(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    x = inputs[0]
    return ctx.b.op("Mul", [x, ctx.b.op("Sigmoid", [x])], hint=node.name)


def _flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    return per_sample(out)


def _activation(
    name: str,
    lower: str | LowerFn,
    doc: str,
    args: tuple[ArgSpec, ...] = (),
    aliases: tuple[str, ...] = (),
) -> None:
    """Register one activation: same type out as in, float only, an `axis` checked if any."""

    def infer(inputs: Sequence[TensorType], bound: dict[str, Any]) -> TensorType:
        x = require_float(inputs[0], name)
        if "axis" in bound:
            normalize_axis(bound["axis"], x, name, batch=False)
        return x

    LAYERS.add(
        name,
        LayerDef(
            signature=Signature(args=args),
            infer=infer,
            lower=_one_node(lower) if isinstance(lower, str) else lower,
            flops=_flops,
            doc=doc,
        ),
        aliases=aliases,
    )


def _alpha(default: float) -> tuple[ArgSpec, ...]:
    return (ArgSpec(name="alpha", type="float", default=default, min=0.0),)


_AXIS = (ArgSpec(name="axis", type="int", default=-1, doc="axis to normalise over"),)

_activation("relu", "Relu", "max(x, 0)")
_activation("sigmoid", "Sigmoid", "1 / (1 + exp(-x))")
_activation("tanh", "Tanh", "hyperbolic tangent")
_activation("leaky_relu", "LeakyRelu", "x if x > 0 else alpha x", _alpha(0.01))
_activation("elu", "Elu", "x if x > 0 else alpha (exp(x) - 1)", _alpha(1.0))
_activation(
    "gelu",
    "Gelu",
    "x Phi(x), exact (erf) or with the tanh approximation",
    (ArgSpec(name="approximate", type="str", default="none", choices=("none", "tanh")),),
)
_activation("silu", _silu, "x sigmoid(x)", aliases=("swish",))
_activation("softplus", "Softplus", "log(1 + exp(x))")
_activation("softmax", "Softmax", "exp(x) / sum(exp(x)) along `axis`", _AXIS)
_activation("log_softmax", "LogSoftmax", "x - log(sum(exp(x))) along `axis`", _AXIS)
