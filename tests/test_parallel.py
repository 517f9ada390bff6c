"""Data-parallel training (`dnnspec train --workers N`, runtime/parallel.py): N MPI
processes sharing each global batch train as one process does on that batch, the leader
alone writes the run, a run resumes with another worker count, and a worker count the
batch or the data cannot share is refused before anything starts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from dnnspec.cli import main
from dnnspec.frontend import load_spec
from dnnspec.runtime.checkpoint import load as load_checkpoint
from dnnspec.runtime.parallel import ENV, RESTARTS_ENV, TIMEOUT_ENV
from dnnspec.runtime.prepare import Prepared, prepare
from dnnspec.runtime.trainer import Trainer

MPIEXEC = Path(sys.executable).with_name("mpiexec")
needs_mpi = pytest.mark.skipif(
    find_spec("mpi4py") is None or not MPIEXEC.exists(),
    reason="mpi4py or mpiexec is missing (the parallel extra: pip install 'dnnspec[parallel]')",
)

SPEC = """model mlp {{
  input p: float32[N, 2]
  dense(16) -> relu
  dropout(0.3)
  dense(2)
}}

train {{
  data spirals(samples = {samples}, classes = 2, noise = 0.1, validation = {validation})
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 10
  epochs 2
  metrics accuracy
  seed 3
}}
"""
"""A small MLP with dropout: its masks must follow the global rows to match."""

LEADER_SCRIPT = """
import sys
import numpy as np
from dnnspec.frontend import load_spec
from dnnspec.runtime.parallel import parallel_trainer
from dnnspec.runtime.prepare import prepare

prep = prepare(load_spec(sys.argv[1]))
trainer = parallel_trainer(prep.program, prep.train.seed, len(prep.train_data))
name = prep.spec.model.inputs[0].name
if trainer.leader:
    losses = []
    trainer.run_epoch(prep.train_data, name, prep.train.batch, 0, lambda got, n: losses.extend(got))
    np.savez(sys.argv[2], losses=np.array(losses), **trainer.params())
else:
    trainer.follow(prep.train_data, name)
