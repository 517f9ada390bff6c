"""The syntax IR: what a `.dnn` file says, before params, blocks and repeats are resolved.

One frozen pydantic model per construct; every node carries the `Span` it was written
at so that `resolve` (and through it every later stage) can point back at the text.
Sums and products are flat (`Arith`) so long expressions do not nest deeply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from dnnspec.errors import Span


class _Node(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    span: Span


class Name(_Node):
    """An identifier: a value, param, layer, block, word argument or declared name."""

    id: str


class Number(_Node):
    """`64`, `0.2`, `1e-3` (the text decides int or float)."""

    value: int | float


class String(_Node):
    """`"data/train.csv"`, escapes already decoded."""

    value: str


class Bool(_Node):
    value: bool


class ListExpr(_Node):
    """`[1, 2, 3]`."""

    items: tuple[Expr, ...]


class Arg(_Node):
    """One argument of a call: positional (`name` is None) or `name = value`."""

    name: Name | None
    value: Expr


class Call(_Node):
    """`dense(64, bias = false)`: a layer, block, loss, optimizer, ... call."""

    func: Name
    args: tuple[Arg, ...]


class Paren(_Node):
    """`( ... )`: a parenthesised expression, or the argument list of a train item."""

    args: tuple[Arg, ...]


OperatorSymbol = Literal["+", "-", "*", "/"]


class Operator(_Node):
    symbol: OperatorSymbol


class Arith(_Node):
    """`a + b - c` or `a * b / c`: operands combined left to right by `ops`."""

    operands: tuple[Expr, ...]
    ops: tuple[Operator, ...]


class Neg(_Node):
    """`-x`."""

    operand: Expr


class WithUnit(_Node):
    """A value followed by a word: a duration (`2 epochs`) or an objective (`max val_loss`)."""

    value: Expr
    unit: Name


class Chain(_Node):
    """`a -> b(1) -> c`: each step after the first is applied to the previous result."""

    steps: tuple[Expr, ...]


Expr = Name | Number | String | Bool | ListExpr | Call | Paren | Arith | Neg | WithUnit | Chain


class InputStmt(_Node):
    """`input x: float32[N, 64]`; dims are expressions (a param name gives its value)."""

    name: Name
    dtype: Name
    dims: tuple[Expr, ...]


class Assign(_Node):
    """`h = x -> dense(64)`: names a value (names may be reassigned)."""

    target: Name
    value: Expr


class ExprStmt(_Node):
    """A chain on its own line; a leading layer call applies to the current value."""

    value: Expr


class Return(_Node):
    value: Expr


class NamedOutput(_Node):
    """`digit: logits` in `return digit: logits, size: h`."""

    name: Name
    value: Expr


class ReturnOutputs(_Node):
    """`return digit: logits, size: h`: a model with named outputs, each trained by its
    own loss."""

    outputs: tuple[NamedOutput, ...]


class Repeat(_Node):
    """`repeat n as i { ... }`; `head` is the span of `repeat n as i` alone."""

    count: Expr
    var: Name | None
    body: tuple[Stmt, ...]
    head: Span


Stmt = InputStmt | Assign | ExprStmt | Return | ReturnOutputs | Repeat


class Import(_Node):
    """`import transformer` (a standard-library module) or `import "blocks.dnn"` (a file)."""

    module: Name | String


class ParamDecl(_Node):
    """`param hidden = 128`."""

    name: Name
    value: Expr


class BlockParam(_Node):
    """`p: float = 0.1` in a block header."""

    name: Name
    type: Name
    default: Expr | None


class BlockDef(_Node):
    """`block residual(d: int, p: float = 0.1) (x) { ... }`."""

    name: Name
    params: tuple[BlockParam, ...]
    inputs: tuple[Name, ...]
    body: tuple[Stmt, ...]


class ModelDef(_Node):
    name: Name
    body: tuple[Stmt, ...]


class Labelled(_Node):
    """`digit: cross_entropy` in a train item: a value for one named output."""

    label: Name
    value: Expr


class TrainItem(_Node):
    """`optimizer adam(lr = lr)`, `metrics accuracy, mae`, `early_stop(patience = 5)`,
    `loss digit: cross_entropy, size: mse`."""

    key: Name
    values: tuple[Expr | Labelled, ...]


class TrainDef(_Node):
    items: tuple[TrainItem, ...]


class SearchDim(_Node):
    """`hidden in choice(32, 64)`."""

    param: Name
    space: Expr


class SearchDef(_Node):
    """`search random(trials = 20, objective = max val_accuracy) { ... }`; `head` is the
    span of the method call alone."""

    method: Name
    args: tuple[Arg, ...]
    head: Span
    dims: tuple[SearchDim, ...]


TopItem = Import | ParamDecl | BlockDef | ModelDef | TrainDef | SearchDef


class SpecFile(_Node):
    """A whole file: its top-level items in source order."""

    items: tuple[TopItem, ...]


for _model in (
    ListExpr,
    Arg,
    Call,
    Paren,
    Arith,
    Neg,
    WithUnit,
    Chain,
    InputStmt,
    Assign,
    ExprStmt,
    Return,
    NamedOutput,
    ReturnOutputs,
    Repeat,
    Import,
    ParamDecl,
    BlockParam,
    BlockDef,
    ModelDef,
    Labelled,
    TrainItem,
    SearchDim,
    SearchDef,
    SpecFile,
):
    _model.model_rebuild()
