"""Regenerate dnnspec/grammar/dnn.tables.json, the grammar's LALR tables as JSON.

    .venv/bin/python tools/gen_parser_tables.py          # rewrite the tables
    .venv/bin/python tools/gen_parser_tables.py --check  # exit 1 if they are stale

Loading these is several times faster than building the tables from the grammar in every
process (docs/performance.md). They ship as package data, so no parse-table cache is ever
read from (or unpickled out of) a user-writable directory. Lark numbers its states
differently from run to run, so freshness is judged by the grammar digest the file
records, not by its bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dnnspec.syntax.parse import (
    TABLES,
    build_parser,
    grammar_digest,
    grammar_text,
    load_tables,
    tables_json,
)

PATH = Path(__file__).resolve().parent.parent / "dnnspec" / "grammar" / TABLES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the tables are stale")
    args = parser.parse_args()
    if args.check:
        recorded = load_tables(PATH.read_text(encoding="utf-8")).get("grammar_sha256")
        if recorded != grammar_digest(grammar_text()):
            print(f"{PATH} is stale: run tools/gen_parser_tables.py", file=sys.stderr)
            return 1
        return 0

    PATH.write_text(tables_json(build_parser()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
