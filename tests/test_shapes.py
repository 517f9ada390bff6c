"""The check stage: types, parameter counts and FLOPs of the example specs against hand
counts; located shape diagnostics with notes at the producing layers; the layer table."""

from __future__ import annotations

import io

import pytest
from conftest import SPECS
from rich.console import Console

from dnnspec.check.report import check_json, render_check
from dnnspec.check.shapes import TypedModel, check_spec, param_name
from dnnspec.errors import Diagnostic, DiagnosticError, Span
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.ir import Graph, InputDecl, Node, Spec
from dnnspec.layers.base import TensorType


def span(line: int, col: int = 3) -> Span:
    return Span(file="t.dnn", line=line, col=col, end_line=line, end_col=col + 5)


def f32(*dims: int | str) -> TensorType:
    return TensorType("float32", dims)


def dense(width_in: int, width_out: int) -> tuple[int, int]:
    """(params, FLOPs per sample) of a dense layer with bias."""
    return width_in * width_out + width_out, 2 * width_in * width_out + width_out


def check_text(body: str, head: str = "", tail: str = "") -> TypedModel:
    return check_spec(load_spec_text(f"{head}model m {{\n{body}}}\n{tail}", "t.dnn"))


def diagnostics(body: str, head: str = "") -> list[Diagnostic]:
    with pytest.raises(DiagnosticError) as caught:
        check_text(body, head)
    return caught.value.diagnostics


# example specs -----------------------------------------------------------------------------


def test_digits_mlp_has_hand_counted_parameters_flops_and_shapes() -> None:
    typed = check_spec(load_spec(SPECS / "digits_mlp.dnn"))
    layers = [dense(64, 128), dense(128, 128), dense(128, 10)]
    assert typed.param_count() == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10 == 26122
    assert typed.total_flops() == sum(f for _, f in layers) + 2 * 128
    assert [(i.node.name, i.out) for i in typed.layers] == [
        ("dense_1", f32("N", 128)),
        ("relu_1", f32("N", 128)),
        ("dropout_1", f32("N", 128)),
        ("dense_2", f32("N", 128)),
        ("relu_2", f32("N", 128)),
        ("dense_3", f32("N", 10)),
    ]
    assert typed.output == f32("N", 10) and typed.types["x"] == f32("N", 64)
    assert [i.param_count for i in typed.layers if i.params] == [p for p, _ in layers]


@pytest.mark.parametrize(
    ("name", "widths", "activations"),
    [
        ("regression", (3, 64, 64, 1), 2 * 64),
        ("spirals", (2, 64, 64, 2), 2 * 64),
    ],
)
def test_example_mlps_match_hand_counts(
    name: str, widths: tuple[int, ...], activations: int
) -> None:
    typed = check_spec(load_spec(SPECS / f"{name}.dnn"))
    counts = [dense(a, b) for a, b in zip(widths, widths[1:], strict=False)]
    assert typed.param_count() == sum(p for p, _ in counts)
    assert typed.total_flops() == sum(f for _, f in counts) + activations
    assert typed.output == f32("N", widths[-1])


def test_residual_mlp_counts_every_expanded_block() -> None:
    typed = check_spec(load_spec(SPECS / "residual_mlp.dnn"))
    params, flops = dense(64, 64)
    head_params, head_flops = dense(64, 10)
    assert typed.param_count() == 7 * params + head_params == 29770
    # 7 dense, 1 + 3 * 2 relus and 3 adds of 64 elements; dropout is free at inference
    assert typed.total_flops() == 7 * flops + head_flops + (7 + 3) * 64
    assert typed.types["residual_3.add_1"] == f32("N", 64)


