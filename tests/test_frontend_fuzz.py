"""Whatever text comes in, the front end answers with a spec or a `DiagnosticError`.

Hypothesis mutates the example specs (deleting, duplicating, swapping and inserting tokens
and characters) and also writes random token soup; any other exception, or a diagnostic
that cannot be rendered, is a bug.
"""

from __future__ import annotations

import re

import pytest
from conftest import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text

EXAMPLE_TEXTS = [p.read_text(encoding="utf-8") for p in EXAMPLES]
EXAMPLE_TEXTS.append(
    'block gate(d: int, s: str = "a") (a, b) {\n  return (a -> dense(d)) * (b -> sigmoid)\n}\n'
    "model m {\n  input x: float32[N, 8]\n  h = x -> dense(8)\n  g = h + (h -> relu)\n"
    "  concat(g, h, axis = 1) -> gate(8, x)\n  repeat 2 as i { dense(8 - i) }\n  return relu\n}\n"
)
TOKEN = re.compile(r"\s+|[A-Za-z_]\w*|\d+\.?\d*(?:[eE][+-]?\d+)?|->|\"[^\"\n]*\"|.")
PIECES = [
    "(", ")", "{", "}", "[", "]", ",", "->", "=", "+", "-", "*", "/", ":", ";", "\n", "#",
    "repeat", "as", "i", "block", "return", "input", "param", "model", "train", "search", "in",
    "x", "0", "-1", "1e999", "99999999999999999999", '"', "epochs", "max", "choice(", "int",
    "float32", "relu", "dense", "add", "concat",
]  # fmt: skip
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

Edit = tuple[int, int, int, str]


def mutate(text: str, edits: list[Edit]) -> str:
    """Apply edits (kind, position, other position, piece) to the text's tokens or chars."""
    tokens = TOKEN.findall(text)
    for kind, i, j, piece in edits:
        if not tokens:
            tokens = [piece]
        i, j = i % len(tokens), j % len(tokens)
        if kind == 0:
            del tokens[i]
        elif kind == 1:
            tokens.insert(i, tokens[j])
        elif kind == 2:
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == 3:
            tokens.insert(i, piece)
        else:
            joined = "".join(tokens)
            k = i % max(1, len(joined))
            joined = joined[:k] + joined[k + 1 :] if kind == 4 else joined[:k] + piece + joined[k:]
            tokens = TOKEN.findall(joined)
    return "".join(tokens)


def answers_cleanly(text: str) -> None:
    try:
        load_spec_text(text, "fuzz.dnn")
    except DiagnosticError as exc:
        assert exc.diagnostics
        exc.render()
        exc.to_json()


edits = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.sampled_from(PIECES),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(st.sampled_from(EXAMPLE_TEXTS), edits)
def test_mutated_example_specs_give_a_spec_or_diagnostics(text: str, changes: list[Edit]) -> None:
    answers_cleanly(mutate(text, changes))


@FUZZ
@given(st.lists(st.sampled_from(PIECES + [" ", "  ", "\n"]), max_size=60))
def test_random_token_soup_gives_diagnostics(pieces: list[str]) -> None:
    answers_cleanly("".join(pieces))


@FUZZ
@given(st.text(max_size=80))
def test_arbitrary_characters_give_diagnostics(text: str) -> None:
    answers_cleanly(text)


@FUZZ
@given(
    st.sampled_from(EXAMPLE_TEXTS), st.text(max_size=12), st.sampled_from(["hidden", "width", "x"])
)
def test_arbitrary_overrides_give_a_spec_or_diagnostics(text: str, value: str, name: str) -> None:
    try:
        load_spec_text(text, "fuzz.dnn", {name: value})
    except DiagnosticError as exc:
        exc.render()


@pytest.mark.parametrize(
    "text",
    [
        "param a = " + "(" * 5000 + "1" + ")" * 5000,
        "param a = " + "[" * 5000,
        "param a = " + "-" * 5000 + "1",
        "model m {\n  input x: float32[N, 4]\n" + "  repeat 2 {\n" * 200 + "  }\n" * 200 + "}",
        "model m {\n  input x: float32[N, 4]\n  repeat 100000 { repeat 100000 { } }\n}\n",
        "model m {\n  input x: float32[N, 4]\n  repeat 1000000 { relu }\n}\n",
        "block a(n: int) (x) { return x -> a(n) }\nmodel m { input x: float32[N, 4]; a(1) }\n",
    ],
    ids=["parens", "brackets", "minus-signs", "nested-repeats", "empty-loops", "huge-repeat",
         "recursion"],
)  # fmt: skip
def test_pathological_nesting_and_size_are_diagnostics_not_crashes(text: str) -> None:
    with pytest.raises(DiagnosticError):
        load_spec_text(text, "deep.dnn")


def test_a_long_flat_model_resolves() -> None:
    body = "".join("  dense(8) -> relu\n" for _ in range(300))
    spec = load_spec_text(f"model m {{\n  input x: float32[N, 4]\n{body}}}\n", "long.dnn")
    assert len(spec.model.nodes) == 600
