"""Convolution and pooling over channels-first tensors: `conv1d`, `conv2d`, `max_pool1d/2d`,
`avg_pool1d/2d`, `global_avg_pool`, `global_max_pool` and `upsample2d`.

Layout is ONNX's: `[N, C, L]` for 1-D and `[N, C, H, W]` for 2-D; the 1-D and global
layers read a sequence tensor `[N, T, F]` over time (`layout.over_time`). Every windowed layer
reads its geometry from one helper, `window`, so the output size, the padding written into
the ONNX node and the shape errors are the same for convolutions and pools (as Keras 3's
`compute_conv_output_shape` serves all of its conv and pool layers). The weight of a
convolution is ONNX's and PyTorch's `[filters, channels / groups, *kernel]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import (
    LAYERS,
    InferFn,
    LayerDef,
    LowerCtx,
    LowerFn,
    ParamsFn,
    ParamSpec,
    ShapeError,
    TensorType,
)
from dnnspec.layers.common import require_float, shape_text
from dnnspec.layers.layout import over_time
from dnnspec.schema import ArgSpec, Signature, arg_int

INITS = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "normal_002", "orthogonal")
LAYOUT = {1: "[N, C, L]", 2: "[N, C, H, W]"}


@dataclass(frozen=True)
class Window:
    """The geometry of one windowed layer over its spatial axes."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]
    """ONNX order: the begin pads of every axis, then the end pads."""
    out: tuple[int, ...]

    def attrs(self, dilations: bool = True) -> dict[str, Any]:
        attrs: dict[str, Any] = {"kernel_shape": list(self.kernel), "strides": list(self.stride)}
        if any(p for p in self.pads):
            attrs["pads"] = list(self.pads)
        if dilations and any(d != 1 for d in self.dilation):
            attrs["dilations"] = list(self.dilation)
        return attrs


def _int_list(layer: str, name: str, value: object) -> list[int]:
    """`value` as a list of ints (an int is a list of one)."""
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ShapeError(f"{layer} {name} must be an int or a list of ints, got {value!r}")
    return [v for v in values if isinstance(v, int)]


def per_axis(layer: str, name: str, value: object, spatial: int, least: int) -> tuple[int, ...]:
    """An int (same for every spatial axis) or a list of one int per axis, each >= `least`."""
    values = _int_list(layer, name, value)
    if len(values) == 1:
        values = values * spatial
    if len(values) != spatial:
        raise ShapeError(
            f"{layer} {name} {shape_text(values)} has {len(values)} entries for "
            f"{spatial} spatial ax{'is' if spatial == 1 else 'es'}",
            help=f"write one number, or a list of {spatial}",
        )
    if any(v < least for v in values):
        raise ShapeError(f"{layer} {name} must be {least} or more, got {shape_text(values)}")
    return tuple(values)


def _reshape_hint(features: object, spatial: int) -> str:
    """How to turn [N, F] into one channel of positions: [1, F], or [1, s, s] for F = s^2."""
    first = "reshape the features into channels and positions first"
    if not isinstance(features, int):
        return f"{first}, e.g. reshape([C, {', '.join(['size'] * spatial)}])"
    side = math.isqrt(features)
    if spatial == 2 and side * side == features:
        example = f"reshape([1, {side}, {side}])"
        return f"{first}, e.g. {example} for {features} features as one {side}x{side} channel"
    if spatial == 1:
        return f"{first}, e.g. reshape([1, {features}]) for {features} features as one channel"
    return f"{first}, e.g. reshape([C, H, W]) with C * H * W = {features}"


CHANNELS_LAST = (1, 3, 4)
"""Channel counts of images as files hold them (grey, RGB, RGBA): a last axis this small
after two equal larger ones is [N, H, W, C], as Keras and NumPy images come."""


def channels_last_fix(x: TensorType) -> str | None:
    """How to read `x` channels first when it looks like channels-last images, else None."""
    if len(x.dims) != 4 or not all(isinstance(d, int) for d in x.dims[1:]):
        return None
    height, width, channels = x.dims[1:]
    if channels not in CHANNELS_LAST or not (isinstance(height, int) and height > channels):
        return None
    first = shape_text([x.dims[0], channels, height, width])
    return (
        f"images are channels first, [N, C, H, W]: declare the input {x.dtype}{first} and store "
        "the arrays so (x.transpose(0, 3, 1, 2)), or write permute([3, 1, 2]) before it"
    )


