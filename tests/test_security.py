"""Nothing a user is handed (or finds in a writable directory) runs code: the parser never
reads a pickled parse-table cache, and its shipped tables are data that match the grammar.
A spec's imports read only .dnn regular files in its folder (or the shipped library), and
an imported file that is not spec text is never echoed."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import lark
import pytest

from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.syntax.parse import (
    TABLES,
    _lark,
    build_parser,
    grammar_digest,
    grammar_text,
    load_tables,
)

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.dnn"))


class _Plant:
    """Unpickling this creates the file named by `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_pickle_planted_in_the_cache_directory_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    folder = tmp_path / "cache" / "dnnspec"
    folder.mkdir(parents=True)
    version = f"{sys.version_info[0]}{sys.version_info[1]}"
    payload = b"0" * 64 + b"\n" + pickle.dumps(_Plant(marker))
    (folder / f"grammar-lark{lark.__version__}-py{version}.cache").write_bytes(payload)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "dnnspec", "check", str(ROOT / "specs" / "spirals.dnn")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


def test_shipped_parse_tables_record_the_current_grammar() -> None:
    text = (ROOT / "dnnspec" / "grammar" / TABLES).read_text(encoding="utf-8")
    assert load_tables(text)["grammar_sha256"] == grammar_digest(grammar_text()), (
        "the grammar changed: run tools/gen_parser_tables.py"
    )


def test_the_parser_from_shipped_tables_parses_like_one_built_from_the_grammar() -> None:
    built = build_parser()
    for path in SPECS:
        tokens = [(t.type, str(t)) for t in built.lex(path.read_text())]
        assert [(t.type, str(t)) for t in _lark().lex(path.read_text())] == tokens
    for start in ("start", "literal"):
        assert _lark().parse_interactive(start=start).accepts() == (
            built.parse_interactive(start=start).accepts()
        )


BODY = "\nmodel m {\n  input x: float32[N, 4]\n  dense(2)\n}\n"


def import_error(folder: Path, named: str) -> str:
    spec = folder / "s.dnn"
    spec.write_text(f'import "{named}"' + BODY)
    with pytest.raises(DiagnosticError) as caught:
        load_spec(spec)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.span is not None and diagnostic.span.line == 1
    return caught.value.render()


def test_an_import_outside_the_spec_folder_is_refused_without_reading_it(tmp_path: Path) -> None:
    (tmp_path / "secret.dnn").write_text("block leak(x) {\n  x\n}\n")
    inner = tmp_path / "project"
    inner.mkdir()
    (inner / "link.dnn").symlink_to(tmp_path / "secret.dnn")
    for named in ("../secret.dnn", str(tmp_path / "secret.dnn"), "link.dnn", "../nowhere.dnn"):
        assert "is outside the spec's folder" in import_error(inner, named), named
    assert "is not a .dnn file" in import_error(inner, "/proc/self/environ")


def test_an_imported_file_that_does_not_lex_is_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "env.dnn").write_text("HOME=/root\nTOKEN=s3cr3t$value\n")
    out = import_error(tmp_path, "env.dnn")
    assert "is not spec text: unexpected character '$' (line 2, column 13)" in out
    assert "s3cr3t" not in out and "HOME" not in out


def test_an_import_names_what_its_path_is(tmp_path: Path) -> None:
    (tmp_path / "dir.dnn").mkdir()
    os.mkfifo(tmp_path / "pipe.dnn")
    assert "'dir.dnn' is a directory, not a file" in import_error(tmp_path, "dir.dnn")
    assert "'pipe.dnn' is a FIFO (named pipe), not a file" in import_error(tmp_path, "pipe.dnn")
    assert "the import path is empty" in import_error(tmp_path, "")
    long = "x" * 300 + ".dnn"
    assert "the path is too long" in import_error(tmp_path, long)