"""


def _spec(tmp_path: Path, samples: int = 200, validation: float = 0.25) -> Path:
    path = tmp_path / "mlp.dnn"
    path.write_text(SPEC.format(samples=samples, validation=validation))
    return path


def _train(spec: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dnnspec", "train", str(spec), "--out", str(out), "--json"]
    return subprocess.run(
        [*command, *flags], capture_output=True, text=True, timeout=120, check=False
    )


def _epochs(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _params(run: Path) -> dict[str, np.ndarray]:
    arrays, _ = load_checkpoint(run / "checkpoint" / "last.npz", 1 << 24)
    return {k: v for k, v in arrays.items() if not k.startswith("best:")}


def _two_workers_against_one(spec: Path, rtol: float, atol: float) -> Prepared:
    """Train `spec` for one epoch on 2 MPI workers and in this process: the 50 losses
    agree within 1e-5 and the parameters within `rtol`/`atol`. Returns the prepared spec."""
    script = spec.parent / "leader.py"
    script.write_text(LEADER_SCRIPT)
    out = spec.parent / "two.npz"
    subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, str(script), str(spec), str(out)],
        env={**os.environ, ENV: "2"},
        check=True,
        timeout=120,
    )
    prep = prepare(load_spec(spec))
    alone = Trainer(prep.program, seed=prep.train.seed)
    losses: list[float] = []
    name = prep.spec.model.inputs[0].name
    alone.run_epoch(prep.train_data, name, prep.train.batch, 0, lambda got, n: losses.extend(got))
    two = np.load(out)
    assert len(losses) == len(two["losses"]) == 50
    np.testing.assert_allclose(two["losses"], losses, rtol=1e-5)
    for key, value in alone.params().items():
        np.testing.assert_allclose(two[key], value, rtol=rtol, atol=atol)
    return prep


@needs_mpi
def test_two_workers_equal_one_process_over_50_steps_with_dropout(tmp_path: Path) -> None:
    _two_workers_against_one(_spec(tmp_path, samples=500, validation=0), rtol=1e-4, atol=1e-6)


@needs_mpi
def test_two_workers_accumulating_equal_one_process_accumulating(tmp_path: Path) -> None:
    """`accumulate 3` over 50 micro-batches of 10 (17 updates, the last of 2 micro-batches)
    with dropout: each worker sums its rows' gradients over a group, one all-reduce of the
    sums per update."""
    spec = _spec(tmp_path, samples=500, validation=0)
    spec.write_text(spec.read_text().replace("  batch 10\n", "  batch 10\n  accumulate 3\n"))
    prep = _two_workers_against_one(spec, rtol=1e-5, atol=1e-7)
    assert prep.train.accumulate == 3


@needs_mpi
@pytest.mark.parametrize(("first", "then"), [("2", "1"), ("1", "2")])
def test_a_run_resumes_with_another_worker_count(tmp_path: Path, first: str, then: str) -> None:
    spec = _spec(tmp_path)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _train(spec, whole).returncode == 0
    paused = _train(spec, parts, "--workers", first, "--stop-after", "1")
    assert paused.returncode == 0, paused.stderr
    resumed = _train(spec, parts, "--workers", then, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _epochs(whole), _epochs(parts)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [15, 30]
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in expected], rtol=1e-5)
    for key, value in _params(whole).items():
        np.testing.assert_allclose(_params(parts)[key], value, rtol=1e-4, atol=1e-6)


STREAMED = """model m {
  input x: float32[N, 4]
  dense(16) -> relu
  dropout(0.2)
  dense(3)
}
train {
  data file(path = "d.parquet", target = "label", validation = 0.2, memory = "16 KiB")
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 16
  epochs 1
  metrics accuracy
}
"""


@needs_mpi
def test_two_workers_train_on_streamed_data_as_one_process(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 4))
    table = {f"f{i}": x[:, i] for i in range(4)} | {"label": (x[:, 0] > 0).astype(np.int64)}
    pq.write_table(pa.table(table), tmp_path / "d.parquet", row_group_size=100)
    spec = tmp_path / "m.dnn"
    spec.write_text(STREAMED)
    assert prepare(load_spec(spec)).streamed is not None  # over its budget: read as a stream
    assert _train(spec, tmp_path / "one").returncode == 0
    two = _train(spec, tmp_path / "two", "--workers", "2")
    assert two.returncode == 0, two.stderr
    expected, got = _epochs(tmp_path / "one"), _epochs(tmp_path / "two")
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in expected], rtol=1e-5)


@needs_mpi
def test_only_the_leader_writes_the_run(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    done = _train(spec, tmp_path / "run", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs"] == 2  # one summary: the followers are silent
    assert len(_epochs(tmp_path / "run")) == 2
    assert (tmp_path / "run" / "model.onnx").is_file()


@needs_mpi
def test_more_workers_than_training_samples_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.dnn"
    text = SPEC.format(samples=10, validation=0.8).replace("batch 10", "batch 6")
    spec.write_text(text)
    refused = _train(spec, tmp_path / "run", "--workers", "3")
    assert refused.returncode == 2
    assert "3 workers but the training data has 2 samples" in refused.stdout  # --json


@needs_mpi
def test_ctrl_c_on_the_driver_stops_every_worker_and_keeps_a_checkpoint(tmp_path: Path) -> None:
    spec, out = tmp_path / "long.dnn", tmp_path / "run"
    driver = _start_long_run(spec, out, {})
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    assert "--checkpoint-every 1 --workers 2 --resume" in err  # the command that continues
    _resumes(spec, out)


def _start_long_run(
    spec: Path, out: Path, env: dict[str, str], epochs: int = 500
) -> subprocess.Popen[str]:
    """A 2-worker run, returned once it wrote its first checkpoint."""
    text = SPEC.format(samples=2000, validation=0.25)
    spec.write_text(text.replace("epochs 2", f"epochs {epochs}"))
    command = [sys.executable, "-m", "dnnspec", "train", str(spec), "--out", str(out)]
    driver = subprocess.Popen(
        [*command, "--workers", "2", "--checkpoint-every", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    deadline = time.monotonic() + 60
    while not (out / "checkpoint" / "last.npz").exists():
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.2)
    return driver


def _follower(spec: Path) -> int:
    """The pid of rank 1 of the run of `spec` (MPICH gives each rank PMI_RANK)."""
    found = subprocess.run(["pgrep", "-f", str(spec)], capture_output=True, text=True)
    for pid in map(int, found.stdout.split()):
        with contextlib.suppress(OSError):
            if b"PMI_RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes():
                return pid
    raise AssertionError("no worker of rank 1")


def _resumes(spec: Path, out: Path) -> None:
    """No process of the run is left, and --resume with one worker continues it."""
    left = subprocess.run(["pgrep", "-f", str(spec)], capture_output=True, text=True)
    assert left.stdout == ""
    done = len(_epochs(out))
    resumed = _train(spec, out, "--resume", "--stop-after", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert len(_epochs(out)) == done + 1


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_without_restarts_ends_the_run_with_a_message_and_it_resumes(
    tmp_path: Path,
) -> None:
    spec, out = tmp_path / "long.dnn", tmp_path / "run"
    driver = _start_long_run(spec, out, {RESTARTS_ENV: "0"})
    os.kill(_follower(spec), signal.SIGKILL)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 2
    assert "a worker stopped (exit status 9) and the run with it" in err
    _resumes(spec, out)


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_restarts_the_workers_from_the_last_checkpoint(tmp_path: Path) -> None:
    spec, out = tmp_path / "long.dnn", tmp_path / "run"
    driver = _start_long_run(spec, out, {}, epochs=30)
    os.kill(_follower(spec), signal.SIGKILL)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err
    assert "note: a worker stopped (exit status 9): all restart from the last checkpoint" in err
    alone = _train(spec, tmp_path / "alone")
    assert alone.returncode == 0
    expected, got = _epochs(tmp_path / "alone"), _epochs(out)
    assert [r["epoch"] for r in got] == list(range(1, 31))  # each epoch once, none lost
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in expected], rtol=1e-5)


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_hung_worker_ends_the_run_at_the_deadline_and_it_resumes(tmp_path: Path) -> None:
    spec, out = tmp_path / "long.dnn", tmp_path / "run"
    driver = _start_long_run(spec, out, {TIMEOUT_ENV: "2"})
    os.kill(_follower(spec), signal.SIGSTOP)  # alive but silent: only a deadline ends it
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 2
    assert "workers did not answer within 2 s (the all-reduce of step" in err
    _resumes(spec, out)


def test_a_batch_the_workers_cannot_share_is_a_located_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path)
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--workers", "3"]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:12:3: error: batch 10 does not divide among 3 workers" in err
    assert not (tmp_path / "run").exists()


def test_more_workers_than_samples_per_batch_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path)
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--workers", "11"]) == 2
    assert "11 workers cannot share a batch of 10 samples" in capsys.readouterr().err


@pytest.mark.parametrize("count", ["0", "-2"])
def test_a_worker_count_below_one_exits_2(
    tmp_path: Path, count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path)
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--workers", count]) == 2
    assert f"--workers must be at least 1, got {count}" in capsys.readouterr().err


def test_a_deadline_that_is_not_a_positive_number_is_refused_before_any_worker_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    spec = _spec(tmp_path)
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--workers", "2"]) == 2
    assert f"{TIMEOUT_ENV} must be a positive number of seconds, got 'soon'" in (
        capsys.readouterr().err
    )


@needs_mpi
def test_workers_on_cuda_are_refused_with_the_reason(tmp_path: Path) -> None:
    refused = _train(_spec(tmp_path), tmp_path / "run", "--workers", "2", "--device", "cuda")
    assert refused.returncode == 2
    assert "--workers trains on the CPU: --device cuda does not combine with it yet" in (
        refused.stdout
    )
