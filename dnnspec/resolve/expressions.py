"""Expressions: numbers, words, durations, lists, arithmetic, names and `->` chains.

Every section evaluates its values here: params and block defaults, the model body, the
train and search sections. Layer and block calls are handed to a `Calls` (the model
section), so a call outside the model is reported here without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec.errors import DiagnosticError, Note, Span, did_you_mean
from dnnspec.layers.base import LAYERS
from dnnspec.registry import Registry
from dnnspec.resolve.problems import Problems
from dnnspec.resolve.values import (
    POISON,
    Definitions,
    Poison,
    Scalar,
    Scope,
    Tensor,
    Value,
    describe,
    suggest,
)
from dnnspec.schema import INT64_MAX, Duration, DurationUnit
from dnnspec.syntax import ast

T = TypeVar("T")
UNITS: dict[str, DurationUnit] = {
    "step": "steps",
    "steps": "steps",
    "epoch": "epochs",
    "epochs": "epochs",
}


def _within(inner: Span, outer: Span) -> bool:
    return (
        inner.file == outer.file
        and (outer.line, outer.col) <= (inner.line, inner.col)
        and (inner.end_line, inner.end_col) <= (outer.end_line, outer.end_col)
    )


@dataclass
class NameUses:
    """How names were read, so that a later binding error can explain itself."""

    words: dict[Span, str] = field(default_factory=dict)
    """Bare words met in argument position, for did-you-mean help on binding errors."""
    overridden: dict[Span, str] = field(default_factory=dict)
    """Uses of overridden params, so binding errors can point at the override."""


class Calls(Protocol):
    """Executes layer and block calls (the model section)."""

    def call(
        self,
        func: ast.Name,
        args: Sequence[ast.Arg],
        span: Span,
        scope: Scope,
        chain_input: Value | None,
    ) -> Value: ...

    def apply_layer(
        self,
        name: str,
        span: Span,
        inputs: Sequence[Tensor | Poison],
        positional: list[tuple[Any, Span]],
        keyword: list[tuple[str, Any, Span]],
        scope: Scope,
    ) -> Value: ...


class Expressions:
    """Evaluates expressions against the spec's definitions; `calls` is None outside the
    model, where layers and blocks cannot be called."""

    def __init__(
        self, problems: Problems, defs: Definitions, uses: NameUses, calls: Calls | None = None
    ) -> None:
        self.problems = problems
        self.defs = defs
        self.uses = uses
        self.calls = calls

    def call(
        self,
        func: ast.Name,
        args: Sequence[ast.Arg],
        span: Span,
        scope: Scope,
        chain_input: Value | None,
    ) -> Value:
        """A layer or block call; `chain_input` is the value on the left of `->`, if any."""
        func = self.named(func, self.callable)
        if not scope.tensors or self.calls is None:
            return self.problems.fail(
                f"'{func.id}(...)' cannot be used here: layers and blocks belong in the model",
                span,
                scope,
            )
        return self.calls.call(func, args, span, scope, chain_input)

    def tensor(self, value: Value, span: Span, scope: Scope) -> Tensor | Poison:
        """`value` if it is a tensor; otherwise report that a tensor was needed here."""
        if isinstance(value, Tensor | Poison):
            return value
        return self.problems.fail(f"expected a tensor here, got {describe(value)}", span, scope)

    def scalar(self, expr: ast.Expr, scope: Scope, what: str) -> Scalar | Poison:
        """A number, word, bool, duration or list; a tensor here is an error."""
        value = self.eval(expr, scope, "arg")
        if isinstance(value, Tensor):
            return self.problems.fail(f"{what} must be a value, not a tensor", expr.span, scope)
        return value

    def bind_args(
        self, args: Sequence[ast.Arg], scope: Scope
    ) -> tuple[list[tuple[Any, Span]], list[tuple[str, Any, Span]]] | None:
        """Evaluate call arguments that must all be plain values (None when one failed)."""
        positional: list[tuple[Any, Span]] = []
        keyword: list[tuple[str, Any, Span]] = []
        broken = False
        for arg in args:
            value = self.scalar(arg.value, scope, "an argument")
            if value is POISON:
                broken = True
            elif arg.name is None:
                positional.append((value, arg.value.span))
            else:
                keyword.append((arg.name.id, value, arg.span))
        return None if broken else (positional, keyword)

    def eval(self, expr: ast.Expr, scope: Scope, where: str) -> Value:
        """Evaluate an expression; `where` is "tensor" (a tensor is expected: unknown names
        are errors, layer names apply to the current value) or "arg" (an argument: unknown
        names are words such as `same` or `val_loss`)."""
        if isinstance(expr, ast.Number | ast.String | ast.Bool):
            return expr.value
        if isinstance(expr, ast.Name):
            return self.name(expr, scope, where)
        if isinstance(expr, ast.Call):
            return self.call(expr.func, expr.args, expr.span, scope, None)
        if isinstance(expr, ast.Chain):
            value = self.eval(expr.steps[0], scope, "tensor")
            for step in expr.steps[1:]:
                value = self.step(step, value, scope)
            return value
        if isinstance(expr, ast.Arith):
            return self.arith(expr, scope, where)
        if isinstance(expr, ast.Neg):
            return self.negate(expr, scope, where)
        if isinstance(expr, ast.WithUnit):
            return self.with_unit(expr, scope)
        if isinstance(expr, ast.Paren):
            if len(expr.args) != 1 or expr.args[0].name is not None:
                return self.problems.fail(
                    "parentheses here hold exactly one expression", expr.span, scope
                )
            return self.eval(expr.args[0].value, scope, where)
        items = [self.eval(item, scope, "arg") for item in expr.items]
        for item, value in zip(expr.items, items, strict=True):
            if isinstance(value, Tensor):
                return self.problems.fail(
                    "a list holds numbers, words or bools, not tensors", item.span, scope
                )
        return POISON if any(v is POISON for v in items) else items

    def name(self, expr: ast.Name, scope: Scope, where: str) -> Value:
        ident = expr.id
        if ident in scope.values:
            return scope.values[ident]
        if ident in scope.consts:
            return scope.consts[ident]
        if ident in self.defs.params:
            if ident in self.defs.overrides:
                self.uses.overridden[expr.span] = ident
            return self.defs.params[ident]
        if ident in self.defs.param_decls and not scope.tensors:
            return self.problems.fail(
                f"param '{ident}' is used before it is declared", expr.span, scope
            )
        if where == "tensor" and scope.tensors:
            if ident in self.defs.blocks or ident in LAYERS:
                return self.call(expr, (), expr.span, scope, None)
            known = [*scope.values, *LAYERS.names(), *self.defs.blocks]
            return self.problems.fail(
                f"unknown name '{ident}': not a value, param, layer or block",
                expr.span,
                scope,
                help=suggest(ident, scope.values) or suggest(ident, known),
            )
        self.uses.words[expr.span] = ident
        return ident

    def step(self, step: ast.Expr, value: Value, scope: Scope) -> Value:
        """Apply one `-> step` of a chain to `value`."""
        if isinstance(step, ast.Call):
            return self.call(step.func, step.args, step.span, scope, value)
        if isinstance(step, ast.Name):
            step = self.named(step, self.callable)
            if step.id in self.defs.blocks or (step.id in LAYERS and step.id not in scope.values):
                return self.call(step, (), step.span, scope, value)
            if step.id in scope.values or step.id in scope.consts or step.id in self.defs.params:
                return self.problems.fail(
                    f"'{step.id}' is a value, not a layer",
                    step.span,
                    scope,
                    help="'->' applies a layer or block; merge values with + or *",
                )
            return self.problems.fail(
                f"unknown layer '{step.id}'",
                step.span,
                scope,
                help=did_you_mean(step.id, [*LAYERS.names(), *self.defs.blocks]),
            )
        return self.problems.fail(
            "after '->' comes a layer or block, like relu or dense(64)", step.span, scope
        )

    def arith(self, expr: ast.Arith, scope: Scope, where: str) -> Value:
        values = [self.eval(o, scope, where) for o in expr.operands]
        if any(v is POISON for v in values):
            return POISON
        tensors = [isinstance(v, Tensor) for v in values]
        if all(tensors):
            symbols = {op.symbol for op in expr.ops}
            if symbols in ({"+"}, {"*"}):
                layer = "add" if symbols == {"+"} else "mul"
                assert self.calls is not None  # tensors exist only where layers can be called
                operands = [v for v in values if isinstance(v, Tensor)]
                return self.calls.apply_layer(layer, expr.span, operands, [], [], scope)
            bad = next(op for op in expr.ops if op.symbol in "-/")
            return self.problems.fail(
                f"tensors cannot be combined with '{bad.symbol}'",
                bad.span,
                scope,
                help="tensors merge with + (add) and * (mul); write other arithmetic with layers",
            )
        if any(tensors):
            for operand, value in zip(expr.operands, values, strict=True):
                if isinstance(operand, ast.Name) and self.uses.words.get(operand.span) == value:
                    return self.problems.fail(
                        f"unknown value '{value}'",
                        operand.span,
                        scope,
                        help=did_you_mean(value, scope.values),
                    )
            i = tensors.index(True)
            op = expr.ops[i - 1] if i > 0 else expr.ops[0]
            other = values[1] if i == 0 else values[0]
            return self.problems.fail(
                f"cannot combine a tensor with {describe(other)} using '{op.symbol}'",
                op.span,
                scope,
                help="only tensors merge with + and *",
            )
        result = values[0]
        for op, operand, value in zip(expr.ops, expr.operands[1:], values[1:], strict=True):
            result = self.binary(op, result, value, operand.span, scope)
            if result is POISON:
                return POISON
        return result

    def binary(self, op: ast.Operator, left: Any, right: Any, span: Span, scope: Scope) -> Value:
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        if not numbers:
            bad = right if isinstance(left, int | float) and not isinstance(left, bool) else left
            names = [*self.defs.params, *scope.consts]
            return self.problems.fail(
                f"'{op.symbol}' works on numbers, not {describe(bad)}",
                op.span,
                scope,
                help=suggest(bad, names) if isinstance(bad, str) else None,
            )
        if op.symbol == "/" and right == 0:
            return self.problems.fail("division by zero", span, scope)
        result: int | float = {
            "+": lambda: left + right,
            "-": lambda: left - right,
            "*": lambda: left * right,
            "/": lambda: left / right,
        }[op.symbol]()
        if isinstance(result, int) and abs(result) > INT64_MAX:
            return self.problems.fail("this integer does not fit in 64 bits", op.span, scope)
        if isinstance(result, float) and not math.isfinite(result):
            return self.problems.fail("this number is too large", op.span, scope)
        return result

    def negate(self, expr: ast.Neg, scope: Scope, where: str) -> Value:
        value = self.eval(expr.operand, scope, where)
        if value is POISON:
            return POISON
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.problems.fail(
                f"'-' works on numbers, not {describe(value)}", expr.span, scope
            )
        return -value

    def with_unit(self, expr: ast.WithUnit, scope: Scope) -> Value:
        unit = expr.unit.id
        if unit not in UNITS:
            if isinstance(expr.value, ast.Call | ast.Name | ast.Chain) and (
                unit in LAYERS or unit in self.defs.blocks
            ):
                return self.problems.fail(
                    f"missing '->' before '{unit}'",
                    expr.unit.span,
                    scope,
                    help=f"write ... -> {unit} to apply it to the previous result",
                )
            return self.problems.fail(
                f"unknown unit '{unit}'",
                expr.unit.span,
                scope,
                help=did_you_mean(unit, UNITS)
                or "durations are written like 2 epochs or 500 steps",
            )
        value = self.scalar(expr.value, scope, "a duration")
        if value is POISON:
            return POISON
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return self.problems.fail(
                f"a duration needs a number of zero or more, got {describe(value)}",
                expr.value.span,
                scope,
            )
        return Duration(value=value, unit=UNITS[unit])

    # -- binding errors ------------------------------------------------------------------

    def absorb(self, exc: DiagnosticError, scope: Scope | None = None) -> Poison:
        """Report the diagnostics of a registry lookup or argument binding."""
        for diag in exc.diagnostics:
            for use, param in self.uses.overridden.items():
                if diag.span is not None and _within(use, diag.span):
                    value, span = self.defs.overrides[param]
                    note = Note(message=f"{param} = {value!r} comes from here", span=span)
                    diag = diag.model_copy(update={"notes": (*diag.notes, note)})
                    break
            word = self.uses.words.get(diag.span) if diag.span else None
            if word is not None and diag.help is None:
                names = [
                    *self.defs.params,
                    *(scope.consts if scope else ()),
                    *(scope.values if scope else ()),
                ]
                hint = suggest(word, names) or (
                    f"'{word}' is read as a word: no param or value has that name"
                )
                diag = diag.model_copy(update={"help": hint})
            self.problems.report(diag, scope.frames if scope else ())
        return POISON

    def callable(self, name: str) -> bool:
        return name in LAYERS or name in self.defs.blocks

    def named(self, name: ast.Name, known: Callable[[str], bool]) -> ast.Name:
        """`name`, or the layer, block or registry entry a param names: with `param act =
        relu`, `-> act` applies relu and `optimizer opt(...)` with `param opt = adam` uses
        adam, so a search can choose activations and optimizers like any other value."""
        value = self.defs.params.get(name.id)
        if known(name.id) or not isinstance(value, str) or not known(value):
            return name
        if name.id in self.defs.overrides:
            self.uses.overridden[name.span] = name.id
        return ast.Name(id=value, span=name.span)

    def get(self, registry: Registry[T], name: ast.Name, scope: Scope | None = None) -> T | Poison:
        """The registry entry `name`, or POISON (reported) when there is none."""
        try:
            return registry.get(name.id, name.span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)
