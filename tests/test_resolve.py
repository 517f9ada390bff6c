"""Resolution: params, blocks, repeats, merges and calls become a flat, bound graph."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLES, SPECS

from dnnspec.errors import DiagnosticError, Span
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.ir import Node, Spec
from dnnspec.layers.base import LAYERS
from dnnspec.resolve import read_lock, write_lock
from dnnspec.schema import Duration

INPUT = "  input x: float32[N, 64]\n"


def first_arg(layer: str) -> str:
    """The name of a layer's first argument (units of dense, rate of dropout, ...)."""
    return LAYERS.get(layer).signature.args[0].name


def model(body: str, head: str = "", **overrides: str) -> Spec:
    return load_spec_text(f"{head}model m {{\n{INPUT}{body}}}\n", "t.dnn", overrides or None)


def nodes(spec: Spec) -> dict[str, Node]:
    return {n.name: n for n in spec.model.nodes}


def messages(text: str, **overrides: str) -> list[str]:
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, "t.dnn", overrides or None)
    return [d.message for d in caught.value.diagnostics]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_spec_round_trips_through_its_lock_file(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    write_lock(spec, tmp_path / "spec.lock.json")
    assert read_lock(tmp_path / "spec.lock.json") == spec


def test_a_sequential_model_numbers_nodes_per_layer_and_chains_them() -> None:
    spec = load_spec(SPECS / "digits_mlp.dnn")
    graph = spec.model
    assert [n.name for n in graph.nodes] == [
        "dense_1", "relu_1", "dropout_1", "dense_2", "relu_2", "dense_3",
    ]  # fmt: skip
    assert [n.inputs for n in graph.nodes] == [
        ("x",), ("dense_1",), ("relu_1",), ("dropout_1",), ("dense_2",), ("relu_2",),
    ]  # fmt: skip
    assert graph.output == "dense_3"
    assert graph.nodes[0].args[first_arg("dense")] == 128
    assert spec.params == {"hidden": 128, "lr": 1e-3}


def test_blocks_expand_with_instance_prefixes_and_origins_outermost_first() -> None:
    spec = load_spec(SPECS / "residual_mlp.dnn")
    by_name = nodes(spec)
    assert "residual_1.dense_1" in by_name and "residual_3.relu_2" in by_name
    add = by_name["residual_2.add_1"]
    assert add.inputs == ("residual_2.dense_2", "residual_1.relu_2")
    repeat_line, call_site = add.origin
    assert (repeat_line.line, repeat_line.col) == (15, 3)
    assert (call_site.line, call_site.col) == (16, 5)
    assert by_name["dense_1"].origin == ()
    rate = first_arg("dropout")
    assert [by_name[f"residual_{k}.dropout_1"].args[rate] for k in (1, 2, 3)] == [0.0, 0.05, 0.1]
    assert spec.model.output == "dense_2"


def test_nested_blocks_nest_the_prefix_and_the_origin() -> None:
    head = (
        "block inner(d: int) (x) {\n  return x -> dense(d)\n}\n"
        "block outer(d: int) (x) {\n  return x -> inner(d) -> relu\n}\n"
    )
    spec = model("  outer(8)\n  outer(4)\n", head)
    node = nodes(spec)["outer_2.inner_1.dense_1"]
    assert node.args[first_arg("dense")] == 4
    assert [s.line for s in node.origin] == [10, 5]


def test_params_are_substituted_and_arithmetic_is_evaluated() -> None:
    head = "param hidden = 16\nparam wide = hidden * 2 + 1\nparam half = hidden / 2\n"
    spec = model("  dense(wide) -> dense(half)\n", head)
    units = first_arg("dense")
    assert [n.args[units] for n in spec.model.nodes] == [33, 8]
    assert spec.params == {"hidden": 16, "wide": 33, "half": 8.0}


def test_overrides_replace_a_param_and_everything_derived_from_it() -> None:
    head = "param hidden = 16\nparam wide = hidden * 2\n"
    spec = model("  dense(wide)\n", head, hidden="5")
    assert spec.model.nodes[0].args[first_arg("dense")] == 10
    assert spec.params["hidden"] == 5


def test_an_unknown_override_suggests_the_closest_param() -> None:
    with pytest.raises(DiagnosticError) as caught:
        model("  dense(hidden)\n", "param hidden = 16\n", hiden="5")
    (diag,) = caught.value.diagnostics
    assert diag.message == "there is no param 'hiden' to set"
    assert diag.help == "did you mean 'hidden'?"


def test_an_override_of_the_wrong_kind_is_rejected_at_the_set() -> None:
    with pytest.raises(DiagnosticError) as caught:
        model("  dense(hidden)\n", "param hidden = 16\n", hidden="wide")
    (diag,) = caught.value.diagnostics
    assert diag.message == "param 'hidden' holds an int, not word 'wide'"
    assert diag.span is not None and diag.span.file == "--set hidden"


def test_input_dims_may_name_params() -> None:
    spec = load_spec_text(
        "param features = 3\nmodel m {\n  input p: float32[N, features]\n  dense(1)\n}\n", "t.dnn"
    )
    assert spec.model.inputs[0].dims == ("N", 3)


def test_plus_and_times_merge_tensors_into_one_add_or_mul_node() -> None:
    spec = model(
        "  a = dense(4)\n  b = dense(4)\n  c = dense(4)\n  s = a + b + c\n  h = a * b\n"
        "  s + h * c\n"
    )
    by_name = nodes(spec)
    assert by_name["add_1"].inputs == ("dense_1", "dense_2", "dense_3")
    assert by_name["mul_1"].inputs == ("dense_1", "dense_2")
    assert by_name["mul_2"].inputs == ("mul_1", "dense_3")
    assert by_name["add_2"].inputs == ("add_1", "mul_2")
    assert spec.model.output == "add_2"


def test_function_form_takes_tensor_arguments_as_inputs() -> None:
    spec = model("  h = dense(64)\n  relu(h + x)\n")
    assert nodes(spec)["relu_1"].inputs == ("add_1",)
    assert nodes(spec)["add_1"].inputs == ("dense_1", "x")


def test_concat_binds_its_config_by_keyword_and_values_as_inputs() -> None:
    spec = model("  a = dense(4)\n  b = x -> dense(4)\n  concat(a, b, axis = 1)\n")
    node = nodes(spec)["concat_1"]
    assert node.inputs == ("dense_1", "dense_2") and node.args["axis"] == 1


def test_a_chain_step_with_tensor_arguments_takes_the_chain_input_first() -> None:
    spec = model("  h = dense(64)\n  x -> add(h)\n")
    assert nodes(spec)["add_1"].inputs == ("x", "dense_1")


def test_layer_calls_in_an_expression_apply_to_the_current_value() -> None:
    spec = model("  dense(8)\n  dense(4) + (dense(4) -> relu)\n")
    by_name = nodes(spec)
    assert by_name["dense_2"].inputs == ("dense_1",)
    assert by_name["dense_3"].inputs == ("dense_1",)
    assert by_name["add_1"].inputs == ("dense_2", "relu_1")


def test_aliases_resolve_to_the_canonical_layer() -> None:
    spec = model("  linear(8) -> swish\n")
    assert [(n.name, n.layer) for n in spec.model.nodes] == [
        ("dense_1", "dense"),
        ("silu_1", "silu"),
    ]


def test_every_default_argument_is_filled_in() -> None:
    spec = model("  dense(8)\n")
    names = LAYERS.get("dense").signature.names()
    assert sorted(spec.model.nodes[0].args) == sorted(names)


def test_an_explicit_return_ends_the_model() -> None:
    spec = model("  h = dense(8)\n  return h -> relu\n")
    assert spec.model.output == "relu_1"


def test_repeat_without_a_variable_and_repeat_zero() -> None:
    assert len(model("  repeat 3 {\n    dense(8) -> relu\n  }\n").model.nodes) == 6
    spec = model("  dense(8)\n  repeat depth { relu }\n", "param depth = 0\n")
    assert [n.name for n in spec.model.nodes] == ["dense_1"]


def test_the_loop_variable_counts_from_zero_in_arithmetic() -> None:
    spec = model("  repeat 3 as i {\n    dense(8 + i * 2)\n  }\n")
    assert [n.args[first_arg("dense")] for n in spec.model.nodes] == [8, 10, 12]


def test_blocks_take_several_tensor_inputs() -> None:
    head = "block gate(d: int) (a, b) {\n  return (a -> dense(d)) * (b -> sigmoid)\n}\n"
    spec = model("  h = dense(4)\n  gate(4, h, x)\n", head)
    assert nodes(spec)["gate_1.mul_1"].inputs == ("gate_1.dense_1", "gate_1.sigmoid_1")
    assert nodes(spec)["gate_1.dense_1"].inputs == ("dense_1",)


def test_train_defaults_are_explicit() -> None:
    text = (
        "model m {\n  input x: float32[N, 64]\n  dense(10)\n}\n"
        "train {\n  data digits\n  loss cross_entropy\n  optimizer sgd\n  batch 32\n  epochs 2\n}\n"
    )
    train = load_spec_text(text, "t.dnn").train
    assert train is not None
    assert train.schedule.name == "constant" and "warmup" in train.schedule.args
    assert (train.seed, train.metrics, train.regularize, train.early_stop) == (0, (), (), None)
    assert train.optimizer.args["lr"] == 0.01


def test_durations_carry_their_unit() -> None:
    text = (
        "model m {\n  input x: float32[N, 64]\n  dense(10)\n}\n"
        "train {\n  data digits\n  loss cross_entropy\n  optimizer adam\n  batch 32\n  epochs 2\n"
        "  schedule step(every = 500 steps, warmup = 1 epoch)\n}\n"
    )
    train = load_spec_text(text, "t.dnn").train
    assert train is not None
    assert train.schedule.args["every"] == Duration(value=500, unit="steps")
    assert train.schedule.args["warmup"] == Duration(value=1, unit="epochs")


def test_the_search_section_is_stored_and_params_keep_their_defaults() -> None:
    spec = load_spec(SPECS / "digits_mlp.dnn")
    assert spec.search is not None
    assert (spec.search.method.name, spec.search.method.args) == (
        "random",
        {"trials": 20, "seed": 0},
    )
    assert (spec.search.objective, spec.search.direction) == ("val_accuracy", "max")
    assert [(d.param, d.space, d.values) for d in spec.search.dims] == [
        ("hidden", "choice", (32, 64, 128, 256)),
        ("lr", "log_uniform", (1e-4, 1e-2)),
    ]
    assert spec.params["hidden"] == 128


def test_a_search_value_that_breaks_the_model_is_reported_before_any_trial() -> None:
    text = (
        "param depth = 1\nmodel m {\n  input x: float32[N, 64]\n  repeat depth { dense(8) }\n}\n"
        "search grid {\n  depth in int_range(-1, 2)\n}\n"
    )
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, "t.dnn")
    (diag,) = caught.value.diagnostics
    assert diag.message == "repeat needs an integer count, zero or more, got number -1"
    assert diag.notes[-1].message == "with depth = -1 from this search space"


