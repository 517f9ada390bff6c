"""docs/language.md stays true: its examples resolve and its tables match the registries."""

from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import ROOT

from dnnspec.frontend import load_spec_text

DOC = ROOT / "docs" / "language.md"
EXAMPLES = re.findall(r"```dnn\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example_{i}" for i in range(len(EXAMPLES))])
def test_every_example_in_the_language_reference_resolves(example: str) -> None:
    assert load_spec_text(example, "docs/language.md").model.nodes


def test_the_generated_tables_list_every_registered_name() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_language_tables", ROOT / "tools" / "gen_language_tables.py"
    )
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    document = DOC.read_text(encoding="utf-8")
    assert gen.updated(document) == document, "run tools/gen_language_tables.py"