def require_layout(x: TensorType, layer: str, spatial: int) -> tuple[int, ...]:
    """The static spatial dims of a channels-first input of rank `spatial + 2`."""
    require_float(x, layer)
    fix = channels_last_fix(x) if spatial == 2 else None
    if fix is not None and x.dims[1] == x.dims[2]:
        raise ShapeError(
            f"{layer} reads {LAYOUT[2]}, channels first, but {x} looks channels last: "
            f"{x.dims[1]}x{x.dims[2]} images of {x.dims[3]} channel{'s' * (x.dims[3] != 1)}",
            help=fix,
        )
    rank = spatial + 2
    if len(x.dims) != rank:
        help = (
            _reshape_hint(x.dims[1], spatial)
            if len(x.dims) == 2
            else f"{layer} works on {LAYOUT[spatial]} (channels first, as ONNX)"
        )
        raise ShapeError(
            f"{layer} needs a rank-{rank} input {LAYOUT[spatial]}, got {x} (rank {len(x.dims)})",
            help=help,
        )
    dims = x.dims[2:]
    if not all(isinstance(d, int) for d in dims):
        raise ShapeError(
            f"{layer} needs known spatial dimensions, got {x}",
            help="declare the input's spatial sizes as numbers",
        )
    return tuple(d for d in dims if isinstance(d, int))


