"""Parsing: text -> syntax IR, with the structure and spans each construct promises."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT

from dnnspec.errors import DiagnosticError, Span
from dnnspec.frontend import parse_override, parse_text
from dnnspec.syntax import ast
from dnnspec.syntax.parse import grammar_text


def model_body(text: str) -> tuple[ast.Stmt, ...]:
    spec = parse_text(text, "t.dnn")
    model = next(i for i in spec.items if isinstance(i, ast.ModelDef))
    return model.body


def one_expr(source: str) -> ast.Expr:
    """The value of `param p = <source>`."""
    item = parse_text(f"param p = {source}\n", "t.dnn").items[0]
    assert isinstance(item, ast.ParamDecl)
    return item.value


def test_grammar_ships_as_package_data_and_the_top_level_link_points_at_it() -> None:
    packaged = ROOT / "dnnspec" / "grammar" / "dnn.lark"
    assert grammar_text() == packaged.read_text(encoding="utf-8")
    assert (ROOT / "grammar" / "dnn.lark").resolve() == packaged.resolve()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_spec_parses(path: Path) -> None:
    spec = parse_text(path.read_text(encoding="utf-8"), str(path))
    assert sum(isinstance(i, ast.ModelDef) for i in spec.items) == 1


def test_a_chain_is_one_statement_whose_steps_are_calls_and_names() -> None:
    body = model_body(
        "model m {\n  input x: float32[N, 4]\n  dense(64) -> relu -> dropout(0.2)\n}\n"
    )
    assert isinstance(body[0], ast.InputStmt)
    stmt = body[1]
    assert isinstance(stmt, ast.ExprStmt) and isinstance(stmt.value, ast.Chain)
    first, second, third = stmt.value.steps
    assert isinstance(first, ast.Call) and first.func.id == "dense"
    assert isinstance(second, ast.Name) and second.id == "relu"
    assert isinstance(third, ast.Call) and third.args[0].value == ast.Number(
        value=0.2, span=Span(file="t.dnn", line=3, col=32, end_line=3, end_col=35)
    )


def test_spans_are_one_based_with_an_exclusive_end() -> None:
    body = model_body("model m {\n  input x: float32[N, 64]\n  dense(64, bias = false)\n}\n")
    assert isinstance(body[1], ast.ExprStmt)
    call = body[1].value
    assert isinstance(call, ast.Call)
    assert call.span == Span(file="t.dnn", line=3, col=3, end_line=3, end_col=26)
    assert call.func.span == Span(file="t.dnn", line=3, col=3, end_line=3, end_col=8)
    kwarg = call.args[1]
    assert kwarg.name is not None and kwarg.name.id == "bias"
    assert (kwarg.span.col, kwarg.span.end_col) == (13, 25)


def test_input_declares_dtype_and_symbolic_or_literal_dims() -> None:
    stmt = model_body("model m {\n  input tokens: int64[N, T, 8]\n  relu\n}\n")[0]
    assert isinstance(stmt, ast.InputStmt)
    assert (stmt.name.id, stmt.dtype.id) == ("tokens", "int64")
    dims = [d.id if isinstance(d, ast.Name) else d for d in stmt.dims]
    assert dims[:2] == ["N", "T"] and isinstance(dims[2], ast.Number) and dims[2].value == 8


def test_newlines_inside_brackets_and_around_arrows_continue_the_statement() -> None:
    text = (
        "model m {\n  input x: float32[N, 64]\n\n  # a comment line\n"
        "  dense(\n    64,\n    bias = true,\n  )\n    -> relu ->\n    dropout(0.1)\n}\n"
    )
    body = model_body(text)
    assert len(body) == 2 and isinstance(body[1], ast.ExprStmt)
    chain = body[1].value
    assert isinstance(chain, ast.Chain) and len(chain.steps) == 3


def test_windows_line_endings_parse_like_unix_ones() -> None:
    text = "param a = 1\nmodel m {\n  input x: float32[N, 4]\n  relu\n}\n"
    assert len(parse_text(text.replace("\n", "\r\n"), "t.dnn").items) == 2


def test_sums_bind_looser_than_products_and_chains_loosest() -> None:
    expr = one_expr("a + b * c")
    assert isinstance(expr, ast.Arith) and [o.symbol for o in expr.ops] == ["+"]
    assert isinstance(expr.operands[1], ast.Arith) and expr.operands[1].ops[0].symbol == "*"
    chain = one_expr("h + x -> relu")
    assert isinstance(chain, ast.Chain) and isinstance(chain.steps[0], ast.Arith)


def test_long_sums_stay_flat() -> None:
    expr = one_expr(" + ".join(["1"] * 500))
    assert isinstance(expr, ast.Arith) and len(expr.operands) == 500


def test_unary_minus_signs_cancel_in_pairs() -> None:
    assert isinstance(one_expr("-x"), ast.Neg)
    assert isinstance(one_expr("- -x"), ast.Name)


@pytest.mark.parametrize(
    ("source", "value"),
    [("64", 64), ("0.5", 0.5), ("1e-3", 1e-3), ("2.", 2.0), (".5", 0.5), ("3E2", 300.0)],
)
def test_numbers_with_a_point_or_exponent_are_floats(source: str, value: float) -> None:
    number = one_expr(source)
    assert isinstance(number, ast.Number)
    assert number.value == value and type(number.value) is type(value)


def test_strings_decode_their_escapes() -> None:
    string = one_expr(r'"a\"b\\c\nd"')
    assert isinstance(string, ast.String) and string.value == 'a"b\\c\nd'


def test_a_word_after_a_value_is_a_unit_or_a_direction() -> None:
    duration = one_expr("2 epochs")
    assert isinstance(duration, ast.WithUnit) and duration.unit.id == "epochs"
    objective = one_expr("max val_accuracy")
    assert isinstance(objective, ast.WithUnit) and isinstance(objective.value, ast.Name)


def test_lists_and_trailing_commas() -> None:
    items = one_expr("[1, 2, 3,]")
    assert isinstance(items, ast.ListExpr) and len(items.items) == 3


def test_block_header_has_typed_params_with_defaults_and_tensor_inputs() -> None:
    block = parse_text(
        "block res(d: int, p: float = 0.1) (x, y) {\n  return x + y\n}\n", "t.dnn"
    ).items[0]
    assert isinstance(block, ast.BlockDef)
    assert [(p.name.id, p.type.id, p.default is not None) for p in block.params] == [
        ("d", "int", False),
        ("p", "float", True),
    ]
    assert [i.id for i in block.inputs] == ["x", "y"]
    assert isinstance(block.body[0], ast.Return)


def test_repeat_keeps_the_span_of_its_header() -> None:
    body = model_body("model m {\n  input x: float32[N, 4]\n  repeat depth as i { relu }\n}\n")
    rep = body[1]
    assert isinstance(rep, ast.Repeat) and rep.var is not None and rep.var.id == "i"
    assert rep.head == Span(file="t.dnn", line=3, col=3, end_line=3, end_col=20)
    bare = model_body("model m {\n  input x: float32[N, 4]\n  repeat 2 { relu }\n}\n")[1]
    assert isinstance(bare, ast.Repeat) and bare.var is None


def test_train_items_take_values_calls_lists_or_parenthesised_arguments() -> None:
    text = (
        "train {\n  loss cross_entropy\n  optimizer adam(lr = 1e-3)\n  metrics accuracy, mae\n"
        "  early_stop(monitor = val_loss, patience = 5)\n  batch 64\n}\n"
    )
    train = parse_text(text, "t.dnn").items[0]
    assert isinstance(train, ast.TrainDef)
    items = {i.key.id: i.values for i in train.items}
    assert isinstance(items["loss"][0], ast.Name)
    assert isinstance(items["optimizer"][0], ast.Call)
    assert len(items["metrics"]) == 2
    assert isinstance(items["early_stop"][0], ast.Paren) and len(items["early_stop"][0].args) == 2
    assert isinstance(items["batch"][0], ast.Number)


def test_search_head_and_dimensions() -> None:
    text = "search random(trials = 4, objective = min val_loss) {\n  lr in uniform(0.1, 1)\n}\n"
    search = parse_text(text, "t.dnn").items[0]
    assert isinstance(search, ast.SearchDef)
    assert search.method.id == "random" and len(search.args) == 2
    assert search.head == Span(file="t.dnn", line=1, col=8, end_line=1, end_col=52)
    assert search.dims[0].param.id == "lr" and isinstance(search.dims[0].space, ast.Call)


def test_a_syntax_error_points_at_the_unexpected_token() -> None:
    with pytest.raises(DiagnosticError) as caught:
        parse_text("model m {\n  input x: float32[N 64]\n}\n", "t.dnn")
    (diag,) = caught.value.diagnostics
    assert diag.message == "expected ',' or ']' here, found number 64"
    assert diag.span == Span(file="t.dnn", line=2, col=22, end_line=2, end_col=24)


def test_reserved_words_cannot_name_things() -> None:
    with pytest.raises(DiagnosticError) as caught:
        parse_text("param model = 3\n", "t.dnn")
    help_ = caught.value.diagnostics[0].help
    assert help_ == "'model' is a reserved word and cannot be used as a name"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64", 64),
        ("-0.5", -0.5),
        ("1e-05", 1e-05),
        ("true", True),
        ('"a b"', "a b"),
        ("adam", "adam"),
        ("[1, 2]", [1, 2]),
        ("data/x.csv", "data/x.csv"),
    ],
)
def test_override_values_are_literals_or_else_raw_text(text: str, value: object) -> None:
    parsed, span = parse_override("p", text)
    assert parsed == value and type(parsed) is type(value)
    assert span.file == "--set p" and (span.col, span.end_col) == (3, 3 + len(text))
