"""The values resolution computes with, and the scopes and frames it computes them in.

Shared by every section of the resolver: a value is a scalar (number, word, bool, duration,
list), a `Tensor` (the name of an input or node) or `POISON` (a computation that already
failed and was reported). `Definitions` holds what names the spec defines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, TypeVar

from dnnspec.errors import Span, did_you_mean
from dnnspec.schema import Duration, Signature
from dnnspec.syntax import ast

Scalar = bool | int | float | str | Duration | list[Any]
W = TypeVar("W", bound=str)


@dataclass(frozen=True)
class Tensor:
    """A tensor-valued result: the name of an input or of the node that computes it."""

    name: str


class Poison(Enum):
    """The value of a computation that already failed (and was reported). A one-member
    enum, so `value is POISON` narrows a value's type."""

    POISON = "POISON"

    def __repr__(self) -> str:
        return "POISON"


POISON: Final = Poison.POISON
Value = Tensor | Scalar | Poison


class Fatal(Exception):
    """Stops resolution at once (a runaway expansion); the problems so far are reported."""


@dataclass(frozen=True)
class Frame:
    """One level of expansion: a block call site or a repeat iteration."""

    span: Span
    note: str


@dataclass
class Scope:
    """Names visible while executing one model or block body.

    A repeat body runs in a child scope that shares `values` and `counters` with its parent
    (so names it assigns stay visible and node numbering continues) but adds its loop
    variable and an origin frame.
    """

    prefix: str = ""
    values: dict[str, Tensor | Poison] = field(default_factory=dict)
    consts: dict[str, Scalar] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    frames: tuple[Frame, ...] = ()
    current: Tensor | Poison | None = None
    tensors: bool = True
    """False where layers cannot be called: params, train and search sections."""

    def child(self, consts: dict[str, Scalar], frame: Frame) -> Scope:
        return Scope(
            self.prefix,
            self.values,
            consts,
            self.counters,
            (*self.frames, frame),
            self.current,
            self.tensors,
        )


@dataclass(frozen=True)
class Block:
    """A block definition with its argument schema (defaults already evaluated)."""

    syntax: ast.BlockDef
    signature: Signature


@dataclass
class Definitions:
    """What the spec defines before its model uses it: params (after `--set` overrides) and
    blocks. Filled by the definitions section, read by expressions and the other sections."""

    overrides: Mapping[str, tuple[Scalar, Span]]
    """`--set` values by param name, with where each was written."""
    params: dict[str, Scalar | Poison] = field(default_factory=dict)
    """Param values in declaration order; POISON for a param whose value failed."""
    param_decls: dict[str, ast.ParamDecl] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    unusable: set[str] = field(default_factory=set)
    """Blocks whose definition is broken (recursive, no inputs): calls yield POISON."""


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Duration):
        return "duration"
    return {int: "int", float: "float", str: "str", list: "list"}.get(type(value), "value")


def describe(value: Any) -> str:
    """`number 3`, `word 'same'`, `a tensor`: what a value is, for messages."""
    if isinstance(value, Tensor):
        return f"the tensor '{value.name}'"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"word '{value}'"
    if isinstance(value, Duration):
        return f"duration {value.value:g} {value.unit}"
    return f"list {value!r}"


def article(kind: str) -> str:
    """`an int`, `a float`: a kind with its article."""
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def compatible(declared: str, value: Any) -> bool:
    """Whether `value` may stand where a value of kind `declared` was written."""
    kind = kind_of(value)
    return kind == declared or (declared == "float" and kind == "int")


def word_in(word: str, options: Sequence[W]) -> W | None:
    """`word` as the option it equals, typed as the options are (a Literal); else None."""
    return next((o for o in options if o == word), None)


def suggest(word: str, names: Iterable[str]) -> str | None:
    """`did you mean 'x'?` when a name is close to `word`, else None (no list of options)."""
    hint = did_you_mean(word, names)
    return hint if hint is not None and hint.startswith("did you mean") else None
