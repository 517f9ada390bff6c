"""Syntax IR -> resolved `dnnspec.ir.Spec`: params, blocks, repeats, arguments, lock file.

Resolution evaluates the spec like a tiny interpreter. Params (with `--set` overrides) are
evaluated in order; the model body is executed statement by statement, expanding block
calls and `repeat` loops into a flat list of layer nodes whose arguments are bound and
defaulted by each layer's `Signature`; the train and search sections are bound against
their registries. Independent mistakes are collected and raised together: a failed
computation yields `POISON`, which later steps pass along without reporting again.
"""

from __future__ import annotations

import difflib
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec import ir
from dnnspec.errors import Diagnostic, DiagnosticError, Note, Span, did_you_mean, error
from dnnspec.layers.base import LAYERS
from dnnspec.registry import Registry
from dnnspec.runtime.datasets import DATASETS
from dnnspec.schema import ArgSpec, Duration, Signature
from dnnspec.syntax import ast
from dnnspec.training.early_stop import EARLY_STOP
from dnnspec.training.losses import LOSSES
from dnnspec.training.metrics import METRICS
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.regularize import REGULARIZERS
from dnnspec.training.schedules import SCHEDULES
from dnnspec.tune.search import FINITE_SPACES, SEARCH_METHODS, SPACES

Scalar = bool | int | float | str | Duration | list[Any]

MAX_NODES = 20_000
"""A model expanding past this many layers is a mistake (a runaway repeat), not a model."""
MAX_ITERATIONS = 20_000
"""Total `repeat` iterations allowed, so empty nested loops cannot spin for minutes."""
MAX_BLOCK_DEPTH = 32
"""Deepest chain of block calls inside block calls."""
INT64_MAX = 2**63 - 1

BLOCK_PARAM_TYPES = ("int", "float", "bool", "str")
DTYPES = ("float32", "float64", "int64", "int32", "bool")
UNITS = {"step": "steps", "steps": "steps", "epoch": "epochs", "epochs": "epochs"}
TRAIN_ITEMS = (
    "data",
    "loss",
    "optimizer",
    "schedule",
    "batch",
    "epochs",
    "regularize",
    "metrics",
    "early_stop",
    "seed",
)
REQUIRED_TRAIN_ITEMS = {
    "data": "data digits(validation = 0.2)",
    "loss": "loss cross_entropy",
    "optimizer": "optimizer adam(lr = 1e-3)",
    "batch": "batch 64",
    "epochs": "epochs 10",
}


@dataclass(frozen=True)
class Tensor:
    """A tensor-valued result: the name of an input or of the node that computes it."""

    name: str


class _Poison:
    """The value of a computation that already failed (and was reported)."""

    def __repr__(self) -> str:
        return "POISON"


POISON: Any = _Poison()
Value = Tensor | Scalar | _Poison


class _Fatal(Exception):
    """Stops resolution at once (a runaway expansion); the problems so far are reported."""


@dataclass(frozen=True)
class _Frame:
    """One level of expansion: a block call site or a repeat iteration."""

    span: Span
    note: str


@dataclass
class _Scope:
    """Names visible while executing one model or block body.

    A repeat body runs in a child scope that shares `values` and `counters` with its parent
    (so names it assigns stay visible and node numbering continues) but adds its loop
    variable and an origin frame.
    """

    prefix: str = ""
    values: dict[str, Tensor | _Poison] = field(default_factory=dict)
    consts: dict[str, Scalar] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    frames: tuple[_Frame, ...] = ()
    current: Value | None = None
    tensors: bool = True
    """False where layers cannot be called: params, train and search sections."""

    def child(self, consts: dict[str, Scalar], frame: _Frame) -> _Scope:
        return _Scope(
            self.prefix,
            self.values,
            consts,
            self.counters,
            (*self.frames, frame),
            self.current,
            self.tensors,
        )


@dataclass(frozen=True)
class _Block:
    """A block definition with its argument schema (defaults already evaluated)."""

    syntax: ast.BlockDef
    signature: Signature


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Duration):
        return "duration"
    return {int: "int", float: "float", str: "str", list: "list"}.get(type(value), "value")


def _describe(value: Any) -> str:
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


def _a(kind: str) -> str:
    """`an int`, `a float`: a kind with its article."""
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _compatible(declared: str, value: Any) -> bool:
    """Whether `value` may stand where a value of kind `declared` was written."""
    kind = _kind(value)
    return kind == declared or (declared == "float" and kind == "int")


def _override_help(name: str, declared: Any, value: Any) -> str | None:
    """How to write `--set name=...` for a param holding `declared`, given `value`."""
    kind = _kind(declared)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return f"write it without a fraction: --set {name}={int(value)}"
    if kind in ("int", "float") and isinstance(value, str):
        example = f"give {_a(kind)}, e.g. --set {name}={declared!r}"
        if any(c in value for c in "+-*/()"):
            return f"--set takes a literal, not an expression: {example}"
        return example
    return None


def _suggest(word: str, names: Iterable[str]) -> str | None:
    """`did you mean 'x'?` when a name is close to `word`, else None (no list of options)."""
    hint = did_you_mean(word, names)
    return hint if hint is not None and hint.startswith("did you mean") else None


def _within(inner: Span, outer: Span) -> bool:
    return (
        inner.file == outer.file
        and (outer.line, outer.col) <= (inner.line, inner.col)
        and (inner.end_line, inner.end_col) <= (outer.end_line, outer.end_col)
    )


def _walk(node: BaseModel) -> Iterator[BaseModel]:
    """Every syntax node under `node` (nesting is bounded by the parser)."""
    yield node
    for name in type(node).model_fields:
        child = getattr(node, name)
        items = child if isinstance(child, tuple) else (child,)
        for item in items:
            if isinstance(item, ast._Node):
                yield from _walk(item)


