"""Fully connected layer: `dense(units)` (alias `linear`) over the last axis.

The weight is stored [in, units] so a 2-D input is one Gemm without transposes (and the
backward pass needs none either); higher-rank inputs use MatMul + Add over the last axis.
`dense(vocab, tie = embedding_1)` has no weight of its own: it reads the embedding's
[vocab, dim] table transposed (Gemm's transB), so the table counts once and the engine
adds the gradients of both uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import (
    LAYERS,
    SHARED,
    LayerDef,
    LowerCtx,
    ParamSpec,
    ShapeError,
    TensorType,
)
from dnnspec.layers.common import per_sample, require_float, require_rank
from dnnspec.layers.init import INITIALISERS
from dnnspec.schema import ArgSpec, Signature, arg_bool, arg_int


def _in_features(t: TensorType) -> int:
    width = t.dims[-1]
    if not isinstance(width, int):
        raise ShapeError(
            f"dense needs a known last dimension to size its weight, got {t}",
            help="declare that dimension as a number, or flatten/reshape to a known width",
        )
    return width


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = require_float(inputs[0], "dense")
    require_rank(x, "dense", 2)
    _in_features(x)
    return TensorType(x.dtype, (*x.dims[:-1], args["units"]), x.sequence)


def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    fan_in, units = _in_features(inputs[0]), args["units"]
    weight = ParamSpec("weight", (fan_in, units), args["init"], fan_in=fan_in, fan_out=units)
    own = [] if args.get("tie") else [weight]
    if not args["bias"]:
        return own
    return [*own, ParamSpec("bias", (units,), "zeros", fan_in, units, decay=False)]


def shared(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    """The table a tied dense reads, [units, in]: an embedding's [vocab, dim]."""
    if not args.get("tie"):
        return []
    return [ParamSpec("weight", (args["units"], _in_features(inputs[0])), "normal")]


def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    """2 * in * units for the product (+ units for the bias) at each position of a sample."""
    units = arg_int(args, "units")
    positions = per_sample(out) // units
    bias = units if arg_bool(args, "bias") else 0
    return positions * (2 * _in_features(inputs[0]) * units + bias)


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    x, bias, table = inputs[0], params.get("bias"), params.get(f"{SHARED}weight")
    flat = len(ctx.types[node.inputs[0]].dims) == 2
    if table is not None and flat:  # x table^T (+ bias), the transpose inside the Gemm
        return ctx.b.op("Gemm", [x, table, *([bias] if bias else [])], hint=node.name, transB=1)
    weight = params["weight"] if table is None else ctx.b.op("Transpose", [table])
    if bias is None:
        return ctx.b.op("MatMul", [x, weight], hint=node.name)
    if flat:
        return ctx.b.op("Gemm", [x, weight, bias], hint=node.name)
    return ctx.b.op("Add", [ctx.b.op("MatMul", [x, weight]), bias], hint=node.name)


LAYERS.add(
    "dense",
    LayerDef(
        signature=Signature(
            args=(
                ArgSpec(name="units", type="int", min=1, doc="output width"),
                ArgSpec(name="bias", type="bool", default=True),
                ArgSpec(
                    name="init",
                    type="str",
                    default="auto",
                    choices=("auto", *INITIALISERS),
                    doc="auto: he_normal when a ReLU-like activation follows, else glorot_uniform",
                ),
                ArgSpec(
                    name="tie",
                    type="str",
                    default="",
                    doc="an embedding's name: its [units, in] table, transposed, is the weight",
                ),
            )
        ),
        shares="tie",
        shared=shared,
        recent=("tie",),
        infer=infer,
        lower=lower,
        params=params,
        flops=flops,
        doc="fully connected over the last axis: x W + b, W of shape [in, units]",
    ),
    aliases=("linear",),
)