def test_search_objective_direction_follows_the_metric_when_omitted() -> None:
    text = (
        "param lr = 0.1\nmodel m {\n  input x: float32[N, 64]\n  dense(10)\n}\n"
        "train {\n  data digits\n  loss cross_entropy\n  optimizer sgd(lr = lr)\n  batch 32\n"
        "  epochs 2\n  metrics accuracy\n}\n"
        "search random(trials = 2, objective = val_accuracy) {\n  lr in uniform(0.01, 0.1)\n}\n"
    )
    search = load_spec_text(text, "t.dnn").search
    assert search is not None and search.direction == "max"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  dense(4) -> add\n", "add merges two or more tensors, got 1"),
        ("  h = dense(4)\n  relu(h, x)\n", "relu takes 1 tensor input, got 2"),
        ("  h = dense(4)\n  h - x\n", "tensors cannot be combined with '-'"),
        ("  dense(4) * 2\n", "cannot combine a tensor with number 2 using '*'"),
        ("  h = dense(4)\n  hh -> relu\n", "unknown name 'hh': not a value, param, layer or block"),
        ("  dense(4) -> h\n", "unknown layer 'h'"),
        ("  x -> x\n", "'x' is a value, not a layer"),
        ("  relu = dense(4)\n", "'relu' is already a layer; give this value another name"),
        ("  dense(4)\n  return relu\n  relu\n", "this statement comes after 'return'"),
        ("  h = dense(4)\n  concat(h, x, axis = x)\n", "argument 'axis' of concat must be a"),
        ("  h = dense(4)\n  x -> dense(2)\n", "the result of this dense is never used"),
    ],
)
def test_tensor_mistakes_are_located_errors(body: str, expected: str) -> None:
    found = messages(f"model m {{\n{INPUT}{body}}}\n")
    assert any(m.startswith(expected) for m in found), found


