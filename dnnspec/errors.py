"""Diagnostics shared by every stage: a located message rendered like rustc/Elm.

Every user mistake becomes a `Diagnostic` carrying the spec span it is about; stages
collect several and raise one `DiagnosticError`, which the CLI renders with the source
line, a caret under the span, notes and a help line, and exits with code 2.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["error", "warning", "note"]


class Span(BaseModel):
    """A region of a spec file; lines and columns are 1-based, `end_col` is exclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Note(BaseModel):
    """A secondary message, optionally pointing at another span (e.g. the producing layer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message: str
    span: Span | None = None


class Diagnostic(BaseModel):
    """One problem in a spec or its data, located at `span` when it has a place in the text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message: str
    span: Span | None = None
    severity: Severity = "error"
    notes: tuple[Note, ...] = ()
    help: str | None = None

    def render(self, sources: SourceMap | None = None) -> str:
        return render(self, sources)


class DiagnosticError(Exception):
    """Raised by any stage with one or more diagnostics; never shows a traceback to users."""

    def __init__(
        self, diagnostics: Diagnostic | Sequence[Diagnostic], sources: SourceMap | None = None
    ) -> None:
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.sources = sources
        """Texts of in-memory specs the diagnostics point into (files are read from disk)."""
        super().__init__("\n".join(d.message for d in self.diagnostics))

    def render(self, sources: SourceMap | None = None) -> str:
        sources = sources or self.sources
        return "\n\n".join(render(d, sources) for d in self.diagnostics)

    def to_json(self) -> str:
        return json.dumps([d.model_dump(mode="json") for d in self.diagnostics], indent=2)


def error(
    message: str, span: Span | None = None, *, help: str | None = None, notes: Iterable[Note] = ()
) -> DiagnosticError:
    """Shorthand for raising a single located error."""
    return DiagnosticError(Diagnostic(message=message, span=span, help=help, notes=tuple(notes)))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A help line suggesting the closest known name, or None when nothing is close."""
    options = sorted(set(candidates))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    lowered = [o for o in options if o.lower() == word.lower()]
    if lowered:
        return f"did you mean '{lowered[0]}'?"
    if options and len(options) <= 16:
        return "expected one of: " + ", ".join(f"'{o}'" for o in options)
    return None


class SourceMap:
    """Spec texts by file name, so rendering can show lines of in-memory specs too."""

    def __init__(self, texts: dict[str, str] | None = None) -> None:
        self.texts: dict[str, str] = dict(texts or {})

    def add(self, file: str, text: str) -> None:
        self.texts[file] = text

    def line(self, file: str, line: int) -> str | None:
        text = self.texts.get(file)
        if text is None:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
            self.texts[file] = text
        lines = text.split("\n")
        return lines[line - 1].rstrip("\r") if 1 <= line <= len(lines) else None


MAX_SHOWN = 100
"""Longest part of a source line an excerpt shows, in characters."""


def _excerpt(span: Span, sources: SourceMap, label: str = "") -> list[str]:
    source_line = sources.line(span.file, span.line)
    if source_line is None:
        return []
    gutter = " " * len(str(span.line))
    end = span.end_col if span.end_line == span.line else len(source_line.rstrip()) + 1
    # Tabs are shown as spaces, and the caret measured on the shown text, so that it lines
    # up under the span; a span past the end of the line (end of file) still gets one.
    start = len(source_line[: span.col - 1].expandtabs(4)) + max(0, span.col - 1 - len(source_line))
    width = max(1, len(source_line[: end - 1].expandtabs(4)) - start)
    shown = source_line.expandtabs(4)
    if len(shown) > MAX_SHOWN:
        # A very long line (a generated spec, a chain of thousands of steps) is shown as a
        # window around the span, so that one diagnostic stays a few lines long.
        left = max(0, min(start - MAX_SHOWN // 3, len(shown) - MAX_SHOWN))
        right = left + MAX_SHOWN
        head, tail = ("..." if left else ""), ("..." if right < len(shown) else "")
        shown = head + shown[left:right] + tail
        start = start - left + len(head)
        width = max(1, min(width, len(head) + MAX_SHOWN - start))
    marker = " " * start + "^" * width
    out = [f"{gutter} |", f"{span.line} | {shown}".rstrip(), f"{gutter} | {marker}"]
    if label:
        out[-1] += f" {label}"
    return out


def render(diag: Diagnostic, sources: SourceMap | None = None) -> str:
    """`file:line:col: error: message`, the line, a caret, then notes and help."""
    sources = sources or SourceMap()
    head = f"{diag.span}: " if diag.span else ""
    lines = [f"{head}{diag.severity}: {diag.message}"]
    if diag.span:
        lines += _excerpt(diag.span, sources)
    for note in diag.notes:
        if note.span:
            lines.append(f"note: {note.span}: {note.message}")
            lines += _excerpt(note.span, sources)
        else:
            lines.append(f"note: {note.message}")
    if diag.help:
        lines.append(f"help: {diag.help}")
    return "\n".join(lines)
