"""Models with named outputs: `return digit: ..., ink: ...`, one loss per output (a
weighted sum is what the optimizer minimises), metrics per output, one target per output
from the data, one graph output per output in model.onnx, `predict` and `eval` per output."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SPECS, assert_train_step_matches_finite_differences, reference_runner

from dnnspec import api
from dnnspec.assemble.steps import LOSS, SEED, STEP, build_inference, build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.layers.init import initial_value
from dnnspec.tools.format import format_text
from dnnspec.training.schedules import Timing

MODEL = """model m {{
  input x: float32[N, 6]
  h = dense(16) -> tanh
  return kind: h -> dense(3), size: h -> dense(2)
}}
"""
SPEC = (
    MODEL
    + """
train {{
  data {data}
  loss kind: cross_entropy, size: mse(weight = {weight})
  metrics kind: [accuracy, f1], size: [mae, r2]
  optimizer adam(lr = 0.02)
  batch 32
  epochs {epochs}
}}
"""
)


def spec_text(data: str = 'file(path = "d.npz")', weight: float = 0.5, epochs: int = 3) -> str:
    return SPEC.format(data=data, weight=weight, epochs=epochs)


def synthetic(n: int = 240, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs, a class target from their signs and a two-unit value target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    kind = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    size = np.stack([x[:, 2] + 0.5 * x[:, 3], x[:, 4] * x[:, 5]], axis=1).astype(np.float32)
    return {"x": x, "kind": kind, "size": size}


def rendered(text: str) -> str:
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, "specs/x.dnn")
    return caught.value.render()


# -- the language -------------------------------------------------------------------------


def test_named_outputs_resolve_to_one_head_each_with_its_weight_and_metrics() -> None:
    spec = load_spec_text(spec_text(), "specs/x.dnn")
    assert [(o.name, o.value) for o in spec.model.outputs] == [
        ("kind", "dense_2"),
        ("size", "dense_3"),
    ]
    assert spec.train is not None and spec.train.loss is None
    heads = spec.train.heads
    assert [(h.output, h.loss.name, h.weight) for h in heads] == [
        ("kind", "cross_entropy", 1.0),
        ("size", "mse", 0.5),
    ]
    assert [m.name for m in heads[0].metrics] == ["accuracy", "f1"]
    assert [m.name for m in heads[1].metrics] == ["mae", "r2"]
    typed = check_spec(spec)
    assert typed.outputs["kind"].dims == ("N", 3) and typed.outputs["size"].dims == ("N", 2)


def test_a_model_with_one_unnamed_output_keeps_loss_and_metrics() -> None:
    spec = load_spec(SPECS / "digits_mlp.dnn")
    assert spec.train is not None and spec.train.loss is not None and not spec.train.heads
    assert spec.model.outputs == ()
    assert [h.output for h in spec.train.trained()] == [""]


def test_fmt_keeps_a_spec_with_named_outputs_as_it_is() -> None:
    text = spec_text()
    assert format_text(text, "x.dnn") == text
    messy = text.replace("kind: h -> dense(3)", "kind :h->dense(3)").replace(
        "size: mse", "size:mse"
    )
    assert format_text(messy, "x.dnn") == text


def test_a_loss_for_an_output_the_model_lacks_is_located_with_a_suggestion() -> None:
    text = spec_text().replace("size: mse", "sise: mse")
    assert (
        rendered(text)
        == """\
specs/x.dnn:9:29: error: the model has no output named 'sise'
  |
9 |   loss kind: cross_entropy, sise: mse(weight = 0.5)
  |                             ^^^^
