"""Convolution and pooling: Conv, MaxPool, AveragePool, Resize (nearest, integer scales).

Conv's input gradient is one `ConvTranspose` of dy with the same weight; its weight
gradient contracts dy with the patches of x. A wide convolution reads them tap by tap
(`_tap_weight_grad`: a strided `Slice` of x and a batched `MatMul` per kernel tap); a
narrow one, or one whose sizes are hidden, makes them with one `Conv` of x, its channels
folded into the batch, against a constant one-hot kernel (one output channel per kernel
tap, the forward's strides, pads and dilations), then one batched `MatMul` and a
`ReduceSum` over the batch. Any geometry and `group` count works either way. Each was the
fastest of the formulations measured at its sizes, in onnxruntime and OpenVINO alike
(docs/performance.md).

Static spatial sizes give exact `pads` and `output_padding`; when they are hidden, the
transposed convolution runs unpadded with the largest output padding and is sliced to
x's run-time size, so the rules work on any shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from dnnspec.autodiff.context import AutodiffError, Shape, VjpContext, static_dims
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]
INT_MAX = int(np.iinfo(np.int64).max)


def _ints(ctx: VjpContext, node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return [int(v) for v in ctx.attr(node, name, default)]


def _geometry(
    ctx: VjpContext, node: onnx.NodeProto, kernel: list[int] | None = None
) -> tuple[int, list[int], list[int], list[int], list[int]]:
    """(spatial rank, kernel, strides, dilations, pads) of a windowed node."""
    op = node.op_type
    if ctx.attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise AutodiffError(f"the {op} gradient needs explicit pads, not auto_pad")
    if int(ctx.attr(node, "ceil_mode", 0)):
        raise AutodiffError(f"the {op} gradient supports ceil_mode = 0 only")
    spatial = ctx.require_rank(node.input[0], op) - 2
    kernel = _ints(ctx, node, "kernel_shape", kernel or [])
    if len(kernel) != spatial:
        raise AutodiffError(f"the {op} gradient needs kernel_shape or a weight of known shape")
    strides = _ints(ctx, node, "strides", [1] * spatial)
    dilations = _ints(ctx, node, "dilations", [1] * spatial)
    pads = _ints(ctx, node, "pads", [0] * (2 * spatial))
    return spatial, kernel, strides, dilations, pads


def _static_spatial(shape: Shape | None) -> list[int] | None:
    if shape is None or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return [d for d in shape[2:] if isinstance(d, int)]


def _spatial_tensor(ctx: VjpContext, name: str, lead: list[int]) -> str:
    """`lead` followed by `name`'s spatial dims: a constant when they are static."""
    dims = _static_spatial(ctx.shape(name))
    if dims is not None:
        return ctx.int_const([*lead, *dims])
    b = ctx.b
    spatial = b.op("Slice", [ctx.shape_of(name), ctx.int_const([2]), ctx.int_const([INT_MAX])])
    return b.op("Concat", [ctx.int_const(lead), spatial], axis=0)


def transposed_window(
    ctx: VjpContext,
    dy: str,
    weight: str,
    x: str,
    geometry: tuple[int, list[int], list[int], list[int], list[int]],
    group: int = 1,
) -> str:
    """ConvTranspose of dy back onto x's spatial size: the adjoint of a windowed op."""
    spatial, kernel, strides, dilations, pads = geometry
    b = ctx.b
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides}
    if any(d != 1 for d in dilations):
        attrs["dilations"] = dilations
    if group != 1:
        attrs["group"] = group
    size = _static_spatial(ctx.shape(x))
    if size is not None:
        extra = []
        for axis in range(spatial):
            span = dilations[axis] * (kernel[axis] - 1) + 1
            padded = size[axis] + pads[axis] + pads[axis + spatial]
            extra.append((padded - span) % strides[axis])
        if any(pads):
            attrs["pads"] = pads
        if any(extra):
            attrs["output_padding"] = extra
        return b.op("ConvTranspose", [dy, weight], **attrs)
    if any(s > 1 for s in strides):
        attrs["output_padding"] = [s - 1 for s in strides]
    full = b.op("ConvTranspose", [dy, weight], **attrs)
    if not any(pads) and not any(s > 1 for s in strides):
        return full
    begin = ctx.int_const(pads[:spatial])
    dims = b.op("Slice", [ctx.shape_of(x), ctx.int_const([2]), ctx.int_const([INT_MAX])])
    end = b.op("Add", [dims, begin])
    return b.op("Slice", [full, begin, end, ctx.int_const(list(range(2, spatial + 2)))])


