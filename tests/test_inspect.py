"""`dnnspec inspect`: ops, shapes, parameters and what a train step carries, counted from
the graphs themselves; DOT with one cluster per layer of the spec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydot
import pytest

from dnnspec.api import check_spec, draw_graph, inspect, train
from dnnspec.errors import DiagnosticError

SPECS = Path(__file__).resolve().parent.parent / "specs"


def cluster_labels(path: Path) -> set[str]:
    graphs = pydot.graph_from_dot_file(str(path))
    assert graphs is not None and len(graphs) == 1
    return {str(sub.get_attributes()["label"]).strip('"') for sub in graphs[0].get_subgraphs()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "residual"
    train(SPECS / "residual_mlp.dnn", out=out, epochs=1, device="cpu")
    return out


def test_a_run_shows_each_graph_with_the_parameters_check_counts(run: Path) -> None:
    model, step, evaluation = inspect(run)
    total = check_spec(SPECS / "residual_mlp.dnn").param_count()
    assert model.path.endswith("model.onnx") and model.parameter_elements == total
    assert step.parameter_elements == total and evaluation.parameter_elements == total
    assert (model.opset, model.ir_version) == ({"ai.onnx": 21}, 10)
    assert [v.text() for v in model.inputs] == ["x: float32[N, 64]"]
    assert [v.text() for v in model.outputs] == ["output: float32[N, 10]"]
    assert model.ops["Gemm"] == 8 and sum(model.ops.values()) == model.nodes
    assert model.metadata["dnnspec.model"] == "residual_mlp"


def test_a_train_step_counts_parameters_state_and_backward_nodes_apart(run: Path) -> None:
    step = inspect(run / "train_step.onnx")[0]
    assert len(step.parameters) == 16
    assert set(step.state.values()) == {"square_avg"}  # rmsprop's one state tensor
    assert step.state_elements == step.parameter_elements
    roles = step.node_kinds
    assert roles["forward"] > 0 and roles["backward"] > 0 and roles["loss/update"] > 0
    assert sum(roles.values()) == step.nodes


def test_the_dot_drawing_parses_back_with_a_cluster_per_layer(run: Path, tmp_path: Path) -> None:
    labels = cluster_labels(draw_graph(run, tmp_path / "model.dot"))
    assert {"dense_1", "residual_1.dense_1", "residual_3.dense_2", "dense_2"} <= labels
    step = cluster_labels(draw_graph(run, tmp_path / "step.dot", graph="train"))
    assert "grad residual_2.dense_1" in step and "dense_1" in step


def test_a_picture_without_graphviz_names_what_to_install(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DiagnosticError) as exc:
        draw_graph(run, tmp_path / "model.svg")
    assert "Graphviz" in exc.value.render()


def test_a_spec_is_inspected_without_a_run(tmp_path: Path) -> None:
    graphs = inspect(SPECS / "digits_mlp.dnn")
    assert [g.graph for g in graphs] == ["digits_mlp", "train_step", "eval_step"]
    assert graphs[0].parameter_elements == check_spec(SPECS / "digits_mlp.dnn").param_count()


def test_inspect_json_and_a_file_that_is_not_onnx(run: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dnnspec", "inspect", str(run / "model.onnx"), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["graphs"][0]["ops"]["Gemm"] == 8
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a model")
    bad = subprocess.run(
        [sys.executable, "-m", "dnnspec", "inspect", str(junk)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "is not an ONNX model" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_reader_that_leaves_early_ends_inspect_quietly(run: Path) -> None:
    """`dnnspec inspect --json | head`: the closed pipe is no traceback, and the status is
    a program's stopped by SIGPIPE."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnnspec", "inspect", str(run), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_negative_dimension_is_an_invalid_model_not_a_negative_count(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [0.0] * 6)
    weight.dims[:] = [-2, 3]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    odd_x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    node = helper.make_node("Add", ["x", "w"], ["y"])
    cases = [([weight], x, "'w' has dimension -2"), ([], odd_x, "'x' has dimension -4")]
    for inits, given, where in cases:
        graph = helper.make_graph([node], "g", [given], [y], initializer=inits)
        path = tmp_path / "neg.onnx"
        path.write_bytes(helper.make_model(graph).SerializeToString())
        with pytest.raises(DiagnosticError) as info:
            inspect(path)
        assert where in info.value.diagnostics[0].message