def window(
    layer: str,
    x: TensorType,
    spatial: int,
    kernel: object,
    stride: object,
    padding: object,
    dilation: object = 1,
) -> Window:
    """Kernel, stride, dilation and padding resolved per axis, and the output size.

    `padding`: `valid` (none), `same` (output = ceil(input / stride), the extra pad at the
    end as Keras and TensorFlow put it), an int for both sides of every axis, or a list:
    one int per axis (both sides) or begin pads then end pads (2 per axis, ONNX's order).
    """
    size = require_layout(x, layer, spatial)
    k = per_axis(layer, "kernel", kernel, spatial, 1)
    s = k if stride is None else per_axis(layer, "stride", stride, spatial, 1)
    d = per_axis(layer, "dilation", dilation, spatial, 1)
    span = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d, strict=True))
    pads: tuple[int, ...]
    if padding == "valid":
        pads = (0,) * (2 * spatial)
    elif padding == "same":
        out = [math.ceil(n / si) for n, si in zip(size, s, strict=True)]
        total = [
            max((o - 1) * si + e - n, 0) for o, si, e, n in zip(out, s, span, size, strict=True)
        ]
        pads = tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
    elif isinstance(padding, bool) or not isinstance(padding, int | list):
        raise ShapeError(
            f"{layer} padding must be valid, same, an int or a list of ints, got {padding!r}"
        )
    else:
        values = _int_list(layer, "padding", padding)
        if len(values) == 1:
            values = values * spatial
        if len(values) == spatial:
            values = values * 2
        if len(values) != 2 * spatial:
            raise ShapeError(
                f"{layer} padding {shape_text(values)} has {len(values)} entries for "
                f"{spatial} spatial ax{'is' if spatial == 1 else 'es'}",
                help=f"write one int, {spatial} (one per axis) or {2 * spatial} "
                "(begin pads, then end pads)",
            )
        if any(v < 0 for v in values):
            raise ShapeError(f"{layer} padding must not be negative, got {shape_text(values)}")
        pads = tuple(values)
    padded = [n + pads[i] + pads[i + spatial] for i, n in enumerate(size)]
    if any(p < e for p, e in zip(padded, span, strict=True)):
        what = "kernel" if span == k else "dilated kernel"
        raise ShapeError(
            f"{layer} {what} {'x'.join(map(str, span))} is larger than its padded input "
            f"{'x'.join(map(str, padded))} (input {x})",
            help=(spatial == 2 and channels_last_fix(x))
            or "use padding = same, a smaller kernel or stride, or downsample less before it",
        )
    size_out = tuple((p - e) // si + 1 for p, e, si in zip(padded, span, s, strict=True))
    return Window(k, s, d, pads, size_out)


def _channels(x: TensorType, layer: str) -> int:
    channels = x.dims[1]
    if not isinstance(channels, int):
        raise ShapeError(
            f"{layer} needs a known channel count (axis 1) to size its weight, got {x}",
            help="declare the channel dimension as a number",
        )
    return channels


# convolution ----------------------------------------------------------------------------------


def _conv_window(spatial: int, x: TensorType, args: dict[str, Any]) -> Window:
    layer = f"conv{spatial}d"
    return window(
        layer, x, spatial, args["kernel"], args["stride"], args["padding"], args["dilation"]
    )


def _conv_channels(spatial: int, x: TensorType, args: dict[str, Any]) -> int:
    layer, groups, filters = f"conv{spatial}d", args["groups"], args["filters"]
    channels = _channels(x, layer)
    if channels % groups:
        raise ShapeError(
            f"{layer} groups = {groups} does not divide the {channels} input channels of {x}",
            help="choose groups among the divisors of the channel count",
        )
    if filters % groups:
        raise ShapeError(
            f"{layer} groups = {groups} does not divide its {filters} filters",
            help="choose filters as a multiple of groups",
        )
    return channels


def conv_infer(spatial: int) -> InferFn:
    def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
        x = inputs[0]
        geometry = _conv_window(spatial, x, args)
        _conv_channels(spatial, x, args)
        return TensorType(x.dtype, (x.dims[0], args["filters"], *geometry.out))

    return infer


def conv_params(spatial: int) -> ParamsFn:
    def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
        x = inputs[0]
        kernel = _conv_window(spatial, x, args).kernel
        per_group = _conv_channels(spatial, x, args) // args["groups"]
        filters, taps = args["filters"], math.prod(kernel)
        fan_in, fan_out = per_group * taps, filters * taps
        shape = (filters, per_group, *kernel)
        weight = ParamSpec("weight", shape, args["init"], fan_in=fan_in, fan_out=fan_out)
        if not args["bias"]:
            return [weight]
        return [weight, ParamSpec("bias", (filters,), "zeros", fan_in, fan_out, decay=False)]

    return params


def conv_flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    """2 * (channels / groups) * kernel taps per output element (+1 for the bias)."""
    x = inputs[0]
    spatial = len(x.dims) - 2
    kernel = per_axis("conv", "kernel", args["kernel"], spatial, 1)
    per_group = _channels(x, "conv") // arg_int(args, "groups")
    elements = arg_int(args, "filters") * math.prod(d for d in out.dims[2:] if isinstance(d, int))
    return elements * (2 * per_group * math.prod(kernel) + (1 if args["bias"] else 0))


def conv_lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    x = ctx.types[node.inputs[0]]
    geometry = _conv_window(len(x.dims) - 2, x, node.args)
    operands = [inputs[0], params["weight"], *([params["bias"]] if "bias" in params else [])]
    attrs: dict[str, Any] = geometry.attrs()
    if node.args["groups"] != 1:
        attrs["group"] = node.args["groups"]
    return ctx.b.op("Conv", operands, hint=node.name, **attrs)


def _ints_arg(name: str, default: Any, doc: str) -> ArgSpec:
    return ArgSpec(name=name, type="ints", default=default, doc=doc)


PADDING_DOC = "valid | same | an int | one int per axis | begin pads then end pads"


def conv_signature() -> Signature:
    return Signature(
        args=(
            ArgSpec(name="filters", type="int", min=1, doc="output channels"),
            ArgSpec(name="kernel", type="ints", doc="window size: an int or one per spatial axis"),
            _ints_arg("stride", 1, "step between windows"),
            ArgSpec(name="padding", type="any", default="valid", doc=PADDING_DOC),
            _ints_arg("dilation", 1, "spacing between kernel taps"),
            ArgSpec(name="groups", type="int", default=1, min=1, doc="channel groups"),
            ArgSpec(name="bias", type="bool", default=True),
            ArgSpec(
                name="init",
                type="str",
                default="auto",
                choices=("auto", *INITS),
                doc="auto: he_normal when a ReLU-like activation follows, else glorot_uniform",
            ),
        )
    )


def _add(name: str, spatial: int, definition: LayerDef) -> None:
    """Register a channels-first layer; a 1-D one reads sequence tensors over time."""
    LAYERS.add(name, over_time(definition) if spatial == 1 else definition)


for _spatial in (1, 2):
    _add(
        f"conv{_spatial}d",
        _spatial,
        LayerDef(
            signature=conv_signature(),
            infer=conv_infer(_spatial),
            lower=conv_lower,
            params=conv_params(_spatial),
            flops=conv_flops,
            doc=f"convolution over {LAYOUT[_spatial]} -> [N, filters, ...]; "
            "weight [filters, C / groups, *kernel]",
        ),
    )


# pooling ------------------------------------------------------------------------------------


def _pool_window(kind: str, spatial: int, x: TensorType, args: dict[str, Any]) -> Window:
    stride = None if args["stride"] == "kernel" else args["stride"]
    layer = f"{kind}_pool{spatial}d"
    return window(layer, x, spatial, args["kernel"], stride, args["padding"])


def pool_infer(kind: str, spatial: int) -> InferFn:
    def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
        x = inputs[0]
        geometry = _pool_window(kind, spatial, x, args)
        return TensorType(x.dtype, (x.dims[0], x.dims[1], *geometry.out))

    return infer


def pool_flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    """One comparison or addition per kernel tap of each output element."""
    spatial = len(out.dims) - 2
    taps = math.prod(per_axis("pool", "kernel", args["kernel"], spatial, 1))
    return math.prod(d for d in out.dims[1:] if isinstance(d, int)) * taps


def pool_lower(kind: str) -> LowerFn:
    def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
        x = ctx.types[node.inputs[0]]
        geometry = _pool_window(kind, len(x.dims) - 2, x, node.args)
        if kind == "max":
            return ctx.b.op("MaxPool", [inputs[0]], hint=node.name, **geometry.attrs())
        # count_include_pad = 0: a window overlapping the padding averages its real
        # elements only (Keras' same padding; PyTorch's count_include_pad=False)
        return ctx.b.op("AveragePool", [inputs[0]], hint=node.name, **geometry.attrs(False))

    return lower


def pool_signature() -> Signature:
    return Signature(
        args=(
            ArgSpec(name="kernel", type="ints", doc="window size: an int or one per spatial axis"),
            _ints_arg("stride", "kernel", "step between windows (default: the kernel's size)"),
            ArgSpec(name="padding", type="any", default="valid", doc=PADDING_DOC),
        )
    )


for _kind, _what in (("max", "maximum"), ("avg", "mean")):
    for _spatial in (1, 2):
        _add(
            f"{_kind}_pool{_spatial}d",
            _spatial,
            LayerDef(
                signature=pool_signature(),
                infer=pool_infer(_kind, _spatial),
                lower=pool_lower(_kind),
                flops=pool_flops,
                doc=f"{_what} over each window of {LAYOUT[_spatial]}, per channel",
            ),
        )


# global pooling and upsampling ----------------------------------------------------------------


def global_infer(kind: str) -> InferFn:
    def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
        x = require_float(inputs[0], f"global_{kind}_pool")
        if len(x.dims) < 3:
            raise ShapeError(
                f"global_{kind}_pool needs [N, C, ...] with at least one spatial axis, got {x}",
                help="it pools the positions of each channel; a [N, F] tensor has none",
            )
        return TensorType(x.dtype, x.dims[:2])

    return infer


def global_flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    return math.prod(d for d in inputs[0].dims[1:] if isinstance(d, int))


def global_lower(kind: str) -> LowerFn:
    """ReduceMean/ReduceMax over the spatial axes straight to [N, C] (GlobalAveragePool
    would keep them as ones and need a Flatten)."""

    def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
        rank = len(ctx.types[node.inputs[0]].dims)
        axes = ctx.b.const(list(range(2, rank)), "int64", hint="axes")
        op = "ReduceMean" if kind == "avg" else "ReduceMax"
        return ctx.b.op(op, [inputs[0], axes], hint=node.name, keepdims=0)

    return lower


for _kind, _what in (("avg", "mean"), ("max", "maximum")):
    _add(
        f"global_{_kind}_pool",
        1,
        LayerDef(
            signature=Signature(),
            infer=global_infer(_kind),
            lower=global_lower(_kind),
            flops=global_flops,
            doc=f"[N, C, ...] -> [N, C]: the {_what} over all positions of each channel",
        ),
    )


def upsample_infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x = inputs[0]
    size = require_layout(x, "upsample2d", 2)
    scale = per_axis("upsample2d", "scale", args["scale"], 2, 1)
    return TensorType(x.dtype, (*x.dims[:2], *(n * s for n, s in zip(size, scale, strict=True))))


def upsample_lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    """Nearest-neighbour Resize by integer scales: each input pixel becomes a block."""
    scale = per_axis("upsample2d", "scale", node.args["scale"], 2, 1)
    scales = ctx.b.const([1.0, 1.0, *map(float, scale)], "float32", hint="scales")
    return ctx.b.op(
        "Resize",
        [inputs[0], "", scales],
        hint=node.name,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )


LAYERS.add(
    "upsample2d",
    LayerDef(
        signature=Signature(
            args=(ArgSpec(name="scale", type="ints", doc="integer factor: an int or [h, w]"),)
        ),
        infer=upsample_infer,
        lower=upsample_lower,
        doc="[N, C, H, W] -> [N, C, H * sh, W * sw], nearest neighbour",
    ),
)