def test_independent_errors_are_all_reported() -> None:
    found = messages(f"model m {{\n{INPUT}  dense(8) -> relu2\n  dens(10)\n}}\n")
    assert found == ["unknown layer 'relu2'", "unknown layer 'dens'"]


def test_an_error_after_a_failed_statement_is_not_a_cascade() -> None:
    found = messages(f"model m {{\n{INPUT}  densee(8)\n  relu -> dense(4)\n}}\n")
    assert found == ["unknown layer 'densee'"]


def test_recursive_blocks_are_rejected() -> None:
    head = "block a(d: int) (x) {\n  return x -> b(d)\n}\nblock b(d: int) (x) {\n  return a(d)\n}\n"
    found = messages(f"{head}model m {{\n{INPUT}  a(1)\n}}\n")
    assert found == ["block 'a' calls itself (a -> b -> a)"]


def test_block_params_are_type_checked_at_the_call() -> None:
    head = "block b(d: int, p: float = 0.1) (x) {\n  return x -> dense(d) -> dropout(p)\n}\n"
    found = messages(f"{head}model m {{\n{INPUT}  b(4.5, p = true)\n}}\n")
    assert found == [
        "argument 'd' of b must be an integer, got 4.5",
        "argument 'p' of b must be a number (float), got bool true",
    ]


