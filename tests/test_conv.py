"""Convolution, pooling and batch normalisation layers: shape rules, parameter counts,
FLOPs, located shape errors, and their lowering against numpy references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_layers import SPAN, bind, f32, flops_of, infer, params_of, run

from dnnspec.check.shapes import check_spec
from dnnspec.cli import main
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LowerCtx, Mode, ShapeError, TensorType

TESTS = Path(__file__).resolve().parent


def conv_reference(
    x: np.ndarray,
    w: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Direct 2-D cross-correlation, channels first (pads: top, left, bottom, right)."""
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, k, oh, ow))
    per_group = k // groups
    for f in range(k):
        g = f // per_group
        for i in range(oh):
            for j in range(ow):
                rows = i * stride[0] + dilation[0] * np.arange(kh)
                cols = j * stride[1] + dilation[1] * np.arange(kw)
                patch = x[:, g * cg : (g + 1) * cg][:, :, rows][:, :, :, cols]
                out[:, f, i, j] = np.einsum("nchw,chw->n", patch, w[f])
    return out


# shapes, parameters, FLOPs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "out"),
    [
        ({"filters": 8, "kernel": 3}, (8, 6, 6)),
        ({"filters": 8, "kernel": 3, "padding": "same"}, (8, 8, 8)),
        ({"filters": 8, "kernel": 3, "padding": "same", "stride": 2}, (8, 4, 4)),
        ({"filters": 8, "kernel": [3, 1], "stride": [2, 1]}, (8, 3, 8)),
        ({"filters": 8, "kernel": 3, "padding": 1, "dilation": 2}, (8, 6, 6)),
        ({"filters": 8, "kernel": 2, "padding": [0, 1, 1, 0]}, (8, 8, 8)),
        ({"filters": 8, "kernel": 5, "padding": [2, 0]}, (8, 8, 4)),
    ],
)
def test_conv2d_output_size_follows_kernel_stride_padding_and_dilation(
    args: dict[str, Any], out: tuple[int, ...]
) -> None:
    assert infer("conv2d", f32("N", 4, 8, 8), **args) == f32("N", *out)


def test_same_padding_puts_the_odd_pad_at_the_end_as_keras_does() -> None:
    from dnnspec.layers.conv import window

    geometry = window("conv2d", f32("N", 1, 8, 7), 2, [2, 3], [2, 2], "same")
    assert geometry.out == (4, 4)
    assert geometry.pads == (0, 1, 0, 1)  # rows need 0 total, columns 2 (1 each side)
    geometry = window("conv2d", f32("N", 1, 8, 8), 2, [4, 4], [1, 1], "same")
    assert geometry.pads == (1, 1, 2, 2)


def test_conv_parameters_are_onnx_weight_layout_with_groups_and_optional_bias() -> None:
    weight, bias = params_of("conv2d", f32("N", 4, 8, 8), filters=6, kernel=3, groups=2)
    assert (weight.shape, weight.fan_in, weight.fan_out) == ((6, 2, 3, 3), 18, 54)
    assert (bias.shape, bias.decay) == ((6,), False)
    (weight,) = params_of("conv1d", f32("N", 3, 10), filters=5, kernel=4, bias=False)
    assert weight.shape == (5, 3, 4)


def test_conv_flops_count_multiply_adds_per_output_element() -> None:
    assert flops_of("conv2d", f32("N", 4, 8, 8), filters=8, kernel=3) == 8 * 36 * (2 * 36 + 1)
    assert flops_of("conv1d", f32("N", 4, 10), filters=2, kernel=3, groups=2, bias=False) == (
        2 * 8 * 2 * 2 * 3
    )


def test_pools_default_their_stride_to_the_kernel() -> None:
    assert infer("max_pool2d", f32("N", 3, 8, 8), kernel=2) == f32("N", 3, 4, 4)
    assert infer("avg_pool2d", f32("N", 3, 7, 7), kernel=3, stride=2) == f32("N", 3, 3, 3)
    assert infer("max_pool2d", f32("N", 3, 7, 7), kernel=3, stride=2, padding=1) == f32(
        "N", 3, 4, 4
    )
    assert infer("avg_pool1d", f32("N", 3, 9), kernel=2, padding="same") == f32("N", 3, 5)
    assert infer("max_pool1d", f32("N", 3, 9), kernel=3) == f32("N", 3, 3)
    assert flops_of("max_pool2d", f32("N", 3, 8, 8), kernel=2) == 3 * 16 * 4