def test_a_hand_built_spec_checks_without_the_front_end() -> None:
    spec = Spec(
        source="t.dnn",
        params={},
        model=Graph(
            name="m",
            inputs=(InputDecl(name="x", dtype="float32", dims=("N", 4), span=span(2)),),
            nodes=(
                Node(
                    name="dense_1",
                    layer="dense",
                    inputs=("x",),
                    span=span(3),
                    args={"units": 4, "bias": True, "init": "glorot_uniform"},
                ),
                Node(
                    name="dense_2",
                    layer="dense",
                    inputs=("dense_1",),
                    span=span(4),
                    args={"units": 4, "bias": True, "init": "glorot_uniform"},
                ),
            ),  # fmt: skip
            output="dense_2",
            span=span(1),
        ),
    )
    typed = check_spec(spec)
    assert typed.param_count() == 2 * (4 * 4 + 4)
    assert typed.total_flops() == 2 * (2 * 4 * 4 + 4)
    assert param_name("residual_1.dense_2", "bias") == "residual_1.dense_2.bias"


def test_symbolic_dims_flow_through_concat_and_flatten() -> None:
    typed = check_text(
        "  input a: float32[N, T, 4]\n  input b: float32[N, S, 4]\n"
        "  c = concat(a, b, axis = 1)\n  return flatten(c)\n"
    )
    assert typed.types["concat_1"] == f32("N", "T+S", 4)
    assert typed.output == f32("N", "(T+S)*4")


# diagnostics -------------------------------------------------------------------------------


def test_mismatched_add_points_at_both_producers_with_a_fix() -> None:
    (diag,) = diagnostics(
        "  input x: float32[N, 16]\n  a = x -> dense(64)\n  b = x -> dense(32) -> relu\n  a + b\n"
    )
    assert diag.message == "cannot add f32[N, 64] and f32[N, 32]"
    assert diag.span is not None and (diag.span.line, diag.span.col) == (5, 3)
    assert [(n.message, n.span.line if n.span else None) for n in diag.notes] == [
        ("f32[N, 64] comes from dense_1 here", 3),
        ("f32[N, 32] comes from relu_1 here", 4),
    ]
    assert diag.help == "make dense_1 32 wide, or project relu_1 with dense(64)"


def test_a_mismatch_inside_a_block_notes_the_input_and_the_call_site() -> None:
    head = "block residual(d: int) (x) {\n  h = x -> dense(d)\n  return relu(h + x)\n}\n"
    (diag,) = diagnostics("  input x: float32[N, 64]\n  residual(32)\n", head)
    assert diag.message == "cannot add f32[N, 32] and f32[N, 64]"
    assert diag.span is not None and diag.span.line == 3
    assert [(n.message, n.span.line if n.span else None) for n in diag.notes] == [
        ("f32[N, 32] comes from residual_1.dense_1 here", 2),
        ("f32[N, 64] is input 'x' declared here", 6),
        ("in block 'residual' called here", 7),
    ]
    assert diag.help == "make residual_1.dense_1 64 wide, or project x with dense(32)"


def test_two_dense_operands_of_different_widths_suggest_equal_widths() -> None:
    (diag,) = diagnostics("  input x: float32[N, 16]\n  dense(8) + dense(4)\n")
    assert diag.help == "make the dense layers the same width"


def test_integer_input_into_dense_suggests_a_float_input() -> None:
    (diag,) = diagnostics("  input t: int64[N, 8]\n  dense(4)\n")
    assert diag.message == "dense needs a float tensor, got i64[N, 8]"
    # No embedding layer exists, so the help must not send users looking for one.
    assert diag.help == "declare the input float32 (integer data is converted when it is loaded)"
    assert [n.message for n in diag.notes] == ["i64[N, 8] is input 't' declared here"]


def test_an_axis_out_of_range_says_which_axes_exist_not_how_to_widen_a_layer() -> None:
    (diag,) = diagnostics("  input x: float32[N, 4]\n  h = dense(3)\n  concat(h, x, axis = 5)\n")
    assert diag.message == "concat axis 5 is out of range for f32[N, 3] (rank 2)"
    assert diag.help == "use axis 1 (or -1)"


def test_concat_along_the_batch_axis_is_an_error_at_the_call() -> None:
    (diag,) = diagnostics("  input x: float32[N, 4]\n  h = dense(4)\n  concat(h, x, axis = 0)\n")
    assert diag.message.startswith("concat cannot work along axis 0, the batch axis of f32[N, 4]")
    assert diag.span is not None and (diag.span.line, diag.span.col) == (4, 3)