def test_an_error_inside_a_block_notes_each_call_site() -> None:
    head = "block b(n: int) (x) {\n  repeat n { relu }\n  return x -> dense(4)\n}\n"
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(f"{head}model m {{\n{INPUT}  b(-2)\n}}\n", "t.dnn")
    (diag,) = caught.value.diagnostics
    assert diag.span == Span(file="t.dnn", line=2, col=10, end_line=2, end_col=11)
    assert [(n.message, n.span.line if n.span else 0) for n in diag.notes] == [
        ("in this call of block 'b'", 7)
    ]


def test_train_mistakes_are_located_errors() -> None:
    text = (
        "model m {\n  input x: float32[N, 64]\n  dense(10)\n}\n"
        "train {\n  data digits\n  los mse\n  optimizer adam\n  optimizer sgd\n  batch 0\n"
        "  metrics accuracy\n}\n"
    )
    assert messages(text) == [
        "unknown train setting 'los'",
        "'optimizer' is given twice",
        "the train section needs 'epochs'",
        "'batch' must be a positive integer, got number 0",
    ]


def test_a_metric_must_read_the_same_targets_as_the_loss() -> None:
    text = (
        "model m {\n  input x: float32[N, 64]\n  dense(10)\n}\n"
        "train {\n  data digits\n  loss mse\n  optimizer adam\n  batch 8\n  epochs 1\n"
        "  metrics accuracy\n}\n"
    )
    assert messages(text) == [
        "metric 'accuracy' needs class labels, but loss 'mse' trains on values"
    ]


