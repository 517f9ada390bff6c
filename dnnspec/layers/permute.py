"""`permute(axes)`: reorder the non-batch axes, as Keras' Permute (`transpose` is its alias).

`axes` lists the input's non-batch axes in their new order, numbered as in the tensor
(axis 1 is the first after the batch): `permute([2, 1])` turns a sequence `[N, T, F]` into
channels-first `[N, F, T]`, `permute([3, 1, 2])` channels-last images `[N, H, W, C]` into
`[N, C, H, W]`. The batch axis stays first. The result is a plain tensor, read channels
first by the layers that care (`layers/layout.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ShapeError, TensorType
from dnnspec.layers.common import shape_text
from dnnspec.schema import ArgSpec, Signature


def _listed(args: dict[str, Any]) -> list[int]:
    value = args["axes"]
    return list(value) if isinstance(value, list) else [value]


def _axes(x: TensorType, axes: list[int]) -> list[int]:
    """`axes` checked to be an order of the non-batch axes of `x`."""
    others = list(range(1, len(x.dims)))
    if sorted(axes) == others:
        return axes
    if sorted(axes) == [0, *others] and axes[0] == 0:
        raise ShapeError(
            f"permute axes {shape_text(axes)} list the batch axis, which always stays first",
            help=f"list the other axes only: permute({shape_text(axes[1:])})",
        )
    example = shape_text(list(reversed(others))) if others else "[]"
    raise ShapeError(
        f"permute axes {shape_text(axes)} are not an order of the non-batch axes "
        f"{shape_text(others)} of {x}",
        help=f"name each of {shape_text(others)} once, e.g. permute({example})",
    )


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = inputs[0]
    axes = _axes(x, _listed(args))
    return TensorType(x.dtype, (x.dims[0], *(x.dims[a] for a in axes)))


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    perm = [0, *_listed(node.args)]
    if perm == sorted(perm):
        return inputs[0]
    return ctx.b.op("Transpose", [inputs[0]], perm=perm, hint=node.name)


LAYERS.add(
    "permute",
    LayerDef(
        signature=Signature(
            args=(
                ArgSpec(
                    name="axes",
                    type="ints",
                    doc="the non-batch axes in their new order, numbered from 1",
                ),
            )
        ),
        infer=infer,
        lower=lower,
        doc="reorder the non-batch axes: [N, T, F] -> permute([2, 1]) -> [N, F, T]",
    ),
    aliases=("transpose",),
)