def test_independent_errors_are_all_reported_and_do_not_cascade() -> None:
    found = diagnostics(
        "  input x: float32[N, 16]\n  input t: int64[N, 8]\n"
        "  a = t -> dense(4) -> relu -> dense(2)\n"
        "  b = x -> reshape([5]) -> dense(3)\n"
        "  c = x -> dense(2)\n"
        "  a + b + c\n"
    )
    assert [d.message for d in found] == [
        "dense needs a float tensor, got i64[N, 8]",
        "cannot reshape f32[N, 16] (16 per sample) to [N, 5] (5 per sample)",
    ]


def test_the_model_output_must_be_a_float_tensor() -> None:
    (diag,) = diagnostics("  input t: int64[N, 2, 4]\n  flatten\n")
    assert diag.message == "the model's output must be a float tensor, got i64[N, 8]"
    assert diag.span is not None and diag.span.line == 3


# the layer table ---------------------------------------------------------------------------


def test_layer_table_shows_calls_shapes_totals_and_the_train_and_search_sections() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None)
    render_check(check_spec(load_spec(SPECS / "digits_mlp.dnn")), console)
    text = out.getvalue()
    for expected in (
        "dense(128)", "dropout(0.2)", "[N, 128]", "16,512", "16.5K", "26,122", "52.2K",
        "adam(lr = 0.001", "cosine(warmup = 1 epoch", "l2(strength = 0.0001)",
        "early_stop(monitor = val_loss, patience = 5", "random(trials = 20, seed = 0)",
        "max val_accuracy", "choice(32, 64, 128, 256)", "log_uniform(0.0001, 0.01)",
    ):  # fmt: skip
        assert expected in text, expected


def test_layer_table_shows_optional_arguments_only_when_not_default() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None)
    render_check(check_text("  input x: float32[N, 4]\n  dense(3, bias = false) -> leaky_relu\n"),
                 console)  # fmt: skip
    text = out.getvalue()
    assert "dense(3, bias = false)" in text and "leaky_relu " in text and "train" not in text


def test_piped_layer_table_never_cuts_a_node_name() -> None:
    out = io.StringIO()
    console = Console(file=out, width=60, color_system=None)  # a pipe: not a terminal
    render_check(check_spec(load_spec(SPECS / "char_transformer.dnn")), console)
    text = out.getvalue()
    assert "│ causal_transformer_1.layer_norm_1 │ layer_norm " in text
    assert "…" not in text


