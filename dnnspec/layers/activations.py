"""Elementwise activations and the two normalising ones (softmax, log_softmax).

Every activation is one call to `_activation`: a float tensor in, the same type out, one
FLOP per element, lowered to a single ONNX node whose attributes are the layer's arguments
(silu is the exception: x * Sigmoid(x), two nodes, so it needs no VJP rule of its own).
Each also says what it is to other stages (`Activation`): whether it is ReLU-like (He init
for the weights before it) and whether it yields probabilities or log-probabilities (the
checks of a classification loss), so no stage keeps a list of activation names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, Activation, LayerDef, LowerCtx, LowerFn, TensorType
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


_PLAIN = Activation()
"""An activation no other stage treats specially (tanh, softplus)."""


def _activation(
    name: str,
    lower: str | LowerFn,
    doc: str,
    args: tuple[ArgSpec, ...] = (),
    aliases: tuple[str, ...] = (),
    facts: Activation = _PLAIN,
) -> None:
    """Register one activation: same type out as in, float only, an `axis` checked if any;
    `facts` say what it is to other stages."""

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
            activation=facts,
        ),
        aliases=aliases,
    )


def _alpha(default: float) -> tuple[ArgSpec, ...]:
    return (ArgSpec(name="alpha", type="float", default=default, min=0.0),)


_AXIS = (ArgSpec(name="axis", type="int", default=-1, doc="axis to normalise over"),)

_RELU_LIKE = Activation(relu_like=True)

_activation("relu", "Relu", "max(x, 0)", facts=_RELU_LIKE)
_activation("sigmoid", "Sigmoid", "1 / (1 + exp(-x))", facts=Activation(output="probabilities"))
_activation("tanh", "Tanh", "hyperbolic tangent")
_activation("leaky_relu", "LeakyRelu", "x if x > 0 else alpha x", _alpha(0.01), facts=_RELU_LIKE)
_activation("elu", "Elu", "x if x > 0 else alpha (exp(x) - 1)", _alpha(1.0), facts=_RELU_LIKE)
_activation(
    "gelu",
    "Gelu",
    "x Phi(x), exact (erf) or with the tanh approximation",
    (ArgSpec(name="approximate", type="str", default="none", choices=("none", "tanh")),),
    facts=_RELU_LIKE,
)
_activation("silu", _silu, "x sigmoid(x)", aliases=("swish",), facts=_RELU_LIKE)
_activation("softplus", "Softplus", "log(1 + exp(x))")
_activation(
    "softmax",
    "Softmax",
    "exp(x) / sum(exp(x)) along `axis`",
    _AXIS,
    facts=Activation(output="probabilities"),
)
_activation(
    "log_softmax",
    "LogSoftmax",
    "x - log(sum(exp(x))) along `axis`",
    _AXIS,
    facts=Activation(output="log_probabilities"),
)
