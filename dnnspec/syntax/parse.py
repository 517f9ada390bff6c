"""Text -> Lark parse tree, with every syntax error turned into a located `Diagnostic`.

The grammar (package data `dnnspec/grammar/dnn.lark`) is LALR(1) on a basic lexer. Tokens
are fed to Lark's interactive parser by hand so that newlines that cannot end a statement
are dropped first (inside brackets, around `->`, after `,` or an operator), and so that a
syntax error can say which bracket is still open. Bracket nesting is capped so that no
later (recursive) stage can run out of stack on adversarial input.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from importlib import resources

import lark
from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedToken

from dnnspec.errors import Diagnostic, DiagnosticError, Note, Span

MAX_NESTING = 32
"""Deepest bracket nesting accepted; far beyond real specs, well within Python's stack."""

MAX_MINUS_RUN = 8
"""Longest run of unary minus signs accepted (`- - x`)."""

_OPEN = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_JOINS_NEXT = {
    "_ARROW",
    "COMMA",
    "LBRACE",
    "LPAR",
    "LSQB",
    "PLUS",
    "MINUS",
    "STAR",
    "SLASH",
    "EQUAL",
    "COLON",
}
"""A newline after one of these continues the statement."""
_JOINS_PREVIOUS = {"_ARROW", "RBRACE"}
"""A newline before one of these continues the statement (or closes the body)."""

_CLOSING = {"COMMA", "RPAR", "RSQB", "RBRACE", "_NL"}
"""When one of these would do, the error is about structure: operators are noise."""
_CONTINUING = {"PLUS", "MINUS", "STAR", "SLASH", "NAME", "LPAR", "_ARROW"}
_KEYWORDS = {
    "PARAM",
    "MODEL",
    "BLOCK",
    "TRAIN",
    "SEARCH",
    "INPUT",
    "RETURN",
    "REPEAT",
    "AS",
    "IN",
    "TRUE",
    "FALSE",
}
_EXPRESSION_START = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "TRUE", "FALSE"}
_EXPRESSION_MIN = 6
"""This many expression-start tokens accepted means "an expression goes here"."""
_DESCRIBE = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "_NL": "a new line",
    "$END": "the end of the file",
}


@functools.cache
def grammar_text() -> str:
    """The grammar shipped with the package (works from a checkout and when installed)."""
    return (resources.files("dnnspec") / "grammar" / "dnn.lark").read_text(encoding="utf-8")


def _cache_path() -> str | bool:
    """Where Lark may keep the built parse tables (a per-user cache dir), else False.

    Building the LALR tables costs ~80 ms per process; loading them ~5 ms. Lark checks
    a hash of the grammar and options before it uses the file, so a stale one is rebuilt.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "dnnspec")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    if not os.access(folder, os.W_OK):
        return False
    version = f"{sys.version_info[0]}{sys.version_info[1]}"
    return os.path.join(folder, f"grammar-lark{lark.__version__}-py{version}.cache")


@functools.cache
def _lark() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        start=["start", "literal"],
        maybe_placeholders=False,
        cache=_cache_path(),
    )


def token_span(tok: Token, file: str) -> Span:
    """The span of one token (Lark columns are 1-based, end exclusive, like `Span`)."""
    line = tok.line or 1
    col = tok.column or 1
    end_line = tok.end_line or line
    end_col = tok.end_column if tok.end_column is not None else col + max(1, len(tok))
    if (end_line, end_col) <= (line, col):
        end_col = col + 1
    return Span(file=file, line=line, col=col, end_line=end_line, end_col=end_col)


def _display(name: str) -> str:
    if name in _DESCRIBE:
        return _DESCRIBE[name]
    pattern = _lark().get_terminal(name).pattern
    return f"'{pattern.value}'" if pattern.type == "str" else name.lower()


def _found(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "_NL":
        return "';'" if tok == ";" else "the end of the line"
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMBER":
        return f"number {tok}"
    return str(tok) if tok.type == "STRING" else f"'{tok}'"


def expected_phrase(expected: set[str]) -> str:
    """`')' or ','` / `an expression or '}'`: what the parser could have accepted."""
    words: list[str] = []
    rest = set(expected)
    if len(rest & _EXPRESSION_START) >= _EXPRESSION_MIN:
        rest -= _EXPRESSION_START
        words.append("an expression")
    ordered = sorted(rest, key=lambda n: (n not in _DESCRIBE, n.startswith("_"), _display(n)))
    words += [_display(n) for n in ordered]
    if len(words) > 6:
        words = words[:5] + ["another token"]
    if not words:
        return "nothing more"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


class _Tokens:
    """Lexes the text and yields the tokens the grammar sees, tracking open brackets."""

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file
        self.open: list[Token] = []

    def _raw(self) -> Iterator[Token]:
        try:
            yield from _lark().lex(self.text)
        except UnexpectedCharacters as exc:
            pos: int | None = exc.pos_in_stream  # lark declares the attribute as None
            char = self.text[pos] if pos is not None and pos < len(self.text) else ""
            span = Span(
                file=self.file,
                line=exc.line,
                col=exc.column,
                end_line=exc.line,
                end_col=exc.column + 1,
            )
            help_ = None
            if char in "'`":
                help_ = 'strings are written in double quotes: "text"'
            elif char == '"':
                help_ = "a string must end with '\"' on the same line"
            raise DiagnosticError(
                Diagnostic(message=f"unexpected character {char!r}", span=span, help=help_)
            ) from None

    def __iter__(self) -> Iterator[Token]:
        pending_nl: Token | None = None
        previous: Token | None = None
        minus_run = 0
        for tok in self._raw():
            in_brackets = bool(self.open) and self.open[-1].type != "LBRACE"
            if tok.type == "_NL" and not (in_brackets and tok == ";"):
                if not in_brackets and previous is not None and previous.type not in _JOINS_NEXT:
                    pending_nl = pending_nl or tok
                continue
            if pending_nl is not None and tok.type not in _JOINS_PREVIOUS:
                yield pending_nl
            pending_nl = None
            self._track(tok, previous, minus_run)
            minus_run = minus_run + 1 if tok.type == "MINUS" else 0
            previous = tok
            yield tok

    def _track(self, tok: Token, previous: Token | None, minus_run: int) -> None:
        if tok.type in _OPEN:
            if len(self.open) >= MAX_NESTING:
                raise DiagnosticError(
                    Diagnostic(
                        message=f"brackets nested more than {MAX_NESTING} deep",
                        span=token_span(tok, self.file),
                        help="name intermediate values (h = ...) to flatten the expression",
                    )
                )
            self.open.append(tok)
        elif tok.type in _CLOSE:
            if self.open and self.open[-1].type == _CLOSE[tok.type]:
                self.open.pop()
            else:
                self._mismatched(tok)
        elif tok.type == "MINUS" and minus_run >= MAX_MINUS_RUN:
            raise DiagnosticError(
                Diagnostic(message="too many '-' signs in a row", span=token_span(tok, self.file))
            )

    def _mismatched(self, tok: Token) -> None:
        span = token_span(tok, self.file)
        if not self.open:
            raise DiagnosticError(
                Diagnostic(
                    message=f"unmatched '{tok}'",
                    span=span,
                    help="remove it or add the opening bracket",
                )
            )
        opener = self.open[-1]
        want = {"LPAR": ")", "LSQB": "]", "LBRACE": "}"}[opener.type]
        raise DiagnosticError(
            Diagnostic(
                message=f"expected '{want}' here, found '{tok}'",
                span=span,
                notes=(
                    Note(message=f"to close this '{opener}'", span=token_span(opener, self.file)),
                ),
            )
        )


def parse_tree(text: str, file: str, start: str = "start") -> Tree[Token]:
    """Parse `text` with the grammar's `start` rule; syntax errors raise `DiagnosticError`."""
    tokens = _Tokens(text, file)
    parser = _lark().parse_interactive(start=start)
    fed: list[Token] = []
    try:
        for tok in tokens:
            parser.feed_token(tok)
            fed.append(tok)
        lines = text.split("\n")
        end = (len(lines), len(lines[-1]) + 1)
        tree: Tree[Token] = parser.feed_token(Token("$END", "", len(text), *end, *end))
        return tree
    except UnexpectedToken as exc:
        raise DiagnosticError(_unexpected(exc.token, fed, tokens, start, file)) from None
    except LarkError as exc:
        raise DiagnosticError(
            Diagnostic(
                message=f"cannot parse this spec: {exc}",
                span=_after(fed[-1] if fed else None, file),
            )
        ) from None


