"""Rendered diagnostics, character for character: location, source line, caret, notes, help.

Each case is a small spec with one kind of mistake; the expected text is what a user sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text

MODEL = "model m {\n  input x: float32[N, 64]\n"
TRAIN_HEAD = MODEL + "  dense(10)\n}\n\ntrain {\n  data digits\n"


def rendered(text: str, overrides: dict[str, str] | None = None) -> str:
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, "specs/x.dnn", overrides)
    return caught.value.render()


def test_a_syntax_error_notes_the_bracket_it_expected_to_close() -> None:
    expected = """\
specs/x.dnn:4:1: error: expected ')' here, found '}'
  |
4 | }
  | ^
note: specs/x.dnn:3:8: to close this '('
  |
3 |   dense(64 -> relu
  |        ^"""
    assert rendered(MODEL + "  dense(64 -> relu\n}\n") == expected


def test_the_end_of_the_file_notes_the_unclosed_brace() -> None:
    expected = """\
specs/x.dnn:3:20: error: expected a new line or '}' here, found the end of the file
  |
3 |   dense(64) -> relu
  |                    ^
note: specs/x.dnn:1:9: this '{' is never closed
  |
1 | model m {
  |         ^"""
    assert rendered(MODEL + "  dense(64) -> relu\n") == expected


def test_a_missing_arrow_is_named() -> None:
    expected = """\
specs/x.dnn:3:13: error: missing '->' before 'relu'
  |
3 |   dense(64) relu
  |             ^^^^
help: write ... -> relu to apply it to the previous result"""
    assert rendered(MODEL + "  dense(64) relu\n}\n") == expected


def test_a_stray_character_gets_a_hint() -> None:
    expected = '''\
specs/x.dnn:1:14: error: unexpected character "'"
  |
1 | param name = 'digits'
  |              ^
help: strings are written in double quotes: "text"'''
    assert rendered("param name = 'digits'\n") == expected


def test_two_unknown_layers_on_different_lines_are_both_reported() -> None:
    expected = """\
specs/x.dnn:3:16: error: unknown layer 'relu2'
  |
3 |   dense(64) -> relu2
  |                ^^^^^
help: did you mean 'relu'?

specs/x.dnn:4:3: error: unknown layer 'dens'
  |
4 |   dens(10)
  |   ^^^^
help: did you mean 'dense'?"""
    assert rendered(MODEL + "  dense(64) -> relu2\n  dens(10)\n}\n") == expected


def test_an_unknown_value_suggests_one_in_scope() -> None:
    expected = """\
specs/x.dnn:4:12: error: unknown value 'hx'
  |
4 |   relu(h + hx)
  |            ^^
help: did you mean 'x'?"""
    assert rendered(MODEL + "  h = dense(64)\n  relu(h + hx)\n}\n") == expected


def test_an_error_inside_a_block_points_into_the_block_with_notes_at_the_call_and_repeat() -> None:
    expected = """\
specs/x.dnn:2:10: error: repeat needs an integer count, zero or more, got number -1
  |
2 |   repeat n { relu }
  |          ^
note: specs/x.dnn:9:5: in this call of block 'stack'
  |
9 |     stack(1 - i * 2)
  |     ^^^^^^^^^^^^^^^^
note: specs/x.dnn:8:3: in iteration 2 of 2 of this repeat (i = 1)
  |
8 |   repeat 2 as i {
  |   ^^^^^^^^^^^^^"""
    assert (
        rendered(
            "block stack(n: int) (x) {\n  repeat n { relu }\n  return x -> dense(4)\n}\n\n"
            + MODEL
            + "  repeat 2 as i {\n    stack(1 - i * 2)\n  }\n}\n"
        )
        == expected
    )


def test_a_block_argument_of_the_wrong_type() -> None:
    expected = """\
specs/x.dnn:7:11: error: argument 'p' of res must be a number (float), got word 'high'
  |
7 |   res(64, p = "high")
  |           ^^^^^^^^^^"""
    assert (
        rendered(
            "block res(d: int, p: float = 0.1) (x) {\n  return x -> dense(d) -> dropout(p)\n}\n\n"
            + MODEL
            + '  res(64, p = "high")\n}\n'
        )
        == expected
    )


def test_a_wrong_dtype_and_a_zero_dimension() -> None:
    expected = """\
specs/x.dnn:2:12: error: unknown dtype 'floot32'
  |
2 |   input x: floot32[N, 0]
  |            ^^^^^^^
help: did you mean 'float32'?

specs/x.dnn:2:23: error: a dimension must be a positive integer or a name like N, got number 0
  |
2 |   input x: floot32[N, 0]
  |                       ^"""
    assert rendered("model m {\n  input x: floot32[N, 0]\n  dense(10)\n}\n") == expected


def test_train_settings_misspelt_repeated_or_missing() -> None:
    expected = """\
specs/x.dnn:8:3: error: unknown train setting 'los'
  |
8 |   los cross_entropy
  |   ^^^
help: did you mean 'loss'?

specs/x.dnn:11:3: error: 'batch' is given twice
   |
11 |   batch 32
   |   ^^^^^
note: specs/x.dnn:10:3: first given here
   |
10 |   batch 64
   |   ^^^^^

specs/x.dnn:6:1: error: the train section needs 'epochs'
  |
6 | train {
  | ^^^^^^^
help: add a line like: epochs 10

specs/x.dnn:9:29: error: adam has no argument 'momentum'
  |
9 |   optimizer adam(lr = 1e-3, momentum = 0.9)
  |                             ^^^^^^^^^^^^^^
help: expected one of: 'amsgrad', 'beta1', 'beta2', 'eps', 'lr'"""
    assert (
        rendered(
            TRAIN_HEAD
            + "  los cross_entropy\n  optimizer adam(lr = 1e-3, momentum = 0.9)\n"
            + "  batch 64\n  batch 32\n}\n"
        )
        == expected
    )


def test_a_metric_that_does_not_fit_the_loss() -> None:
    expected = """\
specs/x.dnn:12:11: error: metric 'accuracy' needs class labels, but loss 'mse' trains on values
   |
12 |   metrics accuracy
   |           ^^^^^^^^
note: specs/x.dnn:8:8: the loss
  |
8 |   loss mse
  |        ^^^
help: metrics for values: mae, mse, r2, rmse"""
    assert (
        rendered(
            TRAIN_HEAD
            + "  loss mse\n  optimizer adam\n  batch 64\n  epochs 3\n  metrics accuracy\n}\n"
        )
        == expected
    )


def test_search_dimensions_are_checked_before_any_trial() -> None:
    expected = """\
specs/x.dnn:8:3: error: there is no param 'rl' to search
  |
8 |   rl in choice(1, 2)
  |   ^^
help: expected one of: 'lr'

specs/x.dnn:9:9: error: log_uniform needs 0 < lo < hi, got 0 and 1
  |
9 |   lr in log_uniform(0, 1)
  |         ^^^^^^^^^^^^^^^^^"""
    assert (
        rendered(
            "param lr = 1e-3\n"
            + MODEL
            + "  dense(10)\n}\n\nsearch random(trials = 5) {\n"
            + "  rl in choice(1, 2)\n  lr in log_uniform(0, 1)\n}\n"
        )
        == expected
    )


def test_set_overrides_are_shown_where_they_were_written() -> None:
    expected = """\
--set rl:1:1: error: there is no param 'rl' to set
  |
1 | rl=2
  | ^^
help: expected one of: 'lr'

specs/x.dnn:10:17: error: argument 'lr' of sgd must be > 0, got -1.0
   |
10 |   optimizer sgd(lr = lr)
   |                 ^^^^^^^
note: --set lr:1:4: lr = -1 comes from here
  |
1 | lr=-1
  |    ^^"""
    assert (
        rendered(
            "param lr = 0.1\n"
            + MODEL
            + "  dense(10)\n}\n\ntrain {\n  data digits\n  loss cross_entropy\n"
            + "  optimizer sgd(lr = lr)\n  batch 64\n  epochs 3\n}\n",
            {"lr": "-1", "rl": "2"},
        )
        == expected
    )


def test_tabs_are_expanded_so_the_caret_stays_under_the_span() -> None:
    expected = """\
specs/x.dnn:3:15: error: unknown layer 'rleu'
  |
3 |     dense(64) -> rleu
  |                  ^^^^
help: did you mean 'relu'?"""
    assert rendered(MODEL + "\tdense(64) -> rleu\n}\n") == expected


def test_a_spec_file_renders_with_its_path_and_its_lines_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "net.dnn"
    path.write_text("model net {\n  input x: float32[N, 4]\n  dense(2) -> sigmoidd\n}\n")
    with pytest.raises(DiagnosticError) as caught:
        load_spec(path)
    assert caught.value.render().splitlines()[:4] == [
        f"{path}:3:15: error: unknown layer 'sigmoidd'",
        "  |",
        "3 |   dense(2) -> sigmoidd",
        "  |               ^^^^^^^^",
    ]


def test_diagnostics_serialise_to_json_with_their_spans() -> None:
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(MODEL + "  dens(10)\n}\n", "specs/x.dnn")
    data = json.loads(caught.value.to_json())
    assert data[0]["span"] == {
        "file": "specs/x.dnn", "line": 3, "col": 3, "end_line": 3, "end_col": 7,
    }  # fmt: skip
    assert data[0]["help"] == "did you mean 'dense'?"


def test_a_very_long_line_is_shown_as_a_window_around_the_caret() -> None:
    chain = " -> relu" * 30 + " -> relu2" + " -> relu" * 30
    text = MODEL + "  dense(3)" + chain + "\n}\n"
    window = "... relu -> relu -> relu -> relu -> relu2" + " -> relu" * 7 + " -> re..."
    expected = (
        "specs/x.dnn:3:255: error: unknown layer 'relu2'\n  |\n"
        f"3 | {window}\n"
        f"  | {' ' * 36}^^^^^\n"
        "help: did you mean 'relu'?"
    )
    assert len(window) == 106  # 100 characters of the line and the two ellipses
    assert rendered(text) == expected


def test_a_decay_rate_of_one_is_rejected() -> None:
    """beta1 = 1 makes Adam's bias correction divide by zero; beta2 = 1 would freeze it."""
    out = rendered(
        MODEL
        + "  dense(10)\n}\n\ntrain {\n  data digits\n  loss cross_entropy\n"
        + "  optimizer adam(beta1 = 1, beta2 = 0.5)\n  batch 64\n  epochs 3\n}\n"
    )
    assert "argument 'beta1' of adam must be < 1, got 1" in out
    assert "argument 'beta2'" not in out


def test_an_input_may_not_take_a_graph_name_or_fix_the_batch() -> None:
    expected = """\
specs/x.dnn:2:9: error: 'step' is a name the compiled graphs use for their own input
  |
2 |   input step: float32[32, 4]
  |         ^^^^
help: give this input another name, e.g. 'step_in'

specs/x.dnn:2:23: error: the first dimension of an input is the batch, which varies, got 32
  |
2 |   input step: float32[32, 4]
  |                       ^^
help: name it instead, e.g. N"""
    assert rendered("model m {\n  input step: float32[32, 4]\n  dense(2)\n}\n") == expected


def test_keras_activation_argument_says_to_chain_the_activation() -> None:
    expected = """\
specs/x.dnn:3:13: error: dense has no argument 'activation'
  |
3 |   dense(10, activation = tanh)
  |             ^^^^^^^^^^^^^^^^^
help: an activation is a layer of its own: write dense(...) -> tanh"""
    assert rendered(MODEL + "  dense(10, activation = tanh)\n}\n") == expected


def test_a_tensor_by_an_argument_name_the_layer_lacks_names_the_argument() -> None:
    out = rendered(
        "model m {\n  input x: float32[N, 5, 3]\n  input len: int64[N]\n"
        "  x -> dense(4, lengths = len)\n}\n"
    )
    assert out.splitlines()[0] == "specs/x.dnn:4:17: error: dense has no argument 'lengths'"
    assert "not a tensor" not in out
    assert out.splitlines()[-1].startswith("help: dense takes no tensor by that name")


def test_a_dotted_parameter_name_as_a_value_says_weight_tying_is_not_supported() -> None:
    out = rendered(MODEL + "  dense(64, weight = dense_1.weight)\n}\n")
    assert out.splitlines()[0] == (
        "specs/x.dnn:3:29: error: 'dense_1.weight': a layer's parameter cannot be used as a value"
    )
    assert "weight tying" in out and '"dense_1.weight"' in out


DATA_AS_SETTING = """model m {
  input x: float32[N, 64]
  dense(10)
}
train {
  digits(validation = 0.2)
  loss cross_entropy
  optimizer adam
  batch 8
  epochs 1
  metrics %s
}
"""


def test_a_dataset_written_as_a_train_setting_points_to_the_data_setting() -> None:
    shown = rendered(DATA_AS_SETTING % "accuracy")
    assert "unknown train setting 'digits'" in shown
    assert "help: a dataset is named by the data setting: data digits(...)" in shown


def test_an_unknown_metric_lists_every_metric() -> None:
    shown = rendered(DATA_AS_SETTING.replace("  digits(", "  data digits(") % "xyz")
    assert "unknown metric 'xyz'" in shown and "expected one of:" in shown
    assert "'accuracy'" in shown and "'auc'" in shown
