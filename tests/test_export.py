"""`dnnspec export`: every example at every opset from 17 to the newest, its metadata read
back, the operators rewritten across opset boundaries, located opset errors, float16
within its tolerance, and the exported train step driven by the documented driver."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import EXAMPLES, ROOT
from onnx import TensorProto, helper, numpy_helper

import dnnspec
from dnnspec.assemble.describe import spec_hash
from dnnspec.check.shapes import check_spec
from dnnspec.cli import main
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.ir import Spec
from dnnspec.runtime.model_file import read_model
from dnnspec.runtime.prepare import prepare
from dnnspec.tools import export as export_module
from dnnspec.tools.checks import HALF_TOLERANCE, difference
from dnnspec.tools.opset import MIN_OPSET, OpsetError, convert, newest_opset

OPSETS = list(range(MIN_OPSET, newest_opset() + 1))


def test_the_newest_opset_is_what_onnxruntime_loads() -> None:
    assert newest_opset() >= 21
    assert newest_opset() <= onnx.defs.onnx_opset_version()


@pytest.fixture(scope="module")
def sources() -> dict[str, export_module._Source]:
    """Each example's initialised model, built once for every opset."""
    return {}


@pytest.mark.parametrize("spec_path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_exports_at_every_opset_with_its_metadata(
    spec_path: Path, tmp_path: Path, sources: dict[str, export_module._Source]
) -> None:
    source = sources.setdefault(spec_path.stem, export_module._from_spec(spec_path))
    for opset in OPSETS:
        out = tmp_path / f"m{opset}.onnx"
        result = export_module._export_model(source, out, opset, fp16=False)
        assert result.checks[0].difference <= 1e-4 and not result.trained
        model = onnx.load(out)
        assert [o.version for o in model.opset_import] == [opset]
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        spec = Spec.model_validate_json(meta["dnnspec.spec"])
        assert spec_hash(check_spec(spec)) == meta["dnnspec.spec_hash"]
        assert meta["dnnspec.trained"] == "false" and meta["dnnspec.opset"] == str(opset)
        assert model.producer_name == "dnnspec"
        graph_inputs = json.loads(meta["dnnspec.graph_inputs"])
        assert [i["name"] for i in json.loads(meta["dnnspec.inputs"])] == [
            d.name for d in spec.model.inputs
        ]  # every model input, in the spec's order
        for declared, graph_input, value in zip(
            spec.model.inputs, graph_inputs, model.graph.input, strict=True
        ):
            assert graph_input["name"] == declared.name
            assert graph_input["shape"] == list(declared.dims) and graph_input["shape"][0] == "N"
            assert value.type.tensor_type.shape.dim[0].dim_param == "N"
        graph_outputs = json.loads(meta["dnnspec.graph_outputs"])
        if "dnnspec.outputs" in meta:  # named outputs: each as its metadata declares it
            named = json.loads(meta["dnnspec.outputs"])
            assert [(o["name"], o["shape"]) for o in graph_outputs] == [
                (o["name"], o["shape"]) for o in named
            ]
        else:
            (graph_output,) = graph_outputs
            assert graph_output["shape"] == json.loads(meta["dnnspec.output_shape"])
        read = read_model(out)  # what `predict` checks too
        assert [i.name for i in read.inputs] == [d.name for d in spec.model.inputs]
    if "dnnspec.class_labels" in meta:
        assert len(json.loads(meta["dnnspec.class_labels"])) == graph_outputs[0]["shape"][-1]


