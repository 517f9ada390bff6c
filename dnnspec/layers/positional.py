"""Position encodings: `positional(kind, max_len)` adds a [T, d] table to a [N, T, d] sequence.

`sinusoidal` is the fixed table of "Attention is all you need" (sin on even features, cos
on odd ones, wavelengths from 2 pi to 10000 * 2 pi); `learned` is a trained [max_len, d]
parameter (GPT-2's, initialised N(0, 0.02)). A static T adds the first T rows directly; a
symbolic T (a model that accepts any length up to max_len, as `dnnspec generate` needs)
slices them at run time from the input's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ParamSpec, ShapeError, TensorType
from dnnspec.layers.common import per_sample, require_float
from dnnspec.layers.layout import as_sequence
from dnnspec.schema import ArgSpec, Signature, arg_int


def sinusoid_table(length: int, width: int) -> np.ndarray:
    """table[pos, 2i] = sin(pos / 10000^(2i / width)), table[pos, 2i + 1] = cos(...)."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    rates = np.power(10000.0, -np.arange(0, width, 2, dtype=np.float64) / width)
    table = np.zeros((length, width))
    table[:, 0::2] = np.sin(pos * rates)
    table[:, 1::2] = np.cos(pos * rates)[:, : width // 2]
    return table


def _width(x: TensorType) -> int:
    if len(x.dims) != 3:
        raise ShapeError(
            f"positional needs a sequence [N, T, features], got {x}",
            help="embed token ids first (embedding(vocab, dim)), or reshape to [N, T, features]",
        )
    width = x.dims[2]
    if not isinstance(width, int):
        raise ShapeError(
            f"positional needs a known feature width to size its table, got {x}",
            help="declare the last dimension as a number",
        )
    return width


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = require_float(inputs[0], "positional")
    _width(x)
    length = x.dims[1]
    if isinstance(length, int) and length > args["max_len"]:
        raise ShapeError(
            f"positional(max_len = {args['max_len']}) cannot encode {length} positions of {x}",
            help=f"raise max_len to at least {length}",
        )
    return as_sequence(x)


def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    if args["kind"] != "learned":
        return []
    width = _width(inputs[0])
    shape = (args["max_len"], width)
    return [ParamSpec("table", shape, "normal_002", args["max_len"], width, decay=False)]


def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    return per_sample(out)


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    x, b = inputs[0], ctx.b
    length, width = ctx.types[node.inputs[0]].dims[1:]
    assert isinstance(width, int)
    max_len = arg_int(node.args, "max_len")
    learned = node.args["kind"] == "learned"
    if learned:
        table = params["table"]
    elif isinstance(length, int):
        table = b.const(sinusoid_table(length, width), hint="positions")
    else:
        table = b.const(sinusoid_table(max_len, width), hint="positions")
    if isinstance(length, int) and (learned and length < max_len):
        table = b.op(
            "Slice",
            [table, b.const([0], "int64"), b.const([length], "int64"), b.const([0], "int64")],
        )
    elif not isinstance(length, int):
        end = b.op("Shape", [x], hint="length", start=1, end=2)
        table = b.op("Slice", [table, b.const([0], "int64"), end, b.const([0], "int64")])
    return b.op("Add", [x, table], hint=node.name)


LAYERS.add(
    "positional",
    LayerDef(
        signature=Signature(
            args=(
                ArgSpec(
                    name="kind",
                    type="str",
                    default="sinusoidal",
                    choices=("sinusoidal", "learned"),
                    doc="a fixed sin/cos table, or a trained one",
                ),
                ArgSpec(name="max_len", type="int", min=1, doc="the longest sequence encoded"),
            )
        ),
        infer=infer,
        lower=lower,
        params=params,
        flops=flops,
        doc="x + table[:T] on [N, T, d]: fixed sinusoids, or a learned [max_len, d] table",
    ),
)
