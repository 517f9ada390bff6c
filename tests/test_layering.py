"""Imports point one way down the pipeline: every package imports only from lower tiers.

`TIERS` is the table docs/architecture.md ("Layering") refers to. Each module's imports are
read from its syntax tree (function-level and `TYPE_CHECKING` imports included: they are
dependencies all the same), so an upward import fails here before it tangles the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dnnspec"

TIERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("files",),  # reading and writing user files: regular files, limits, atomic writes
    ("registry", "schema", "npz", "metadata"),  # metadata: the typed dnnspec.* keys of graphs
    ("ir",),
    ("graph",),  # the graph builder and RNG: what layers, training and autodiff emit into
    ("syntax",),
    # The registries, side by side: none imports another (the trainer, above them, reads
    # initialisers from layers/init.py and losses from training/).
    ("layers", "training", "data", "search"),
    ("autodiff",),
    ("resolve",),
    ("frontend",),  # text or file -> resolved Spec: parse, build, resolve
    ("check",),
    ("assemble",),  # lowering (assemble/lower.py), the three graphs, compiling a spec
    ("runtime",),
    # tune runs trials as `dnnspec train` processes (it needs the front end, not runtime);
    # tools are the formatter, inspect, export and plots
    ("tune", "tools"),
    ("api",),  # the one public surface
    ("cli",),
    ("__main__", "__init__"),  # `python -m dnnspec`; the package re-exports the API lazily
)
"""Units of `dnnspec` (a subpackage or top-level module) from the bottom of the pipeline up."""

CLI_MAY_IMPORT = {"api", "errors", "check.report", "tune.report"}
"""The CLI goes through the API; besides it, diagnostics (to render them), the check table
(which draws the `TypedModel` that `api.check_spec` returns) and the search table and
progress (which draw the `TuneResult` that `api.tune` returns)."""

RANK = {unit: rank for rank, tier in enumerate(TIERS) for unit in tier}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _unit(module: str) -> str:
    """`dnnspec.resolve.model` -> `resolve`; the package itself is `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every `dnnspec` import in a file."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "dnnspec":  # `from dnnspec import ir` imports the module dnnspec.ir
                found += [(node.lineno, f"dnnspec.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return [(line, name) for line, name in found if name.split(".")[0] == "dnnspec"]


FILES = sorted(PACKAGE.rglob("*.py"))


def _violations(path: Path) -> list[str]:
    unit = _unit(_module_name(path))
    problems = []
    for line, target in _imports(path):
        used = _unit(target)
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        if used not in RANK:
            problems.append(f"{where}: '{used}' has no tier in TIERS")
        elif unit == "cli" and used != unit:
            sub = ".".join(target.split(".")[1:3])
            if used not in CLI_MAY_IMPORT and sub not in CLI_MAY_IMPORT:
                problems.append(f"{where}: the CLI goes through dnnspec.api")
        elif used != unit and RANK[used] >= RANK[unit]:
            problems.append(
                f"{where}: '{unit}' (tier {RANK[unit]}) may not import '{used}' (tier {RANK[used]})"
            )
    return problems


def test_every_unit_of_the_package_has_a_tier() -> None:
    units = {_unit(_module_name(f)) for f in FILES}
    assert sorted(units - RANK.keys()) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_pipeline(path: Path) -> None:
    assert _violations(path) == []


def test_an_upward_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "dnnspec"
    (package / "layers").mkdir(parents=True)
    (package / "layers" / "__init__.py").write_text("")
    bad = package / "layers" / "x.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "from dnnspec.graph.builder import GraphBuilder\n"  # down: fine
        "from dnnspec.layers import base\n"  # its own package: fine
        "if TYPE_CHECKING:\n"
        "    from dnnspec import api\n"  # up, even if only for types
        "def f():\n"
        "    from ..runtime import run\n"  # up, relative, inside a function
    )
    cli = package / "cli.py"
    cli.write_text("from dnnspec.runtime.run import prepare\nfrom dnnspec.api import train\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", package)
    assert [v.split(": ", 1)[0] for v in _violations(bad)] == [
        "dnnspec/layers/x.py:5 imports dnnspec.api",
        "dnnspec/layers/x.py:7 imports dnnspec.runtime",
    ]
    assert _violations(cli) == [
        "dnnspec/cli.py:1 imports dnnspec.runtime.run: the CLI goes through dnnspec.api"
    ]


def test_only_the_api_drives_a_training_run() -> None:
    """Compiling, exporting and inspecting reach the graphs through the compile stage and
    data preparation, not through the module that owns the run directory and epoch loop."""
    importers = sorted(
        _module_name(path)
        for path in FILES
        if any(target == "dnnspec.runtime.run" for _, target in _imports(path))
    )
    assert importers == ["dnnspec.api"]