def _model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: list[str | int]
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    outs = [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, [f"d{i}" for i in range(len(shape))])
        for o in nodes[-1].output
    ]
    graph = helper.make_graph(nodes, "g", [x], outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_operators_that_changed_are_rewritten_and_compute_the_same() -> None:
    """ReduceMean-18's axes input becomes the attribute (computed axes: ReduceSum / count),
    Pad-18's axes become pads over every axis, Split-18's unequal num_outputs explicit sizes."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    pads = numpy_helper.from_array(np.array([1, 2], np.int64), "pads")
    pad_axes = numpy_helper.from_array(np.array([-1], np.int64), "pad_axes")
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="a/ReduceMean", keepdims=1),
        helper.make_node("Shape", ["x"], ["shape"], name="b/Shape", start=-1),
        helper.make_node("Div", ["shape", "shape"], ["one"], name="b/Div"),
        helper.make_node("ReduceMean", ["x", "one"], ["m0"], name="b/ReduceMean", keepdims=1),
        helper.make_node(
            "ReduceSumSquare", ["x", "one"], ["s0"], name="b/ReduceSumSquare", keepdims=0
        ),
        helper.make_node("Pad", ["x", "pads", "", "pad_axes"], ["p"], name="c/Pad"),
        helper.make_node("Split", ["p"], ["q1", "q2", "q3"], name="d/Split", axis=1, num_outputs=3),
        helper.make_node("Concat", ["m", "m0", "q3"], ["cat"], name="e/Concat", axis=1),
        helper.make_node("Unsqueeze", ["s0", "one"], ["s1"], name="e/Unsqueeze"),
        helper.make_node("Concat", ["cat", "s1", "q1"], ["out"], name="e/Concat2", axis=1),
    ]
    model = _model(nodes, [axes, pads, pad_axes], ["N", 4])
    low = convert(model, 17)
    onnx.checker.check_model(low, full_check=True)
    ops = {n.name: n for n in low.graph.node}
    assert len(ops["a/ReduceMean"].input) == 1
    assert [a.ints for a in ops["a/ReduceMean"].attribute if a.name == "axes"] == [[1]]
    assert "b/ReduceMean" not in ops and "b/ReduceMean/sum" in ops
    assert len(ops["c/Pad"].input) == 2 and len(ops["d/Split"].input) == 2
    x = {"x": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)}
    np.testing.assert_allclose(_ort(low, x)[0], _ort(model, x)[0], rtol=1e-6)
    for opset in OPSETS:
        onnx.checker.check_model(convert(model, opset), full_check=True)


def test_a_construct_newer_than_the_opset_is_a_located_error_naming_its_layer(
    sources: dict[str, export_module._Source],
) -> None:
    path = ROOT / "specs" / "digits_mlp.dnn"
    source = sources.setdefault(path.stem, export_module._from_spec(path))
    model = onnx.ModelProto()
    model.CopyFrom(source.model)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.name = "Gelu", relu.name.replace("Relu", "Gelu")
    layer = relu.name.split("/")[0]
    with pytest.raises(DiagnosticError) as info:
        export_module._at_opset(model, 19, source.spec, "model")
    (diag,) = info.value.diagnostics
    node = next(n for n in source.spec.model.nodes if n.name == layer)
    assert f"{layer} ({node.layer}) cannot be written at opset 19" in diag.message
    assert "Gelu arrived in opset 20" in diag.message
    assert diag.span == node.span and diag.help == "export with --opset 20 or newer"
    assert [
        o.version for o in export_module._at_opset(model, 20, source.spec, "m").opset_import
    ] == [20]


def test_an_op_changed_without_a_known_conversion_is_refused() -> None:
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool/AveragePool",
                            kernel_shape=[2], dilations=[2])  # fmt: skip
    model = _model([node], [], [1, 1, 8])
    with pytest.raises(OpsetError, match="dilations needs opset 19") as info:
        convert(model, 18)
    assert info.value.needs == 19
    onnx.checker.check_model(convert(model, 19), full_check=True)


def test_an_opset_outside_the_range_is_a_command_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = str(ROOT / "specs" / "regression.dnn")
    out = str(tmp_path / "m.onnx")
    assert main(["export", spec, "--out", out, "--opset", "16"]) == 2
    err = capsys.readouterr().err
    assert f"--opset 16 is outside the opsets dnnspec writes (17 to {newest_opset()}" in err
    assert main(["export", spec, "--out", str(tmp_path / "m.txt")]) == 2
    assert "written as an .onnx file" in capsys.readouterr().err


PREPROCESSED = """model m {{
  input x: float32[N, 3]
  dense(16) -> relu
  dense(2)
}}
train {{
  data file(path = "{path}", validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 16
  epochs 3
  preprocess standardize
}}
"""


def test_fp16_export_computes_in_float16_within_its_tolerance_of_float32(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trained weights in float16, inputs and outputs float32, the preprocessing of
    features in the thousands kept in float32 (float16 steps by 4 at 5000)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 3))
    x = (z * np.array([1000.0, 0.001, 1.0]) + np.array([5000.0, 0.0, -3.0])).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(z[:, 0] + z[:, 1] > 0).astype(np.int64))
    spec = tmp_path / "m.dnn"
    spec.write_text(PREPROCESSED.format(path=tmp_path / "d.npz"))
    run = dnnspec.train(spec, out=tmp_path / "run", plot=False)
    assert (
        main(["export", str(run.run_dir), "--out", str(tmp_path / "h.onnx"), "--fp16", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == "float16" and result["trained"] is True
    half, full = onnx.load(tmp_path / "h.onnx"), onnx.load(run.run_dir / "model.onnx")
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    weights = {t.name: t for t in half.graph.initializer if t.name.startswith("dense_")}
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights.values())
    first = next(n for n in half.graph.node if n.op_type == "Gemm")
    assert first.input[0].endswith(".fp16")  # the standardized features, cast after scaling
    feeds = {"x": x[:50]}
    gap = difference(_ort(half, feeds)[0], _ort(full, feeds)[0])
    assert gap <= HALF_TOLERANCE
    assert {c["against"] for c in result["checks"]} == {"onnx.reference", "float32 model"}


def test_fp16_of_every_small_example_stays_within_tolerance(
    tmp_path: Path, sources: dict[str, export_module._Source]
) -> None:
    for name in ("digits_cnn", "sequence_gru", "char_transformer"):
        path = ROOT / "specs" / f"{name}.dnn"
        source = sources.setdefault(name, export_module._from_spec(path))
        result = export_module._export_model(source, tmp_path / f"{name}.onnx", 18, fp16=True)
        assert result.precision == "float16"
        assert all(c.difference <= c.tolerance for c in result.checks), result.checks


DRIVEN = """model m {
  input p: float32[N, 2]
  dense(16) -> tanh -> dropout(0.1)
  dense(2)
}
train {
  data spirals(samples = 240, noise = 0.1, validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  schedule cosine(warmup = 1 epoch)
  batch 32
  epochs 3
  metrics accuracy
  seed 3
}
"""


def _driver(tmp_path: Path) -> Path:
    text = (ROOT / "docs" / "training-graph.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    path = tmp_path / "driver.py"
    path.write_text(code)
    return path


def _drive(driver: Path, folder: Path, data: Path, epochs: int, out: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(driver), str(folder), str(data), str(epochs), str(out)],
        capture_output=True, text=True, check=False, env=env, cwd=out.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_documented_driver_trains_the_exported_step_as_dnnspec_train_does(
    tmp_path: Path,
) -> None:
    """The driver in docs/training-graph.md (plain onnxruntime, no dnnspec import) on the
    spec's exported step: each epoch's loss and the final weights as `dnnspec train`'s;
    then the run's own export continues from its checkpoint as training on would."""
    spec = tmp_path / "m.dnn"
    spec.write_text(DRIVEN)
    driver = _driver(tmp_path)
    exported = dnnspec.export(spec, tmp_path / "step", opset=18, train=True)
    assert set(exported.files) == {"train_step", "eval_step", "state", "interface"}
    interface = json.loads((tmp_path / "step" / "interface.json").read_text())
    assert interface["steps_per_epoch"] == 6 and interface["total_steps"] == 18
    prep = prepare(load_spec(spec, {}))
    np.savez(tmp_path / "data.npz", x=prep.train_data.x, y=prep.train_data.y)

    run = dnnspec.train(spec, out=tmp_path / "run", plot=False)
    logged = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    driven = _drive(driver, tmp_path / "step", tmp_path / "data.npz", 3, tmp_path / "t.npz")
    assert [d["step"] for d in driven] == [6, 12, 18]
    np.testing.assert_allclose([d["loss"] for d in driven], [r["loss"] for r in logged], rtol=1e-5)
    trained = np.load(tmp_path / "t.npz")
    weights = read_model(run.run_dir / "model.onnx").weights()
    for name, value in weights.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-4, atol=1e-6)

    # a run stopped after 2 epochs, exported and driven 1 more: the same third epoch
    paused = tmp_path / "paused"
    dnnspec.train(spec, out=paused, stop_after=2, plot=False)
    dnnspec.export(paused, tmp_path / "resumed", train=True)
    assert int(np.load(tmp_path / "resumed" / "state.npz")["step"]) == 12
    (third,) = _drive(driver, tmp_path / "resumed", tmp_path / "data.npz", 1, tmp_path / "r.npz")
    assert third["epoch"] == 3 and third["step"] == 18
    np.testing.assert_allclose(third["loss"], logged[2]["loss"], rtol=1e-5)


def test_the_interface_names_every_input_and_output_with_its_role() -> None:
    program = dnnspec.compile(ROOT / "specs" / "digits_cnn.dnn")
    meta = {p.key: p.value for p in program.train_step.metadata_props}
    interface = json.loads(meta["dnnspec.interface"])
    graph = program.train_step.graph
    assert [i["name"] for i in interface["inputs"]] == [i.name for i in graph.input]
    assert [o["name"] for o in interface["outputs"]] == [o.name for o in graph.output]
    roles = {i["name"]: i for i in interface["inputs"]}
    assert roles["step"]["role"] == "step" and roles["step"]["dtype"] == "int64"
    assert roles["target"]["dtype"] == "int64" and roles["target"]["shape"] == ["N"]
    kinds = {i["kind"] for i in interface["inputs"] if i["role"] == "optimizer_state"}
    assert kinds == set(interface["optimizer"]["state"]) == {"m_sum", "v_sum"}
    states = [i for i in interface["inputs"] if i["role"] == "layer_state"]
    assert {s["param"] for s in states} == {"running_mean", "running_var"}
    for entry in interface["inputs"]:
        if "param" in entry:
            assert entry["name"].startswith(f"{entry['node']}.{entry['param']}")
    nexts = {o["replaces"] for o in interface["outputs"] if o["role"] == "next"}
    carried = {i["name"] for i in interface["inputs"] if i["role"] not in
               ("step", "seed", "input", "target")}  # fmt: skip
    assert nexts == carried
    assert (
        interface["steps_per_epoch"]
        and interface["total_steps"]
        and interface["step_starts_at"] == 0
    )


def test_the_documented_optimizer_states_are_the_registry_s() -> None:
    from dnnspec.training.optim import OPTIMIZERS

    text = (ROOT / "docs" / "training-graph.md").read_text()
    for name in OPTIMIZERS.names():
        defaults = {a.name: a.default for a in OPTIMIZERS.get(name).signature.args}
        row = next(
            line for line in text.splitlines() if line.startswith("|") and f"`{name}`" in line
        )
        for kind in OPTIMIZERS.get(name).state(defaults):
            assert f"`{kind}`" in row


CONSTANT_FILE = """model m {{
  input x: float32[N, 4]
  dense(8) -> relu
  dense(3)
}}
train {{
  data file(path = "{path}", validation = 0.2)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  schedule {schedule}
  batch 8
  epochs 2
}}
"""


def test_compile_needs_no_data_when_the_spec_declares_its_shapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "m.dnn"
    spec.write_text(CONSTANT_FILE.format(path=tmp_path / "absent.csv", schedule="constant"))
    # the data file does not exist: nothing needs it
    assert main(["compile", str(spec), "--out", str(tmp_path / "out"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["read_data"] is None
    assert any("class names" in what for what in payload["from_data"])
    meta = {p.key: p.value for p in onnx.load(payload["model"]).metadata_props}
    assert json.loads(meta["dnnspec.class_labels"]) == ["0", "1", "2"]
    interface = json.loads(
        {p.key: p.value for p in onnx.load(payload["train_step"]).metadata_props}[
            "dnnspec.interface"
        ]
    )
    assert interface["steps_per_epoch"] is None

    spec.write_text(CONSTANT_FILE.format(path=tmp_path / "absent.csv", schedule="cosine"))
    assert main(["compile", str(spec), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "the data is read because the schedule `cosine`" in err


def test_the_cli_docs_show_every_command_with_an_example() -> None:
    from dnnspec.cli import COMMANDS

    text = (ROOT / "docs" / "cli.md").read_text()
    blocks = re.findall(r"```\w*\n(.*?)```", text, re.S)
    synopsis, examples = blocks[0], "\n".join(blocks[1:])
    headings = " ".join(re.findall(r"^## (.*)$", text, re.M)).split()
    for command in COMMANDS:
        assert re.search(rf"^dnnspec {command} ", synopsis, re.M), command
        assert command in headings, command
        assert re.search(rf"^(\$ )?dnnspec {command} ", examples, re.M), command


def test_a_disagreement_between_runtimes_fails_the_export_with_the_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: dict[str, export_module._Source]
) -> None:
    path = ROOT / "specs" / "regression.dnn"
    source = sources.setdefault(path.stem, export_module._from_spec(path))
    from dnnspec.tools.reference import run_reference as honest

    def off(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v + 1e-3 for k, v in honest(model, feeds).items()}

    monkeypatch.setattr("dnnspec.tools.checks.run_reference", off)
    with pytest.raises(DiagnosticError, match=r"output 'output' differs by 0\.001 \(tolerance"):
        export_module._export_model(source, tmp_path / "m.onnx", 21, fp16=False)
    assert not (tmp_path / "m.onnx").exists()


def test_a_weight_beyond_float16_range_is_refused(
    sources: dict[str, export_module._Source],
) -> None:
    path = ROOT / "specs" / "regression.dnn"
    source = sources.setdefault(path.stem, export_module._from_spec(path))
    model = onnx.ModelProto()
    model.CopyFrom(source.model)
    weight = next(t for t in model.graph.initializer if t.name.endswith(".weight"))
    big = numpy_helper.to_array(weight) * 0 + 1e6
    weight.CopyFrom(numpy_helper.from_array(big.astype(np.float32), weight.name))
    with pytest.raises(DiagnosticError, match=f"weight '{weight.name}' holds 1e\\+06"):
        export_module.half_model(model, source.typed)


@pytest.mark.parametrize("spec_path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_s_train_step_exports_at_the_oldest_and_newest_opset(
    spec_path: Path, tmp_path: Path, sources: dict[str, export_module._Source]
) -> None:
    """The train and eval steps hold more operators than the model (Pad with axes from
    Slice's gradient, reductions over computed axes, loops): each is checked at 17 and
    the newest opset, onnxruntime against onnx.reference."""
    source = sources.setdefault(spec_path.stem, export_module._from_spec(spec_path))
    for opset in (MIN_OPSET, newest_opset()):
        result = export_module._export_train(source, tmp_path / str(opset), opset)
        assert [c.graph for c in result.checks] == ["train step", "eval step"]
        step = onnx.load(result.files["train_step"])
        assert [o.version for o in step.opset_import] == [opset]
        state = np.load(result.files["state"])
        assert int(state["step"]) == 0
        interface = json.loads(result.files["interface"].read_text())
        carried = [i["name"] for i in interface["inputs"] if i["role"] not in
                   ("step", "seed", "input", "target")]  # fmt: skip
        assert sorted(carried) == sorted(k for k in state.files if k != "step")


PLATEAU = """model m {
  input x: float32[N, 2]
  dense(8) -> relu
  dense(3)
}
train {
  data spirals(samples = 150, classes = 3, validation = 0.2)
  loss cross_entropy
  optimizer sgd(lr = 0.5, momentum = 0.9)
  schedule reduce_on_plateau(patience = 0, factor = 0.5)
  batch 30
  epochs 4
}
"""


def test_a_host_fed_rate_factor_is_a_control_input_starting_at_one(tmp_path: Path) -> None:
    spec = tmp_path / "p.dnn"
    spec.write_text(PLATEAU)
    result = dnnspec.export(spec, tmp_path / "step", opset=17, train=True)
    interface = json.loads(result.files["interface"].read_text())
    (control,) = [i for i in interface["inputs"] if i["role"] == "control"]
    assert control["name"] == "control/lr_factor" and control["initial"] == 1.0
    assert control["dtype"] == "float32" and control["shape"] == []
    state = np.load(result.files["state"])
    assert float(state["control/lr_factor"]) == 1.0
    assert "velocity" in interface["optimizer"]["state"]
    outputs = {o["name"]: o for o in interface["outputs"]}
    assert outputs["control/lr_factor.next"]["replaces"] == "control/lr_factor"
    # the schedule is host-fed: no step counts are baked in, so the data was not counted
    assert interface["steps_per_epoch"] is None


CLASSES = """model m {{
  input x: float32[N, 3]
  dense(8) -> tanh
  dense({units}){last}
}}
train {{
  data file(path = "{path}", validation = 0.25)
  loss {loss}
  optimizer adam(lr = 0.01)
  batch 16
  epochs 1
}}
"""


def _class_spec(tmp_path: Path, loss: str, units: int, last: str = "") -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    if loss == "binary_cross_entropy":
        y: np.ndarray = (rng.random((40, units)) > 0.5).astype(np.float32)
    else:
        y = rng.integers(0, units, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = tmp_path / "m.dnn"
    spec.write_text(CLASSES.format(units=units, last=last, path=tmp_path / "d.npz", loss=loss))
    return spec


@pytest.mark.parametrize(
    ("loss", "units", "last"),
    [
        ("cross_entropy", 3, ""),
        ("nll", 3, " -> log_softmax"),
        ("binary_cross_entropy", 1, ""),
        ("binary_cross_entropy", 2, ""),
    ],
)
def test_exported_probabilities_and_labels_follow_the_loss_as_predict_proba_does(
    tmp_path: Path, loss: str, units: int, last: str
) -> None:
    from dnnspec.training.losses import LOSSES

    spec = _class_spec(tmp_path, loss, units, last)
    out = tmp_path / "m.onnx"
    result = dnnspec.export(spec, out, outputs=["logits", "probabilities", "labels"])
    assert all(c.difference <= c.tolerance for c in result.checks)  # ort vs onnx.reference
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["output", "probabilities", "labels"]
    x = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32) * 3
    logits, proba, labels = _ort(model, {"x": x})
    probabilities = LOSSES.get(loss).probabilities
    assert probabilities is not None
    np.testing.assert_allclose(proba, probabilities(logits), atol=1e-6)
    assert labels.dtype == np.int64
    expected = logits > 0 if loss == "binary_cross_entropy" else logits.argmax(axis=-1)
    np.testing.assert_array_equal(labels, expected)
    roles = json.loads({p.key: p.value for p in model.metadata_props}["dnnspec.output_roles"])
    raw = "log_probabilities" if loss == "nll" else "logits"
    assert [(r["name"], r["output"], r["role"]) for r in roles] == [
        ("output", "output", raw),
        ("probabilities", "output", "probabilities"),
        ("labels", "output", "labels"),
    ]


def test_class_names_are_a_string_output_gathered_by_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Word labels in the data become a string output; without logits the model's own
    output is dropped; float16 keeps them (its labels follow its probabilities)."""
    rng = np.random.default_rng(0)
    rows = ["a,b,c,kind"] + [
        f"{a:.3f},{b:.3f},{c:.3f},{['cat', 'dog', 'eel'][int(k)]}"
        for a, b, c, k in zip(*rng.normal(size=(3, 30)), rng.integers(0, 3, 30), strict=True)
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    spec = tmp_path / "m.dnn"
    spec.write_text(CLASSES.format(units=3, last="", path=tmp_path / "d.csv", loss="cross_entropy"))
    run = dnnspec.train(spec, out=tmp_path / "run", plot=False)
    for flags in ([], ["--fp16"]):
        out = tmp_path / f"m{len(flags)}.onnx"
        argv = ["export", str(run.run_dir), "--out", str(out), "--json"]
        assert main([*argv, "--outputs", "probabilities,class_names,labels", *flags]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert [o["name"] for o in printed["outputs"]] == [
            "probabilities",
            "labels",
            "class_names",
        ]
        model = onnx.load(out)
        onnx.checker.check_model(model, full_check=True)
        x = rng.normal(size=(16, 3)).astype(np.float32)
        proba, labels, names = _ort(model, {"x": x})
        assert names.tolist() == [["cat", "dog", "eel"][i] for i in labels]
        np.testing.assert_array_equal(labels, proba.argmax(axis=1))
        assert model.graph.output[2].type.tensor_type.elem_type == TensorProto.STRING


def test_named_outputs_each_get_theirs_and_a_value_output_has_none(tmp_path: Path) -> None:
    out = tmp_path / "two.onnx"
    result = dnnspec.export(ROOT / "specs" / "digits_two_heads.dnn", out, outputs=["labels"])
    assert [(o.name, o.output) for o in result.outputs] == [("labels/digit", "digit")]
    model = onnx.load(out)
    assert [o.name for o in model.graph.output] == ["labels/digit"]
    with pytest.raises(DiagnosticError, match=r"predicts values \(loss mse\), not classes"):
        dnnspec.export(ROOT / "specs" / "regression.dnn", out, outputs=["probabilities"])
    with pytest.raises(DiagnosticError) as info:
        dnnspec.export(ROOT / "specs" / "regression.dnn", out, outputs=["label"])
    assert "did you mean 'labels'" in (info.value.diagnostics[0].help or "")


def test_export_defaults_to_the_lowest_opset_the_model_needs_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(ROOT / "specs" / "spirals.dnn"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "opset 17 (the lowest these graphs need" in printed
    assert "INFERENCE_PRECISION_HINT to f32" in printed
    assert [o.version for o in onnx.load(out).opset_import] == [17]
    assert main(["export", str(ROOT / "specs" / "spirals.dnn"), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["opset_chosen"] == "lowest"
    pool = helper.make_node("AveragePool", ["x"], ["y"], name="pool/AveragePool",
                            kernel_shape=[2], dilations=[2])  # fmt: skip
    from dnnspec.tools.opset import lowest_opset

    assert lowest_opset(_model([pool], [], [1, 1, 8]), MIN_OPSET) == 19


def test_an_export_never_replaces_a_run_s_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spec's untrained model written over a trained run's model.onnx (or one run's
    model or steps over another's) is refused, and the run is left as it was."""
    spec = _class_spec(tmp_path, "cross_entropy", 3)
    run = dnnspec.train(spec, out=tmp_path / "run", plot=False).run_dir
    other = dnnspec.train(spec, out=tmp_path / "other", plot=False).run_dir
    before = (run / "model.onnx").read_bytes()
    for argv in (
        [str(spec), "--out", str(run / "model.onnx")],
        [str(other), "--out", str(run / "model.onnx")],
        [str(other), "--train", "--out", str(run)],
        [str(run), "--out", str(run / "eval_step.onnx")],
    ):
        assert main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert f"'{run}' holds a run; exporting into it would replace its" in err
    assert (run / "model.onnx").read_bytes() == before
    assert main(["export", str(run), "--out", str(run / "model17.onnx")]) == 0