def test_global_pools_and_upsampling_shapes() -> None:
    assert infer("global_avg_pool", f32("N", 16, 4, 4)) == f32("N", 16)
    assert infer("global_max_pool", f32("N", 16, 9)) == f32("N", 16)
    assert infer("upsample2d", f32("N", 2, 3, 4), scale=2) == f32("N", 2, 6, 8)
    assert infer("upsample2d", f32("N", 2, 3, 4), scale=[1, 3]) == f32("N", 2, 3, 12)


def test_batchnorm_trains_scale_and_shift_and_keeps_running_statistics_as_state() -> None:
    for x in (f32("N", 6), f32("N", 6, 10), f32("N", 6, 4, 4)):
        assert infer("batchnorm", x) == x
        assert [(p.name, p.shape, p.init) for p in params_of("batchnorm", x)] == [
            ("weight", (6,), "ones"),
            ("bias", (6,), "zeros"),
        ]
        state = LAYERS.get("batchnorm").state([x], bind("batchnorm", {}))
        assert [(s.name, s.shape, s.init) for s in state] == [
            ("running_mean", (6,), "zeros"),
            ("running_var", (6,), "ones"),
        ]


def test_resnet18_has_torchvision_parameter_count() -> None:
    typed = check_spec(load_spec(TESTS / "specs" / "resnet18.dnn"))
    assert typed.param_count() == 11_689_512  # torchvision.models.resnet18()
    assert typed.output == f32("N", 1000)
    running = sum(int(np.prod(s.shape)) for layer in typed.layers for s in layer.state)
    assert running == 2 * 4_800  # mean and variance of the 4,800 channels of 20 batchnorms