def _one_hot_kernel(kernel: list[int], dtype: np.dtype) -> np.ndarray:
    """[taps, 1, *kernel]: output channel t copies kernel tap t (row-major), so a Conv with
    it lays out the patches of its input."""
    taps = math.prod(kernel)
    return np.eye(taps, dtype=dtype).reshape(taps, 1, *kernel)


def _dim(ctx: VjpContext, name: str, axis: int) -> int | str:
    """Dim `axis` of `name`: an int when static, else a 1-element int64 tensor."""
    shape = ctx.shape(name)
    dim = None if shape is None else shape[axis]
    if isinstance(dim, int):
        return dim
    return ctx.b.op("Slice", [ctx.shape_of(name), ctx.int_const([axis]), ctx.int_const([axis + 1])])


def _target(ctx: VjpContext, parts: list[int | str]) -> str:
    """A Reshape target from ints and 1-element tensors."""
    if all(isinstance(p, int) for p in parts):
        return ctx.int_const([p for p in parts if isinstance(p, int)])
    pieces = [ctx.int_const([p]) if isinstance(p, int) else p for p in parts]
    return ctx.b.op("Concat", pieces, axis=0)


def _divided(ctx: VjpContext, dim: int | str, by: int) -> int | str:
    if isinstance(dim, int):
        return dim // by
    return dim if by == 1 else ctx.b.op("Div", [dim, ctx.int_const([by])])


TAP_MIN_CHANNELS = 16
TAP_MIN_WORK = 4096
"""The weight gradient reads x tap by tap when a group has at least TAP_MIN_CHANNELS
input channels and channels x output positions reach TAP_MIN_WORK (16 channels at 16x16,
32 at 14x14); below, the per-tap products are too thin and the one-hot patches win
(docs/performance.md)."""