def test_a_missing_spec_file_is_a_diagnostic(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="does not exist"):
        load_spec(tmp_path / "nope.dnn")
    with pytest.raises(DiagnosticError, match="is a directory"):
        load_spec(tmp_path)
    bad = tmp_path / "bad.dnn"
    bad.write_bytes(b"param a = 1\nparam b = \xff\n")
    with pytest.raises(DiagnosticError) as caught:
        load_spec(bad)
    assert caught.value.diagnostics[0].span == Span(
        file=str(bad), line=2, col=11, end_line=2, end_col=12
    )


def test_a_broken_lock_file_is_a_diagnostic(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="lock file .*missing.json. does not exist"):
        read_lock(tmp_path / "missing.json")
    broken = tmp_path / "spec.lock.json"
    broken.write_text('{"source": 3}')
    with pytest.raises(DiagnosticError, match="is not a valid spec.lock.json"):
        read_lock(broken)


def test_an_unknown_word_where_a_number_is_needed_suggests_a_param() -> None:
    with pytest.raises(DiagnosticError) as caught:
        model("  dense(hiden)\n", "param hidden = 16\n")
    assert caught.value.diagnostics[0].help == "did you mean 'hidden'?"
    with pytest.raises(DiagnosticError) as caught:
        model("  dense(width)\n")
    assert caught.value.diagnostics[0].help == (
        "'width' is read as a word: no param or value has that name"
    )


def test_a_bad_block_default_is_reported_once_not_again_at_each_call() -> None:
    head = "block b(d: int = 2.5) (x) {\n  return x -> dense(d)\n}\n"
    found = messages(f"{head}model m {{\n{INPUT}  b\n  b(3)\n}}\n")
    assert found == ["the default of 'd' must be an int, got number 2.5"]


def test_a_block_with_an_empty_body_is_named_rather_than_the_model() -> None:
    head = "block b(d: int) (x) {\n}\n"
    with pytest.raises(DiagnosticError) as caught:
        model("  b(3)\n", head)
    (diag,) = caught.value.diagnostics
    assert diag.message == "block 'b' has an empty body"
    assert diag.span is not None and (diag.span.line, diag.span.col) == (1, 7)
    assert diag.help == "add its layers, e.g. return x -> dense(8)"


def test_counts_that_must_be_integers_say_so() -> None:
    train = "train {\n  data digits\n  loss cross_entropy\n  optimizer adam\n  batch 8\n"
    assert messages(f"model m {{\n{INPUT}  dense(10)\n}}\n{train}  epochs 1\n  seed 1.5\n}}\n") == [
        "'seed' must be an integer, zero or more, got number 1.5"
    ]
    assert messages(f"model m {{\n{INPUT}  repeat 2.5 {{ relu }}\n  dense(2)\n}}\n") == [
        "repeat needs an integer count, zero or more, got number 2.5"
    ]


def test_a_repeat_past_the_iteration_limit_says_how_many_it_asked_for() -> None:
    with pytest.raises(DiagnosticError) as caught:
        model("  repeat 100000 { relu }\n  dense(2)\n")
    (diag,) = caught.value.diagnostics
    assert diag.message == "repeat loops run more than 20000 times in all"
    assert diag.help is not None and "asks for 100000" in diag.help


def test_a_reversed_int_range_shows_the_bounds() -> None:
    text = (
        f"param w = 4\nmodel m {{\n{INPUT}  dense(w)\n}}\n"
        "search grid {\n  w in int_range(5, 1)\n}\n"
    )
    assert messages(text) == ["int_range takes two integers with lo <= hi, got 5 and 1"]


def test_a_bool_argument_of_the_wrong_type_is_shown_as_written_in_a_spec() -> None:
    assert messages(f"model m {{\n{INPUT}  dense(true)\n}}\n") == [
        "argument 'units' of dense must be a number (int), got bool true"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e400", "number 1e400 is too large"),
        ("99999999999999999999999", "integer 99999999999999999999999 does not fit in 64 bits"),
    ],
)
def test_an_override_number_out_of_range_is_reported_as_a_number(text: str, message: str) -> None:
    # Not passed on as the string '1e400', which the param would reject as a "word".
    with pytest.raises(DiagnosticError) as caught:
        model("  dense(hidden)\n", "param hidden = 16\n", hidden=text)
    (diag,) = caught.value.diagnostics
    assert diag.message == message
    assert diag.span is not None and diag.span.file == "--set hidden"
    assert "--set hidden" in caught.value.render()