class _Resolver:
    """Resolves one parsed spec; `run` returns the Spec or raises every problem found."""

    def __init__(
        self,
        spec: ast.SpecFile,
        source: str,
        overrides: Mapping[str, tuple[Scalar, Span]],
        check_space: bool,
    ) -> None:
        self.spec = spec
        self.source = source
        self.overrides = overrides
        self.check_space = check_space
        self.problems: list[Diagnostic] = []
        self.seen: set[tuple[str, Span | None, str | None]] = set()
        self.params: dict[str, Scalar | _Poison] = {}
        """Param values in declaration order; POISON for a param whose value failed."""
        self.param_decls: dict[str, ast.ParamDecl] = {}
        self.blocks: dict[str, _Block] = {}
        self.unusable: set[str] = set()
        """Blocks whose definition is broken (recursive, no inputs): calls yield POISON."""
        self.nodes: list[ir.Node] = []
        self.node_frames: dict[str, tuple[_Frame, ...]] = {}
        self.inputs: dict[str, ir.InputDecl] = {}
        self.words: dict[Span, str] = {}
        """Bare words met in argument position, for did-you-mean help on binding errors."""
        self.overridden: dict[Span, str] = {}
        """Uses of overridden params, so binding errors can point at the override."""
        self.iterations = 0

    # -- reporting -----------------------------------------------------------------------

    def report(self, diag: Diagnostic, frames: Sequence[_Frame] = ()) -> None:
        """Record a problem once, with a note for each block call or repeat it sits in."""
        key = (diag.message, diag.span, diag.help)
        if key in self.seen:
            return
        self.seen.add(key)
        if frames:
            notes = tuple(Note(message=f.note, span=f.span) for f in reversed(frames))
            diag = diag.model_copy(update={"notes": diag.notes + notes})
        self.problems.append(diag)

    def fail(
        self,
        message: str,
        span: Span | None,
        scope: _Scope | None = None,
        help: str | None = None,
        notes: Sequence[Note] = (),
    ) -> Any:
        self.report(
            Diagnostic(message=message, span=span, help=help, notes=tuple(notes)),
            scope.frames if scope else (),
        )
        return POISON

    def absorb(self, exc: DiagnosticError, scope: _Scope | None = None) -> Any:
        """Report the diagnostics of a registry lookup or argument binding."""
        for diag in exc.diagnostics:
            for use, param in self.overridden.items():
                if diag.span is not None and _within(use, diag.span):
                    value, span = self.overrides[param]
                    note = Note(message=f"{param} = {value!r} comes from here", span=span)
                    diag = diag.model_copy(update={"notes": (*diag.notes, note)})
                    break
            word = self.words.get(diag.span) if diag.span else None
            if word is not None and diag.help is None:
                names = [
                    *self.params,
                    *(scope.consts if scope else ()),
                    *(scope.values if scope else ()),
                ]
                hint = _suggest(word, names) or (
                    f"'{word}' is read as a word: no param or value has that name"
                )
                diag = diag.model_copy(update={"help": hint})
            self.report(diag, scope.frames if scope else ())
        return POISON

    def get(self, registry: Registry[Any], name: ast.Name, scope: _Scope | None = None) -> Any:
        try:
            return registry.get(name.id, name.span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)

    # -- whole spec ----------------------------------------------------------------------

    def run(self) -> ir.Spec:
        items = self.spec.items
        models = [i for i in items if isinstance(i, ast.ModelDef)]
        trains = [i for i in items if isinstance(i, ast.TrainDef)]
        searches = [i for i in items if isinstance(i, ast.SearchDef)]
        for kind, found in (("model", models), ("train", trains), ("search", searches)):
            for extra in found[1:]:
                self.fail(
                    f"a spec has one {kind} section; this is a second one",
                    extra.span,
                    notes=[Note(message=f"the first {kind} section", span=found[0].span)],
                )
        self.resolve_params([i for i in items if isinstance(i, ast.ParamDecl)])
        self.collect_blocks([i for i in items if isinstance(i, ast.BlockDef)])
        graph = None
        if models:
            try:
                graph = self.resolve_model(models[0])
            except _Fatal:
                raise DiagnosticError(self.problems) from None
        else:
            self.fail(
                "this spec has no model",
                self.spec.span,
                help="add one, e.g. model m { input x: float32[N, 4]; dense(1) }",
            )
        train = self.resolve_train(trains[0]) if trains else None
        search = self.resolve_search(searches[0], train) if searches else None
        if self.problems:
            raise DiagnosticError(self.problems)
        assert graph is not None
        params = {k: v for k, v in self.params.items() if not isinstance(v, _Poison)}
        return ir.Spec(source=self.source, params=params, model=graph, train=train, search=search)

    # -- params --------------------------------------------------------------------------

    def resolve_params(self, decls: list[ast.ParamDecl]) -> None:
        declared = {d.name.id for d in decls}
        for name, (_, span) in self.overrides.items():
            if name in declared:
                continue
            self.fail(
                f"there is no param '{name}' to set",
                span,
                help=did_you_mean(name, [d.name.id for d in decls])
                or "params are declared in the spec: param name = value",
            )
        scope = _Scope(tensors=False)
        for decl in decls:
            self.param_decls.setdefault(decl.name.id, decl)
        for decl in decls:
            name = decl.name.id
            if name in self.params or self.param_decls[name] is not decl:
                self.fail(
                    f"param '{name}' is declared twice",
                    decl.name.span,
                    notes=[
                        Note(message="first declared here", span=self.param_decls[name].name.span)
                    ],
                )
                continue
            declared = self.scalar(decl.value, scope, f"param '{name}'")
            if name in self.overrides:
                value, span = self.overrides[name]
                if declared is not POISON and not _compatible(_kind(declared), value):
                    value = self.fail(
                        f"param '{name}' holds {_a(_kind(declared))}, not {_describe(value)}",
                        span,
                        notes=[Note(message="declared here", span=decl.span)],
                        help=_override_help(name, declared, value),
                    )
                declared = value
            self.params[name] = declared

    # -- blocks --------------------------------------------------------------------------

    def collect_blocks(self, defs: list[ast.BlockDef]) -> None:
        consts = _Scope(tensors=False)
        for block in defs:
            name = block.name.id
            if name in self.blocks:
                first = self.blocks[name].syntax.name.span
                self.fail(
                    f"block '{name}' is defined twice",
                    block.name.span,
                    notes=[Note(message="first defined here", span=first)],
                )
                continue
            if name in LAYERS:
                self.unusable.add(name)
                self.fail(
                    f"block '{name}' has the name of a built-in layer",
                    block.name.span,
                    help="rename the block",
                )
            if not block.body:
                self.unusable.add(name)
                self.fail(
                    f"block '{name}' has an empty body",
                    block.name.span,
                    help="add its layers, e.g. "
                    + (f"return {block.inputs[0].id} -> dense(8)" if block.inputs else "dense(8)"),
                )
            if not block.inputs:
                self.unusable.add(name)
                self.fail(
                    f"block '{name}' declares no tensor inputs",
                    block.name.span,
                    help=f"name them after the parameters: block {name}(...) (x) {{ ... }}",
                )
            args: list[ArgSpec] = []
            for p in block.params:
                args.append(self.block_param(name, p, consts, [a.name for a in args]))
            names = [n.id for n in block.inputs]
            for i, n in enumerate(block.inputs):
                if n.id in names[:i] or n.id in (a.name for a in args):
                    self.fail(f"'{n.id}' is declared twice in block '{name}'", n.span)
            self.blocks[name] = _Block(block, Signature(args=tuple(args)))
        self.find_recursion()

    def block_param(
        self, block: str, p: ast.BlockParam, consts: _Scope, earlier: list[str]
    ) -> ArgSpec:
        if p.name.id in earlier:
            self.fail(f"parameter '{p.name.id}' of block '{block}' is declared twice", p.name.span)
        type_ = p.type.id
        if type_ not in BLOCK_PARAM_TYPES:
            self.fail(
                f"unknown parameter type '{type_}'",
                p.type.span,
                help=did_you_mean(type_, BLOCK_PARAM_TYPES),
            )
            return ArgSpec(name=p.name.id, type="any")
        if p.default is None:
            return ArgSpec(name=p.name.id, type=type_)
        default = self.scalar(p.default, consts, f"the default of '{p.name.id}'")
        if default is POISON or not _compatible(type_, default):
            if default is not POISON:
                self.fail(
                    f"the default of '{p.name.id}' must be {_a(type_)}, got {_describe(default)}",
                    p.default.span,
                )
            # Calls of the block would only repeat the mistake (at each use of the parameter,
            # or as a missing argument), so they bind anything and yield POISON.
            self.unusable.add(block)
            return ArgSpec(name=p.name.id, type="any", default=None)
        elif type_ == "float" and isinstance(default, int):
            default = float(default)
        return ArgSpec(name=p.name.id, type=type_, default=default)

    def find_recursion(self) -> None:
        """Report every block that can reach itself through block calls."""
        calls: dict[str, list[ast.Name]] = {}
        for name, block in self.blocks.items():
            targets = []
            for stmt in block.syntax.body:
                for node in _walk(stmt):
                    if isinstance(node, ast.Call) and node.func.id in self.blocks:
                        targets.append(node.func)
                    elif isinstance(node, ast.Name) and node.id in self.blocks:
                        targets.append(node)
            calls[name] = targets
        for name in self.blocks:
            path = self.cycle_from(name, calls)
            if path is None:
                continue
            self.unusable.add(name)
            if name == min(n.id for n in path):
                through = " -> ".join([name, *(n.id for n in path)])
                self.fail(
                    f"block '{name}' calls itself ({through})",
                    path[0].span,
                    help="blocks are expanded in place, so they cannot be recursive",
                )

    def cycle_from(self, start: str, calls: dict[str, list[ast.Name]]) -> list[ast.Name] | None:
        """The call sites of a path from `start` back to itself, if there is one."""
        stack: list[tuple[str, list[ast.Name]]] = [(start, [])]
        visited: set[str] = set()
        while stack:
            name, path = stack.pop()
            for target in calls[name]:
                if target.id == start:
                    return [*path, target]
                if target.id not in visited:
                    visited.add(target.id)
                    stack.append((target.id, [*path, target]))
        return None

    # -- model ---------------------------------------------------------------------------

    def resolve_model(self, model: ast.ModelDef) -> ir.Graph | None:
        scope = _Scope()
        before = len(self.problems)
        returned = self.body(model.body, scope, "model")
        output = returned if returned is not None else scope.current
        if len(self.problems) > before:
            return None
        if output is None or (not self.nodes and isinstance(output, Tensor)):
            self.fail(
                f"model '{model.name.id}' has no layers",
                model.name.span,
                help="add layers after the inputs, e.g. dense(10)",
            )
            return None
        if not isinstance(output, Tensor) or self.problems:
            return None
        self.check_unused(output.name)
        return ir.Graph(
            name=model.name.id,
            inputs=tuple(self.inputs.values()),
            nodes=tuple(self.nodes),
            output=output.name,
            span=model.span,
        )

    def check_unused(self, output: str) -> None:
        used = {output, *(i for n in self.nodes for i in n.inputs)}
        for node in self.nodes:
            if node.name not in used:
                self.fail(
                    f"the result of this {node.layer} is never used",
                    node.span,
                    help="use it in a later statement, or remove it",
                    notes=[
                        Note(message=f.note, span=f.span)
                        for f in reversed(self.node_frames[node.name])
                    ],
                )

    def body(self, stmts: Sequence[ast.Stmt], scope: _Scope, kind: str) -> Value | None:
        """Execute statements; returns the value of a `return`, or None when there is none."""
        returned: Value | None = None
        for stmt in stmts:
            if returned is not None:
                self.fail(
                    "this statement comes after 'return' and would never run", stmt.span, scope
                )
                break
            if isinstance(stmt, ast.InputStmt):
                self.input(stmt, scope, kind)
            elif isinstance(stmt, ast.Repeat):
                self.repeat(stmt, scope)
            elif isinstance(stmt, ast.Return) and kind == "repeat":
                self.fail(
                    "'return' cannot be inside a repeat",
                    stmt.span,
                    scope,
                    help="return after the repeat: its result is the current value",
                )
            else:
                value = self.tensor(self.eval(stmt.value, scope, "tensor"), stmt.value.span, scope)
                if isinstance(stmt, ast.Assign):
                    self.assign(stmt.target, value, scope)
                scope.current = value
                if isinstance(stmt, ast.Return):
                    returned = value
        return returned

    def assign(self, target: ast.Name, value: Tensor | _Poison, scope: _Scope) -> None:
        name = target.id
        taken = self.name_clash(name, scope)
        if taken:
            self.fail(
                f"'{name}' is already {taken}; give this value another name", target.span, scope
            )
        scope.values[name] = value

    def name_clash(self, name: str, scope: _Scope) -> str | None:
        """What a new value name would shadow, or None when it is free."""
        if name in scope.consts or name in self.params:
            return "a param" if name in self.params else "a block parameter or loop variable"
        if name in LAYERS:
            return "a layer"
        if name in self.blocks:
            return "a block"
        return None

    def input(self, stmt: ast.InputStmt, scope: _Scope, kind: str) -> None:
        if kind != "model":
            self.fail(
                "inputs are declared in the model body, not in a block or repeat",
                stmt.span,
                scope,
                help="a block names its tensor inputs in its header: block b(...) (x)",
            )
            return
        name = stmt.name.id
        if name in self.inputs or any(n.name == name for n in self.nodes):
            self.fail(f"input '{name}' is declared twice", stmt.name.span)
            return
        taken = self.name_clash(name, scope)
        if taken:
            self.fail(f"'{name}' is already {taken}; give this input another name", stmt.name.span)
        dtype = stmt.dtype.id
        if dtype not in DTYPES:
            self.fail(f"unknown dtype '{dtype}'", stmt.dtype.span, help=did_you_mean(dtype, DTYPES))
        dims: list[int | str] = []
        for dim in stmt.dims:
            if isinstance(dim, ast.Name) and dim.id not in self.params:
                dims.append(dim.id)
                continue
            value = self.scalar(dim, scope, "a dimension")
            if value is POISON:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.fail(
                    f"a dimension must be a positive integer or a name like N, "
                    f"got {_describe(value)}",
                    dim.span,
                )
            else:
                dims.append(value)
        if dtype in DTYPES and len(dims) == len(stmt.dims):
            self.inputs[name] = ir.InputDecl(
                name=name, dtype=dtype, dims=tuple(dims), span=stmt.span
            )
            value: Tensor | _Poison = Tensor(name)
        else:
            value = POISON
        scope.values[name] = value
        scope.current = value

    def repeat(self, stmt: ast.Repeat, scope: _Scope) -> None:
        count = self.scalar(stmt.count, scope, "the repeat count")
        if count is POISON:
            return
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.fail(
                f"repeat needs an integer count, zero or more, got {_describe(count)}",
                stmt.count.span,
                scope,
            )
            return
        var = stmt.var.id if stmt.var else None
        if var is not None and var in scope.values:
            self.fail(
                f"'{var}' is already a value; name the loop variable differently",
                stmt.var.span if stmt.var else stmt.head,
                scope,
            )
            return
        for i in range(count):
            self.iterations += 1
            if self.iterations > MAX_ITERATIONS:
                self.fail(
                    f"repeat loops run more than {MAX_ITERATIONS} times in all",
                    stmt.head,
                    scope,
                    help=f"this repeat asks for {count}; a model is expanded layer by layer, "
                    f"so keep the total number of iterations under {MAX_ITERATIONS}",
                )
                raise _Fatal
            consts = dict(scope.consts)
            where = f"in iteration {i + 1} of {count} of this repeat"
            if var is not None:
                consts[var] = i
                where += f" ({var} = {i})"
            child = scope.child(consts, _Frame(stmt.head, where))
            self.body(stmt.body, child, "repeat")
            scope.current = child.current

    # -- expressions ---------------------------------------------------------------------

    def tensor(self, value: Value, span: Span, scope: _Scope) -> Tensor | _Poison:
        """`value` if it is a tensor; otherwise report that a tensor was needed here."""
        if isinstance(value, Tensor | _Poison):
            return value
        return self.fail(f"expected a tensor here, got {_describe(value)}", span, scope)

    def scalar(self, expr: ast.Expr, scope: _Scope, what: str) -> Value:
        """A number, word, bool, duration or list; a tensor here is an error."""
        value = self.eval(expr, scope, "arg")
        if isinstance(value, Tensor):
            return self.fail(f"{what} must be a value, not a tensor", expr.span, scope)
        return value

    def eval(self, expr: ast.Expr, scope: _Scope, where: str) -> Value:
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
                return self.fail("parentheses here hold exactly one expression", expr.span, scope)
            return self.eval(expr.args[0].value, scope, where)
        items = [self.eval(item, scope, "arg") for item in expr.items]
        for item, value in zip(expr.items, items, strict=True):
            if isinstance(value, Tensor):
                return self.fail(
                    "a list holds numbers, words or bools, not tensors", item.span, scope
                )
        return POISON if any(v is POISON for v in items) else items

    def name(self, expr: ast.Name, scope: _Scope, where: str) -> Value:
        ident = expr.id
        if ident in scope.values:
            return scope.values[ident]
        if ident in scope.consts:
            return scope.consts[ident]
        if ident in self.params:
            if ident in self.overrides:
                self.overridden[expr.span] = ident
            return self.params[ident]
        if ident in self.param_decls and not scope.tensors:
            return self.fail(f"param '{ident}' is used before it is declared", expr.span, scope)
        if where == "tensor" and scope.tensors:
            if ident in self.blocks or ident in LAYERS:
                return self.call(expr, (), expr.span, scope, None)
            known = [*scope.values, *LAYERS.names(), *self.blocks]
            return self.fail(
                f"unknown name '{ident}': not a value, param, layer or block",
                expr.span,
                scope,
                help=_suggest(ident, scope.values) or _suggest(ident, known),
            )
        self.words[expr.span] = ident
        return ident

    def step(self, step: ast.Expr, value: Value, scope: _Scope) -> Value:
        """Apply one `-> step` of a chain to `value`."""
        if isinstance(step, ast.Call):
            return self.call(step.func, step.args, step.span, scope, value)
        if isinstance(step, ast.Name):
            if step.id in self.blocks or (step.id in LAYERS and step.id not in scope.values):
                return self.call(step, (), step.span, scope, value)
            if step.id in scope.values or step.id in scope.consts or step.id in self.params:
                return self.fail(
                    f"'{step.id}' is a value, not a layer",
                    step.span,
                    scope,
                    help="'->' applies a layer or block; merge values with + or *",
                )
            return self.fail(
                f"unknown layer '{step.id}'",
                step.span,
                scope,
                help=did_you_mean(step.id, [*LAYERS.names(), *self.blocks]),
            )
        return self.fail(
            "after '->' comes a layer or block, like relu or dense(64)", step.span, scope
        )

    def arith(self, expr: ast.Arith, scope: _Scope, where: str) -> Value:
        values = [self.eval(o, scope, where) for o in expr.operands]
        if any(v is POISON for v in values):
            return POISON
        tensors = [isinstance(v, Tensor) for v in values]
        if all(tensors):
            symbols = {op.symbol for op in expr.ops}
            if symbols in ({"+"}, {"*"}):
                layer = "add" if symbols == {"+"} else "mul"
                return self.apply_layer(layer, expr.span, values, [], [], scope)
            bad = next(op for op in expr.ops if op.symbol in "-/")
            return self.fail(
                f"tensors cannot be combined with '{bad.symbol}'",
                bad.span,
                scope,
                help="tensors merge with + (add) and * (mul); write other arithmetic with layers",
            )
        if any(tensors):
            for operand, value in zip(expr.operands, values, strict=True):
                if isinstance(operand, ast.Name) and self.words.get(operand.span) == value:
                    return self.fail(
                        f"unknown value '{value}'",
                        operand.span,
                        scope,
                        help=did_you_mean(value, scope.values),
                    )
            i = tensors.index(True)
            op = expr.ops[i - 1] if i > 0 else expr.ops[0]
            other = values[1] if i == 0 else values[0]
            return self.fail(
                f"cannot combine a tensor with {_describe(other)} using '{op.symbol}'",
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

    def binary(self, op: ast.Operator, left: Any, right: Any, span: Span, scope: _Scope) -> Value:
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        if not numbers:
            bad = right if isinstance(left, int | float) and not isinstance(left, bool) else left
            names = [*self.params, *scope.consts]
            return self.fail(
                f"'{op.symbol}' works on numbers, not {_describe(bad)}",
                op.span,
                scope,
                help=_suggest(bad, names) if isinstance(bad, str) else None,
            )
        if op.symbol == "/" and right == 0:
            return self.fail("division by zero", span, scope)
        result = {
            "+": lambda: left + right,
            "-": lambda: left - right,
            "*": lambda: left * right,
            "/": lambda: left / right,
        }[op.symbol]()
        if isinstance(result, int) and abs(result) > INT64_MAX:
            return self.fail("this integer does not fit in 64 bits", op.span, scope)
        if isinstance(result, float) and not math.isfinite(result):
            return self.fail("this number is too large", op.span, scope)
        return result

    def negate(self, expr: ast.Neg, scope: _Scope, where: str) -> Value:
        value = self.eval(expr.operand, scope, where)
        if value is POISON:
            return POISON
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.fail(f"'-' works on numbers, not {_describe(value)}", expr.span, scope)
        return -value

    def with_unit(self, expr: ast.WithUnit, scope: _Scope) -> Value:
        unit = expr.unit.id
        if unit not in UNITS:
            if isinstance(expr.value, ast.Call | ast.Name | ast.Chain) and (
                unit in LAYERS or unit in self.blocks
            ):
                return self.fail(
                    f"missing '->' before '{unit}'",
                    expr.unit.span,
                    scope,
                    help=f"write ... -> {unit} to apply it to the previous result",
                )
            return self.fail(
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
            return self.fail(
                f"a duration needs a number of zero or more, got {_describe(value)}",
                expr.value.span,
                scope,
            )
        return Duration(value=value, unit=UNITS[unit])

    # -- calls ---------------------------------------------------------------------------

    def call(
        self,
        func: ast.Name,
        args: Sequence[ast.Arg],
        span: Span,
        scope: _Scope,
        chain_input: Value | None,
    ) -> Value:
        """A layer or block call; `chain_input` is the value on the left of `->`, if any."""
        name = func.id
        if not scope.tensors:
            return self.fail(
                f"'{name}(...)' cannot be used here: layers and blocks belong in the model",
                span,
                scope,
            )
        known = name in self.blocks or name in LAYERS
        if not known:
            self.fail(
                f"unknown layer '{name}'",
                func.span,
                scope,
                help=did_you_mean(name, [*LAYERS.names(), *self.blocks]),
            )
        tensors: list[Value] = []
        positional: list[tuple[Any, Span]] = []
        keyword: list[tuple[str, Any, Span]] = []
        broken = not known
        for arg in args:
            value = self.eval(arg.value, scope, "arg")
            if value is POISON:
                broken = True
            elif arg.name is not None and isinstance(value, Tensor):
                self.fail(
                    f"argument '{arg.name.id}' of {name} must be a value, not a tensor",
                    arg.span,
                    scope,
                )
                broken = True
            elif arg.name is not None:
                keyword.append((arg.name.id, value, arg.span))
            elif isinstance(value, Tensor):
                tensors.append(value)
            else:
                positional.append((value, arg.value.span))
        if broken:
            return POISON
        inputs = self.call_inputs(name, chain_input, tensors, span, scope)
        if inputs is None:
            return POISON
        if name in self.blocks:
            return self.expand(name, inputs, positional, keyword, span, scope)
        return self.apply_layer(name, span, inputs, positional, keyword, scope)

    def call_inputs(
        self, name: str, chain_input: Value | None, tensors: list[Value], span: Span, scope: _Scope
    ) -> list[Value] | None:
        """The tensor inputs of a call: the chain input, then tensor arguments; when there
        are neither, the current value. Checks the count against the layer's arity."""
        if chain_input is not None and not isinstance(chain_input, Tensor | _Poison):
            self.fail(
                f"'->' applies {name} to a tensor, but its left side is {_describe(chain_input)}",
                span,
                scope,
            )
            return None
        inputs = ([chain_input] if chain_input is not None else []) + tensors
        if not inputs:
            if scope.current is None:
                self.fail(
                    f"there is no value yet for {name} to apply to",
                    span,
                    scope,
                    help="declare the model's input first: input x: float32[N, 64]",
                )
                return None
            inputs = [scope.current]
        if name in self.blocks:
            arity: int | None = len(self.blocks[name].syntax.inputs)
        else:
            arity = LAYERS.get(name).arity
        if arity is None and len(inputs) < 2:
            self.fail(
                f"{name} merges two or more tensors, got {len(inputs)}",
                span,
                scope,
                help=f"write {name}(a, b) or a + b with named values",
            )
            return None
        if arity is not None and len(inputs) != arity:
            plural = "s" if arity != 1 else ""
            self.fail(
                f"{name} takes {arity} tensor input{plural}, got {len(inputs)}",
                span,
                scope,
                help="tensor arguments come from '->' and from values named in the call",
            )
            return None
        return inputs

    def apply_layer(
        self,
        name: str,
        span: Span,
        inputs: Sequence[Value],
        positional: list[tuple[Any, Span]],
        keyword: list[tuple[str, Any, Span]],
        scope: _Scope,
    ) -> Value:
        canonical = LAYERS.canonical(name) or name
        try:
            args = LAYERS.get(name, span).signature.bind(canonical, positional, keyword, span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)
        if any(v is POISON for v in inputs):
            return POISON
        node_name = self.fresh(canonical, scope)
        self.nodes.append(
            ir.Node(
                name=node_name,
                layer=canonical,
                inputs=tuple(v.name for v in inputs if isinstance(v, Tensor)),
                args=args,
                span=span,
                origin=tuple(f.span for f in scope.frames),
            )
        )
        self.node_frames[node_name] = scope.frames
        if len(self.nodes) > MAX_NODES:
            self.fail(f"the model expands to more than {MAX_NODES} layers", span, scope)
            raise _Fatal
        return Tensor(node_name)

    def fresh(self, base: str, scope: _Scope) -> str:
        """The next unused `base_N` in this scope, prefixed by the block instance path."""
        while True:
            scope.counters[base] = scope.counters.get(base, 0) + 1
            name = f"{scope.prefix}{base}_{scope.counters[base]}"
            if name not in self.inputs:
                return name

    def expand(
        self,
        name: str,
        inputs: list[Value],
        positional: list[tuple[Any, Span]],
        keyword: list[tuple[str, Any, Span]],
        span: Span,
        scope: _Scope,
    ) -> Value:
        """Execute a block body for one call, in a fresh scope named after the instance."""
        block = self.blocks[name]
        try:
            consts = block.signature.bind(name, positional, keyword, span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)
        if name in self.unusable or any(v is POISON for v in inputs):
            return POISON
        if len(scope.frames) >= MAX_BLOCK_DEPTH:
            return self.fail(f"blocks are nested more than {MAX_BLOCK_DEPTH} deep", span, scope)
        instance = self.fresh(name, scope)
        inner = _Scope(
            prefix=instance + ".",
            values=dict(zip((n.id for n in block.syntax.inputs), inputs, strict=True)),
            consts=consts,
            frames=(*scope.frames, _Frame(span, f"in this call of block '{name}'")),
            current=inputs[-1],
        )
        returned = self.body(block.syntax.body, inner, "block")
        result = returned if returned is not None else inner.current
        return result if result is not None else POISON

    # -- train ---------------------------------------------------------------------------

    def resolve_train(self, train: ast.TrainDef) -> ir.TrainSpec | None:
        scope = _Scope(tensors=False)
        items: dict[str, ast.TrainItem] = {}
        misspelt: set[str] = set()
        for item in train.items:
            key = item.key.id
            if key not in TRAIN_ITEMS:
                close = difflib.get_close_matches(key, TRAIN_ITEMS, n=1, cutoff=0.6)
                misspelt.update(close)
                self.fail(
                    f"unknown train setting '{key}'",
                    item.key.span,
                    help=did_you_mean(key, TRAIN_ITEMS),
                )
            elif key in items:
                self.fail(
                    f"'{key}' is given twice",
                    item.key.span,
                    notes=[Note(message="first given here", span=items[key].key.span)],
                )
            else:
                items[key] = item
        for key, example in REQUIRED_TRAIN_ITEMS.items():
            if key not in items and key not in misspelt:
                self.fail(
                    f"the train section needs '{key}'",
                    train.span,
                    help=f"add a line like: {example}",
                )
        found: dict[str, Any] = {}
        calls = {"data": DATASETS, "loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
        for key, item in items.items():
            if key in calls:
                found[key] = self.train_call(self.one_value(item), calls[key], scope)
            elif key in ("batch", "epochs", "seed"):
                found[key] = self.train_int(item, scope, minimum=0 if key == "seed" else 1)
            elif key in ("regularize", "metrics"):
                registry = REGULARIZERS if key == "regularize" else METRICS
                found[key] = self.train_list(item, registry, scope)
            else:
                found[key] = self.early_stop(item, scope)
        if "schedule" not in items:
            found["schedule"] = ir.Call(
                name="constant",
                args=SCHEDULES.get("constant").signature.bind("constant", [], [], train.span),
                span=train.span,
            )
        if "loss" in items and "metrics" in items:
            self.check_targets(found["loss"], found["metrics"])
        if isinstance(found.get("early_stop"), ir.Call):
            self.check_monitor(found["early_stop"], items["early_stop"], found.get("metrics", ()))
        if (
            any(v is POISON for v in found.values())
            or not REQUIRED_TRAIN_ITEMS.keys() <= found.keys()
        ):
            return None
        return ir.TrainSpec(span=train.span, **found)

    def one_value(self, item: ast.TrainItem) -> ast.Expr | None:
        if len(item.values) == 1:
            return item.values[0]
        span = item.values[1].span if item.values else item.key.span
        self.fail(f"'{item.key.id}' takes one value, got {len(item.values)}", span)
        return None

    def train_call(
        self, expr: ast.Expr | None, registry: Registry[Any], scope: _Scope
    ) -> ir.Call | _Poison:
        """`adam(lr = 1e-3)` or `cross_entropy`: a registry entry with its bound arguments."""
        if expr is None:
            return POISON
        if isinstance(expr, ast.Name):
            func, args = expr, ()
        elif isinstance(expr, ast.Call):
            func, args = expr.func, expr.args
        else:
            return self.fail(
                f"expected the name of a {registry.kind}, like {next(iter(registry), 'name')}",
                expr.span,
                scope,
            )
        entry = self.get(registry, func, scope)
        bound_args = self.bind_args(args, scope)
        if entry is POISON or bound_args is None:
            return POISON
        canonical = registry.canonical(func.id) or func.id
        try:
            bound = entry.signature.bind(canonical, *bound_args, expr.span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)
        return ir.Call(name=canonical, args=bound, span=expr.span)

    def bind_args(
        self, args: Sequence[ast.Arg], scope: _Scope
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

    def train_int(self, item: ast.TrainItem, scope: _Scope, minimum: int) -> int | _Poison:
        expr = self.one_value(item)
        if expr is None:
            return POISON
        value = self.scalar(expr, scope, f"'{item.key.id}'")
        if value is POISON:
            return POISON
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            least = "an integer, zero or more" if minimum == 0 else "a positive integer"
            return self.fail(
                f"'{item.key.id}' must be {least}, got {_describe(value)}", expr.span, scope
            )
        return value

    def train_list(
        self, item: ast.TrainItem, registry: Registry[Any], scope: _Scope
    ) -> tuple[ir.Call, ...] | _Poison:
        if not item.values:
            return self.fail(
                f"'{item.key.id}' needs at least one {registry.kind}", item.key.span, scope
            )
        calls = [self.train_call(v, registry, scope) for v in item.values]
        names: dict[str, Span] = {}
        for call in calls:
            if isinstance(call, ir.Call):
                if call.name in names:
                    self.fail(
                        f"{registry.kind} '{call.name}' is listed twice",
                        call.span,
                        scope,
                        notes=[Note(message="first listed here", span=names[call.name])],
                    )
                names.setdefault(call.name, call.span)
        if any(c is POISON for c in calls):
            return POISON
        return tuple(calls)

    def early_stop(self, item: ast.TrainItem, scope: _Scope) -> ir.Call | _Poison:
        args: tuple[ast.Arg, ...] = ()
        if len(item.values) > 1 or (item.values and not isinstance(item.values[0], ast.Paren)):
            return self.fail(
                "early_stop takes its arguments in parentheses",
                item.values[0].span,
                scope,
                help="write early_stop(monitor = val_loss, patience = 5)",
            )
        if item.values:
            value = item.values[0]
            assert isinstance(value, ast.Paren)
            args = value.args
        bound_args = self.bind_args(args, scope)
        if bound_args is None:
            return POISON
        try:
            bound = EARLY_STOP.bind("early_stop", *bound_args, item.span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)
        return ir.Call(name="early_stop", args=bound, span=item.span)

    def check_targets(self, loss: Any, metrics: Any) -> None:
        """Each metric must read the same kind of target (class labels or values) as the loss."""
        if not isinstance(loss, ir.Call) or not isinstance(metrics, tuple):
            return
        target = LOSSES.get(loss.name).target
        for metric in metrics:
            if METRICS.get(metric.name).target != target:
                fitting = sorted(m for m in METRICS if METRICS.get(m).target == target)
                kinds = {"class": "class labels", "value": "values"}
                self.fail(
                    f"metric '{metric.name}' needs {kinds[METRICS.get(metric.name).target]}"
                    f", but loss '{loss.name}' trains on {kinds[target]}",
                    metric.span,
                    notes=[Note(message="the loss", span=loss.span)],
                    help=f"metrics for {kinds[target]}: {', '.join(fitting) or 'none'}",
                )

    def check_monitor(self, stop: ir.Call, item: ast.TrainItem, metrics: Any) -> None:
        listed = [m.name for m in metrics] if isinstance(metrics, tuple) else []
        known = {"loss", "val_loss", "train_loss"}
        known |= {f"{p}{m}" for m in listed for p in ("", "val_", "train_")}
        monitor = stop.args["monitor"]
        if monitor not in known:
            span = self.arg_span(item, "monitor", 0) or stop.span
            self.fail(
                f"early_stop monitors '{monitor}', which this run does not compute",
                span,
                help=did_you_mean(monitor, known)
                or "monitor val_loss or val_ plus a metric listed in 'metrics'",
            )

    def arg_span(self, item: ast.TrainItem, name: str, position: int) -> Span | None:
        """Where argument `name` (or the positional argument at `position`) is written."""
        if not item.values or not isinstance(item.values[0], ast.Paren):
            return None
        args = item.values[0].args
        for arg in args:
            if arg.name is not None and arg.name.id == name:
                return arg.value.span
        positional = [a for a in args if a.name is None]
        return positional[position].value.span if len(positional) > position else None

    # -- search --------------------------------------------------------------------------

    def resolve_search(
        self, search: ast.SearchDef, train: ir.TrainSpec | None
    ) -> ir.SearchSpec | None:
        scope = _Scope(tensors=False)
        method = self.get(SEARCH_METHODS, search.method)
        objective, direction = "val_loss", "min"
        rest: list[ast.Arg] = []
        given: ast.Arg | None = None
        for arg in search.args:
            if arg.name is None or arg.name.id != "objective":
                rest.append(arg)
            elif given is not None:
                self.fail("the objective is given twice", arg.span)
            else:
                given = arg
                objective, direction = self.objective(arg, train)
        bound_args = self.bind_args(rest, scope)
        call: ir.Call | _Poison = POISON
        if method is not POISON and bound_args is not None:
            name = SEARCH_METHODS.canonical(search.method.id) or search.method.id
            try:
                call = ir.Call(
                    name=name,
                    span=search.head,
                    args=method.signature.bind(name, *bound_args, search.head),
                )
            except DiagnosticError as exc:
                self.absorb(exc)
        dims: list[ir.SearchDim] = []
        for dim in search.dims:
            resolved = self.search_dim(dim, method, [d.param for d in dims])
            if resolved is not None:
                dims.append(resolved)
        if not search.dims:
            self.fail(
                "the search section declares no dimensions",
                search.span,
                help="add lines like: hidden in choice(32, 64, 128)",
            )
        if call is POISON or objective == "" or len(dims) != len(search.dims):
            return None
        assert isinstance(call, ir.Call)
        if self.check_space and not self.problems:
            for dim in dims:
                self.check_candidates(dim)
        return ir.SearchSpec(
            method=call,
            objective=objective,
            direction=direction,
            dims=tuple(dims),
            span=search.span,
        )

    def objective(self, arg: ast.Arg, train: ir.TrainSpec | None) -> tuple[str, str]:
        """`max val_accuracy` -> ("val_accuracy", "max"); ("", "") when it is wrong."""
        expr = arg.value
        if isinstance(expr, ast.WithUnit) and isinstance(expr.value, ast.Name):
            direction, metric = expr.value, expr.unit
        elif isinstance(expr, ast.Name):
            direction, metric = None, expr
        else:
            self.fail("the objective is written like max val_accuracy or min val_loss", expr.span)
            return "", ""
        if direction is not None and direction.id not in ("min", "max"):
            self.fail(
                f"unknown direction '{direction.id}'",
                direction.span,
                help=did_you_mean(direction.id, ("min", "max")),
            )
            return "", ""
        name = metric.id
        base = name.removeprefix("val_").removeprefix("train_")
        listed = [m.name for m in train.metrics] if train else list(METRICS)
        if base != "loss" and (base == name or base not in METRICS):
            options = ["val_loss", *(f"val_{m}" for m in listed)]
            self.fail(
                f"unknown objective '{name}'",
                metric.span,
                help=did_you_mean(name, options) or "expected one of: " + ", ".join(options),
            )
            return "", ""
        if base != "loss" and base not in listed:
            self.fail(
                f"the objective '{name}' is not computed by this run",
                metric.span,
                help=f"add it to the train section: metrics {base}",
            )
            return "", ""
        if direction is None:
            better = base != "loss" and METRICS.get(base).higher_is_better
            return name, "max" if better else "min"
        return name, direction.id

    def search_dim(
        self, dim: ast.SearchDim, method: Any, earlier: list[str]
    ) -> ir.SearchDim | None:
        param = dim.param.id
        if param not in self.param_decls:
            self.fail(
                f"there is no param '{param}' to search",
                dim.param.span,
                help=did_you_mean(param, self.param_decls)
                or f"declare it first: param {param} = ...",
            )
            return None
        if param in earlier:
            self.fail(f"param '{param}' is searched twice", dim.param.span)
            return None
        space = dim.space
        if not isinstance(space, ast.Call) or space.func.id not in SPACES:
            name = space.func if isinstance(space, ast.Call) else space
            word = name.id if isinstance(name, ast.Name) else ""
            self.fail(
                f"unknown search space '{word}'" if word else "expected a search space",
                name.span,
                help=did_you_mean(word, SPACES)
                if word
                else "write one of: " + ", ".join(f"{k}(...)" for k in SPACES),
            )
            return None
        kind = space.func.id
        scope = _Scope(tensors=False)
        values: list[Any] = []
        for arg in space.args:
            if arg.name is not None:
                self.fail(f"{kind} takes its values by position", arg.span)
                return None
            value = self.scalar(arg.value, scope, "a search value")
            if value is POISON:
                return None
            values.append(value)
        if not self.check_space_values(space, values, dim.param, method):
            return None
        return ir.SearchDim(param=param, space=kind, values=tuple(values), span=dim.span)

    def check_space_values(
        self, space: ast.Call, values: list[Any], param_name: ast.Name, method: Any
    ) -> bool:
        """Whether a space's values fit its kind, the searched param and the method."""
        kind, span, param = space.func.id, space.span, param_name.id
        current = self.params.get(param, POISON)
        declared = None if current is POISON else _kind(current)
        if method is not POISON and method.finite_only and kind not in FINITE_SPACES:
            self.fail(
                f"{kind} is a continuous space, which this search cannot enumerate",
                span,
                help="use choice(...) or int_range(lo, hi)",
            )
            return False
        if kind == "choice":
            if not values:
                self.fail("choice needs at least one value", span)
                return False
            for arg, value in zip(space.args, values, strict=True):
                if declared is not None and not _compatible(declared, value):
                    self.fail(
                        f"param '{param}' holds {_a(declared)}, not {_describe(value)}", arg.span
                    )
                    return False
            return True
        if len(values) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            self.fail(f"{kind} takes two numbers: {kind}(lo, hi)", span)
            return False
        lo, hi = values
        if kind == "int_range":
            if not (isinstance(lo, int) and isinstance(hi, int)) or lo > hi:
                self.fail(
                    f"int_range takes two integers with lo <= hi, got {lo!r} and {hi!r}", span
                )
                return False
        elif lo >= hi or (kind == "log_uniform" and lo <= 0):
            need = "0 < lo < hi" if kind == "log_uniform" else "lo < hi"
            self.fail(f"{kind} needs {need}, got {lo!r} and {hi!r}", span)
            return False
        if declared is not None and declared not in ("int", "float"):
            self.fail(f"param '{param}' holds {_a(declared)}, not a number", span)
            return False
        if declared == "int" and kind != "int_range":
            self.fail(
                f"param '{param}' holds an int but {kind} draws floats",
                span,
                help="use int_range(lo, hi) or choice(...)",
            )
            return False
        return True

    def check_candidates(self, dim: ir.SearchDim) -> None:
        """Resolve the spec with each choice (or both ends of a range) of one dimension, so
        that a space that breaks the model is reported before any trial runs."""
        candidates = dim.values if dim.space == "choice" else dim.values[:2]
        for value in candidates:
            overrides = {**self.overrides, dim.param: (value, dim.span)}
            try:
                resolve(self.spec, self.source, overrides, check_space=False)
            except DiagnosticError as exc:
                note = Note(
                    message=f"with {dim.param} = {value!r} from this search space", span=dim.span
                )
                for diag in exc.diagnostics:
                    if all(n.span != dim.span for n in diag.notes):
                        diag = diag.model_copy(update={"notes": (*diag.notes, note)})
                    self.report(diag)


def resolve(
    spec: ast.SpecFile,
    source: str,
    overrides: Mapping[str, tuple[Scalar, Span]] | None = None,
    check_space: bool = True,
) -> ir.Spec:
    """The resolved spec of a parsed file; `overrides` replace param values (value, where the
    override was written); `check_space` also resolves each value of the search space."""
    return _Resolver(spec, source, overrides or {}, check_space).run()


def write_lock(spec: ir.Spec, path: str | Path) -> None:
    """Write `spec.lock.json` atomically: every default visible, spans included."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(spec.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_lock(path: str | Path) -> ir.Spec:
    """The resolved spec stored in a lock file; a missing or invalid file is a diagnostic."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(
            f"cannot read lock file '{path}': {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        return ir.Spec.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise error(
            f"'{path}' is not a valid spec.lock.json: {where}: {first['msg']}",
            help="regenerate it from the spec",
        ) from None
