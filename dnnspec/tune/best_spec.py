"""`best.dnn`: the searched spec with the best trial's values written into its params.

Only the value of each `param name = value` line changes, so comments, layout and the
search section stay as the user wrote them and the file trains with `dnnspec train`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dnnspec.files import write_text
from dnnspec.frontend import parse_text, read_spec_text
from dnnspec.syntax import ast

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}
"""The characters a spec string escapes (docs/language.md); every other one is written
as it is, so `"café"` stays `"café"`."""


def render_value(value: Any) -> str:
    """A value as spec (and `--set`) text that reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if WORD.fullmatch(value) and value not in ("true", "false"):
            return value
        return '"' + "".join(ESCAPES.get(c, c) for c in value) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a spec value")


def _offset(lines: list[str], line: int, col: int) -> int:
    return sum(len(text) for text in lines[: line - 1]) + col - 1


def write_best_spec(
    spec_path: Path, values: Mapping[str, Any], out: Path, note: str, epochs: int | None = None
) -> None:
    """Write the spec with `values` in its params (and `epochs` in its train section when
    the search overrode the epoch count), headed by a comment line `note`."""
    text = read_spec_text(spec_path)
    targets: list[tuple[ast.Expr | ast.Labelled, str]] = []
    for item in parse_text(text, str(spec_path)).items:
        if isinstance(item, ast.ParamDecl) and item.name.id in values:
            targets.append((item.value, render_value(values[item.name.id])))
        elif isinstance(item, ast.TrainDef) and epochs is not None:
            targets += [(i.values[0], str(epochs)) for i in item.items if i.key.id == "epochs"]
    lines = text.splitlines(keepends=True)
    edits = []
    for expr, new in targets:
        span = expr.span
        start = _offset(lines, span.line, span.col)
        edits.append((start, _offset(lines, span.end_line, span.end_col), new))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    write_text(out, f"# {note}\n{text}", "best spec")
