"""Every example spec trains to a threshold a broken gradient could not reach, and the
exported model is valid ONNX that agrees between onnxruntime and onnx.reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SPECS
from onnx.reference import ReferenceEvaluator

from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.run import Interrupted, RunResult, run_training


def train(name: str, out: Path, **overrides: str) -> RunResult:
    spec = load_spec(SPECS / f"{name}.dnn", overrides or None)
    return run_training(spec, out, "cpu")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return train("digits_mlp", tmp_path_factory.mktemp("digits"))


@pytest.mark.slow
def test_digits_mlp_reaches_95_percent_validation_accuracy(digits_run: RunResult) -> None:
    assert digits_run.best["val_accuracy"] >= 0.95
    for name in (
        "model.onnx",
        "train_step.onnx",
        "eval_step.onnx",
        "spec.lock.json",
        "metrics.jsonl",
        "checkpoint/last.npz",
    ):
        assert (digits_run.run_dir / name).exists(), name
    records = [
        json.loads(line) for line in (digits_run.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.slow
def test_spirals_reaches_97_percent_validation_accuracy(tmp_path: Path) -> None:
    assert train("spirals", tmp_path).best["val_accuracy"] >= 0.97


@pytest.mark.slow
def test_regression_reaches_validation_mse_below_0_03(tmp_path: Path) -> None:
    # The mean predictor scores ~0.55 and a linear model ~0.45 (see the spec's comment).
    assert train("regression", tmp_path).best["val_loss"] < 0.03


@pytest.mark.slow
def test_residual_blocks_spec_trains_on_digits(tmp_path: Path) -> None:
    assert train("residual_mlp", tmp_path).best["val_accuracy"] >= 0.95


def test_exported_model_is_valid_onnx_without_training_parts(digits_run: RunResult) -> None:
    model = onnx.load(digits_run.run_dir / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["output"]
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"OneHot", "LogSoftmax", "BitwiseXor", "Range"}, ops
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["dnnspec.class_labels"]) == [str(i) for i in range(10)]
    assert model.ir_version <= 10


def test_exported_model_agrees_between_onnxruntime_and_reference(digits_run: RunResult) -> None:
    model = onnx.load(digits_run.run_dir / "model.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (32, 64)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"x": x})[0]
    reference = ReferenceEvaluator(model).run(None, {"x": x})
    assert isinstance(reference, list)
    np.testing.assert_allclose(ours, reference[0], rtol=1e-5, atol=1e-5)


def test_same_seed_gives_bit_identical_losses_and_other_seeds_differ(tmp_path: Path) -> None:
    def losses(out: Path, seed: str) -> list[float]:
        spec = load_spec(SPECS / "digits_mlp.dnn")
        assert spec.train is not None
        train_spec = spec.train.model_copy(update={"seed": int(seed), "epochs": 2})
        run_training(spec.model_copy(update={"train": train_spec}), out, "cpu")
        return [
            json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
        ]

    first = losses(tmp_path / "a", "0")
    assert first == losses(tmp_path / "b", "0")
    assert first != losses(tmp_path / "c", "1")


class InterruptAt:
    """A reporter that presses Ctrl-C in the middle of a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.at, self.steps = epoch, 0

    def warn(self, warnings: object) -> None: ...
    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...
    def epoch(self, record: dict) -> None: ...
    def finish(self, message: str) -> None: ...

    def advance(self, epoch: int, steps: int, samples: int, loss: float) -> None:
        self.steps += 1
        if epoch == self.at:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_bit_identically(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "digits_mlp.dnn")
    whole = run_training(spec, tmp_path / "whole", "cpu", epochs=4)
    with pytest.raises(Interrupted):
        run_training(spec, tmp_path / "cut", "cpu", epochs=4, reporter=InterruptAt(2))
    assert (tmp_path / "cut" / "model.onnx").exists()
    resumed = run_training(spec, tmp_path / "cut", "cpu", epochs=4, resume=True)
    assert resumed.steps == whole.steps
    logs = [(tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in ("whole", "cut")]
    strip = [
        [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in log]
        for log in logs
    ]
    assert strip[0] == strip[1]
    a = onnx.load(tmp_path / "whole" / "model.onnx").graph.initializer
    b = onnx.load(tmp_path / "cut" / "model.onnx").graph.initializer
    assert [x.raw_data for x in a] == [y.raw_data for y in b]


def test_resume_refuses_a_checkpoint_of_another_spec(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "digits_mlp.dnn")
    run_training(spec, tmp_path, "cpu", epochs=1)
    other = load_spec(SPECS / "digits_mlp.dnn", {"hidden": "32"})
    with pytest.raises(DiagnosticError, match="different spec"):
        run_training(other, tmp_path, "cpu", epochs=1, resume=True)


def test_a_run_directory_is_not_clobbered_without_overwrite(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "spirals.dnn")
    run_training(spec, tmp_path, "cpu", epochs=1)
    with pytest.raises(DiagnosticError, match="already holds a training run"):
        run_training(spec, tmp_path, "cpu", epochs=1)
    assert run_training(spec, tmp_path, "cpu", epochs=1, overwrite=True).epochs == 1


def test_resume_accepts_the_same_spec_moved_and_commented(tmp_path: Path) -> None:
    text = (SPECS / "spirals.dnn").read_text()
    run_training(load_spec(SPECS / "spirals.dnn"), tmp_path / "run", "cpu", epochs=2)
    moved = tmp_path / "elsewhere.dnn"
    moved.write_text("# a new comment shifts every line\n" + text)
    resumed = run_training(load_spec(moved), tmp_path / "run", "cpu", epochs=3, resume=True)
    assert resumed.epochs == 3


def _digits_with_early_stop(patience: int, min_delta: float):
    spec = load_spec(SPECS / "digits_mlp.dnn")
    assert spec.train is not None and spec.train.early_stop is not None
    stop = spec.train.early_stop
    args = {**stop.args, "patience": patience, "min_delta": min_delta}
    train_spec = spec.train.model_copy(
        update={"early_stop": stop.model_copy(update={"args": args})}
    )
    return spec.model_copy(update={"train": train_spec})


def test_resuming_an_early_stopped_run_keeps_it_stopped(tmp_path: Path) -> None:
    """No loss can improve by 10, so the run stops after epoch 2 and stays stopped."""
    spec = _digits_with_early_stop(patience=1, min_delta=10.0)
    first = run_training(spec, tmp_path, "cpu", epochs=6)
    assert first.stopped == "early stop: val_loss did not improve for 1 epoch"
    assert first.epochs == 2
    log = (tmp_path / "metrics.jsonl").read_text()
    model = (tmp_path / "model.onnx").read_bytes()
    again = run_training(spec, tmp_path, "cpu", epochs=6, resume=True)
    assert (again.stopped, again.steps, again.best) == (first.stopped, first.steps, first.best)
    assert again.metrics == first.metrics and again.epochs == first.epochs
    assert (tmp_path / "metrics.jsonl").read_text() == log
    assert (tmp_path / "model.onnx").read_bytes() == model


def test_resume_keeps_the_epochs_a_run_long_schedule_was_built_for(tmp_path: Path) -> None:
    """digits_mlp's cosine schedule spans the run: 2 epochs would change every step's rate."""
    spec = load_spec(SPECS / "digits_mlp.dnn")
    run_training(spec, tmp_path, "cpu", epochs=1)
    with pytest.raises(DiagnosticError, match="started for 1 epoch, not 2, and its cosine"):
        run_training(spec, tmp_path, "cpu", epochs=2, resume=True)


def test_resuming_a_finished_run_reports_its_final_metrics(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "spirals.dnn")
    first = run_training(spec, tmp_path, "cpu", epochs=2)
    again = run_training(spec, tmp_path, "cpu", epochs=2, resume=True)
    assert again.metrics == first.metrics and "val_accuracy" in again.metrics
    assert (again.best, again.epochs, again.steps) == (first.best, first.epochs, first.steps)
