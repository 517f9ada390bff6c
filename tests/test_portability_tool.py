"""tools/portability.py runs a spec's model and chained train steps in every installed
runtime; here on a small spec and a few steps, each runtime only when installed.

Each runtime runs in a child process: OpenVINO takes over SIGINT for the whole process
once it has compiled a model (Ctrl-C then kills it outright), which would break every
later test of Ctrl-C handling in the same interpreter."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import ROOT, SPECS

CHECK = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import portability
rows = portability.check_spec_file(Path(sys.argv[2]), ["onnxruntime", sys.argv[3]], 3)
print(json.dumps([[r.graph, r.cells[sys.argv[3]].ok(), str(r.cells[sys.argv[3]])] for r in rows]))
"""

sys.path.insert(0, str(ROOT / "tools"))
import portability  # noqa: E402


@pytest.mark.parametrize("runtime", ["onnx.reference", "OpenVINO", "tract"])
def test_installed_runtime_agrees_with_onnxruntime_on_model_and_chained_train_steps(
    runtime: str,
) -> None:
    if importlib.util.find_spec(portability.RUNTIMES[runtime][0]) is None:
        pytest.skip(f"{runtime} is not installed")
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(ROOT / "tools"), str(SPECS / "spirals.dnn"), runtime],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [graph for graph, _, _ in rows] == ["model.onnx", "train step x1", "train step x3"]
    for graph, ok, cell in rows:
        assert ok, (graph, cell)
