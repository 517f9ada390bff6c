"""tools/portability.py runs a spec's model and chained train steps in every installed
runtime, each in a child process with a deadline per cell. Here on the small specs (an
MLP with dropout, a Scan-based LSTM, a regression) and a few steps, each runtime only when
installed; `make portability` runs the full table (every spec, 50 steps)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import ROOT, SPECS

sys.path.insert(0, str(ROOT / "tools"))
import portability  # noqa: E402

SMALL = ["digits_mlp", "sequence_lstm", "regression"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = portability.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_every_installed_runtime_agrees_with_onnxruntime_on_model_and_train_steps(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtimes = [
        r
        for r in ["onnx.reference", "OpenVINO", "tract"]
        if importlib.util.find_spec(portability.RUNTIMES[r][0]) is not None
    ]
    chosen = [arg for r in runtimes for arg in ("--runtime", r)]
    specs = [str(SPECS / f"{name}.dnn") for name in SMALL]
    code, report = _run(capsys, *specs, *chosen, "--steps", "3", "--timeout", "120")
    graphs = [(row["spec"], row["graph"].split(" (")[0]) for row in report["rows"]]
    each, chained = "train x3, each from onnxruntime's state", "train x3 chained"
    assert graphs == [
        (name, graph) for name in SMALL for graph in ["model.onnx", "train step x1", each, chained]
    ]
    for row in report["rows"]:
        assert set(row["cells"]) == set(runtimes)
        for runtime, cell in row["cells"].items():
            assert cell["ok"], (row["spec"], row["graph"], runtime, cell)
    assert code == 0
    assert all(report["versions"][r] != "?" for r in ["onnxruntime", *runtimes])


def test_a_runtime_past_its_deadline_is_a_failed_timeout_cell(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = str(SPECS / "spirals.dnn")
    code, report = _run(
        capsys, spec, "--runtime", "onnx.reference", "--steps", "2", "--timeout", "0.001"
    )
    assert code == 1
    cells = [row["cells"]["onnx.reference"] for row in report["rows"]]
    assert len(cells) == 4
    for cell in cells:
        assert not cell["ok"]
        assert "timeout after 0.001s" in cell["error"]


def test_the_table_names_each_runtime_and_the_output_that_differs_most() -> None:
    rows = [
        portability.Row("s", "model.onnx", {"tract": portability.Cell(diff=0.5, worst="output")}),
        portability.Row("s", "train step x1", {"tract": portability.Cell(error="fails: x")}),
    ]
    text = portability.table(rows, ["onnxruntime", "tract"], markdown=True)
    assert text.splitlines()[0] == "| spec | graph | tract |"
    assert "differs: 5.0e-01 in output" in text
    assert "fails: x" in text
    assert "s: green in 1 (onnxruntime)" in portability.summary(rows, ["onnxruntime", "tract"])


def test_an_unknown_runtime_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        portability.main([str(SPECS / "spirals.dnn"), "--runtime", "nonesuch"])
    assert exit_.value.code == 2
    assert "nonesuch" in capsys.readouterr().err
