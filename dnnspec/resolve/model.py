"""The model section: its body, `repeat`, expressions, and layer and block calls.

The model body is executed statement by statement, expanding block calls and `repeat` loops
into a flat list of layer nodes whose arguments are bound and defaulted by each layer's
`Signature`. The other sections evaluate their values with the same expressions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec import ir
from dnnspec.errors import DiagnosticError, Note, Span, did_you_mean
from dnnspec.layers.base import LAYERS
from dnnspec.resolve.core import ResolverCore
from dnnspec.resolve.values import (
    POISON,
    Fatal,
    Frame,
    Poison,
    Scope,
    Tensor,
    Value,
    describe,
    suggest,
)
from dnnspec.schema import INT64_MAX, Duration
from dnnspec.syntax import ast

MAX_NODES = 20_000
"""A model expanding past this many layers is a mistake (a runaway repeat), not a model."""
MAX_ITERATIONS = 20_000
"""Total `repeat` iterations allowed, so empty nested loops cannot spin for minutes."""
MAX_BLOCK_DEPTH = 32
"""Deepest chain of block calls inside block calls."""

DTYPES = ("float32", "float64", "int64", "int32", "bool")
UNITS = {"step": "steps", "steps": "steps", "epoch": "epochs", "epochs": "epochs"}


class ModelResolver(ResolverCore):
    """Executes the model body (and the block bodies it calls); evaluates expressions."""

    def resolve_model(self, model: ast.ModelDef) -> ir.Graph | None:
        scope = Scope()
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

    def body(self, stmts: Sequence[ast.Stmt], scope: Scope, kind: str) -> Value | None:
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

    def assign(self, target: ast.Name, value: Tensor | Poison, scope: Scope) -> None:
        name = target.id
        taken = self.name_clash(name, scope)
        if taken:
            self.fail(
                f"'{name}' is already {taken}; give this value another name", target.span, scope
            )
        scope.values[name] = value

    def name_clash(self, name: str, scope: Scope) -> str | None:
        """What a new value name would shadow, or None when it is free."""
        if name in scope.consts or name in self.params:
            return "a param" if name in self.params else "a block parameter or loop variable"
        if name in LAYERS:
            return "a layer"
        if name in self.blocks:
            return "a block"
        return None

    def input(self, stmt: ast.InputStmt, scope: Scope, kind: str) -> None:
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
        if name in ir.GRAPH_NAMES:
            self.fail(
                f"'{name}' is a name the compiled graphs use for their own "
                f"{'output' if name in ('loss', 'output') else 'input'}",
                stmt.name.span,
                help=f"give this input another name, e.g. '{name}_in'",
            )
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
                    f"got {describe(value)}",
                    dim.span,
                )
            elif dim is stmt.dims[0]:
                self.fail(
                    f"the first dimension of an input is the batch, which varies, got {value}",
                    dim.span,
                    help="name it instead, e.g. N",
                )
            else:
                dims.append(value)
        if dtype in DTYPES and len(dims) == len(stmt.dims):
            self.inputs[name] = ir.InputDecl(
                name=name, dtype=dtype, dims=tuple(dims), span=stmt.span
            )
            value: Tensor | Poison = Tensor(name)
        else:
            value = POISON
        scope.values[name] = value
        scope.current = value

    def repeat(self, stmt: ast.Repeat, scope: Scope) -> None:
        count = self.scalar(stmt.count, scope, "the repeat count")
        if count is POISON:
            return
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.fail(
                f"repeat needs an integer count, zero or more, got {describe(count)}",
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
                raise Fatal
            consts = dict(scope.consts)
            where = f"in iteration {i + 1} of {count} of this repeat"
            if var is not None:
                consts[var] = i
                where += f" ({var} = {i})"
            child = scope.child(consts, Frame(stmt.head, where))
            self.body(stmt.body, child, "repeat")
            scope.current = child.current

    # -- expressions ---------------------------------------------------------------------

    def tensor(self, value: Value, span: Span, scope: Scope) -> Tensor | Poison:
        """`value` if it is a tensor; otherwise report that a tensor was needed here."""
        if isinstance(value, Tensor | Poison):
            return value
        return self.fail(f"expected a tensor here, got {describe(value)}", span, scope)

    def scalar(self, expr: ast.Expr, scope: Scope, what: str) -> Value:
        """A number, word, bool, duration or list; a tensor here is an error."""
        value = self.eval(expr, scope, "arg")
        if isinstance(value, Tensor):
            return self.fail(f"{what} must be a value, not a tensor", expr.span, scope)
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
                return self.fail("parentheses here hold exactly one expression", expr.span, scope)
            return self.eval(expr.args[0].value, scope, where)
        items = [self.eval(item, scope, "arg") for item in expr.items]
        for item, value in zip(expr.items, items, strict=True):
            if isinstance(value, Tensor):
                return self.fail(
                    "a list holds numbers, words or bools, not tensors", item.span, scope
                )
        return POISON if any(v is POISON for v in items) else items

    def name(self, expr: ast.Name, scope: Scope, where: str) -> Value:
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
                help=suggest(ident, scope.values) or suggest(ident, known),
            )
        self.words[expr.span] = ident
        return ident

    def step(self, step: ast.Expr, value: Value, scope: Scope) -> Value:
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

    def arith(self, expr: ast.Arith, scope: Scope, where: str) -> Value:
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
            names = [*self.params, *scope.consts]
            return self.fail(
                f"'{op.symbol}' works on numbers, not {describe(bad)}",
                op.span,
                scope,
                help=suggest(bad, names) if isinstance(bad, str) else None,
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

    def negate(self, expr: ast.Neg, scope: Scope, where: str) -> Value:
        value = self.eval(expr.operand, scope, where)
        if value is POISON:
            return POISON
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.fail(f"'-' works on numbers, not {describe(value)}", expr.span, scope)
        return -value

    def with_unit(self, expr: ast.WithUnit, scope: Scope) -> Value:
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
                f"a duration needs a number of zero or more, got {describe(value)}",
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
        scope: Scope,
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
            elif arg.name is not None and self.tensor_arg(name, arg.name.id):
                if not isinstance(value, Tensor):
                    self.fail(
                        f"argument '{arg.name.id}' of {name} must be a tensor, "
                        f"got {describe(value)}",
                        arg.value.span,
                        scope,
                        help=suggest(value, scope.values) if isinstance(value, str) else None,
                    )
                    broken = True
                else:
                    keyword.append((arg.name.id, value.name, arg.span))
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

    def tensor_arg(self, callee: str, arg: str) -> bool:
        """Whether `arg` of layer `callee` takes a tensor by keyword (`memory = enc`)."""
        if callee in self.blocks or callee not in LAYERS:
            return False
        spec = LAYERS.get(callee).signature.get(arg)
        return spec is not None and spec.type == "tensor"

    def call_inputs(
        self, name: str, chain_input: Value | None, tensors: list[Value], span: Span, scope: Scope
    ) -> list[Value] | None:
        """The tensor inputs of a call: the chain input, then tensor arguments; when there
        are neither, the current value. Checks the count against the layer's arity."""
        if chain_input is not None and not isinstance(chain_input, Tensor | Poison):
            self.fail(
                f"'->' applies {name} to a tensor, but its left side is {describe(chain_input)}",
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
        scope: Scope,
    ) -> Value:
        canonical = LAYERS.canonical(name) or name
        try:
            args = LAYERS.get(name, span).signature.bind(canonical, positional, keyword, span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)
        if any(v is POISON for v in inputs):
            return POISON
        node_name = self.fresh(canonical, scope)
        named = [args[a.name] for a in LAYERS.get(name).signature.args if a.type == "tensor"]
        self.nodes.append(
            ir.Node(
                name=node_name,
                layer=canonical,
                inputs=tuple(v.name for v in inputs if isinstance(v, Tensor))
                + tuple(n for n in named if n),
                args=args,
                span=span,
                origin=tuple(f.span for f in scope.frames),
            )
        )
        self.node_frames[node_name] = scope.frames
        if len(self.nodes) > MAX_NODES:
            self.fail(f"the model expands to more than {MAX_NODES} layers", span, scope)
            raise Fatal
        return Tensor(node_name)

    def fresh(self, base: str, scope: Scope) -> str:
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
        scope: Scope,
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
        inner = Scope(
            prefix=instance + ".",
            values=dict(zip((n.id for n in block.syntax.inputs), inputs, strict=True)),
            consts=consts,
            frames=(*scope.frames, Frame(span, f"in this call of block '{name}'")),
            current=inputs[-1],
        )
        returned = self.body(block.syntax.body, inner, "block")
        result = returned if returned is not None else inner.current
        return result if result is not None else POISON