help: did you mean 'size'?"""
    )


def test_an_output_without_a_loss_is_named_at_the_loss_line() -> None:
    text = spec_text().replace(", size: mse(weight = 0.5)", "")
    out = rendered(text)
    assert out.startswith("specs/x.dnn:9:3: error: output 'size' has no loss\n")
    assert "note: specs/x.dnn:4:31: output 'size' is named here" in out
    assert "help: add one for it: loss ..., size: mse" in out


@pytest.mark.parametrize("weight", ["0", "-1", "true"])
def test_a_loss_weight_must_be_above_zero(weight: str) -> None:
    out = rendered(spec_text().replace("weight = 0.5", f"weight = {weight}"))
    assert out.startswith("specs/x.dnn:9:48: error: a loss weight must be a number above 0")
    assert "help: weights scale each output's loss" in out


def test_two_outputs_with_one_name_are_reported_with_the_first() -> None:
    text = spec_text().replace("size: h -> dense(2)", "kind: h -> dense(2)")
    out = rendered(text)
    assert out.startswith("specs/x.dnn:4:31: error: the model has two outputs named 'kind'")
    assert "note: specs/x.dnn:4:10: first named here" in out


def test_an_output_may_not_take_an_input_or_graph_name() -> None:
    assert "output 'x' has the name of an input" in rendered(
        spec_text().replace("size: h", "x: h").replace("size: mse", "x: mse")
    )
    out = rendered(spec_text().replace("size: h", "loss: h").replace("size: mse", "loss: mse"))
    assert "specs/x.dnn:4:31: error: 'loss' is a name the compiled graphs use" in out


def test_each_loss_of_a_model_with_named_outputs_must_name_its_output() -> None:
    out = rendered(spec_text().replace("kind: cross_entropy", "cross_entropy"))
    assert out.startswith(
        "specs/x.dnn:9:8: error: the model has named outputs (kind, size): say which one "
        "this loss is for"
    )
    assert "help: write loss kind: ..." in out


def test_a_label_on_a_model_with_one_unnamed_output_is_an_error() -> None:
    text = "model m {\n  input x: float32[N, 2]\n  dense(3)\n}\ntrain {\n  data spirals\n"
    text += "  loss out: cross_entropy\n  optimizer sgd(lr = 0.1)\n  batch 8\n  epochs 1\n}\n"
    out = rendered(text)
    assert out.startswith(
        "specs/x.dnn:7:8: error: 'out:' names an output, but the model has one unnamed output"
    )


def test_two_losses_for_one_output_and_labels_on_other_settings_are_errors() -> None:
    out = rendered(spec_text().replace("size: mse(weight = 0.5)", "kind: mse"))
    assert "error: output 'kind' has two losses" in out
    out = rendered(spec_text().replace("batch 32", "batch kind: 32"))
    assert "specs/x.dnn:12:9: error: 'batch' is one setting for the whole model" in out


def test_metrics_name_their_output_and_must_fit_its_loss() -> None:
    out = rendered(spec_text().replace("kind: [accuracy, f1]", "[accuracy, f1]"))
    assert "say which one this metric is for" in out
    out = rendered(spec_text().replace("size: [mae, r2]", "size: [mae, accuracy]"))
    assert "error: metric 'accuracy' needs class labels, but loss 'mse' trains on values" in out
    out = rendered(spec_text().replace("size: [mae, r2]", "sizes: mae"))
    assert "error: the model has no output named 'sizes'" in out


def test_each_output_loss_checks_its_own_contract() -> None:
    text = spec_text().replace("kind: h -> dense(3)", "kind: h -> dense(3) -> softmax")
    typed = check_spec(load_spec_text(text, "specs/x.dnn"))
    assert any("ends in softmax" in w.message for w in typed.warnings)
    bad = spec_text().replace("kind: cross_entropy", "kind: cross_entropy(class_weights = [1, 2])")
    with pytest.raises(DiagnosticError) as caught:
        check_spec(load_spec_text(bad, "specs/x.dnn"))
    out = caught.value.render()
    assert out.startswith("specs/x.dnn:9:14: error: loss 'cross_entropy': ")
    assert "note: specs/x.dnn:4:21: output 'kind' is f32[N, 3]" in out


def test_a_monitor_names_a_per_output_metric() -> None:
    text = spec_text().replace("epochs 3", "epochs 3\n  early_stop(monitor = val_kind_accuracy)")
    assert load_spec_text(text, "specs/x.dnn").train is not None
    out = rendered(text.replace("val_kind_accuracy", "val_kind_acuracy"))
    assert "early_stop monitors 'val_kind_acuracy', which this run does not compute" in out
    assert "did you mean 'val_kind_accuracy'?" in out


def test_a_block_cannot_return_named_outputs() -> None:
    text = "block b() (x) {\n  return a: x -> dense(2), c: x -> dense(2)\n}\n"
    text += "model m {\n  input x: float32[N, 2]\n  b()\n}\n"
    assert "only the model returns named outputs" in rendered(text)


# -- multistep milestones ---------------------------------------------------------------

MULTISTEP = """model m {{
  input x: float32[N, 2]
  dense(2)
}}
train {{
  data spirals
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  schedule multistep(milestones = {milestones})
  batch 8
  epochs 4
}}
"""


@pytest.mark.parametrize(
    ("milestones", "message"),
    [
        ("[]", "multistep needs at least one milestone"),
        ("[-1, 2]", "a milestone is an epoch count, 1 or more, got -1"),
        ("[3, 2]", "milestones must increase, but 2 comes after 3"),
        ("[2, 2]", "milestones must increase, but 2 comes after 2"),
    ],
)
def test_multistep_milestones_are_checked_where_written(milestones: str, message: str) -> None:
    out = rendered(MULTISTEP.format(milestones=milestones))
    assert out.startswith(f"specs/x.dnn:9:35: error: {message}\n"), out
    assert "help: list the epochs after which the rate drops" in out


def test_increasing_milestones_resolve() -> None:
    spec = load_spec_text(MULTISTEP.format(milestones="[1, 3]"), "specs/x.dnn")
    assert spec.train is not None and spec.train.schedule.args["milestones"] == [1, 3]


# -- the graphs ---------------------------------------------------------------------------


def program_and_feeds(weight: float = 0.5, seed: int = 0):
    spec = load_spec_text(spec_text(weight=weight), "specs/x.dnn")
    assert spec.train is not None
    typed = check_spec(spec)
    program = build_train_step(typed, spec.train, None, Timing(10, 100), "float64")
    rng = np.random.default_rng(seed)
    data = synthetic(8, seed)
    feeds = {
        "x": data["x"].astype(np.float64),
        "target/kind": data["kind"],
        "target/size": data["size"].astype(np.float64),
        STEP: np.array(0, np.int64),
        SEED: np.array(0, np.int64),
    }
    params = {}
    for slot in program.slots:
        params[slot.name] = initial_value(slot.spec, rng, np.dtype("float64"))
        feeds[slot.name] = params[slot.name]
        for kind in slot.state:
            feeds[slot.state_name(kind)] = np.zeros(slot.spec.shape)
    return typed, program, feeds, params


def test_the_step_loss_is_the_weighted_sum_of_each_outputs_loss_in_numpy() -> None:
    typed, program, feeds, params = program_and_feeds(weight=0.5)
    names = [i.name for i in program.train_step.graph.input]
    assert "target/kind" in names and "target/size" in names
    run = reference_runner(program.train_step)
    outs = run(feeds)
    model = build_inference(typed, program.model_slots(), params, program.metadata)
    assert [o.name for o in model.graph.output] == ["kind", "size"]
    predicted = reference_runner(model)({"x": feeds["x"].astype(np.float32)})
    logits = predicted["kind"].astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    ce = -log_p[np.arange(8), feeds["target/kind"]].mean()
    mse = ((predicted["size"] - feeds["target/size"]) ** 2).mean()
    assert float(outs["loss/kind"]) == pytest.approx(ce, rel=1e-5)
    assert float(outs["loss/size"]) == pytest.approx(mse, rel=1e-5)
    assert float(outs[LOSS]) == pytest.approx(ce + 0.5 * mse, rel=1e-5)
    assert sorted(k for k in outs if k.startswith("metric.")) == [
        "metric.kind_accuracy",
        "metric.kind_f1",
        "metric.size_mae",
        "metric.size_r2",
    ]


def test_the_weighted_step_gradient_matches_finite_differences() -> None:
    spec = load_spec_text(spec_text(weight=0.25), "specs/x.dnn")
    assert_train_step_matches_finite_differences(spec, {"N": 5}, probes=3)


def test_one_value_under_two_output_names_gets_both_gradients() -> None:
    both = MODEL.format().replace(
        "return kind: h -> dense(3), size: h -> dense(2)",
        "y = h -> dense(2)\n  return kind: y, size: y",
    )
    both += """train {
  data file(path = "d.npz")
  loss kind: cross_entropy, size: mse(weight = 2)
  optimizer sgd(lr = 0.1)
  batch 8
  epochs 1
}
"""
    assert_train_step_matches_finite_differences(load_spec_text(both, "x.dnn"), {"N": 4})


# -- training, data, predict and eval -----------------------------------------------------


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, api.RunResult]:
    root = tmp_path_factory.mktemp("multi")
    np.savez(root / "d.npz", **synthetic(300))  # type: ignore[arg-type]
    (root / "m.dnn").write_text(
        spec_text(data='file(path = "d.npz", validation = 0.25)', epochs=25)
    )
    return root, api.train(root / "m.dnn", out=root / "run")


@pytest.mark.slow
def test_a_two_output_model_trains_on_an_npz_with_one_array_per_output(npz_run) -> None:
    root, result = npz_run
    records = [json.loads(line) for line in (root / "run" / "metrics.jsonl").open()]
    last = records[-1]
    for key in ("loss", "kind_loss", "size_loss", "val_kind_accuracy", "val_size_r2"):
        assert key in last
    assert last["loss"] == pytest.approx(last["kind_loss"] + 0.5 * last["size_loss"], rel=1e-5)
    assert last["val_kind_accuracy"] >= 0.85 and last["val_size_r2"] >= 0.6, last
    assert records[0]["val_size_loss"] > 2 * last["val_size_loss"]
    model = onnx.load(root / "run" / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["kind", "size"]
    meta = {p.key: p.value for p in model.metadata_props}
    outputs = json.loads(meta["dnnspec.outputs"])
    assert [(o["name"], o["loss"], o["weight"]) for o in outputs] == [
        ("kind", "cross_entropy", 1.0),
        ("size", "mse", 0.5),
    ]
    assert outputs[0]["class_labels"] == ["0", "1", "2"] and "class_labels" not in outputs[1]
    x = synthetic(5, seed=3)["x"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"x": x})
    reference = reference_runner(model)({"x": x})
    for got, name in zip(ours, ("kind", "size"), strict=True):
        np.testing.assert_allclose(got, reference[name], rtol=1e-5, atol=1e-6)
    counts = list(csv.reader((root / "run" / "confusion_kind.csv").open()))
    assert counts[0] == ["true \\ predicted", "0", "1", "2"]


@pytest.mark.slow
def test_predict_and_eval_answer_per_output(npz_run) -> None:
    root, _ = npz_run
    model = api.load(root / "run", device="cpu")
    x = synthetic(7, seed=4)["x"]
    outs = model.predict(x)
    assert isinstance(outs, dict) and list(outs) == ["kind", "size"]
    assert outs["kind"].shape == (7, 3) and outs["size"].shape == (7, 2)
    np.save(root / "x.npy", x)
    cli = [sys.executable, "-m", "dnnspec", "predict", str(root / "run"), str(root / "x.npy")]
    shown = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
    kind = shown["outputs"]["kind"]
    assert kind["classes"] == outs["kind"].argmax(axis=1).tolist()
    np.testing.assert_allclose(shown["outputs"]["size"]["predictions"], outs["size"], rtol=1e-6)
    subprocess.run([*cli, "--out", str(root / "p.npz")], check=True, capture_output=True)
    with np.load(root / "p.npz") as saved:
        np.testing.assert_array_equal(saved["kind"], outs["kind"])
        np.testing.assert_array_equal(saved["size"], outs["size"])
    subprocess.run([*cli, "--out", str(root / "p.csv")], check=True, capture_output=True)
    rows = list(csv.reader((root / "p.csv").open()))
    assert rows[0] == ["kind_0", "kind_1", "kind_2", "size_0", "size_1"]
    np.testing.assert_allclose(np.array(rows[1:], float)[:, 3:], outs["size"], rtol=1e-6)
    scores = model.evaluate()
    assert {"kind_accuracy", "size_r2", "kind_loss", "size_loss"} <= scores.keys()
    with np.load(root / "run" / "split.npz") as split:
        held_back = len(split["validation"])
    assert np.array(scores["kind_confusion"]).sum() == held_back
    np.savez(root / "held.npz", **synthetic(40, seed=9))  # type: ignore[arg-type]
    held = model.evaluate(root / "held.npz")
    assert np.array(held["kind_confusion"]).sum() == 40
    shown = subprocess.run(
        [sys.executable, "-m", "dnnspec", "eval", str(root / "run")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "confusion of output 'kind'" in shown and "val" not in shown.split("\n")[0]


def write_npz(root: Path, **arrays: np.ndarray) -> None:
    np.savez(root / "d.npz", **arrays)  # type: ignore[arg-type]
    (root / "m.dnn").write_text(spec_text())


def data_error(root: Path) -> str:
    with pytest.raises(DiagnosticError) as caught:
        api.train(root / "m.dnn", out=root / "run")
    return caught.value.render()


def test_data_mistakes_name_the_output(tmp_path: Path) -> None:
    data = synthetic(40)
    write_npz(tmp_path, x=data["x"], kind=data["kind"])
    out = data_error(tmp_path)
    assert "has no target named 'size' for the model's output 'size'" in out
    assert f"{tmp_path / 'm.dnn'}:8:8" in out
    write_npz(tmp_path, x=data["x"], kind=data["kind"], size=data["size"][:, :1])
    assert "output 'size' is f32[N, 2] but the targets have shape [N, 1]" in data_error(tmp_path)
    bad = data["kind"].copy()
    bad[3] = 7
    write_npz(tmp_path, x=data["x"], kind=bad, size=data["size"])
    out = data_error(tmp_path)
    assert "output 'kind': label 7 of sample 3 is outside the model's 3 classes" in out
    write_npz(tmp_path, x=data["x"], kind=data["kind"], size=data["size"][:30])
    assert "40 inputs but 30 rows in 'size'" in data_error(tmp_path)
    (tmp_path / "m.dnn").write_text(spec_text(data='file(path = "d.npz", y = "kind")'))
    assert "'y' applies to the one target of a model without named outputs" in data_error(tmp_path)


def test_a_dataset_with_one_target_cannot_feed_named_outputs(tmp_path: Path) -> None:
    (tmp_path / "m.dnn").write_text(spec_text(data="spirals(samples = 40)"))
    out = data_error(tmp_path)
    assert "dataset 'spirals' has one target, but the model's outputs kind, size need one" in out


def test_a_csv_gives_each_output_its_column_by_name(tmp_path: Path) -> None:
    data = synthetic(90)
    names = ["kind", "red", "green", "blue"]
    with (tmp_path / "d.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "c", "d", "e", "f", "kind", "size"])
        for row, kind in zip(data["x"], data["kind"], strict=True):
            out.writerow([*row.tolist(), names[kind + 1], float(row[2])])
    text = spec_text(data='file(path = "d.csv")').replace("dense(2)", "dense(1)")
    (tmp_path / "m.dnn").write_text(text)
    result = api.train(tmp_path / "m.dnn", out=tmp_path / "run")
    assert "val_size_r2" in result.metrics
    model = onnx.load(tmp_path / "run" / "model.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["dnnspec.outputs"])[0]["class_labels"] == ["blue", "green", "red"]
    as_values = text.replace("kind: cross_entropy", "kind: mse")
    (tmp_path / "m.dnn").write_text(as_values.replace("kind: [accuracy, f1]", "kind: mae"))
    assert "output 'kind': the targets are words" in data_error(tmp_path)


@pytest.mark.slow
def test_the_digits_two_heads_spec_learns_both_outputs(tmp_path: Path) -> None:
    result = api.train(SPECS / "digits_two_heads.dnn", out=tmp_path / "run")
    best = result.best
    assert best["val_digit_accuracy"] >= 0.93, best
    assert best["val_ink_r2"] >= 0.8, best


def test_a_search_objective_names_a_per_output_metric() -> None:
    search = (
        "\nsearch random(trials = 2, objective = {objective}) {{\n  lr in choice(0.01, 0.02)\n}}\n"
    )
    text = "param lr = 0.02\n" + spec_text().replace("adam(lr = 0.02)", "adam(lr = lr)")
    spec = load_spec_text(text + search.format(objective="val_kind_accuracy"), "specs/x.dnn")
    assert spec.search is not None
    assert (spec.search.objective, spec.search.direction) == ("val_kind_accuracy", "max")
    spec = load_spec_text(text + search.format(objective="val_size_loss"), "specs/x.dnn")
    assert spec.search is not None and spec.search.direction == "min"
    out = rendered(text + search.format(objective="val_accuracy"))
    assert "unknown objective 'val_accuracy'" in out and "val_kind_accuracy" in out


def test_a_paused_two_output_run_resumes_bit_identically(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", **synthetic(120))  # type: ignore[arg-type]
    (tmp_path / "m.dnn").write_text(spec_text(epochs=4))
    whole = api.train(tmp_path / "m.dnn", out=tmp_path / "whole", plot=False)
    api.train(tmp_path / "m.dnn", out=tmp_path / "part", stop_after=2, plot=False)
    resumed = api.train(tmp_path / "m.dnn", out=tmp_path / "part", resume=True, plot=False)
    assert resumed.metrics == whole.metrics
    a = onnx.load(tmp_path / "whole" / "model.onnx").graph.initializer
    b = onnx.load(tmp_path / "part" / "model.onnx").graph.initializer
    assert [t.raw_data for t in a] == [t.raw_data for t in b]


@pytest.mark.slow
def test_predict_proba_gives_each_class_outputs_probabilities(npz_run) -> None:
    root, _ = npz_run
    x = synthetic(6, seed=5)["x"]
    np.save(root / "xp.npy", x)
    cli = [sys.executable, "-m", "dnnspec", "predict", str(root / "run"), str(root / "xp.npy")]
    shown = json.loads(
        subprocess.run([*cli, "--proba"], capture_output=True, text=True, check=True).stdout
    )
    predicted = api.load(root / "run", device="cpu").predict(x)
    assert isinstance(predicted, dict)
    logits = predicted["kind"].astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shown["outputs"]["kind"]["probabilities"], expected, rtol=1e-6)
    assert "probabilities" not in shown["outputs"]["size"]
    subprocess.run([*cli, "--proba", "--out", str(root / "pp.npz")], check=True)
    with np.load(root / "pp.npz") as saved:
        np.testing.assert_allclose(saved["kind"], expected, rtol=1e-6)


def test_check_reports_each_output_its_loss_and_its_metrics() -> None:
    from dnnspec.check.report import check_json

    typed = check_spec(load_spec_text(spec_text(), "specs/x.dnn"))
    report = check_json(typed)
    assert report["outputs"] == [
        {"name": "kind", "dtype": "float32", "shape": ["N", 3]},
        {"name": "size", "dtype": "float32", "shape": ["N", 2]},
    ]
    heads = report["train"]["heads"]
    assert [(h["output"], h["loss"]["name"], h["weight"]) for h in heads] == [
        ("kind", "cross_entropy", 1.0),
        ("size", "mse", 0.5),
    ]
    assert [m["name"] for m in heads[1]["metrics"]] == ["mae", "r2"]
    shown = subprocess.run(
        [sys.executable, "-m", "dnnspec", "check", str(SPECS / "digits_two_heads.dnn")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "loss ink" in shown and "mse, weight 2" in shown and "metrics digit" in shown


def test_a_plateau_schedule_monitors_a_per_output_metric_in_its_direction() -> None:
    from dnnspec.training.early_stop import higher_is_better
    from dnnspec.training.schedules import Plateau

    text = spec_text().replace(
        "batch 32", "schedule reduce_on_plateau(monitor = val_size_r2)\n  batch 32"
    )
    spec = load_spec_text(text, "specs/x.dnn")
    assert spec.train is not None
    train = spec.train
    plateau = Plateau.from_spec(train.schedule, lambda m: higher_is_better(train, m))
    assert plateau is not None and (plateau.key, plateau.mode) == ("val_size_r2", "max")
    text = text.replace("val_size_r2", "val_size_loss")
    other = load_spec_text(text, "specs/x.dnn").train
    assert other is not None
    plateau = Plateau.from_spec(other.schedule, lambda m: higher_is_better(other, m))
    assert plateau is not None and plateau.mode == "min"


def test_export_keeps_every_named_output_and_describes_each_target(npz_run, tmp_path) -> None:
    root, _ = npz_run
    out = tmp_path / "m.onnx"
    subprocess.run(
        [sys.executable, "-m", "dnnspec", "export", str(root / "run"), "--out", str(out), "--fp16"],
        check=True,
        capture_output=True,
    )
    assert [o.name for o in onnx.load(out).graph.output] == ["kind", "size"]
    spec = load_spec_text(spec_text(weight=0.5), "specs/x.dnn")
    assert spec.train is not None
    program = build_train_step(check_spec(spec), spec.train, None, Timing(10, 100))
    meta = {p.key: p.value for p in program.train_step.metadata_props}
    interface = json.loads(meta["dnnspec.interface"])
    targets = {i["name"]: i for i in interface["inputs"] if i["role"] == "target"}
    assert targets["target/size"]["weight"] == 0.5 and targets["target/kind"]["output"] == "kind"
    roles = {o["name"]: o for o in interface["outputs"]}
    assert roles["loss/size"]["role"] == "output_loss"
    assert roles["metric.kind_f1"]["metric"] == "f1"
    assert interface["loss"]["name"] == "weighted_sum"
    assert [t["output"] for t in interface["loss"]["terms"]] == ["kind", "size"]


def _labelled_csv(
    path: Path, data: dict[str, np.ndarray], names: list[str], skip: int = -1
) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "c", "d", "e", "f", "kind", "size"])
        for row, kind in zip(data["x"], data["kind"], strict=True):
            if kind != skip:
                out.writerow([*row.tolist(), names[kind], float(row[2])])


@pytest.mark.slow
def test_eval_of_a_csv_lacking_a_class_maps_names_to_the_training_ids(tmp_path: Path) -> None:
    names = ["blue", "green", "red"]
    _labelled_csv(tmp_path / "d.csv", synthetic(150), names)
    _labelled_csv(tmp_path / "held.csv", synthetic(60, seed=2), names, skip=0)
    text = spec_text(data='file(path = "d.csv")').replace("dense(2)", "dense(1)")
    (tmp_path / "m.dnn").write_text(text)
    api.train(tmp_path / "m.dnn", out=tmp_path / "run", plot=False)
    scores = api.load(tmp_path / "run", device="cpu").evaluate(tmp_path / "held.csv")
    counts = np.array(scores["kind_confusion"])
    held = synthetic(60, seed=2)["kind"]
    assert counts[0].sum() == 0  # no blue sample, yet blue keeps id 0
    assert counts[1].sum() == (held == 1).sum() and counts[2].sum() == (held == 2).sum()


@pytest.mark.parametrize("shared", [False, True], ids=["two values", "one value"])
def test_outputs_whose_losses_write_their_own_gradient_are_seeded_by_weight(shared: bool) -> None:
    """Two cross_entropy outputs: each loss has its own vjp, so the engine starts at the
    outputs with weight x vjp (added where both outputs are one value)."""
    body = (
        "y = h -> dense(3)\n  return a: y, b: y"
        if shared
        else "return a: h -> dense(3), b: h -> dense(4)"
    )
    text = MODEL.format().replace("return kind: h -> dense(3), size: h -> dense(2)", body)
    text += """