@pytest.mark.parametrize(
    ("text", "help"),
    [
        ("2*8", "--set takes a literal, not an expression: give an int, e.g. --set hidden=16"),
        ("wide", "give an int, e.g. --set hidden=16"),
        ("32.0", "write it without a fraction: --set hidden=32"),
    ],
)
def test_an_override_of_the_wrong_kind_shows_how_to_write_it(text: str, help: str) -> None:
    with pytest.raises(DiagnosticError) as caught:
        model("  dense(hidden)\n", "param hidden = 16\n", hidden=text)
    (diag,) = caught.value.diagnostics
    assert diag.help == help


def test_a_hash_in_a_set_value_is_part_of_the_value_not_a_comment() -> None:
    spec = model("  dense(4)\n", 'param path = "a"\n', path="runs#2/train.csv")
    assert spec.params["path"] == "runs#2/train.csv"
    with pytest.raises(DiagnosticError, match="holds an int, not word '64#c'"):
        model("  dense(hidden)\n", "param hidden = 16\n", hidden="64#c")


def test_an_int_overrides_a_float_param() -> None:
    spec = model("  dense(4)\n", "param lr = 1e-3\n", lr="1")
    assert spec.params["lr"] == 1


def test_whole_floats_are_repeat_counts_and_list_entries() -> None:
    spec = model("  repeat 4 / 2 {\n    dense(8 / 2)\n  }\n  reshape([2, 4 / 2])\n")
    layers = [n.layer for n in spec.model.nodes]
    assert layers == ["dense", "dense", "reshape"]
    assert spec.model.nodes[-1].args["shape"] == [2, 2]
    with pytest.raises(DiagnosticError, match="repeat needs an integer count"):
        model("  repeat 5 / 2 {\n    dense(4)\n  }\n")


@pytest.mark.parametrize(
    ("names", "key", "used_for"),
    [
        (("val", "ink"), "val_loss", "the validation loss"),
        (("kind", "test"), "test_loss", "the test loss"),
        (("x1", "val_x1"), "val_x1_loss", "output 'x1'"),
    ],
)
def test_an_output_whose_record_keys_collide_is_refused(
    names: tuple[str, str], key: str, used_for: str
) -> None:
    a, b = names
    text = (
        f"model m {{\n  input x: float32[N, 64]\n  h = x -> dense(8)\n"
        f"  return {a}: h -> dense(10), {b}: h -> dense(1)\n}}\n"
        f"train {{\n  data digits\n  loss {a}: cross_entropy, {b}: mse\n"
        "  optimizer sgd\n  batch 8\n  epochs 1\n}\n"
    )
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, "t.dnn")
    (problem,) = caught.value.diagnostics
    assert problem.message.endswith(f"'{key}', which the training records use for {used_for}")
    assert problem.span is not None and problem.span.line == 4


def test_the_train_sections_runtime_is_a_name_kept_out_of_the_specs_text() -> None:
    train = (
        "train {\n  data digits\n  loss cross_entropy\n  optimizer sgd(lr = 0.1)\n"
        "  batch 8\n  epochs 1\n  runtime %s\n}\n"
    )
    head = f"model m {{\n{INPUT}  dense(10)\n}}\n"
    spec = load_spec_text(head + train % "openvino", "t.dnn")
    assert spec.train is not None and spec.train.runtime is not None
    assert (spec.train.runtime.name, spec.train.runtime.span.line) == ("openvino", 11)
    assert '"runtime"' not in spec.model_dump_json()
    assert messages(head + train % "3") == [
        "'runtime' takes the name of a runtime, like runtime openvino"
    ]
