"""`accumulate N`: one optimizer update per N micro-batches, equal to one step on the
batch of N x `batch` (float64 graphs, so the only difference is the order of additions),
and a run paused between two updates resumes bit-identically."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dnnspec
from dnnspec.assemble.describe import spec_hash
from dnnspec.assemble.steps import Program, build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.data.dataset import Dataset
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.runtime import checkpoint
from dnnspec.runtime.model_file import read_model
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.run import run_training
from dnnspec.runtime.trainer import Trainer
from dnnspec.training.accumulate import SAMPLES
from dnnspec.training.schedules import Timing

SPEC = """
model m {{
  input x: float32[N, 5]
  dense(16) -> tanh
  dense(3)
}}
train {{
  data spirals
  loss cross_entropy
  optimizer {optimizer}
  schedule {schedule}
  {clip}
  batch {batch}
  epochs {epochs}
  {accumulate}
}}
"""
SAMPLES_IN_DATA = 100  # with batch 8: 13 micro-batches an epoch, the last of 4 samples
EPOCHS = 3


def program(batch: int, every: int, **settings: str) -> Program:
    """The float64 train step of SPEC for data of SAMPLES_IN_DATA samples."""
    text = SPEC.format(
        optimizer=settings.get("optimizer", "adam(lr = 0.01)"),
        schedule=settings.get("schedule", "constant"),
        clip=settings.get("clip", ""),
        batch=batch,
        epochs=EPOCHS,
        accumulate=f"accumulate {every}" if every > 1 else "",
    )
    spec = load_spec_text(text, "<accumulate>")
    assert spec.train is not None
    per_epoch = -(-SAMPLES_IN_DATA // batch)
    timing = Timing(per_epoch, per_epoch * EPOCHS)
    return build_train_step(check_spec(spec), spec.train, 3, timing, "float64")


def data() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(x=rng.normal(size=(SAMPLES_IN_DATA, 5)), y=rng.integers(0, 3, SAMPLES_IN_DATA))


def train(prog: Program, batch: int, steps_per_call: int) -> tuple[Trainer, list[float]]:
    trainer = Trainer(prog, seed=0, steps_per_call=steps_per_call)
    losses = [trainer.run_epoch(data(), "x", batch, e)["loss"] for e in range(EPOCHS)]
    return trainer, losses


@pytest.mark.parametrize(
    "settings",
    [
        {
            "optimizer": "sgd(lr = 0.1, momentum = 0.9, weight_decay = 0.01)",
            "schedule": "step(every = 1 epoch, factor = 0.5)",
        },
        {"optimizer": "adam(lr = 0.01)", "schedule": "cosine(warmup = 3 steps)"},
        {"optimizer": "adamw(lr = 0.01)", "schedule": "linear", "clip": "clip norm(0.5)"},
    ],
    ids=["sgd", "adam-cosine", "adamw-linear-clip"],
)
def test_accumulating_four_micro_batches_equals_training_on_the_four_times_batch(
    settings: dict[str, str],
) -> None:
    """13 micro-batches of 8 an epoch make 4 updates, on 32, 32, 32 and 4 samples, as 4
    steps of batch 32 do; the K-step calls (5 micro-batches each) cut groups anywhere."""
    micro, micro_losses = train(program(8, 4, **settings), 8, steps_per_call=5)
    whole, whole_losses = train(program(32, 1, **settings), 32, steps_per_call=3)
    assert micro.step == EPOCHS * 13 and whole.step == EPOCHS * 4
    after, expected = micro.values(), whole.values()
    for name, value in expected.items():
        np.testing.assert_allclose(after[name], value, rtol=0, atol=1e-6, err_msg=name)
    assert not np.array_equal(
        expected["dense_1.weight"], Trainer(program(32, 1)).values()["dense_1.weight"]
    )
    np.testing.assert_allclose(micro_losses, whole_losses, rtol=1e-9)
    assert float(after[SAMPLES]) == 0.0  # every epoch ends its last group


def test_the_parameters_change_only_on_each_groups_last_micro_batch() -> None:
    trainer = Trainer(program(8, 4), seed=0)
    start = trainer.values()["dense_2.weight"]
    x, y = data().x, data().y
    seen = []
    for k in range(8):
        trainer.train_step({"x": x[8 * k : 8 * k + 8]}, y[8 * k : 8 * k + 8])
        seen.append(not np.array_equal(trainer.values()["dense_2.weight"], start))
        start = trainer.values()["dense_2.weight"]
    assert seen == [False, False, False, True] * 2


def test_a_run_paused_between_two_updates_resumes_bit_identically() -> None:
    """The gradient sums and the samples summed are carried state: a trainer given the
    values of micro-step 6 (two micro-batches into the second group) goes on exactly as
    the trainer that never stopped."""
    x, y = data().x, data().y
    rows = [slice(8 * k, 8 * k + 8) for k in range(12)]
    straight = Trainer(program(8, 4), seed=0)
    paused = Trainer(program(8, 4), seed=0)
    for row in rows[:6]:
        straight.train_step({"x": x[row]}, y[row])
        paused.train_step({"x": x[row]}, y[row])
    saved = paused.values()
    assert float(saved[SAMPLES]) == 16.0 and np.any(saved["dense_1.weight.grad_sum"] != 0)
    resumed = Trainer(program(8, 4), seed=0)
    resumed.load_values(saved)
    resumed.step = paused.step
    for row in rows[6:]:
        expected, _ = straight.train_step({"x": x[row]}, y[row])
        loss, _ = resumed.train_step({"x": x[row]}, y[row])
        assert loss == expected
    for name, value in straight.values().items():
        assert np.array_equal(resumed.values()[name], value), name


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "'accumulate' must be a positive integer, got number 0"),
        ("2.5", "'accumulate' must be a positive integer, got number 2.5"),
        ("-3", "'accumulate' must be a positive integer, got number -3"),
    ],
)
def test_accumulate_takes_a_positive_integer_with_a_located_error(value: str, message: str) -> None:
    text = SPEC.format(
        optimizer="sgd", schedule="constant", clip="", batch=8, epochs=1, accumulate=""
    )
    text = text.replace("  epochs 1\n", f"  epochs 1\n  accumulate {value}\n")
    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, "<accumulate>")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == message
    line = text.splitlines().index(f"  accumulate {value}") + 1
    assert diagnostic.span is not None and diagnostic.span.line == line
    assert diagnostic.span.col == len("  accumulate ") + 1


def test_a_spec_without_accumulate_keeps_its_hash_and_recorded_text() -> None:
    """`accumulate 1` is what a spec without the item means: neither the spec's recorded
    JSON nor its hash names it, so runs of the previous release still resume."""
    plain = SPEC.format(
        optimizer="sgd", schedule="constant", clip="", batch=8, epochs=1, accumulate=""
    )
    once = plain.replace("  epochs 1\n", "  epochs 1\n  accumulate 1\n")
    four = plain.replace("  epochs 1\n", "  epochs 1\n  accumulate 4\n")
    hashes = [spec_hash(check_spec(load_spec_text(t, "<a>"))) for t in (plain, once, four)]
    assert hashes[0] == hashes[1] != hashes[2]
    assert "accumulate" not in load_spec_text(once, "<a>").model_dump_json()
    assert '"accumulate":4' in load_spec_text(four, "<a>").model_dump_json()


RUN = """
model m {
  input x: float32[N, 2]
  dense(16) -> tanh
  dense(2)
}
train {
  data spirals(samples = 230, validation = 0.2)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  schedule step(every = 1 epoch, factor = 0.5)
  batch 16
  accumulate 3
  epochs 3
}
"""


def test_a_run_with_accumulate_stopped_after_an_epoch_resumes_bit_identically(
    tmp_path: Path,
) -> None:
    """184 training samples: 12 batches an epoch, 4 updates; checkpoints end epochs, whose
    last group has been applied, so the sums they hold are zero."""
    path = tmp_path / "s.dnn"
    path.write_text(RUN, encoding="utf-8")
    spec = load_spec(path, {})
    whole = run_training(spec, tmp_path / "whole", "cpu")
    run_training(spec, tmp_path / "cut", "cpu", stop_after=1)
    resumed = run_training(spec, tmp_path / "cut", "cpu", resume=True)
    assert resumed.steps == whole.steps == 3 * 12
    a, _ = checkpoint.load(tmp_path / "whole" / "checkpoint" / "last.npz")
    b, _ = checkpoint.load(tmp_path / "cut" / "checkpoint" / "last.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert float(a[SAMPLES]) == 0.0 and not np.any(a["dense_1.weight.grad_sum"])


def test_the_documented_driver_trains_an_exported_accumulating_step_as_dnnspec_train(
    tmp_path: Path,
) -> None:
    """The driver of docs/training-graph.md calls the step once per batch, as for any
    spec: the accumulation is all in the graph and its carried state."""
    text = (Path(__file__).parents[1] / "docs" / "training-graph.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    (tmp_path / "driver.py").write_text(code)
    spec = tmp_path / "s.dnn"
    spec.write_text(RUN, encoding="utf-8")
    dnnspec.export(spec, tmp_path / "step", train=True)
    interface = json.loads((tmp_path / "step" / "interface.json").read_text())
    assert interface["steps_per_epoch"] == 4 and interface["total_steps"] == 12  # updates
    assert {i["role"] for i in interface["inputs"] if i["name"] == SAMPLES} == {"accumulator"}
    prep = prepare(load_spec(spec, {}))
    np.savez(tmp_path / "data.npz", x=prep.train_data.x, y=prep.train_data.y)
    run = dnnspec.train(spec, out=tmp_path / "run", plot=False)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    args = [str(tmp_path / n) for n in ("driver.py", "step", "data.npz")]
    done = subprocess.run(
        [sys.executable, *args, "3", str(tmp_path / "t.npz")],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    driven = [json.loads(line) for line in done.stdout.splitlines()]
    logged = [json.loads(r) for r in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in driven] == [12, 24, 36]
    np.testing.assert_allclose([d["loss"] for d in driven], [r["loss"] for r in logged], rtol=1e-5)
    trained = np.load(tmp_path / "t.npz")
    for name, value in read_model(run.run_dir / "model.onnx").weights().items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-4, atol=1e-6)