train {
  data file(path = "d.npz")
  loss a: cross_entropy, b: cross_entropy(label_smoothing = 0.1, weight = 0.3)
  optimizer sgd(lr = 0.1)
  batch 8
  epochs 1
}
"""
    spec = load_spec_text(text, "x.dnn")
    assert spec.train is not None
    program = build_train_step(check_spec(spec), spec.train, None, Timing(10, 100), "float64")
    seeded = [n for n in program.train_step.graph.node if "d_weighted" in n.output[0]]
    assert seeded, "the weighted vjp seeds the engine"
    assert_train_step_matches_finite_differences(spec, {"N": 5})


@pytest.mark.slow
def test_eval_of_a_one_output_csv_lacking_class_zero_is_read_by_names(tmp_path: Path) -> None:
    names = ["blue", "green", "red"]
    for name, data, skip in (("d", synthetic(150), -1), ("held", synthetic(60, seed=2), 0)):
        with (tmp_path / f"{name}.csv").open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["a", "b", "c", "d", "e", "f", "kind"])
            for row, kind in zip(data["x"], data["kind"], strict=True):
                if kind != skip:
                    out.writerow([*row.tolist(), names[kind]])
    text = """model m {
  input x: float32[N, 6]
  dense(16) -> tanh
  dense(3)
}

