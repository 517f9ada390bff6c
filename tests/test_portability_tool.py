"""tools/portability.py runs a spec's model and chained train steps in every installed
runtime; here on a small spec and a few steps, each runtime only when installed."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT, SPECS

sys.path.insert(0, str(ROOT / "tools"))
import portability  # noqa: E402


@pytest.mark.parametrize("runtime", ["onnx.reference", "OpenVINO", "tract"])
def test_installed_runtime_agrees_with_onnxruntime_on_model_and_chained_train_steps(
    runtime: str,
) -> None:
    if importlib.util.find_spec(portability.RUNTIMES[runtime][0]) is None:
        pytest.skip(f"{runtime} is not installed")
    rows = portability.check_spec_file(SPECS / "spirals.dnn", ["onnxruntime", runtime], 3)
    assert [row.graph for row in rows] == ["model.onnx", "train step x1", "train step x3"]
    for row in rows:
        assert row.cells[runtime].ok(), (row.graph, str(row.cells[runtime]))
