"""The model section: its body, `repeat`, and layer and block calls.

The model body is executed statement by statement, expanding block calls and `repeat` loops
into a flat list of layer nodes whose arguments are bound and defaulted by each layer's
`Signature`. Its expressions are evaluated by `expressions.Expressions`, which hands the
calls back here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec import ir
from dnnspec.errors import DiagnosticError, Note, Span, did_you_mean
from dnnspec.layers.base import LAYERS
from dnnspec.resolve.expressions import Expressions, NameUses
from dnnspec.resolve.problems import Problems
from dnnspec.resolve.values import (
    POISON,
    Definitions,
    Fatal,
    Frame,
    Poison,
    Scope,
    Tensor,
    Value,
    describe,
    suggest,
    word_in,
)
from dnnspec.syntax import ast

MAX_NODES = 20_000
"""A model expanding past this many layers is a mistake (a runaway repeat), not a model."""
MAX_ITERATIONS = 20_000
"""Total `repeat` iterations allowed, so empty nested loops cannot spin for minutes."""
MAX_BLOCK_DEPTH = 32
"""Deepest chain of block calls inside block calls."""

DTYPES: tuple[ir.DType, ...] = ("float32", "float64", "int64", "int32", "bool")


class ModelResolver:
    """Executes the model body (and the block bodies it calls) into a flat list of nodes;
    the layer and block calls of its expressions come back here."""

    def __init__(self, problems: Problems, defs: Definitions, uses: NameUses) -> None:
        self.problems = problems
        self.defs = defs
        self.expr = Expressions(problems, defs, uses, calls=self)
        self.nodes: list[ir.Node] = []
        self.node_frames: dict[str, tuple[Frame, ...]] = {}
        self.inputs: dict[str, ir.InputDecl] = {}
        self.outputs: list[ir.Output] = []
        self.iterations = 0
        self.frozen: list[ir.Selector] = []
        """Layers written with `trainable = false`: the train section freezes them."""

    def resolve_model(self, model: ast.ModelDef) -> ir.Graph | None:
        scope = Scope()
        before = len(self.problems)
        returned = self.body(model.body, scope, "model")
        output = returned if returned is not None else scope.current
        if len(self.problems) > before:
            return None
        if output is None or (not self.nodes and isinstance(output, Tensor)):
            self.problems.fail(
                f"model '{model.name.id}' has no layers",
                model.name.span,
                help="add layers after the inputs, e.g. dense(10)",
            )
            return None
        if not isinstance(output, Tensor) or self.problems:
            return None
        self.check_unused([output.name, *(o.value for o in self.outputs)])
        return ir.Graph(
            name=model.name.id,
            inputs=tuple(self.inputs.values()),
            nodes=tuple(self.nodes),
            output=output.name,
            span=model.span,
            outputs=tuple(self.outputs),
        )

    def check_unused(self, outputs: list[str]) -> None:
        used = {*outputs, *(i for n in self.nodes for i in n.inputs)}
        for node in self.nodes:
            if node.name not in used:
                self.problems.fail(
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
                self.problems.fail(
                    "this statement comes after 'return' and would never run", stmt.span, scope
                )
                break
            if isinstance(stmt, ast.InputStmt):
                self.input(stmt, scope, kind)
            elif isinstance(stmt, ast.Repeat):
                self.repeat(stmt, scope)
            elif isinstance(stmt, ast.Return | ast.ReturnOutputs) and kind == "repeat":
                self.problems.fail(
                    "'return' cannot be inside a repeat",
                    stmt.span,
                    scope,
                    help="return after the repeat: its result is the current value",
                )
            elif isinstance(stmt, ast.ReturnOutputs):
                returned = self.named_outputs(stmt, scope, kind)
            else:
                value = self.expr.tensor(
                    self.expr.eval(stmt.value, scope, "tensor"), stmt.value.span, scope
                )
                if isinstance(stmt, ast.Assign):
                    self.assign(stmt.target, value, scope)
                scope.current = value
                if isinstance(stmt, ast.Return):
                    returned = value
        return returned

    def named_outputs(self, stmt: ast.ReturnOutputs, scope: Scope, kind: str) -> Value:
        """`return digit: logits, size: h`: the model's outputs by name; returns the first
        one's value (POISON when any failed)."""
        if kind != "model":
            return self.problems.fail(
                "only the model returns named outputs; a block returns one value",
                stmt.span,
                scope,
                help="return one value from the block, and name outputs in the model's return",
            )
        first: Value = POISON
        seen: dict[str, ast.NamedOutput] = {}
        broken = False
        for out in stmt.outputs:
            value = self.expr.tensor(
                self.expr.eval(out.value, scope, "tensor"), out.value.span, scope
            )
            name = out.name.id
            if name in seen:
                self.problems.fail(
                    f"the model has two outputs named '{name}'",
                    out.name.span,
                    notes=[Note(message="first named here", span=seen[name].name.span)],
                    help="give each output its own name",
                )
                broken = True
            elif name in ir.GRAPH_NAMES:
                self.problems.fail(
                    f"'{name}' is a name the compiled graphs use for their own inputs and outputs",
                    out.name.span,
                    help=f"name this output otherwise, e.g. '{name}_out'",
                )
                broken = True
            elif name in self.inputs:
                self.problems.fail(
                    f"output '{name}' has the name of an input; model.onnx could not tell "
                    "them apart",
                    out.name.span,
                    notes=[Note(message="the input", span=self.inputs[name].span)],
                    help="give the output another name",
                )
                broken = True
            seen.setdefault(name, out)
            if not isinstance(value, Tensor):
                broken = True
                continue
            if first is POISON:
                first = value
            self.outputs.append(ir.Output(name=name, value=value.name, span=out.span))
        return POISON if broken else first

    def assign(self, target: ast.Name, value: Tensor | Poison, scope: Scope) -> None:
        name = target.id
        taken = self.name_clash(name, scope)
        if taken:
            self.problems.fail(
                f"'{name}' is already {taken}; give this value another name", target.span, scope
            )
        scope.values[name] = value

    def name_clash(self, name: str, scope: Scope) -> str | None:
        """What a new value name would shadow, or None when it is free."""
        if name in scope.consts or name in self.defs.params:
            return "a param" if name in self.defs.params else "a block parameter or loop variable"
        if name in LAYERS:
            return "a layer"
        if name in self.defs.blocks:
            return "a block"
        return None

    def input(self, stmt: ast.InputStmt, scope: Scope, kind: str) -> None:
        if kind != "model":
            self.problems.fail(
                "inputs are declared in the model body, not in a block or repeat",
                stmt.span,
                scope,
                help="a block names its tensor inputs in its header: block b(...) (x)",
            )
            return
        name = stmt.name.id
        if name in self.inputs or any(n.name == name for n in self.nodes):
            self.problems.fail(f"input '{name}' is declared twice", stmt.name.span)
            return
        taken = self.name_clash(name, scope)
        if taken:
            self.problems.fail(
                f"'{name}' is already {taken}; give this input another name", stmt.name.span
            )
        if name in ir.GRAPH_NAMES:
            self.problems.fail(
                f"'{name}' is a name the compiled graphs use for their own "
                f"{'output' if name in ('loss', 'output') else 'input'}",
                stmt.name.span,
                help=f"give this input another name, e.g. '{name}_in'",
            )
        dtype = word_in(stmt.dtype.id, DTYPES)
        if dtype is None:
            word = stmt.dtype.id
            self.problems.fail(
                f"unknown dtype '{word}'", stmt.dtype.span, help=did_you_mean(word, DTYPES)
            )
        dims: list[int | str] = []
        for dim in stmt.dims:
            if isinstance(dim, ast.Name) and dim.id not in self.defs.params:
                dims.append(dim.id)
                continue
            value = self.expr.scalar(dim, scope, "a dimension")
            if value is POISON:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.problems.fail(
                    f"a dimension must be a positive integer or a name like N, "
                    f"got {describe(value)}",
                    dim.span,
                )
            elif dim is stmt.dims[0]:
                self.problems.fail(
                    f"the first dimension of an input is the batch, which varies, got {value}",
                    dim.span,
                    help="name it instead, e.g. N",
                )
            else:
                dims.append(value)
        declared: Tensor | Poison = POISON
        if dtype is not None and len(dims) == len(stmt.dims):
            self.inputs[name] = ir.InputDecl(
                name=name, dtype=dtype, dims=tuple(dims), span=stmt.span
            )
            declared = Tensor(name)
        scope.values[name] = declared
        scope.current = declared

    def repeat(self, stmt: ast.Repeat, scope: Scope) -> None:
        count = self.expr.scalar(stmt.count, scope, "the repeat count")
        if count is POISON:
            return
        if isinstance(count, float) and count.is_integer() and abs(count) < 2**63:
            count = int(count)  # `8 / 2` is 4.0: a whole number is a count, as docs say
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.problems.fail(
                f"repeat needs an integer count, zero or more, got {describe(count)}",
                stmt.count.span,
                scope,
            )
            return
        var = stmt.var.id if stmt.var else None
        if var is not None and var in scope.values:
            self.problems.fail(
                f"'{var}' is already a value; name the loop variable differently",
                stmt.var.span if stmt.var else stmt.head,
                scope,
            )
            return
        for i in range(count):
            self.iterations += 1
            if self.iterations > MAX_ITERATIONS:
                self.problems.fail(
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

    # -- calls ---------------------------------------------------------------------------

    def call(
        self,
        func: ast.Name,
        args: Sequence[ast.Arg],
        span: Span,
        scope: Scope,
        chain_input: Value | None,
    ) -> Value:
        """A layer or block call in the model; `chain_input` is the value on the left of
        `->`, if any."""
        name = func.id
        known = name in self.defs.blocks or name in LAYERS
        if not known:
            self.problems.fail(
                f"unknown layer '{name}'",
                func.span,
                scope,
                help=did_you_mean(name, [*LAYERS.names(), *self.defs.blocks]),
            )
        tensors: list[Tensor] = []
        positional: list[tuple[Any, Span]] = []
        keyword: list[tuple[str, Any, Span]] = []
        broken = not known
        for arg in args:
            value = self.expr.eval(arg.value, scope, "arg")
            if value is POISON:
                broken = True
            elif arg.name is not None and self.foreign_arg(name, arg, value, scope):
                broken = broken or isinstance(value, Tensor)
            elif arg.name is not None and self.tensor_arg(name, arg.name.id):
                if not isinstance(value, Tensor):
                    self.problems.fail(
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
                self.problems.fail(
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
        if name in self.defs.blocks:
            return self.expand(name, inputs, positional, keyword, span, scope)
        return self.apply_layer(name, span, inputs, positional, keyword, scope)

    def foreign_arg(self, callee: str, arg: ast.Arg, value: Value, scope: Scope) -> bool:
        """Report a keyword that layer `callee` lacks when another library's habit explains
        it: Keras' `activation =` (here a layer of its own) or a tensor by a name the layer
        does not take (`dense(64, lengths = len)`). Other unknown keywords are left to the
        signature's did-you-mean."""
        assert arg.name is not None
        key = arg.name.id
        if callee in self.defs.blocks or callee not in LAYERS:
            return False
        signature = LAYERS.get(callee).signature
        if signature.get(key) is not None or not (key == "activation" or isinstance(value, Tensor)):
            return False
        canonical = LAYERS.canonical(callee) or callee
        if key == "activation":
            written = value if isinstance(value, str) and value in LAYERS else "relu"
            help = f"an activation is a layer of its own: write {callee}(...) -> {written}"
        else:
            takes = ", ".join(signature.names()) or "none"
            help = f"{canonical} takes no tensor by that name; its arguments: {takes}"
        self.problems.fail(f"{canonical} has no argument '{key}'", arg.span, scope, help=help)
        return True

    def tensor_arg(self, callee: str, arg: str) -> bool:
        """Whether `arg` of layer `callee` takes a tensor by keyword (`memory = enc`)."""
        if callee in self.defs.blocks or callee not in LAYERS:
            return False
        spec = LAYERS.get(callee).signature.get(arg)
        return spec is not None and spec.type == "tensor"

    def call_inputs(
        self, name: str, chain_input: Value | None, tensors: list[Tensor], span: Span, scope: Scope
    ) -> list[Tensor | Poison] | None:
        """The tensor inputs of a call: the chain input, then tensor arguments; when there
        are neither, the current value. Checks the count against the layer's arity."""
        if chain_input is not None and not isinstance(chain_input, Tensor | Poison):
            self.problems.fail(
                f"'->' applies {name} to a tensor, but its left side is {describe(chain_input)}",
                span,
                scope,
            )
            return None
        inputs: list[Tensor | Poison] = [chain_input] if chain_input is not None else []
        inputs += tensors
        if not inputs:
            if scope.current is None:
                self.problems.fail(
                    f"there is no value yet for {name} to apply to",
                    span,
                    scope,
                    help="declare the model's input first: input x: float32[N, 64]",
                )
                return None
            inputs = [scope.current]
        if name in self.defs.blocks:
            arity: int | None = len(self.defs.blocks[name].syntax.inputs)
        else:
            arity = LAYERS.get(name).arity
        if arity is None and len(inputs) < 2:
            self.problems.fail(
                f"{name} merges two or more tensors, got {len(inputs)}",
                span,
                scope,
                help=f"write {name}(a, b) or a + b with named values",
            )
            return None
        if arity is not None and len(inputs) != arity:
            plural = "s" if arity != 1 else ""
            self.problems.fail(
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
        inputs: Sequence[Tensor | Poison],
        positional: list[tuple[Any, Span]],
        keyword: list[tuple[str, Any, Span]],
        scope: Scope,
    ) -> Value:
        canonical = LAYERS.canonical(name) or name
        trainable = [k for k in keyword if k[0] == "trainable"]
        keyword = [k for k in keyword if k[0] != "trainable"]
        for _, value, where in trainable:
            if not isinstance(value, bool):
                self.problems.fail(
                    f"trainable is true or false, got {describe(value)}", where, scope
                )
                return POISON
        try:
            args = LAYERS.get(name, span).signature.bind(canonical, positional, keyword, span)
        except DiagnosticError as exc:
            return self.expr.absorb(exc, scope)
        if any(v is POISON for v in inputs):
            return POISON
        node_name = self.fresh(canonical, scope)
        if trainable and not trainable[-1][1]:  # as `freeze [node]` in the train section
            self.frozen.append(ir.Selector(name=node_name, span=trainable[-1][2]))
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
            self.problems.fail(f"the model expands to more than {MAX_NODES} layers", span, scope)
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
        inputs: list[Tensor | Poison],
        positional: list[tuple[Any, Span]],
        keyword: list[tuple[str, Any, Span]],
        span: Span,
        scope: Scope,
    ) -> Value:
        """Execute a block body for one call, in a fresh scope named after the instance."""
        block = self.defs.blocks[name]
        try:
            consts = block.signature.bind(name, positional, keyword, span)
        except DiagnosticError as exc:
            return self.expr.absorb(exc, scope)
        if name in self.defs.unusable or any(v is POISON for v in inputs):
            return POISON
        if len(scope.frames) >= MAX_BLOCK_DEPTH:
            return self.problems.fail(
                f"blocks are nested more than {MAX_BLOCK_DEPTH} deep", span, scope
            )
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
