"""Params and blocks: what a spec defines before its model uses it.

Params (with `--set` overrides) are evaluated in order; each block gets an argument schema
with its defaults evaluated, and a block that can reach itself through calls is reported
and made unusable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from dnnspec.errors import Note, did_you_mean
from dnnspec.layers.base import LAYERS
from dnnspec.resolve.expressions import Expressions
from dnnspec.resolve.problems import Problems
from dnnspec.resolve.values import (
    POISON,
    Block,
    Definitions,
    Scope,
    article,
    compatible,
    describe,
    kind_of,
)
from dnnspec.schema import ArgSpec, ArgType, Signature
from dnnspec.syntax import ast

BLOCK_PARAM_TYPES: tuple[ArgType, ...] = ("int", "float", "bool", "str")


def _override_help(name: str, declared: Any, value: Any) -> str | None:
    """How to write `--set name=...` for a param holding `declared`, given `value`."""
    kind = kind_of(declared)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return f"write it without a fraction: --set {name}={int(value)}"
    if kind in ("int", "float") and isinstance(value, str):
        example = f"give {article(kind)}, e.g. --set {name}={declared!r}"
        if any(c in value for c in "+-*/()"):
            return f"--set takes a literal, not an expression: {example}"
        return example
    return None


def _walk(node: BaseModel) -> Iterator[BaseModel]:
    """Every syntax node under `node` (nesting is bounded by the parser)."""
    yield node
    for name in type(node).model_fields:
        child = getattr(node, name)
        items = child if isinstance(child, tuple) else (child,)
        for item in items:
            if isinstance(item, ast._Node):
                yield from _walk(item)


TRAIN_SETTINGS = ("seed",)
"""Train settings `--set` may change without a param (a param of that name wins)."""


class DefinitionsResolver:
    """Resolves the `param` declarations and `block` definitions into `defs`."""

    def __init__(self, problems: Problems, defs: Definitions, expr: Expressions) -> None:
        self.problems = problems
        self.defs = defs
        self.expr = expr

    def resolve_params(self, decls: list[ast.ParamDecl]) -> None:
        names = {d.name.id for d in decls}
        for name, (_, span) in self.defs.overrides.items():
            if name in names or name in TRAIN_SETTINGS:
                continue
            self.problems.fail(
                f"there is no param '{name}' to set",
                span.model_copy(update={"col": 1, "end_col": len(name) + 1}),
                help=did_you_mean(name, [d.name.id for d in decls])
                or "params are declared in the spec: param name = value",
            )
        scope = Scope(tensors=False)
        for decl in decls:
            self.defs.param_decls.setdefault(decl.name.id, decl)
        for decl in decls:
            name = decl.name.id
            if name in self.defs.params or self.defs.param_decls[name] is not decl:
                self.problems.fail(
                    f"param '{name}' is declared twice",
                    decl.name.span,
                    notes=[
                        Note(
                            message="first declared here",
                            span=self.defs.param_decls[name].name.span,
                        )
                    ],
                )
                continue
            declared = self.expr.scalar(decl.value, scope, f"param '{name}'")
            if name in self.defs.overrides:
                value, span = self.defs.overrides[name]
                if declared is not POISON and not compatible(kind_of(declared), value):
                    declared = self.problems.fail(
                        f"param '{name}' holds {article(kind_of(declared))}, not {describe(value)}",
                        span,
                        notes=[Note(message="declared here", span=decl.span)],
                        help=_override_help(name, declared, value),
                    )
                else:
                    declared = value
            self.defs.params[name] = declared

    def collect_blocks(self, defs: list[ast.BlockDef]) -> None:
        consts = Scope(tensors=False)
        for block in defs:
            name = block.name.id
            if name in self.defs.blocks:
                first = self.defs.blocks[name].syntax.name.span
                self.problems.fail(
                    f"block '{name}' is defined twice",
                    block.name.span,
                    notes=[Note(message="first defined here", span=first)],
                )
                continue
            if name in LAYERS:
                self.defs.unusable.add(name)
                self.problems.fail(
                    f"block '{name}' has the name of a built-in layer",
                    block.name.span,
                    help="rename the block",
                )
            if not block.body:
                self.defs.unusable.add(name)
                self.problems.fail(
                    f"block '{name}' has an empty body",
                    block.name.span,
                    help="add its layers, e.g. "
                    + (f"return {block.inputs[0].id} -> dense(8)" if block.inputs else "dense(8)"),
                )
            if not block.inputs:
                self.defs.unusable.add(name)
                self.problems.fail(
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
                    self.problems.fail(f"'{n.id}' is declared twice in block '{name}'", n.span)
            self.defs.blocks[name] = Block(block, Signature(args=tuple(args)))
        self.find_recursion()

    def block_param(
        self, block: str, p: ast.BlockParam, consts: Scope, earlier: list[str]
    ) -> ArgSpec:
        if p.name.id in earlier:
            self.problems.fail(
                f"parameter '{p.name.id}' of block '{block}' is declared twice", p.name.span
            )
        type_ = p.type.id
        if type_ not in BLOCK_PARAM_TYPES:
            self.problems.fail(
                f"unknown parameter type '{type_}'",
                p.type.span,
                help=did_you_mean(type_, BLOCK_PARAM_TYPES),
            )
            return ArgSpec(name=p.name.id, type="any")
        if p.default is None:
            return ArgSpec(name=p.name.id, type=type_)
        default = self.expr.scalar(p.default, consts, f"the default of '{p.name.id}'")
        if default is POISON or not compatible(type_, default):
            if default is not POISON:
                self.problems.fail(
                    f"the default of '{p.name.id}' must be {article(type_)}, "
                    f"got {describe(default)}",
                    p.default.span,
                )
            # Calls of the block would only repeat the mistake (at each use of the parameter,
            # or as a missing argument), so they bind anything and yield POISON.
            self.defs.unusable.add(block)
            return ArgSpec(name=p.name.id, type="any", default=None)
        elif type_ == "float" and isinstance(default, int):
            default = float(default)
        return ArgSpec(name=p.name.id, type=type_, default=default)

    def find_recursion(self) -> None:
        """Report every block that can reach itself through block calls."""
        calls: dict[str, list[ast.Name]] = {}
        for name, block in self.defs.blocks.items():
            targets = []
            for stmt in block.syntax.body:
                for node in _walk(stmt):
                    if isinstance(node, ast.Call) and node.func.id in self.defs.blocks:
                        targets.append(node.func)
                    elif isinstance(node, ast.Name) and node.id in self.defs.blocks:
                        targets.append(node)
            calls[name] = targets
        for name in self.defs.blocks:
            path = self.cycle_from(name, calls)
            if path is None:
                continue
            self.defs.unusable.add(name)
            if name == min(n.id for n in path):
                through = " -> ".join([name, *(n.id for n in path)])
                self.problems.fail(
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
