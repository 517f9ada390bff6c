"""The problems one resolution reports: each once, with the expansion it sits in.

Every section of the resolver reports into one shared `Problems`, so independent
mistakes anywhere in a spec are raised together.
"""

from __future__ import annotations

from collections.abc import Sequence

from dnnspec.errors import Diagnostic, DiagnosticError, Note, Span
from dnnspec.resolve.values import POISON, Frame, Poison, Scope


class Problems:
    """The diagnostics found so far, in the order they were found, without repeats."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.seen: set[tuple[str, Span | None, str | None]] = set()

    def __len__(self) -> int:
        return len(self.diagnostics)

    def error(self) -> DiagnosticError:
        """Every problem found, as one exception."""
        return DiagnosticError(self.diagnostics)

    def report(self, diag: Diagnostic, frames: Sequence[Frame] = ()) -> None:
        """Record a problem once, with a note for each block call or repeat it sits in."""
        key = (diag.message, diag.span, diag.help)
        if key in self.seen:
            return
        self.seen.add(key)
        if frames:
            notes = tuple(Note(message=f.note, span=f.span) for f in reversed(frames))
            diag = diag.model_copy(update={"notes": diag.notes + notes})
        self.diagnostics.append(diag)

    def fail(
        self,
        message: str,
        span: Span | None,
        scope: Scope | None = None,
        help: str | None = None,
        notes: Sequence[Note] = (),
    ) -> Poison:
        """Report a problem; returns POISON, the value of the computation that failed."""
        self.report(
            Diagnostic(message=message, span=span, help=help, notes=tuple(notes)),
            scope.frames if scope else (),
        )
        return POISON
