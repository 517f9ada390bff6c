"""Data-parallel training on Ray (`dnnspec train --workers N --backend ray [--address]`,
runtime/ray_workers.py): Ray actors joined into one MPI communicator train as one process
does on the same global batch, on a local Ray cluster of two nodes (`ray start --head`
and a worker node) as on a Ray started for the run; a killed actor restarts the run from
its last checkpoint, or ends it with a message and the checkpoint resumes; an address
where no cluster answers is a quick exit 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from dnnspec.runtime.checkpoint import load as load_checkpoint
from dnnspec.runtime.parallel import RESTARTS_ENV, TIMEOUT_ENV

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    find_spec("ray") is None or find_spec("mpi4py") is None or not (BIN / "mpiexec").exists(),
    reason="needs the ray and parallel extras: pip install 'dnnspec[ray,parallel]'",
)

SPEC = """model mlp {{
  input p: float32[N, 2]
  dense(16) -> relu
  dropout(0.3)
  dense(2)
}}

train {{
  data spirals(samples = {samples}, classes = 2, noise = 0.1, validation = 0.2)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 10
  epochs {epochs}
  metrics accuracy
  seed 3
}}
"""
"""A small MLP with dropout: its masks must follow the global rows to match."""

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
"""The test cluster takes no token: its nodes and drivers must agree on that."""


def _spec(folder: Path, samples: int = 500, epochs: int = 2) -> Path:
    path = folder / "mlp.dnn"
    path.write_text(SPEC.format(samples=samples, epochs=epochs))
    return path


def _train(
    spec: Path, out: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dnnspec", "train", str(spec), "--out", str(out), "--json"]
    return subprocess.run(
        [*command, "--no-plot", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=spec.parent,
        env=env or ENV,
    )


def _epochs(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _params(run: Path) -> dict[str, np.ndarray]:
    arrays, _ = load_checkpoint(run / "checkpoint" / "last.npz", 1 << 24)
    return {k: v for k, v in arrays.items() if not k.startswith("best:")}


def _same_run(got: Path, expected: Path) -> None:
    assert [r["step"] for r in _epochs(got)] == [r["step"] for r in _epochs(expected)]
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(
            [r[key] for r in _epochs(got)], [r[key] for r in _epochs(expected)], rtol=1e-5
        )
    for key, value in _params(expected).items():
        np.testing.assert_allclose(_params(got)[key], value, rtol=1e-4, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """`ray start --block` stops the processes it started on SIGTERM, but takes half a
    minute over it: past 10 s its process group is killed (Ray's processes die with
    their parent)."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster of two nodes with a CPU each: a head and a worker node."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    start = [str(BIN / "ray"), "start", "--num-cpus=1", "--disable-usage-stats", "--block"]
    head = subprocess.Popen(
        [*start, "--head", f"--port={port}", "--include-dashboard=false"],
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and head.poll() is None, "no Ray head"
                time.sleep(0.5)
        nodes.append(
            subprocess.Popen(
                [*start, f"--address={address}"],
                env=ENV,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        yield address
    finally:
        _stop(nodes)


def _actors(folder: Path) -> dict[int, list[int]]:
    """The run's actors (those working in `folder`, the driver's directory), each with its
    process and the `mpiexec -n 1` and proxy above it."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes()
            if (
                entry.name.isdigit()
                and title.startswith(b"ray::Rank")
                and Path(os.readlink(entry / "cwd")) == folder
            ):
                pid = int(entry.name)
                found[pid] = [_parent(pid)]
                found[pid].append(_parent(found[pid][0]))
        except OSError:
            continue
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_ray_workers_on_a_two_node_cluster_train_as_one_process(
    tmp_path: Path, cluster: str
) -> None:
    spec = _spec(tmp_path)
    assert _train(spec, tmp_path / "one").returncode == 0
    two = _train(spec, tmp_path / "two", "--workers", "2", "--backend", "ray", "--address", cluster)
    assert two.returncode == 0, two.stderr
    assert json.loads(two.stdout)["steps"] == 80  # rank 0's summary alone
    _same_run(tmp_path / "two", tmp_path / "one")
    assert (tmp_path / "two" / "model.onnx").is_file()
    assert not _actors(tmp_path)  # none outlives the run


@pytest.mark.slow
def test_workers_the_cluster_cannot_place_end_the_run_at_the_deadline(
    tmp_path: Path, cluster: str
) -> None:
    flags = ["--workers", "5", "--backend", "ray", "--address", cluster]
    refused = _train(_spec(tmp_path), tmp_path / "run", *flags, env={**ENV, TIMEOUT_ENV: "5"})
    assert refused.returncode == 2
    assert "5 Ray workers did not start within 5 s" in refused.stdout  # 2 CPUs for 5
    assert not _actors(tmp_path)


def _start_long_run(spec: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A 2-actor run on a Ray started for it, returned once it wrote its first checkpoint."""
    command = [sys.executable, "-m", "dnnspec", "train", str(spec), "--out", str(out)]
    driver = subprocess.Popen(
        [*command, "--workers", "2", "--backend", "ray", "--checkpoint-every", "1", "--no-plot"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=spec.parent,
        env={**ENV, **env},
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint" / "last.npz").exists():
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.2)
    return driver


def _kill_a_worker(folder: Path) -> list[int]:
    """kill -9 one actor of the run in `folder`; every process of the run's actors."""
    actors = _actors(folder)
    assert len(actors) == 2
    os.kill(max(actors), signal.SIGKILL)
    return [pid for pid, chain in actors.items() for pid in (pid, *chain)]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_ray_worker_restarts_the_workers_from_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    spec, out = _spec(tmp_path, samples=2000, epochs=20), tmp_path / "run"
    driver = _start_long_run(spec, out, {})
    processes = _kill_a_worker(tmp_path)
    _, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, err
    assert "note: a worker stopped (worker " in err
    assert "Ray actor died): all restart from the last checkpoint (restart 1 of 2)" in err
    assert [r["epoch"] for r in _epochs(out)] == list(range(1, 21))  # each epoch once
    assert _train(spec, tmp_path / "alone").returncode == 0
    _same_run(out, tmp_path / "alone")
    assert not any(_alive(pid) for pid in processes)
    assert not _actors(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_ray_worker_without_restarts_ends_the_run_with_a_message_and_it_resumes(
    tmp_path: Path,
) -> None:
    spec, out = _spec(tmp_path, samples=2000, epochs=500), tmp_path / "run"
    driver = _start_long_run(spec, out, {RESTARTS_ENV: "0"})
    processes = _kill_a_worker(tmp_path)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 2, err
    assert "Ray actor died) and the run with it" in err
    assert "the last checkpoint resumes with --resume (with any --workers)" in err
    assert not any(_alive(pid) for pid in processes)
    assert not _actors(tmp_path)
    done = len(_epochs(out))
    resumed = _train(spec, out, "--resume", "--stop-after", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert len(_epochs(out)) == done + 1


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_on_the_ray_driver_stops_every_worker_and_keeps_a_checkpoint(
    tmp_path: Path,
) -> None:
    spec, out = _spec(tmp_path, samples=2000, epochs=500), tmp_path / "run"
    driver = _start_long_run(spec, out, {})
    processes = [p for pid, chain in _actors(tmp_path).items() for p in (pid, *chain)]
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    assert "--checkpoint-every 1 --workers 2 --backend ray --resume" in err  # as rank 0 said
    assert (out / "model.onnx").is_file()
    assert not any(_alive(pid) for pid in processes)
    done = len(_epochs(out))
    resumed = _train(spec, out, "--resume", "--stop-after", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr


def test_an_address_where_no_cluster_answers_exits_2_at_once(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    refused = _train(
        spec, tmp_path / "run", "--workers", "2", "--backend", "ray", "--address", address
    )
    assert time.monotonic() - started < 30  # Ray itself would retry for minutes
    assert refused.returncode == 2
    assert f"no Ray cluster answers at --address {address} (Connection refused)" in refused.stdout
    assert not (tmp_path / "run").exists()


def test_an_address_without_the_ray_backend_is_refused(tmp_path: Path) -> None:
    refused = _train(_spec(tmp_path), tmp_path / "run", "--workers", "2", "--address", "x:1")
    assert refused.returncode == 2
    assert "--address only applies to --backend ray" in refused.stdout
