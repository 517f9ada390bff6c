"""What a command imports: `dnnspec --help` only the parser; `dnnspec check` what checking
the spec and its data needs, never onnxruntime, the training loop, export, tune or
plotting. Each process pays for every module it imports (docs/performance.md,
"Process start"); the sets are checked, not the times, which depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SPECS

RUN = """
import json, sys
from dnnspec.cli import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
with open(sys.argv[1], "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def imported_by(tmp_path: Path, *argv: str) -> set[str]:
    """The modules `dnnspec ARGV` has loaded when it ends, in a fresh interpreter."""
    found = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", RUN, str(found), *argv],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    modules: list[str] = json.loads(found.read_text())
    return set(modules)


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_loads_the_parser_alone(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "--help")
    assert packages(modules) & {"numpy", "rich", "pydantic", "onnx", "onnxruntime", "lark"} == set()
    ours = {m for m in modules if m.split(".")[0] == "dnnspec"}
    assert ours <= {"dnnspec", "dnnspec.cli", "dnnspec.cli.app", "dnnspec.cli.commands",
                    "dnnspec.cli.common"}  # fmt: skip


def test_check_loads_neither_onnxruntime_nor_training_nor_the_tools(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "check", str(SPECS / "digits_mlp.dnn"))
    assert "dnnspec.check.shapes" in modules  # it did check the spec
    assert packages(modules) & {"onnxruntime", "matplotlib", "optuna", "ray", "torch"} == set()
    later = ("dnnspec.tools", "dnnspec.tune", "dnnspec.runtime.run", "dnnspec.runtime.trainer",
             "dnnspec.runtime.backends", "dnnspec.runtime.session")  # fmt: skip
    assert {m for m in modules if m.startswith(later)} == set()
