"""Dropout: in training, zero each element with probability p and scale the rest by
1 / (1 - p); in evaluation and inference, the identity (no node at all).

The mask comes from the training step's counter-based `RandomSource` rather than ONNX's
Dropout, so a resumed run replays exactly the same masks; each node has its own stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ShapeError, TensorType
from dnnspec.layers.common import require_float
from dnnspec.schema import ArgSpec, Signature, arg_float


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    if args["p"] >= 1.0:
        raise ShapeError(
            f"dropout(p = {args['p']:g}) would drop every element",
            help="p is the probability of dropping an element: choose it in [0, 1)",
        )
    return require_float(inputs[0], "dropout")


def drop(ctx: LowerCtx, x: str, rank: int, p: float, hint: str | None = None) -> str:
    """Mul(x, Cast(u >= p) / (1 - p)) with u uniform in [0, 1), `x` of rank `rank`:
    keeps 1 - p. The identity outside training; other layers (attention) use it for their
    own dropout.

    The mask is a Cast of the comparison rather than a Where: tract propagates "regions of
    interest" backwards through Where and the integer hash, and the symbolic batch size
    (from a mean over the batch) meeting the hash's integer constants grew its expressions
    without bound (loading the digits train step did not finish). A Gather from
    [0, 1 / (1 - p)] also stopped it but is slower in onnxruntime than the Cast and Mul
    (docs/performance.md)."""
    if not ctx.training or p == 0.0:
        return x
    if ctx.rng is None:
        raise ValueError("lowering dropout for training needs a RandomSource in LowerCtx.rng")
    b = ctx.b
    keep = b.op("GreaterOrEqual", [ctx.rng.uniform_like(b, x, rank, ctx.salt), b.const(p)])
    kept = b.op("Cast", [keep], to=b.float_elem)
    mask = b.op("Mul", [kept, b.const(1.0 / (1.0 - p))], hint="dropout_mask")
    return b.op("Mul", [x, mask], hint=hint)


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    rank = len(ctx.types[node.inputs[0]].dims)
    return drop(ctx, inputs[0], rank, arg_float(node.args, "p"), hint=node.name)


LAYERS.add(
    "dropout",
    LayerDef(
        signature=Signature(
            args=(ArgSpec(name="p", type="float", min=0.0, max=1.0, doc="drop probability"),)
        ),
        infer=infer,
        lower=lower,
        doc="while training, zero elements with probability p and scale the rest; else identity",
    ),
)
