"""tools/portability.py runs a spec's model and chained train steps in every installed
runtime, each in a child process with a deadline per cell. Here on the small specs (an
MLP with dropout, a Scan-based LSTM, a regression) and a few steps, each runtime only when
installed; `make portability` runs the full table (every spec, 50 steps)."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, SPECS
from onnx import TensorProto, helper

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


def two_outputs() -> onnx.ModelProto:
    """y = a + b and z = a * b, at the opset and IR version dnnspec writes."""
    from dnnspec.graph.builder import IR_VERSION, OPSET

    a, b, y, z = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "abyz")
    nodes = [helper.make_node("Add", ["a", "b"], ["y"]), helper.make_node("Mul", ["a", "b"], ["z"])]
    graph = helper.make_graph(nodes, "two", [a, b], [y, z])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )


@pytest.mark.parametrize("runtime", list(portability.RUNTIMES))
def test_every_runtime_opens_a_graph_as_dnnspecs_backends_do(runtime: str) -> None:
    """Each runtime is an `Inference` (runtime/backend.py): `run` hands back every output
    in order, or the ones asked for."""
    module, opened = portability.RUNTIMES[runtime]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    graph = opened.open(two_outputs(), "cpu", threads=1)
    feeds = {"a": np.array([1, 2], np.float32), "b": np.array([3, 4], np.float32)}
    y, z = graph.run(None, feeds)
    assert y.tolist() == [4, 6] and z.tolist() == [3, 8]
    (only,) = graph.run(["z"], feeds)
    assert only.tolist() == [3, 8]


def test_onnxruntime_runs_in_the_sessions_dnnspec_itself_opens() -> None:
    """The baseline is dnnspec's onnxruntime backend, not a session of the tool's own:
    spinning off, the threads asked for."""
    import onnxruntime as ort

    session = portability.RUNTIMES["onnxruntime"][1].open(two_outputs(), "cpu", threads=1)
    assert isinstance(session, ort.InferenceSession)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
