"""Many steps per runtime call: the train-loop graph gives exactly the losses of single
steps; checkpoints follow their cadence, and a killed run resumes bit-identically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from dnnspec.assemble.loop import build_train_loop, carried_names
from dnnspec.data.stream import epoch_order
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime import checkpoint
from dnnspec.runtime.backends.onnxruntime import OrtTrainState
from dnnspec.runtime.cadence import Cadence
from dnnspec.runtime.prepare import Prepared, prepare
from dnnspec.runtime.run import run_training
from dnnspec.runtime.session import cuda_available
from dnnspec.runtime.trainer import Trainer

SPECS = Path(__file__).resolve().parent.parent / "specs"
STEPS = 100


@pytest.fixture(scope="module")
def digits() -> Prepared:
    """The digits spec (dropout, Adam, cosine warm-up, l2) at batch 16: 89 full batches and
    a partial one per epoch, so 100 steps cross an epoch boundary and a partial batch."""
    return prepare(load_spec(SPECS / "digits_mlp.dnn", {"hidden": "32"}), epochs=2)


def single_step_losses(prep: Prepared, batch: int) -> list[float]:
    trainer = Trainer(prep.program, "cpu", prep.train.seed)
    data, epoch = prep.train_data, 0
    losses: list[float] = []
    while len(losses) < STEPS:
        order = epoch_order(len(data), prep.train.seed, epoch)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            losses.append(trainer.train_step({"x": data.x[idx]}, data.y[idx])[0])
        epoch += 1
    return losses[:STEPS]


def loop_losses(prep: Prepared, batch: int, steps_per_call: int, host: bool = False) -> list[float]:
    trainer = Trainer(prep.program, "cpu", prep.train.seed, steps_per_call=steps_per_call)
    trainer.host_loop = host
    losses: list[float] = []
    epoch = 0
    while len(losses) < STEPS:
        trainer.run_epoch(
            prep.train_data, "x", batch, epoch, lambda call, n: losses.extend(call.tolist())
        )
        epoch += 1
    return losses[:STEPS]


@pytest.mark.parametrize(
    ("steps_per_call", "host"),
    [(1, False), (7, False), (4096, False), (7, True)],
    ids=["K=1", "K=7", "whole epoch", "host loop"],
)
def test_k_steps_per_call_give_the_losses_of_single_steps(
    digits: Prepared, steps_per_call: int, host: bool
) -> None:
    batch = 16
    assert len(digits.train_data) % batch != 0
    expected = single_step_losses(digits, batch)
    assert loop_losses(digits, batch, steps_per_call, host) == expected


def test_train_loop_graph_is_valid_onnx_and_carries_every_state_tensor(digits: Prepared) -> None:
    loop = build_train_loop(digits.program.train_step)
    onnx.checker.check_model(loop, full_check=True)
    carried = carried_names(digits.program.train_step)
    assert sorted(carried) == sorted(digits.program.carried())
    assert any(name.endswith(".m_sum") for name in carried)  # Adam's state rides along
    names = {i.name for i in loop.graph.input}
    assert {"in/x", "in/target", "in/order", "in/step", "seed"} <= names


def test_the_dropout_key_is_computed_once_per_call_outside_the_loop(digits: Prepared) -> None:
    # the key's integer arithmetic on step and seed runs on the call's vector of steps;
    # the body gathers its own values (the K-step tests above show the losses unchanged)
    loop = build_train_loop(digits.program.train_step)
    (node,) = [n for n in loop.graph.node if n.op_type == "Loop"]
    body = node.attribute[0].g
    integer_ops = {"Add", "Sub", "Mul", "Div", "Mod"}
    outside = [n for n in loop.graph.node if n.name.startswith("hoist/")]
    assert len(outside) > 40 and all(n.op_type in integer_ops for n in outside)
    reads_step = [n.name for n in body.node if "step" in n.input]
    assert "loop/step_add" in reads_step
    assert not any(
        n.op_type in integer_ops
        for n in body.node
        if "step" in n.input and n.name != "loop/step_add"
    )


def test_a_non_finite_loss_inside_a_call_rolls_back_to_the_last_good_parameters(
    digits: Prepared,
) -> None:
    """Step 5 of a 9-step call sees overflowing inputs: the trainer keeps the input of
    step 4, exactly what single steps keep."""
    from dnnspec.data.datasets import Dataset
    from dnnspec.runtime.trainer import Diverged

    x = digits.train_data.x[:144].copy()
    x[80:96] = 1e38  # batch 5 of 16
    data = Dataset(x, digits.train_data.y[:144])
    rows = np.arange(144).reshape(9, 16)
    reference = Trainer(digits.program, "cpu", 0)
    for row in rows[:4]:
        reference.train_step({"x": data.x[row]}, data.y[row])
    kept = reference.params()  # the input of step 4
    trainer = Trainer(digits.program, "cpu", 0, steps_per_call=3)
    trainer._bind_data(data, "x")
    trainer.run_steps(rows[:3])  # steps 0-2
    with pytest.raises(Diverged) as caught:
        trainer.run_steps(rows[3:])  # steps 3-8, the loss of 5 is not finite
    assert caught.value.step == 5
    assert all(np.array_equal(kept[k], v) for k, v in trainer.params().items())


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from dnnspec.frontend import load_spec
from dnnspec.runtime.cadence import Cadence
from dnnspec.runtime.run import run_training

class KillAt:
    def warn(self, warnings): ...
    def start(self, epochs, steps_per_epoch, first_epoch): ...
    def epoch(self, record): ...
    def finish(self, message): ...
    def advance(self, epoch, steps, samples, loss):
        if epoch == 3:  # the fourth epoch, after its first call
            os.kill(os.getpid(), signal.SIGKILL)

spec = load_spec(Path(sys.argv[1]), {"hidden": "32"})
run_training(spec, Path(sys.argv[2]), "cpu", epochs=5, reporter=KillAt(),
             checkpoint_every=Cadence(epochs=2))
"""
"""A run SIGKILLed in the middle of its fourth epoch: no handler, no flush, nothing."""


