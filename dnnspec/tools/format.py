"""`dnnspec fmt`: the one canonical layout of a `.dnn` file, comments kept.

The formatter works on tokens, not on the tree, so every comment stays where it was
written. It decides only whitespace: one statement per line (`;` becomes a line break),
two spaces of indent per `{`, single spaces around `=`, `->`, binary operators and after
`,` and `:`, none inside brackets or before a call's `(`, at most one blank line in a
row. Line breaks inside an expression (a long chain, a long argument list) are the
author's and are kept, indented under their statement. The result is checked to parse to
the same syntax tree as the input, so formatting never changes what a spec means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnnspec.errors import error
from dnnspec.files import write_text
from dnnspec.frontend import one_newline, parse_text, read_spec_text
from dnnspec.syntax.ast import SpecFile

_TOKEN = re.compile(
    r"""(?P<comment>\#[^\n]*)
      | (?P<nl>\n|;)
      | (?P<ws>[ \t\f\r]+)
      | (?P<string>"(?:\\.|[^"\\\n])*")
      | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>->|[-+*/=:,()\[\]{}])
    """,
    re.VERBOSE,
)

KEYWORDS = {
    "import",
    "param",
    "model",
    "block",
    "input",
    "return",
    "repeat",
    "as",
    "train",
    "search",
    "in",
}
_OPEN, _CLOSE = "([", ")]"
_BINARY = {"=", "->", "+", "*", "/"}
_JOINS_NEXT = {"->", ",", "(", "[", "+", "-", "*", "/", "=", ":"}
"""After one of these a line break continues the statement (as the parser reads it)."""
_INDENT = "  "


@dataclass(frozen=True)
class _Tok:
    kind: str  # comment, nl, string, number, name, op
    text: str


def _tokens(text: str) -> list[_Tok]:
    out = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append(_Tok(kind, match.group().rstrip() if kind == "comment" else match.group()))
    return out


def _space_between(before: list[_Tok], tok: _Tok) -> bool:
    """Whether one space separates `tok` from the code token before it on its line."""
    prev = before[-1]
    if tok.kind == "comment":
        return True
    if tok.text in (",", ")", "]", ":") or prev.text in _OPEN:
        return False
    if tok.text == "(" and prev.kind == "name" and prev.text not in KEYWORDS:
        return False  # a call: dense(64)
    if tok.text == "[" and len(before) >= 2 and before[-2].text == ":":
        return False  # a tensor type: float32[N, 64]
    return not (prev.text == "-" and _is_unary(before[:-1]))  # no space after a unary minus


def _is_unary(before: list[_Tok]) -> bool:
    """Whether a `-` that follows `before` negates (rather than subtracts)."""
    if not before:
        return True
    prev = before[-1]
    return prev.kind == "op" and prev.text not in (")", "]", "}") or prev.text in KEYWORDS


@dataclass(frozen=True)
class Formatted:
    """A spec file as read and in its canonical layout."""

    path: Path
    original: str
    text: str

    @property
    def changed(self) -> bool:
        return self.text != self.original

    def write(self) -> None:
        """Replace the file by its canonical text (atomically). A symlink stays one: the
        file it points to is what was read, so that is what is rewritten."""
        write_text(self.path.resolve(), self.text, "spec file")


def format_file(path: str | Path) -> Formatted:
    original = read_spec_text(path)
    return Formatted(Path(path), original, format_text(original, str(path)))


def format_text(text: str, file: str = "<spec>") -> str:
    """The canonical text of a spec (a located error if it does not parse)."""
    original = parse_text(text, file)
    formatted = _layout(_tokens(one_newline(text)))
    if _shape(parse_text(formatted, file)) != _shape(original):
        raise error(f"formatting '{file}' would change its meaning; it was left as it is")
    return formatted


def _shape(tree: SpecFile) -> Any:
    """The syntax tree without source positions: what formatting must preserve."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("span", "head")}
        if isinstance(value, list | tuple):
            return [strip(v) for v in value]
        return value

    return strip(tree.model_dump())


def _layout(tokens: list[_Tok]) -> str:
    lines: list[str] = []
    line: list[_Tok] = []  # the tokens of the line being built
    indent = 0  # its indent, fixed by its first token
    depth = 0  # open braces
    brackets = 0  # open ( and [
    continuation = False  # the next line continues a statement
    blank = False  # a blank line was seen before the next line
    opened = False  # the last line written opened a brace

    def flush() -> None:
        nonlocal line, opened
        if line:
            text = line[0].text
            for i, tok in enumerate(line[1:], 1):
                if _space_between(line[:i], tok):
                    text += "  " if tok.kind == "comment" else " "
                text += tok.text
            lines.append(_INDENT * indent + text)
            opened = any(t.text == "{" for t in line)
            line = []

    def start(tok: _Tok) -> None:
        nonlocal indent, blank
        top_item = depth == 0 and tok.text in ("model", "block", "train", "search")
        after_item = depth == 0 and lines[-1:] == ["}"]
        after_params = top_item and bool(lines) and lines[-1].startswith("param ")
        if (blank or after_item or after_params) and lines and not opened and tok.text != "}":
            lines.append("")
        blank = False
        indent = depth
        if continuation and tok.text != "}":
            indent += max(brackets - (tok.text in _CLOSE), 0 if tok.text in _CLOSE else 1)

    previous: _Tok | None = None
    for i, tok in enumerate(tokens):
        if tok.kind == "nl":
            if line:
                code = [t for t in line if t.kind != "comment"]
                following = next(
                    (t for t in tokens[i + 1 :] if t.kind not in ("nl", "comment")), None
                )
                continuation = bool(code) and (
                    brackets > 0
                    or code[-1].text in _JOINS_NEXT
                    or (following is not None and following.text == "->")
                )
                flush()
            elif previous is not None and previous.kind == "nl":
                blank = True
            previous = tok
            continue
        previous = tok
        if line and line[-1].text == "{" and tok.kind != "comment":
            flush()  # a statement on the line of its `{` moves to its own line
            continuation = False
        if tok.text == "}":
            flush()
            depth = max(0, depth - 1)
            continuation = False
            if lines and lines[-1] == "":
                lines.pop()
        if not line:
            start(tok)
        line.append(tok)
        if tok.text in _OPEN:
            brackets += 1
        elif tok.text in _CLOSE:
            brackets = max(0, brackets - 1)
        elif tok.text == "{":
            depth += 1
    flush()
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""