def _after(tok: Token | None, file: str) -> Span:
    """A one-column span just after `tok` (the start of the file when there is none)."""
    line = (tok.end_line or 1) if tok is not None else 1
    col = (tok.end_column or 1) if tok is not None else 1
    return Span(file=file, line=line, col=col, end_line=line, end_col=col + 1)


def _accepted(fed: list[Token], start: str) -> set[str]:
    """The terminals the parser would have taken instead of the offending one.

    Replays the tokens that were accepted on a fresh parser (only on error), because the
    failing parser has already applied the reductions that the bad token triggered.
    """
    parser = _lark().parse_interactive(start=start)
    for tok in fed:
        parser.feed_token(tok)
    accepts = set(parser.accepts()) - {"$END"}
    if accepts & _CLOSING and len(accepts & _EXPRESSION_START) < _EXPRESSION_MIN:
        accepts -= _CONTINUING
    return accepts


def _unexpected(tok: Token, fed: list[Token], tokens: _Tokens, start: str, file: str) -> Diagnostic:
    expected = _accepted(fed, start)
    last = fed[-1] if fed else None
    notes: list[Note] = []
    if tok.type in ("$END", "_NL"):
        span = _after(last, file)
        if tokens.open and tok.type == "$END":
            opener = tokens.open[-1]
            notes.append(
                Note(message=f"this '{opener}' is never closed", span=token_span(opener, file))
            )
    else:
        span = token_span(tok, file)
    return Diagnostic(
        message=f"expected {expected_phrase(expected)} here, found {_found(tok)}",
        span=span,
        notes=tuple(notes),
        help=_hint(tok, fed, expected),
    )


def _hint(tok: Token, fed: list[Token], expected: set[str]) -> str | None:
    """A likely fix for common slips (a missing '->', a keyword used as a name)."""
    if (
        tok.type == "LPAR"
        and len(fed) >= 2
        and fed[-1].type == "NAME"
        and fed[-2].type in ("NAME", "RPAR")
    ):
        return f"add '->' before '{fed[-1]}' to apply it to the previous result"
    if tok.type in ("NAME", "NUMBER", "STRING", "LPAR") and "_NL" in expected:
        return "put each statement on its own line; join chain steps with '->'"
    if expected == {"COLON"} and tok.type in ("RPAR", "COMMA"):
        return (
            "block parameters need a type, as in `block b(c: int) (x)`; "
            "the tensor inputs go in the second pair of parentheses"
        )
    if tok.type == "EQUAL" and "IN" in expected:
        return "search dimensions are written `name in choice(...)`"
    if tok.type in _KEYWORDS and "NAME" in expected:
        return f"'{tok}' is a reserved word and cannot be used as a name"
    return None