def _tap_weight_grad(
    ctx: VjpContext,
    node: onnx.NodeProto,
    dy: str,
    geometry: tuple[int, list[int], list[int], list[int], list[int]],
    group: int,
) -> str | None:
    """dW[:, :, t] = sum over n of dy[n] @ x_t[n]^T, x_t the window of x (padded) that
    kernel tap t reads at every output position: one strided `Slice` and one batched
    `MatMul` per tap, the taps' products concatenated and summed over the batch once.
    Unlike the one-hot patches nothing 9x the size of x is written and read back. None
    where the sizes are hidden or too small for it to pay."""
    x, w = node.input[0], node.input[1]
    spatial, kernel, strides, dilations, pads = geometry
    w_shape = static_dims(ctx.shape(w))
    size = _static_spatial(ctx.shape(x))
    out = _static_spatial(ctx.shape(dy) or ctx.shape(node.output[0]))
    if w_shape is None or size is None or out is None:
        return None
    filters, channels = w_shape[0], w_shape[1]  # channels per group
    positions = math.prod(out)
    if channels < TAP_MIN_CHANNELS or channels * positions < TAP_MIN_WORK:
        return None
    b, taps = ctx.b, math.prod(kernel)
    padded = x
    if any(pads):
        widths = ctx.int_const([0, 0, *pads[:spatial], 0, 0, *pads[spatial:]])
        padded = b.op("Pad", [x, widths])
    axes = ctx.int_const(list(range(2, spatial + 2)))
    steps = ctx.int_const(strides)
    rows = ctx.int_const([0, group, channels, positions])
    dy_rows = b.op("Reshape", [dy, ctx.int_const([0, group, filters // group, positions])])
    products = []
    for tap in np.ndindex(*kernel):
        begin = [t * d for t, d in zip(tap, dilations, strict=True)]
        end = [s0 + (o - 1) * st + 1 for s0, o, st in zip(begin, out, strides, strict=True)]
        window = b.op("Slice", [padded, ctx.int_const(begin), ctx.int_const(end), axes, steps])
        window_rows = b.op("Reshape", [window, rows])  # [N, g, C/g, L]
        window_cols = b.op("Transpose", [window_rows], perm=[0, 1, 3, 2])
        products.append(b.op("MatMul", [dy_rows, window_cols]))  # [N, g, K/g, C/g]
    joined = b.op("Concat", products, axis=3)  # [N, g, K/g, taps * C/g]
    summed = b.op("ReduceSum", [joined, ctx.int_const([0])], keepdims=0)
    by_tap = b.op("Reshape", [summed, ctx.int_const([filters, taps, channels])])
    return b.op(
        "Reshape",
        [b.op("Transpose", [by_tap], perm=[0, 2, 1]), ctx.int_const(list(w_shape))],
    )


def _conv_weight_grad(
    ctx: VjpContext,
    node: onnx.NodeProto,
    dy: str,
    geometry: tuple[int, list[int], list[int], list[int], list[int]],
    group: int,
) -> str:
    """dW[k, c, t] = sum over n, l of dy[n, k, l] * patches[n, c, t, l], per group."""
    x, w = node.input[0], node.input[1]
    spatial, kernel, strides, dilations, pads = geometry
    b = ctx.b
    taps = math.prod(kernel)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.elem(x))
    one_hot = b.const(_one_hot_kernel(kernel, dtype), dtype, hint="one_hot_taps")
    folded = b.op("Reshape", [x, _spatial_tensor(ctx, x, [-1, 1])])
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides}
    if any(pads):
        attrs["pads"] = pads
    if any(d != 1 for d in dilations):
        attrs["dilations"] = dilations
    patches = b.op("Conv", [folded, one_hot], hint="patches", **attrs)  # [N*C, taps, *out]
    out = _static_spatial(ctx.shape(dy) or ctx.shape(node.output[0]))  # dy's is y's
    channels = _dim(ctx, w, 1)  # per group
    per_group: int | str = (
        channels * taps
        if isinstance(channels, int)
        else b.op("Mul", [channels, ctx.int_const([taps])])
    )
    filters = _divided(ctx, _dim(ctx, w, 0), group)
    if out is not None and isinstance(per_group, int):
        rows = _target(ctx, [-1, group, per_group, math.prod(out)])
    else:  # one -1 per target: the batch comes from x
        rows = _target(ctx, [_dim(ctx, x, 0), group, per_group, -1])
    patch_rows = b.op("Reshape", [patches, rows])
    dy_rows = b.op("Reshape", [dy, _target(ctx, [0, group, filters, -1])])
    dy_cols = b.op("Transpose", [dy_rows], perm=[0, 1, 3, 2])
    products = b.op("MatMul", [patch_rows, dy_cols])  # [N, g, C/g * taps, K/g]
    summed = b.op("ReduceSum", [products, ctx.int_const([0])], keepdims=0)
    return b.op("Reshape", [b.op("Transpose", [summed], perm=[0, 2, 1]), ctx.shape_tensor(w)])


@VJP.register("Conv")
def conv(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    x, w = node.input[0], node.input[1]
    bias = ctx.input(node, 2)
    dy, b = single(dys), ctx.b
    w_shape = ctx.shape(w)
    kernel = None
    if w_shape is not None and all(isinstance(d, int) for d in w_shape[2:]):
        kernel = [d for d in w_shape[2:] if isinstance(d, int)]
    geometry = _geometry(ctx, node, kernel)
    group = int(ctx.attr(node, "group", 1))
    grads: Grads = [None] * len(node.input)
    if ctx.needs(x):
        grads[0] = transposed_window(ctx, dy, w, x, geometry, group)
    if ctx.needs(w):
        grads[1] = _tap_weight_grad(ctx, node, dy, geometry, group) or _conv_weight_grad(
            ctx, node, dy, geometry, group
        )
    if bias is not None and ctx.needs(bias):
        axes = [0, *range(2, geometry[0] + 2)]
        grads[2] = b.op("ReduceSum", [dy, ctx.int_const(axes)], keepdims=0)
    return grads


def _max_pool_tiles(
    ctx: VjpContext, node: onnx.NodeProto, dy: str, kernel: list[int]
) -> str | None:
    """Windows that tile x exactly (stride = kernel, no padding, sizes divisible): y
    upsampled by nearest Resize marks the elements equal to their window's maximum, and
    each receives dy / (how many do), so ties split dy evenly as ReduceMax's rule does.
    MaxPool then runs without its Indices output, on onnxruntime's fast kernel, and the
    gradient beats a scatter of Indices (docs/performance.md)."""
    x, y, b = node.input[0], node.output[0], ctx.b
    size = _static_spatial(ctx.shape(x))
    if size is None or any(n % k for n, k in zip(size, kernel, strict=True)):
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.elem(x))
    scales = b.const([1.0, 1.0, *map(float, kernel)], "float32", hint="pool_scales")

    def upsample(value: str) -> str:
        return b.op(
            "Resize",
            [value, "", scales],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    mask = b.op("Cast", [b.op("Equal", [x, upsample(y)])], to=ctx.elem(x))
    share_of = b.op("AveragePool", [mask], kernel_shape=kernel, strides=kernel)
    share = b.op("Div", [b.op("Mul", [dy, b.const(1.0 / math.prod(kernel), dtype)]), share_of])
    return b.op("Mul", [mask, upsample(share)])


@VJP.register("MaxPool")
def max_pool(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """dy goes to the input element each window took its maximum from. Tiling windows
    compare x with y (`_max_pool_tiles`); others use ONNX's Indices (flat over the
    unpadded input), scatter-added since overlapping windows can pick the same element
    (MaxUnpool would overwrite, and onnx.reference's ignores output_shape)."""
    x = node.input[0]
    dy, b = single(dys), ctx.b
    _, kernel, strides, dilations, pads = _geometry(ctx, node)
    if int(ctx.attr(node, "storage_order", 0)):
        raise AutodiffError("the MaxPool gradient supports storage_order = 0 only")
    if strides == kernel and not any(pads) and all(d == 1 for d in dilations):
        tiled = _max_pool_tiles(ctx, node, dy, kernel)
        if tiled is not None:
            return [tiled]
    indices = ctx.residuals.output(node, 1, f"{node.output[0]}_argmax")
    flat = ctx.int_const([-1])
    zeros = b.op("Reshape", [ctx.zeros_like(x), flat])
    scattered = b.op(
        "ScatterElements",
        [zeros, b.op("Reshape", [indices, flat]), b.op("Reshape", [dy, flat])],
        axis=0,
        reduction="add",
    )
    return [b.op("Reshape", [scattered, ctx.shape_tensor(x)])]


def _average_counts(
    ctx: VjpContext,
    x: str,
    y: str,
    geometry: tuple[int, list[int], list[int], list[int], list[int]],
) -> str:
    """1 / (real elements in each window) as a [1, 1, *out] constant (padding excluded)."""
    spatial, kernel, strides, dilations, pads = geometry
    size, out = _static_spatial(ctx.shape(x)), _static_spatial(ctx.shape(y))
    if size is None or out is None:
        raise AutodiffError(
            "the AveragePool gradient with padding excluded needs static spatial sizes"
        )
    counts = np.ones([1], np.float64)
    for axis in range(spatial):
        starts = np.arange(out[axis]) * strides[axis] - pads[axis]
        lo = np.maximum(starts, 0)
        hi = np.minimum(starts + kernel[axis], size[axis])
        counts = np.multiply.outer(counts, hi - lo)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.elem(y))
    return ctx.b.const((1.0 / counts).reshape(1, 1, *out), dtype, hint="avg_pool_inv_counts")


@VJP.register("AveragePool")
def average_pool(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """dy / count spread uniformly over each window: a ConvTranspose with a ones kernel,
    channels folded into the batch so one [1, 1, *kernel] kernel serves every channel."""
    x, y = node.input[0], node.output[0]
    dy, b = single(dys), ctx.b
    geometry = _geometry(ctx, node)
    _, kernel, _, dilations, pads = geometry
    if any(d != 1 for d in dilations):
        raise AutodiffError("the AveragePool gradient supports dilations = 1 only")
    if any(pads) and not int(ctx.attr(node, "count_include_pad", 0)):
        scaled = b.op("Mul", [dy, _average_counts(ctx, x, y, geometry)])
    else:
        scaled = b.op("Mul", [dy, ctx.scalar(1.0 / math.prod(kernel), y)])
    folded = b.op("Reshape", [scaled, _spatial_tensor(ctx, y, [-1, 1])])
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ctx.elem(y))
    ones = b.const(np.ones([1, 1, *kernel], dtype), dtype, hint="ones_kernel")
    spread = transposed_window(ctx, folded, ones, x, geometry)  # only x's spatial dims
    return [b.op("Reshape", [spread, ctx.shape_tensor(x)])]


@VJP.register("Resize")
def resize(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Nearest upsampling by integer scales (floor of x / scale) copies each element into a
    block, so the gradient sums each block of dy: AveragePool times the block size."""
    x = node.input[0]
    dy, b = single(dys), ctx.b
    mode = ctx.attr(node, "mode", b"nearest")
    transform = ctx.attr(node, "coordinate_transformation_mode", b"half_pixel")
    rounding = ctx.attr(node, "nearest_mode", b"round_prefer_floor")
    scales = ctx.const_value(ctx.input(node, 2))
    if (
        mode not in (b"nearest", "nearest")
        or transform not in (b"asymmetric", "asymmetric")
        or rounding not in (b"floor", "floor")
        or scales is None
        or ctx.input(node, 3) is not None
    ):
        raise AutodiffError(
            "the Resize gradient supports nearest mode with asymmetric coordinates, floor "
            "rounding and constant scales"
        )
    factors = [float(s) for s in np.asarray(scales).reshape(-1)]
    if factors[:2] != [1.0, 1.0] or not all(f.is_integer() and f >= 1 for f in factors):
        raise AutodiffError("the Resize gradient needs integer scales of the spatial axes")
    block = [int(f) for f in factors[2:]]
    grads: Grads = [None] * len(node.input)
    pooled = b.op("AveragePool", [dy], kernel_shape=block, strides=block)
    grads[0] = b.op("Mul", [pooled, ctx.scalar(float(math.prod(block)), x)])
    return grads