@pytest.mark.parametrize(
    ("spec", "total"), [("resnet18.dnn", 11_689_512), ("keras_mnist_convnet.dnn", 34_826)]
)
def test_dnnspec_check_shows_the_reference_parameter_totals(
    spec: str, total: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(TESTS / "specs" / spec)]) == 0
    assert f"{total:,}" in capsys.readouterr().out
    assert main(["check", str(TESTS / "specs" / spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] == total


def test_keras_simple_mnist_convnet_has_its_parameter_count() -> None:
    typed = check_spec(load_spec(TESTS / "specs" / "keras_mnist_convnet.dnn"))
    assert typed.param_count() == 34_826
    assert [layer.out.dims[1:] for layer in typed.layers][:4] == [
        (32, 26, 26),
        (32, 26, 26),
        (32, 13, 13),
        (64, 11, 11),
    ]


# shape errors ------------------------------------------------------------------------------------


def diagnostic(body: str) -> Any:
    with pytest.raises(DiagnosticError) as caught:
        check_spec(load_spec_text(f"model m {{\n{body}}}\n", "t.dnn"))
    (problem,) = caught.value.diagnostics
    return problem


def test_conv_on_a_flat_input_says_to_reshape_into_channels() -> None:
    problem = diagnostic("  input x: float32[N, 64]\n  conv2d(8, 3)\n")
    assert "conv2d needs a rank-4 input [N, C, H, W], got f32[N, 64]" in problem.message
    assert (problem.span.line, problem.span.col) == (3, 3)
    assert "reshape([1, 8, 8])" in problem.help
    assert "f32[N, 64] is input 'x'" in problem.notes[0].message
    problem = diagnostic("  input x: float32[N, 10]\n  conv1d(8, 3)\n")
    assert "reshape([1, 10]) for 10 features as one channel" in problem.help
    problem = diagnostic("  input x: float32[N, 10]\n  conv2d(8, 3)\n")
    assert "reshape([C, H, W]) with C * H * W = 10" in problem.help


def test_a_kernel_larger_than_the_padded_input_is_located_with_both_sizes() -> None:
    problem = diagnostic("  input x: float32[N, 1, 4, 4]\n  max_pool2d(2)\n  conv2d(8, 3)\n")
    assert problem.message == (
        "conv2d kernel 3x3 is larger than its padded input 2x2 (input f32[N, 1, 2, 2])"
    )
    assert problem.span.line == 4
    assert "padding = same" in problem.help
    assert "comes from max_pool2d_1" in problem.notes[0].message
    problem = diagnostic("  input x: float32[N, 1, 5, 5]\n  conv2d(8, 3, dilation = 3)\n")
    assert "dilated kernel 7x7" in problem.message


def test_groups_that_do_not_divide_the_channels_or_filters_are_errors() -> None:
    with pytest.raises(ShapeError, match="groups = 3 does not divide the 8 input channels"):
        infer("conv2d", f32("N", 8, 5, 5), filters=6, kernel=3, groups=3)
    with pytest.raises(ShapeError, match="groups = 2 does not divide its 5 filters"):
        infer("conv2d", f32("N", 8, 5, 5), filters=5, kernel=3, groups=2)


def test_bad_kernel_stride_and_padding_lists_are_errors_that_say_what_fits() -> None:
    with pytest.raises(ShapeError, match=r"kernel \[3, 3, 3\] has 3 entries for 2 spatial axes"):
        infer("conv2d", f32("N", 1, 8, 8), filters=2, kernel=[3, 3, 3])
    with pytest.raises(ShapeError, match="stride must be 1 or more"):
        infer("conv1d", f32("N", 1, 8), filters=2, kernel=3, stride=0)
    with pytest.raises(ShapeError, match="padding must be valid, same, an int or a list"):
        infer("conv2d", f32("N", 1, 8, 8), filters=2, kernel=3, padding="full")
    with pytest.raises(ShapeError, match="padding must not be negative"):
        infer("max_pool2d", f32("N", 1, 8, 8), kernel=2, padding=-1)
    with pytest.raises(ShapeError, match="known spatial dimensions"):
        infer("conv1d", f32("N", 4, "T"), filters=2, kernel=3)
    with pytest.raises(ShapeError, match="global_avg_pool needs"):
        infer("global_avg_pool", f32("N", 4))
    with pytest.raises(ShapeError, match="batchnorm needs"):
        infer("batchnorm", f32("N"))


# lowering ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "geometry"),
    [
        ({"filters": 3, "kernel": 3}, {}),
        (
            {"filters": 4, "kernel": 3, "padding": "same", "stride": 2},
            {"stride": (2, 2), "pads": (0, 0, 1, 1)},
        ),
        (
            {"filters": 4, "kernel": [2, 3], "dilation": [2, 1], "groups": 2, "padding": 1},
            {"dilation": (2, 1), "groups": 2, "pads": (1, 1, 1, 1)},
        ),
    ],
)
def test_conv2d_lowers_to_one_conv_matching_a_direct_convolution(
    args: dict[str, Any], geometry: dict[str, Any]
) -> None:
    y, (x,), (w, bias), ops = run("conv2d", [f32("N", 4, 6, 6)], args)
    assert ops == ["Conv"]
    expected = conv_reference(x, w, **geometry) + bias[None, :, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_conv1d_matches_the_2d_reference_on_a_unit_axis() -> None:
    y, (x,), (w, bias), _ = run(
        "conv1d", [f32("N", 2, 9)], {"filters": 3, "kernel": 3, "stride": 2}
    )
    expected = conv_reference(x[:, :, None], w[:, :, None], stride=(1, 2))[:, :, 0]
    np.testing.assert_allclose(y, expected + bias[None, :, None], rtol=1e-4, atol=1e-4)


def test_pools_match_numpy_and_average_only_real_elements_at_the_border() -> None:
    y, (x,), _, ops = run("max_pool2d", [f32("N", 2, 6, 6)], {"kernel": 2})
    assert ops == ["MaxPool"]
    np.testing.assert_allclose(y, x.reshape(5, 2, 3, 2, 3, 2).max(axis=(3, 5)))
    y, (x,), _, ops = run("avg_pool2d", [f32("N", 2, 3, 3)], {"kernel": 2, "padding": "same"})
    assert ops == ["AveragePool"]
    assert y.shape == (5, 2, 2, 2)
    np.testing.assert_allclose(y[:, :, 1, 1], x[:, :, 2, 2], rtol=1e-6)  # a 1x1 real window
    np.testing.assert_allclose(y[:, :, 0, 1], x[:, :, :2, 2].mean(axis=2), rtol=1e-5)
    y, (x,), _, ops = run("global_max_pool", [f32("N", 3, 4, 5)])
    assert ops == ["ReduceMax"]
    np.testing.assert_allclose(y, x.max(axis=(2, 3)))
    y, (x,), _, _ = run("global_avg_pool", [f32("N", 3, 7)])
    np.testing.assert_allclose(y, x.mean(axis=2), rtol=1e-5, atol=1e-6)


def test_upsample2d_repeats_each_pixel_into_a_block() -> None:
    y, (x,), _, ops = run("upsample2d", [f32("N", 2, 3, 2)], {"scale": [2, 3]})
    assert ops == ["Resize"]
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(3, axis=3))


def lower_batchnorm(x: TensorType, mode: Mode) -> tuple[GraphBuilder, str, LowerCtx]:
    b = GraphBuilder("t")
    b.add_input("in0", "float32", x.dims)
    names = ["weight", "bias", "running_mean", "running_var"]
    params = {n: b.add_input(f"bn.{n}", "float32", [x.dims[1]]) for n in names}
    node = Node(
        name="bn", layer="batchnorm", inputs=("in0",), args=bind("batchnorm", {}), span=SPAN
    )
    ctx = LowerCtx(b, mode, {"in0": x, "bn": x})
    out = LAYERS.get("batchnorm").lower(ctx, node, ["in0"], params)
    return b, out, ctx


def batchnorm_feeds(x: np.ndarray, c: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "in0": x,
        "bn.weight": rng.uniform(0.5, 2, c).astype(np.float32),
        "bn.bias": rng.normal(size=c).astype(np.float32),
        "bn.running_mean": rng.normal(size=c).astype(np.float32),
        "bn.running_var": rng.uniform(0.5, 2, c).astype(np.float32),
    }


@pytest.mark.parametrize("dims", [(8, 3), (8, 3, 5), (8, 3, 4, 4)])
def test_batchnorm_training_uses_batch_statistics_and_moves_the_running_ones(
    dims: tuple[int, ...],
) -> None:
    import onnxruntime as ort

    x_type = f32("N", *dims[1:])
    b, out, ctx = lower_batchnorm(x_type, "train")
    b.add_output(out, "float32", None)
    for name in ("bn.running_mean", "bn.running_var"):
        b.add_output(
            b.op("Identity", [ctx.updates[name]], outputs=[f"{name}.next"]), "float32", None
        )
    x = (np.random.default_rng(0).normal(size=dims) * 3 + 2).astype(np.float32)
    feeds = batchnorm_feeds(x, dims[1])
    y, mean_next, var_next = ort.InferenceSession(b.model().SerializeToString()).run(None, feeds)
    axes = tuple(a for a in range(len(dims)) if a != 1)
    shape = [1, dims[1], *([1] * (len(dims) - 2))]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    expected = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5)
    expected = expected * feeds["bn.weight"].reshape(shape) + feeds["bn.bias"].reshape(shape)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    count = x.size // dims[1]
    np.testing.assert_allclose(mean_next, 0.9 * feeds["bn.running_mean"] + 0.1 * mean, rtol=1e-5)
    unbiased = var * count / (count - 1)  # PyTorch's running variance
    np.testing.assert_allclose(var_next, 0.9 * feeds["bn.running_var"] + 0.1 * unbiased, rtol=1e-5)


@pytest.mark.parametrize("dims", [(8, 3), (8, 3, 4, 4)])
def test_batchnorm_eval_is_fused_and_agrees_with_the_training_formula(
    dims: tuple[int, ...],
) -> None:
    import onnxruntime as ort

    b, out, ctx = lower_batchnorm(f32("N", *dims[1:]), "eval")
    assert [n.op_type for n in b.nodes] == ["BatchNormalization"] and not ctx.updates
    b.add_output(out, "float32", None)
    x = np.random.default_rng(2).normal(size=dims).astype(np.float32)
    feeds = batchnorm_feeds(x, dims[1])
    (y,) = ort.InferenceSession(b.model().SerializeToString()).run(None, feeds)
    shape = [1, dims[1], *([1] * (len(dims) - 2))]

    def channel(name: str) -> np.ndarray:
        return feeds[name].reshape(shape)

    expected = (x - channel("bn.running_mean")) / np.sqrt(channel("bn.running_var") + 1e-5)
    expected = expected * channel("bn.weight") + channel("bn.bias")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
