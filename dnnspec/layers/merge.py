"""Layers that merge two or more tensors: `add` (`+`), `mul` (`*`) and `concat(axis)`.

`add` and `mul` broadcast numpy-style from the right on symbolic dims: equal dims, or a
literal 1 against anything; two different names (or a name against a number) cannot be
proven equal, so they are an error rather than a runtime surprise.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Any

from dnnspec.ir import Dim, Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ShapeError, TensorType
from dnnspec.layers.common import normalize_axis, per_sample
from dnnspec.schema import ArgSpec, Signature


def operands_text(inputs: Sequence[TensorType]) -> str:
    """`f32[N, 64] and f32[N, 32]`, or `a, b and c` for more."""
    names = [str(t) for t in inputs]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _same_dtype(verb: str, inputs: Sequence[TensorType]) -> str:
    if len({t.dtype for t in inputs}) > 1:
        raise ShapeError(f"cannot {verb} {operands_text(inputs)}: the dtypes differ")
    return inputs[0].dtype


def _broadcast_dim(a: Dim | None, b: Dim) -> Dim | None:
    """The broadcast of two dims; None when they clash (or `a` already clashed)."""
    if a is None:
        return None
    if a == b or b == 1:
        return a
    return b if a == 1 else None


def _elementwise(verb: str, op: str, doc: str) -> LayerDef:
    """A merge by an elementwise binary ONNX op, applied left to right over the inputs."""

    def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
        dtype = _same_dtype(verb, inputs)
        rank = max(len(t.dims) for t in inputs)
        dims: list[Dim] = []
        for axis in range(-rank, 0):
            present = [t.dims[axis] for t in inputs if len(t.dims) >= -axis]
            first: Dim | None = present[0]
            dim = reduce(_broadcast_dim, present[1:], first)
            if dim is None:
                raise ShapeError(f"cannot {verb} {operands_text(inputs)}")
            dims.append(dim)
        return TensorType(dtype, tuple(dims), any(t.sequence for t in inputs))

    def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
        out = inputs[0]
        for i, other in enumerate(inputs[1:], start=2):
            out = ctx.b.op(op, [out, other], hint=node.name if i == len(inputs) else None)
        return out

    def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
        return (len(inputs) - 1) * per_sample(out)

    return LayerDef(
        signature=Signature(), infer=infer, lower=lower, flops=flops, arity=None, doc=doc
    )


def infer_concat(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    dtype = _same_dtype("concatenate", inputs)
    first = inputs[0]
    if len({len(t.dims) for t in inputs}) > 1:
        raise ShapeError(f"cannot concatenate {operands_text(inputs)}: the ranks differ")
    axis = normalize_axis(args["axis"], first, "concat", batch=False)
    for i, dim in enumerate(first.dims):
        if i != axis and any(t.dims[i] != dim for t in inputs):
            raise ShapeError(
                f"cannot concatenate {operands_text(inputs)} along axis {args['axis']}: "
                f"dimension {i} differs",
                help="all dimensions other than the concatenation axis must be equal",
            )
    parts = [t.dims[axis] for t in inputs]
    size: Dim = (
        sum(d for d in parts if isinstance(d, int))
        if all(isinstance(d, int) for d in parts)
        else "+".join(str(d) for d in parts)
    )
    dims = (*first.dims[:axis], size, *first.dims[axis + 1 :])
    return TensorType(dtype, dims, any(t.sequence for t in inputs))


def lower_concat(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    return ctx.b.op("Concat", list(inputs), hint=node.name, axis=node.args["axis"])


LAYERS.add("add", _elementwise("add", "Add", "elementwise sum with broadcasting (`a + b`)"))
LAYERS.add("mul", _elementwise("multiply", "Mul", "elementwise product, broadcasting (`a * b`)"))
LAYERS.add(
    "concat",
    LayerDef(
        signature=Signature(args=(ArgSpec(name="axis", type="int", default=-1),)),
        infer=infer_concat,
        lower=lower_concat,
        arity=None,
        doc="join tensors along `axis`; all other dims equal",
    ),
)
