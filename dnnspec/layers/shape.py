"""Data movement that keeps the batch dimension: `flatten` and `reshape(shape)`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ShapeError, TensorType
from dnnspec.layers.common import product, require_rank, shape_text
from dnnspec.schema import ArgSpec, Signature


def infer_flatten(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = inputs[0]
    require_rank(x, "flatten", 2)
    return TensorType(x.dtype, (x.dims[0], product(x.dims[1:])))


def lower_flatten(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    if len(ctx.types[node.inputs[0]].dims) == 2:
        return inputs[0]
    return ctx.b.op("Flatten", [inputs[0]], hint=node.name, axis=1)


def infer_reshape(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    """The target's non-batch dims, with a single -1 solved from the element count."""
    x, target = inputs[0], list(args["shape"])
    require_rank(x, "reshape", 1)
    count = product(x.dims[1:])
    if not isinstance(count, int):
        raise ShapeError(
            f"reshape needs known non-batch dimensions to check the element count, got {x}"
        )
    if any(d == 0 or d < -1 for d in target) or target.count(-1) > 1:
        raise ShapeError(
            f"reshape target {shape_text(target)} must be positive sizes and at most one -1"
        )
    known = math.prod(d for d in target if d != -1)
    wanted = f"cannot reshape {x} ({count} per sample) to {shape_text((x.dims[0], *target))}"
    if -1 in target:
        if count % known:
            raise ShapeError(f"{wanted}: {count} is not a multiple of {known}")
        target[target.index(-1)] = count // known
    elif known != count:
        raise ShapeError(f"{wanted} ({known} per sample)")
    return TensorType(x.dtype, (x.dims[0], *target))


def lower_reshape(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    dims = ctx.types[node.name].dims[1:]
    shape = ctx.b.const([-1, *dims], "int64", hint="shape")
    return ctx.b.op("Reshape", [inputs[0], shape], hint=node.name)


LAYERS.add(
    "flatten",
    LayerDef(
        signature=Signature(),
        infer=infer_flatten,
        lower=lower_flatten,
        doc="[N, d1, d2, ...] -> [N, d1 * d2 * ...]",
    ),
)
LAYERS.add(
    "reshape",
    LayerDef(
        signature=Signature(
            args=(ArgSpec(name="shape", type="ints", doc="non-batch dims, one may be -1"),)
        ),
        infer=infer_reshape,
        lower=lower_reshape,
        doc="new non-batch dims with the same element count; one -1 is inferred",
    ),
)
