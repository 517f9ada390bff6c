"""`kill -9` at random points of a run, including while `--resume` rewrites its files:
every interrupted run is resumed (or, killed before its first checkpoint, started again)
until it finishes, and then no epoch record is lost and the result is bit-identical to a
run that was never interrupted. Seeded and bounded: a handful of kills."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

SPEC = """model m {
  input x: float32[N, 4]
  dense(16) -> relu
  dense(3)
}
train {
  data file(path = "data.npz", validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  schedule cosine
  batch 8
  epochs 10
  metrics accuracy
  early_stop(monitor = val_loss, patience = 20)
}
"""

KILLS = 5
SEED = 3


def launch(spec: Path, run: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "dnnspec", "train", str(spec), "--out", str(run), "--json"]
    argv += ["--checkpoint-every", "1", "--device", "cpu", *extra]
    env = dict(os.environ, DNNSPEC_THREADS="1")
    pipe = subprocess.PIPE
    return subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in out + err, out + err


def state(run: Path) -> tuple[Any, ...]:
    """What changes when a run writes something: the names and inodes in its directory."""
    try:
        found = []
        for folder in (run, run / "checkpoint"):
            found += [(e.name, e.inode()) for e in os.scandir(folder)]
        return tuple(sorted(found))
    except OSError:
        return ()


def kill_soon(proc: subprocess.Popen[str], run: Path, rng: random.Random) -> bool:
    """Kill `proc` shortly after it next writes its run directory (so kills land among the
    writes: temporary files, renames, appended epochs); False if it finished first."""
    before = state(run)
    deadline = time.monotonic() + 120
    while proc.poll() is None and state(run) == before and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(rng.uniform(0.0, 0.04))
    if proc.poll() is not None:
        finish(proc)
        return False
    proc.kill()
    proc.communicate()
    return True


def records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


def weights(run: Path) -> dict[str, np.ndarray]:
    model = onnx.load(run / "model.onnx")
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.slow
def test_kills_at_random_points_lose_no_epoch_and_keep_the_result_bit_identical(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(256, 4)), y=rng.integers(0, 3, 256))
    spec = tmp_path / "m.dnn"
    spec.write_text(SPEC)
    reference = tmp_path / "reference"
    finish(launch(spec, reference))

    run, kills, chooser = tmp_path / "run", 0, random.Random(SEED)
    proc = launch(spec, run)
    while kill_soon(proc, run, chooser):
        kills += 1
        resumable = (run / "checkpoint" / "last.npz").exists()
        proc = launch(spec, run, "--resume" if resumable else "--overwrite")
        if kills == KILLS:
            finish(proc)
            break
    assert kills >= 2, "the run finished before it could be killed: make it longer"
    assert records(run) == records(reference)
    expected = weights(reference)
    got = weights(run)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert [p.name for p in run.rglob("*.tmp")] == []  # a later run sweeps killed writes'