def test_a_killed_run_resumes_bit_identically_from_its_last_cadence_checkpoint(
    tmp_path: Path,
) -> None:
    spec = load_spec(SPECS / "digits_mlp.dnn", {"hidden": "32"})
    every2 = Cadence(epochs=2)
    whole = run_training(spec, tmp_path / "whole", "cpu", epochs=5, checkpoint_every=every2)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(SPECS / "digits_mlp.dnn"), str(tmp_path / "cut")],
        env={**os.environ, "PYTHONPATH": str(SPECS.parent)},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _, header = checkpoint.load(tmp_path / "cut" / "checkpoint" / "last.npz")
    assert header["epoch"] == 2  # epoch 3 finished (and was logged) but was not checkpointed
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 3
    resumed = run_training(
        spec, tmp_path / "cut", "cpu", epochs=5, resume=True, checkpoint_every=every2
    )
    assert resumed.steps == whole.steps
    logs = [
        [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()
        ]
        for r in ("whole", "cut")
    ]
    assert logs[0] == logs[1] and len(logs[0]) == 5
    a, _ = checkpoint.load(tmp_path / "whole" / "checkpoint" / "last.npz")
    b, _ = checkpoint.load(tmp_path / "cut" / "checkpoint" / "last.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("cadence", "saves"), [(Cadence(epochs=1), 3), (Cadence(epochs=2), 2), (Cadence(), 1)]
)
def test_checkpoints_follow_the_cadence_and_always_end_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cadence: Cadence, saves: int
) -> None:
    written: list[int] = []
    save = checkpoint.save

    def recording_save(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        written.append(header["epoch"])
        save(path, arrays, header)

    monkeypatch.setattr(checkpoint, "save", recording_save)
    spec = load_spec(SPECS / "digits_mlp.dnn", {"hidden": "16"})
    run_training(spec, tmp_path, "cpu", epochs=3, checkpoint_every=cadence)
    assert len(written) == saves and written[-1] == 3


@pytest.mark.parametrize(
    ("text", "cadence"),
    [("5", Cadence(epochs=5)), ("30s", Cadence(seconds=30)), ("2m", Cadence(seconds=120))],
)
def test_checkpoint_cadence_reads_epochs_or_a_time(text: str, cadence: Cadence) -> None:
    assert Cadence.parse(text) == cadence


@pytest.mark.parametrize("text", ["0", "-1", "abc", "1.5", "3h"])
def test_a_bad_checkpoint_cadence_is_a_clear_error(text: str) -> None:
    with pytest.raises(DiagnosticError, match="--checkpoint-every expects"):
        Cadence.parse(text)


@pytest.mark.skipif(not cuda_available(), reason="CUDA does not load on this machine")
def test_cuda_training_keeps_the_losses_of_the_cpu_within_float_tolerance(
    digits: Prepared,
) -> None:
    """--device cuda runs the same loop with data, parameters and state on the GPU."""
    cpu = Trainer(digits.program, "cpu", 0, steps_per_call=16)
    gpu = Trainer(digits.program, "cuda", 0, steps_per_call=16)
    assert gpu.device == "cuda"
    assert isinstance(gpu.state, OrtTrainState)
    assert all(v.device_name() == "cuda" for v in gpu.state._sets[0].values())
    a = cpu.run_epoch(digits.train_data, "x", 64, 0)
    b = gpu.run_epoch(digits.train_data, "x", 64, 0)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    assert gpu.evaluate(digits.val_data, "x")["loss"] == pytest.approx(
        cpu.evaluate(digits.val_data, "x")["loss"], rel=1e-3
    )


def test_slow_steps_switch_to_one_step_per_call_and_keep_the_losses(
    digits: Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dnnspec.runtime import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "HOST_LOOP_STEP_SECONDS", 0.0)
    trainer = Trainer(digits.program, "cpu", digits.train.seed)
    losses: list[float] = []
    trainer.run_epoch(digits.train_data, "x", 16, 0, lambda call, n: losses.extend(call.tolist()))
    assert trainer.host_loop
    assert losses == single_step_losses(digits, 16)[: len(losses)] and len(losses) == 90


def test_train_rejects_a_bad_checkpoint_cadence_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dnnspec.cli import main

    code = main(
        ["train", str(SPECS / "digits_mlp.dnn"), "--out", str(tmp_path), "--checkpoint-every", "0"]
    )
    assert code == 2
    assert "--checkpoint-every expects a number of epochs or a time" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint").exists()