train {
  data file(path = "d.csv")
  loss cross_entropy
  metrics accuracy
  optimizer adam(lr = 0.02)
  batch 32
  epochs 2
}
"""
    (tmp_path / "m.dnn").write_text(text)
    api.train(tmp_path / "m.dnn", out=tmp_path / "run", plot=False)
    counts = np.array(
        api.load(tmp_path / "run", device="cpu").evaluate(tmp_path / "held.csv")["confusion"]
    )
    assert counts[0].sum() == 0 and counts.sum() == (synthetic(60, seed=2)["kind"] != 0).sum()


def test_digits_offer_a_class_and_a_standardised_ink_target() -> None:
    from dnnspec.data.datasets import DATASETS

    definition = DATASETS.get("digits")
    assert definition.targets is not None
    data = definition.targets({"validation": 0.2}, ("digit", "ink"), 0, None)
    assert data.targets["digit"].dtype == np.int64 and data.targets["digit"].shape == (1797,)
    ink = data.targets["ink"]
    assert ink.shape == (1797, 1) and ink.dtype == np.float32
    assert abs(float(ink.mean())) < 1e-5 and float(ink.std()) == pytest.approx(1.0, abs=1e-5)
    raw = data.x.mean(axis=1)
    assert np.corrcoef(raw, ink[:, 0])[0, 1] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(data.y, data.targets["digit"])
    with pytest.raises(DiagnosticError, match="digits has no target named 'inc'"):
        definition.targets({"validation": 0.2}, ("digit", "inc"), 0, None)
