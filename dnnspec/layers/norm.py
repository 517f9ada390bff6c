"""Batch normalisation: `batchnorm(momentum = 0.1, eps = 1e-5)` over the channel axis.

The channel axis is 1 for channels-first tensors (`[N, C, L]`, `[N, C, H, W]`) and the
last axis for `[N, F]`, as PyTorch's BatchNorm1d/2d; of a sequence tensor `[N, T, F]`, the
features (over time, as Keras' BatchNormalization; `layout.over_time`). While training,
each batch is normalised by its own mean and (biased) variance, written in primitive ops so the
autodiff engine differentiates it with the rules it has; the running mean and variance
move towards the batch's by `momentum` (PyTorch's convention: new = (1 - m) old + m
batch, with the unbiased variance), and are the layer's non-trained state. Evaluation
and model.onnx use the running statistics through ONNX's fused BatchNormalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ParamSpec, ShapeError, TensorType
from dnnspec.layers.common import require_float
from dnnspec.layers.layout import over_time
from dnnspec.schema import ArgSpec, Signature, arg_float


def _features(x: TensorType) -> int:
    if len(x.dims) < 2:
        raise ShapeError(
            f"batchnorm needs [N, F] or channels-first [N, C, ...], got {x}",
            help="it normalises each feature or channel over the batch",
        )
    if len(x.dims) > 4:
        raise ShapeError(f"batchnorm works on rank 2 to 4, got {x} (rank {len(x.dims)})")
    channels = x.dims[1]
    if not isinstance(channels, int):
        raise ShapeError(
            f"batchnorm needs a known channel count (axis 1) to size its scale, got {x}",
            help="declare that dimension as a number",
        )
    return channels


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = require_float(inputs[0], "batchnorm")
    _features(x)
    return x


def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    n = _features(inputs[0])
    return [
        ParamSpec("weight", (n,), "ones", decay=False),
        ParamSpec("bias", (n,), "zeros", decay=False),
    ]


def state(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    n = _features(inputs[0])
    return [
        ParamSpec("running_mean", (n,), "zeros", decay=False),
        ParamSpec("running_var", (n,), "ones", decay=False),
    ]


def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    """A multiply and an add per element (inference: the statistics fold into them)."""
    x = inputs[0]
    count = 1
    for d in x.dims[1:]:
        count *= d if isinstance(d, int) else 1
    return 2 * count


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    x, b = inputs[0], ctx.b
    rank = len(ctx.types[node.inputs[0]].dims)
    eps, momentum = arg_float(node.args, "eps"), arg_float(node.args, "momentum")
    mean_in, var_in = params["running_mean"], params["running_var"]
    if not ctx.training:
        operands = [x, params["weight"], params["bias"], mean_in, var_in]
        return b.op("BatchNormalization", operands, hint=node.name, epsilon=eps)
    axes = b.const([0, *range(2, rank)], "int64", hint="axes")
    n = _features(ctx.types[node.inputs[0]])
    per_channel = b.const([1, n, *([1] * (rank - 2))], "int64", hint="shape")

    def channelwise(value: str) -> str:
        return value if rank == 2 else b.op("Reshape", [value, per_channel])

    mean = b.op("ReduceMean", [x, axes], hint="batch_mean")
    centred = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Mul", [centred, centred]), axes], hint="batch_var")
    inv_std = b.op("Div", [b.const(1.0), b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])])
    scale = b.op("Mul", [inv_std, channelwise(params["weight"])])
    out = b.op("Add", [b.op("Mul", [centred, scale]), channelwise(params["bias"])], hint=node.name)

    # running statistics: not on any path to the loss, so never differentiated
    flat = b.const([n], "int64", hint="shape")
    count = b.op("Div", [b.op("Cast", [b.op("Size", [x])], to=b.float_elem), b.const(float(n))])
    unbiased = b.op("Div", [count, b.op("Max", [b.op("Sub", [count, b.const(1.0)]), b.const(1.0)])])
    batch_var = b.op("Mul", [b.op("Reshape", [var, flat]), unbiased])
    for name, old, new in (
        ("running_mean", mean_in, b.op("Reshape", [mean, flat])),
        ("running_var", var_in, batch_var),
    ):
        moved = b.op("Mul", [b.op("Sub", [new, old]), b.const(momentum)])
        ctx.updates[params[name]] = b.op("Add", [old, moved], hint=f"{node.name}_{name}")
    return out


LAYERS.add(
    "batchnorm",
    over_time(
        LayerDef(
            signature=Signature(
                args=(
                    ArgSpec(
                        name="momentum",
                        type="float",
                        default=0.1,
                        min=0.0,
                        max=1.0,
                        doc="weight of each batch in the running statistics (PyTorch's convention)",
                    ),
                    ArgSpec(name="eps", type="float", default=1e-5, min=0.0, min_exclusive=True),
                )
            ),
            infer=infer,
            lower=lower,
            params=params,
            state=state,
            flops=flops,
            doc="normalise each channel (axis 1; the last axis of [N, F]) by batch statistics "
            "while training and running statistics in eval; scale and shift per channel",
        ),
    ),
)
