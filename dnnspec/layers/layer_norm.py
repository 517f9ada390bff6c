"""Layer normalisation: `layer_norm(eps, axes)` normalises each sample (each position of a
sequence) over its last axis, or over all non-batch axes, then scales and shifts.

It lowers to ONNX's fused LayerNormalization (opset 17) in training and inference alike:
one node forward, and a VJP rule (autodiff/rules/normalization.py) for the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ParamSpec, ShapeError, TensorType
from dnnspec.layers.common import per_sample, require_float, require_rank, shape_text
from dnnspec.schema import ArgSpec, Signature, arg_float


def normalized_dims(t: TensorType, axes: str) -> tuple[int, ...]:
    """The dims normalised over (static: they size the scale and shift)."""
    dims = t.dims[-1:] if axes == "last" else t.dims[1:]
    if not all(isinstance(d, int) for d in dims):
        raise ShapeError(
            f"layer_norm(axes = {axes}) needs known sizes for {shape_text(dims)} of {t} "
            "to size its scale and shift",
            help="normalise over the last axis only (axes = last)"
            if axes == "all"
            else "declare the last dimension as a number",
        )
    return tuple(int(d) for d in dims)


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = require_float(inputs[0], "layer_norm")
    require_rank(x, "layer_norm", 2)
    normalized_dims(x, args["axes"])
    return x


def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    dims = normalized_dims(inputs[0], args["axes"])
    return [
        ParamSpec("scale", dims, "ones", decay=False),
        ParamSpec("bias", dims, "zeros", decay=False),
    ]


def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    """About 8 per element: mean, centre, square, variance, normalise, scale, shift."""
    return 8 * per_sample(out)


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    axis = -1 if node.args["axes"] == "last" else 1
    return ctx.b.op(
        "LayerNormalization",
        [inputs[0], params["scale"], params["bias"]],
        hint=node.name,
        axis=axis,
        epsilon=arg_float(node.args, "eps"),
    )


LAYERS.add(
    "layer_norm",
    LayerDef(
        signature=Signature(
            args=(
                ArgSpec(
                    name="eps",
                    type="float",
                    default=1e-5,
                    min=0.0,
                    min_exclusive=True,
                    doc="added to the variance",
                ),
                ArgSpec(
                    name="axes",
                    type="str",
                    default="last",
                    choices=("last", "all"),
                    doc="normalise over the last axis, or over every non-batch axis",
                ),
            )
        ),
        infer=infer,
        lower=lower,
        params=params,
        flops=flops,
        doc="(x - mean) / sqrt(var + eps) * scale + shift over the last (or all non-batch) "
        "axes; 2 x normalised size parameters",
    ),
)
