"""Entry points of the front end: spec text or file -> syntax IR -> resolved `Spec`.

Every later stage (check, compile, train, tune, the CLI and the Python API) starts here.
Any mistake in the spec, its `--set` overrides or the file itself surfaces as one
`DiagnosticError` carrying every problem found, with the spec text attached so that it
renders with source lines even for specs that never lived in a file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from dnnspec.errors import Diagnostic, DiagnosticError, Note, SourceMap, Span, did_you_mean, error
from dnnspec.files import MiB, kind_of, os_reason, read_bytes
from dnnspec.ir import Spec
from dnnspec.resolve import Scalar, resolve
from dnnspec.syntax import ast
from dnnspec.syntax.build import build
from dnnspec.syntax.parse import check_lexes, parse_tree

MAX_SPEC_BYTES = 1 * MiB
"""Largest spec file read; real specs are a few KiB."""

STDLIB = "stdlib"
"""Package folder of the standard library: blocks written in the language, one module per
file (`import transformer` reads stdlib/transformer.dnn)."""

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
    if literal.span.end_col <= offset + len(text.rstrip()):
        # The grammar stopped early: `#` starts a comment in a spec, but on the command
        # line it is part of the value (`path=runs#2/train.csv`), so the text is a string.
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
        return resolve(with_imports(parse_text(text, file), file, sources), file, values)
    except DiagnosticError as exc:
        exc.sources = sources
        raise


def stdlib_modules() -> list[str]:
    """The standard library's module names (`import transformer`)."""
    folder = resources.files("dnnspec") / STDLIB
    return sorted(p.name.removesuffix(".dnn") for p in folder.iterdir() if p.name.endswith(".dnn"))


def stdlib_path(name: str) -> Path:
    """The file of standard-library module `name` (it is read like any spec file)."""
    return Path(str(resources.files("dnnspec") / STDLIB / f"{name}.dnn"))


def with_imports(spec: ast.SpecFile, file: str, sources: SourceMap) -> ast.SpecFile:
    """`spec` with each import replaced by the blocks of the library it names (libraries
    may import others; each is read once), the imported blocks first. A library holds
    blocks and imports only. Their texts join `sources`, so errors show their lines."""
    blocks: list[ast.TopItem] = []
    seen: set[Path] = set()
    problems: list[Diagnostic] = []
    roots = (_folder(file), Path(str(resources.files("dnnspec") / STDLIB)).resolve())

    def visit(items: tuple[ast.TopItem, ...], where: str) -> None:
        for item in items:
            if not isinstance(item, ast.Import):
                continue
            path = _library(item, where, roots, problems)
            if path is None or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            text = _library_text(path, item)
            sources.add(str(path), text)
            library = parse_text(text, str(path))
            for other in library.items:
                if not isinstance(other, ast.Import | ast.BlockDef):
                    kind = type(other).__name__.removesuffix("Decl").removesuffix("Def")
                    problems.append(
                        Diagnostic(
                            message=f"a library holds blocks and imports only; this "
                            f"{kind.lower()} belongs in a spec",
                            span=other.span,
                            notes=(Note(message="imported here", span=item.span),),
                        )
                    )
            visit(library.items, str(path))
            blocks.extend(i for i in library.items if isinstance(i, ast.BlockDef))

    visit(spec.items, file)
    if problems:
        raise DiagnosticError(problems)
    own = tuple(i for i in spec.items if not isinstance(i, ast.Import))
    return spec.model_copy(update={"items": (*blocks, *own)})


def _folder(file: str) -> Path:
    """The folder a spec's imports are confined to: its file's (in-memory specs: the
    working directory's)."""
    return (Path.cwd() if file.startswith("<") else Path(file).parent).resolve()


def _shown(path: str) -> str:
    """A path for a message, its middle left out when it is very long."""
    return path if len(path) <= 120 else f"{path[:60]}...{path[-40:]}"


def _library_text(path: Path, item: ast.Import) -> str:
    """An imported file's text. If it does not lex, the error is at the import and shows
    none of the file's lines: an import naming something other than a spec must not
    print what it holds."""
    text = read_spec_text(path)
    try:
        check_lexes(text, str(path))
    except DiagnosticError as exc:
        module = item.module
        named = module.value if isinstance(module, ast.String) else module.id
        place = exc.diagnostics[0].span
        at = f" (line {place.line}, column {place.col})" if place else ""
        raise error(
            f"imported file '{_shown(named)}' is not spec text: {exc.diagnostics[0].message}{at}",
            item.module.span,
        ) from None
    return text


def _library(
    item: ast.Import, where: str, roots: tuple[Path, ...], problems: list[Diagnostic]
) -> Path | None:
    """The file an import names: a standard-library module, or a `.dnn` regular file
    (relative to the importing file's folder) inside the spec's folder or the library's."""
    module = item.module
    if isinstance(module, ast.Name):
        if module.id in stdlib_modules():
            return stdlib_path(module.id)
        problems.append(
            Diagnostic(
                message=f"no standard-library module '{module.id}'",
                span=module.span,
                help=did_you_mean(module.id, stdlib_modules())
                or "modules: " + ", ".join(stdlib_modules()) + '; import a file as "path.dnn"',
            )
        )
        return None
    named, span = module.value, module.span
    path = Path(named)
    if not path.is_absolute() and not where.startswith("<"):
        path = Path(where).parent / path
    problem = _import_problem(named, path, roots)
    if problem is not None:
        problems.append(problem.model_copy(update={"span": span}))
        return None
    return path


def _import_problem(named: str, path: Path, roots: tuple[Path, ...]) -> Diagnostic | None:
    """Why `path` (written `named`) cannot be imported, or None; the caller locates it."""
    shown = _shown(named)
    if not named:
        return Diagnostic(message="the import path is empty", help='write import "blocks.dnn"')
    if not named.endswith(".dnn"):
        return Diagnostic(
            message=f"imported file '{shown}' is not a .dnn file",
            help="a library is a .dnn file of blocks; standard-library modules are "
            "imported by name: " + ", ".join(stdlib_modules()),
        )
    try:
        inside = any(path.resolve().is_relative_to(root) for root in roots)
        if not inside:  # checked first: nothing is said about files outside
            return Diagnostic(
                message=f"imported file '{shown}' is outside the spec's folder",
                help=f"imports read .dnn files in '{roots[0]}' and the folders below it",
            )
        info = os.stat(path)
    except FileNotFoundError:
        return Diagnostic(
            message=f"imported file '{shown}' does not exist",
            notes=(Note(message=f"looked for '{_shown(str(path))}'"),),
            help="a relative path is read from the importing file's folder",
        )
    except (OSError, RuntimeError, ValueError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
        return Diagnostic(message=f"cannot read imported file '{shown}': {reason}")
    if not stat.S_ISREG(info.st_mode):
        return Diagnostic(message=f"imported file '{shown}' is {kind_of(info.st_mode)}, not a file")
    return None


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
