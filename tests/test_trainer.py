"""The runtime's bookkeeping: early stopping, epoch averages over a partial last batch,
rollback to the last parameters with a finite loss, and the thread setting."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SPECS

from dnnspec.data.datasets import Dataset
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.runtime.backend import SMALL_STEP_FLOPS, threads
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.trainer import Diverged, Trainer
from dnnspec.training.early_stop import EarlyStop


def stop_for(monitor: str, patience: int = 2, min_delta: float = 0.0) -> EarlyStop:
    spec = load_spec_text(
        "model m {\n  input x: float32[N, 4]\n  dense(3)\n}\n"
        "train {\n  data digits\n  loss cross_entropy\n  optimizer sgd\n  batch 8\n"
        f"  epochs 1\n  metrics accuracy\n"
        f"  early_stop(monitor = {monitor}, patience = {patience}, min_delta = {min_delta})\n}}\n",
        "t.dnn",
    )
    assert spec.train is not None
    stop = EarlyStop.from_spec(spec.train)
    assert stop is not None
    return stop


@pytest.mark.parametrize(
    ("monitor", "key", "mode"),
    [
        ("loss", "val_loss", "min"),
        ("val_loss", "val_loss", "min"),
        ("train_loss", "loss", "min"),
        ("accuracy", "val_accuracy", "max"),
        ("val_accuracy", "val_accuracy", "max"),
        ("train_accuracy", "accuracy", "max"),
    ],
)
def test_early_stop_monitors_the_named_record_in_its_better_direction(
    monitor: str, key: str, mode: str
) -> None:
    stop = stop_for(monitor)
    assert (stop.key, stop.mode) == (key, mode)


def test_early_stop_waits_patience_epochs_for_an_improvement_beyond_min_delta() -> None:
    stop = stop_for("val_accuracy", patience=2, min_delta=0.01)
    assert stop.update(0.50)
    assert not stop.update(0.505)  # within min_delta: not an improvement
    assert not stop.exhausted
    assert stop.update(0.52)  # an improvement resets the wait
    assert not stop.update(0.40) and not stop.update(0.52)
    assert stop.exhausted and stop.best == 0.52


def digits_trainer() -> tuple[Trainer, Dataset]:
    prep = prepare(load_spec(SPECS / "digits_mlp.dnn"), epochs=1)
    return Trainer(prep.program, "cpu", prep.train.seed), prep.val_data


def test_evaluation_averages_are_the_same_whatever_the_batch_size() -> None:
    """A partial last batch weighs by its samples: 360 samples in batches of 7 or all at once."""
    trainer, data = digits_trainer()
    whole = trainer.evaluate(data, "x", batch=len(data))
    pieces = trainer.evaluate(data, "x", batch=7)
    assert len(data) % 7 != 0
    assert pieces == pytest.approx(whole, rel=1e-5)


def test_a_non_finite_loss_rolls_back_to_the_last_parameters_with_a_finite_loss() -> None:
    trainer, data = digits_trainer()
    x, y = data.x[:64], data.y[:64]
    before = trainer.params()
    trainer.train_step({"x": x}, y)  # step 0: finite loss, parameters updated
    assert any(not np.array_equal(before[k], v) for k, v in trainer.params().items())
    with pytest.raises(Diverged) as caught:
        trainer.train_step({"x": np.full_like(x, 1e38)}, y)  # step 1: the loss overflows
    assert caught.value.step == 1 and trainer.step == 1
    kept = trainer.params()
    assert all(np.array_equal(before[k], kept[k]) for k in before)


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_a_bad_thread_count_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DNNSPEC_THREADS", value)
    with pytest.raises(DiagnosticError, match="DNNSPEC_THREADS must be a positive whole number"):
        threads()
    monkeypatch.setenv("DNNSPEC_THREADS", "1")
    assert threads() == 1


def test_small_steps_run_on_one_thread_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.delenv("DNNSPEC_THREADS", raising=False)
    assert threads(SMALL_STEP_FLOPS / 2) == 1
    assert threads(SMALL_STEP_FLOPS * 2) == threads() == 4
    monkeypatch.setenv("DNNSPEC_THREADS", "3")
    assert threads(SMALL_STEP_FLOPS / 2) == 3


def test_more_threads_than_cores_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.setenv("DNNSPEC_THREADS", "4")
    assert threads() == 4
    monkeypatch.setenv("DNNSPEC_THREADS", "99999999")
    with pytest.raises(DiagnosticError, match="this machine has 4 cores"):
        threads()
