"""Token embedding: `embedding(vocab, dim)` maps int64 ids [N, ...] to vectors [N, ..., dim].

Lowered to one Gather of the [vocab, dim] table; its gradient is a scatter-add of the
output gradient into the rows that were read (the Gather VJP rule), so the backward pass
costs O(tokens x dim) whatever the vocabulary size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ParamSpec, ShapeError, TensorType
from dnnspec.schema import ArgSpec, Signature


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = inputs[0]
    if x.dtype.startswith("float"):
        raise ShapeError(
            f"embedding looks up integer token ids, but got the float tensor {x}",
            help="declare the input int64 (token ids in [0, vocab)); for float features use "
            "dense(dim) instead",
        )
    if x.dtype not in ("int64", "int32"):
        raise ShapeError(f"embedding needs int64 token ids, got {x}")
    if len(x.dims) < 1:
        raise ShapeError(f"embedding needs ids with a batch axis, got {x}")
    # ids [N, T] embed to a sequence [N, T, dim]
    return TensorType("float32", (*x.dims, args["dim"]), sequence=len(x.dims) == 2)


def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    vocab, dim = args["vocab"], args["dim"]
    return [ParamSpec("weight", (vocab, dim), "normal", fan_in=vocab, fan_out=dim, decay=True)]


def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    """A lookup moves `dim` values per token and computes nothing."""
    return 0


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    return ctx.b.op("Gather", [params["weight"], inputs[0]], hint=node.name, axis=0)


LAYERS.add(
    "embedding",
    LayerDef(
        signature=Signature(
            args=(
                ArgSpec(name="vocab", type="int", min=1, doc="number of token ids"),
                ArgSpec(name="dim", type="int", min=1, doc="vector width"),
            )
        ),
        infer=infer,
        lower=lower,
        params=params,
        flops=flops,
        doc="int64 ids [N, ...] -> rows of a [vocab, dim] table: [N, ..., dim]",
        token_ids="vocab",
    ),
)