def test_check_marks_sequence_tensors_in_the_table_and_the_json() -> None:
    typed = check_text("  input ids: int64[N, 20]\n  ids -> embedding(50, 8) -> global_avg_pool\n")
    out = io.StringIO()
    render_check(typed, Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    assert "[N, 20, 8] seq " in text and "seq: a sequence [N, T, features]" in text
    assert [layer["sequence"] for layer in check_json(typed)["layers"]] == [True, False]


def test_check_json_reports_layers_totals_and_sections() -> None:
    report = check_json(check_spec(load_spec(SPECS / "digits_mlp.dnn")))
    assert report["total_params"] == 26122 and report["total_flops"] == 52234
    first = report["layers"][0]
    assert first["shape"] == ["N", 128] and first["params"] == {"weight": [64, 128], "bias": [128]}
    assert report["train"]["optimizer"]["name"] == "adam" and "span" not in report["train"]
    assert report["search"]["dims"][0] == {
        "param": "hidden", "space": "choice", "values": [32, 64, 128, 256],
    }  # fmt: skip


def test_auto_init_is_he_before_relu_like_activations_and_glorot_elsewhere() -> None:
    text = (
        "model m {\n  input x: float32[N, 4]\n  dense(8) -> relu\n  dense(8) -> tanh\n"
        "  dense(8, init = orthogonal) -> relu\n  dense(2)\n}\n"
    )
    typed = check_spec(load_spec_text(text, "m.dnn"))
    inits = [info.params[0].init for info in typed.layers if info.node.layer == "dense"]
    assert inits == ["he_normal", "glorot_uniform", "orthogonal", "glorot_uniform"]


def test_a_model_too_large_for_an_onnx_file_is_an_error_at_its_largest_layer() -> None:
    (d,) = diagnostics("  input x: float32[N, 64]\n  dense(1e12)\n  dense(10)\n")
    assert d.message.startswith("the model has 75,000,000,000,010 parameters")
    assert d.span is not None and (d.span.line, d.span.col) == (3, 3)
    assert "dense_1" in (d.help or "")


@pytest.mark.parametrize(
    ("last", "loss", "warned"),
    [("softmax", "cross_entropy", True), ("sigmoid", "cross_entropy", True),
     ("log_softmax", "cross_entropy", False), ("softmax", "mse", False)],
)  # fmt: skip
def test_a_probability_output_fed_to_a_from_logits_loss_is_a_warning(
    last: str, loss: str, warned: bool
) -> None:
    typed = check_text(
        f"  input x: float32[N, 4]\n  dense(3) -> {last}\n",
        tail=f"train {{\n  data digits\n  loss {loss}\n  optimizer sgd\n"
        "  batch 8\n  epochs 1\n}\n",
    )
    assert [(w.severity, w.span.line if w.span else 0) for w in typed.warnings] == (
        [("warning", 3)] if warned else []
    )


def test_a_sigmoid_before_binary_cross_entropy_warns_that_the_loss_applies_it() -> None:
    typed = check_text(
        "  input x: float32[N, 4]\n  dense(1) -> sigmoid\n",
        tail="train {\n  data digits\n  loss binary_cross_entropy\n  optimizer sgd\n"
        "  batch 8\n  epochs 1\n}\n",
    )
    (warning,) = typed.warnings
    assert warning.message.startswith(
        "the model ends in sigmoid, but 'binary_cross_entropy' applies sigmoid to the "
        "model's output itself"
    )
    assert warning.span is not None and (warning.span.line, warning.span.col) == (3, 15)


def test_channels_last_images_say_to_declare_them_channels_first() -> None:
    (square,) = diagnostics("  input x: float32[N, 28, 28, 1]\n  conv2d(32, 3)\n")
    assert square.message == (
        "conv2d reads [N, C, H, W], channels first, but f32[N, 28, 28, 1] looks channels "
        "last: 28x28 images of 1 channel"
    )
    assert square.help is not None and "float32[N, 1, 28, 28]" in square.help
    assert "permute([3, 1, 2])" in square.help
    # an oblong image still fits a small kernel in its width of 3 channels: the help says why
    (oblong,) = diagnostics("  input x: float32[N, 32, 64, 3]\n  max_pool2d(4)\n")
    assert oblong.help is not None and "float32[N, 3, 32, 64]" in oblong.help
    # a channels-first feature map is left alone
    assert str(check_text("  input x: float32[N, 16, 8, 4]\n  conv2d(8, 3, padding = same)\n")
               .output) == "f32[N, 8, 8, 4]"  # fmt: skip


def test_activations_beyond_the_memory_bound_are_an_error_at_the_largest_layer() -> None:
    (problem,) = diagnostics(
        "  input x: float32[N, 1, 4, 4]\n  x -> upsample2d([100000, 100000]) -> flatten\n",
    )
    assert problem.message.startswith("the activations of one sample take 1.2 TiB")
    assert "upsample2d_1 (here) alone outputs f32[N, 1, 400000, 400000]" in problem.message
    assert problem.span is not None and problem.span.line == 3
    # the bound is per batch: 8 GiB per sample passes alone, not in a batch of 32
    body = "  input x: float32[N, 1, 4, 4]\n  x -> upsample2d([16384, 8192])\n"
    assert check_text(body).layers
    with pytest.raises(DiagnosticError, match="a batch of 32 take"):
        check_text(body, tail="train {\n  data digits\n  loss mse\n  optimizer sgd\n"
                   "  batch 32\n  epochs 1\n}\n")  # fmt: skip


def test_an_allocation_failure_is_exit_2_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dnnspec import cli

    def allocate(*_: object) -> int:
        raise Exception("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested buffer")

    monkeypatch.setitem(cli.COMMANDS, "check", allocate)
    assert cli.main(["check", str(SPECS / "digits_mlp.dnn")]) == 2
    assert capsys.readouterr().err.startswith("error: out of memory")
