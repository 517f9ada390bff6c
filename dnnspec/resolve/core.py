"""The state of one resolution and how its problems are reported.

Every section of the resolver (model, train, search) builds on `ResolverCore`: it holds what
has been resolved so far and collects each problem once, with the block calls and repeat
iterations it sits in, so independent mistakes are raised together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dnnspec import ir
from dnnspec.errors import Diagnostic, DiagnosticError, Note, Span
from dnnspec.registry import Registry
from dnnspec.resolve.values import POISON, Block, Frame, Poison, Scalar, Scope, suggest
from dnnspec.syntax import ast


def _within(inner: Span, outer: Span) -> bool:
    return (
        inner.file == outer.file
        and (outer.line, outer.col) <= (inner.line, inner.col)
        and (inner.end_line, inner.end_col) <= (outer.end_line, outer.end_col)
    )


class ResolverCore:
    """What one resolution has found so far, and the problems it has reported."""

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
        self.params: dict[str, Scalar | Poison] = {}
        """Param values in declaration order; POISON for a param whose value failed."""
        self.param_decls: dict[str, ast.ParamDecl] = {}
        self.blocks: dict[str, Block] = {}
        self.unusable: set[str] = set()
        """Blocks whose definition is broken (recursive, no inputs): calls yield POISON."""
        self.nodes: list[ir.Node] = []
        self.node_frames: dict[str, tuple[Frame, ...]] = {}
        self.inputs: dict[str, ir.InputDecl] = {}
        self.words: dict[Span, str] = {}
        """Bare words met in argument position, for did-you-mean help on binding errors."""
        self.overridden: dict[Span, str] = {}
        """Uses of overridden params, so binding errors can point at the override."""
        self.iterations = 0

    # -- reporting -----------------------------------------------------------------------

    def report(self, diag: Diagnostic, frames: Sequence[Frame] = ()) -> None:
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
        scope: Scope | None = None,
        help: str | None = None,
        notes: Sequence[Note] = (),
    ) -> Poison:
        self.report(
            Diagnostic(message=message, span=span, help=help, notes=tuple(notes)),
            scope.frames if scope else (),
        )
        return POISON

    def absorb(self, exc: DiagnosticError, scope: Scope | None = None) -> Poison:
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
                hint = suggest(word, names) or (
                    f"'{word}' is read as a word: no param or value has that name"
                )
                diag = diag.model_copy(update={"help": hint})
            self.report(diag, scope.frames if scope else ())
        return POISON

    def get(self, registry: Registry[Any], name: ast.Name, scope: Scope | None = None) -> Any:
        try:
            return registry.get(name.id, name.span)
        except DiagnosticError as exc:
            return self.absorb(exc, scope)
