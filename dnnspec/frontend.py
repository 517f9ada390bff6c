"""Entry points of the front end: spec text or file -> syntax IR -> resolved `Spec`.

Every later stage (check, compile, train, tune, the CLI and the Python API) starts here.
Any mistake in the spec, its `--set` overrides or the file itself surfaces as one
`DiagnosticError` carrying every problem found, with the spec text attached so that it
renders with source lines even for specs that never lived in a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from dnnspec.errors import DiagnosticError, SourceMap, Span, error
from dnnspec.files import MiB, read_bytes
from dnnspec.ir import Spec
from dnnspec.resolve import Scalar, resolve
from dnnspec.syntax import ast
from dnnspec.syntax.build import build
from dnnspec.syntax.parse import parse_tree

MAX_SPEC_BYTES = 1 * MiB
"""Largest spec file read; real specs are a few KiB."""

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""Text that reads as a number literal (the grammar's, with an optional sign)."""


def parse_text(text: str, file: str = "<spec>") -> ast.SpecFile:
    """The syntax IR of a spec's text; `file` is the name spans (and messages) use."""
    text = one_newline(text)
    try:
        spec: ast.SpecFile = build(parse_tree(text, file), file)
        return spec
    except DiagnosticError as exc:
        exc.sources = SourceMap({file: text})
        raise


def one_newline(text: str) -> str:
    """Windows (CRLF) and old Mac (CR) line endings read as newlines, like Unix ones."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_override(name: str, text: str) -> tuple[Scalar, Span]:
    """The value of `--set name=text` and where it was written: file `--set name`, whose
    one line reads `name=text` (see `override_source`), so carets land under the value.

    The text is read with the grammar's literal rule (numbers, "strings", true/false,
    lists, bare words). Text that is no literal is taken as a string as it stands, so
    paths and other free text can be passed; a param that is not a string then rejects it.
    """
    file, offset = f"--set {name}", len(name) + 1
    try:
        # Leading blanks are ignored by the grammar and shift every span past `name=`.
        literal = build(parse_tree(" " * offset + text, file, start="literal"), file)
    except DiagnosticError as exc:
        if _is_number(text):
            # A number the grammar refuses (too large, beyond 64 bits): say so, rather than
            # passing it on as a string that the param then rejects as a word.
            exc.sources = SourceMap({file: override_source(name, text)})
            raise
        end = offset + len(text) + 1
        return text, Span(file=file, line=1, col=offset + 1, end_line=1, end_col=end)
    return _literal_value(literal), literal.span


def override_source(name: str, text: str) -> str:
    """The source line diagnostics show for `--set name=text`."""
    return f"{name}={text}"


def _is_number(text: str) -> bool:
    """Whether `text` reads as a number (decimal digits, a point or an exponent)."""
    return NUMBER.fullmatch(text.strip()) is not None


def _literal_value(expr: ast.Expr) -> Scalar:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.ListExpr):
        return [_literal_value(item) for item in expr.items]
    assert isinstance(expr, ast.Number | ast.String | ast.Bool)
    return expr.value


def load_spec_text(
    text: str, file: str = "<spec>", overrides: Mapping[str, str] | None = None
) -> Spec:
    """Parse and resolve a spec held in memory; `overrides` are `--set name=value` pairs."""
    text = one_newline(text)
    sources = SourceMap({file: text})
    values: dict[str, tuple[Scalar, Span]] = {}
    for name, value in (overrides or {}).items():
        sources.add(f"--set {name}", override_source(name, value))
        values[name] = parse_override(name, value)
    try:
        return resolve(parse_text(text, file), file, values)
    except DiagnosticError as exc:
        exc.sources = sources
        raise


def read_spec_text(path: str | Path) -> str:
    """The text of a spec file; an unreadable or non-UTF-8 file is a diagnostic."""
    data = read_bytes(path, "spec file", MAX_SPEC_BYTES)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        span = Span(file=str(path), line=line, col=col, end_line=line, end_col=col + 1)
        raise error(f"spec file '{path}' is not UTF-8 text", span) from None


def load_spec(path: str | Path, overrides: Mapping[str, str] | None = None) -> Spec:
    """Read, parse and resolve a spec file; an unreadable file is a diagnostic too."""
    return load_spec_text(read_spec_text(path), str(path), overrides)
