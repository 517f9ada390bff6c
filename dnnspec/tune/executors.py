"""Where trials run: local worker processes, or Ray tasks.

A trial is the `dnnspec train ... --json` command a user could type, run as its own
process, so a trial directory is an ordinary run directory, a crash or divergence stays in
its trial, and each process gets its own onnxruntime thread count. Both executors run the
same command; only the scheduling differs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dnnspec.errors import error


@dataclass(frozen=True)
class Job:
    """One command to run: `key` identifies it to the caller; output goes to `log`."""

    key: Any
    argv: tuple[str, ...]
    env: dict[str, str]
    log: Path


@dataclass(frozen=True)
class Finished:
    job: Job
    returncode: int
    stdout: str
    seconds: float


class Executor(Protocol):
    def submit(self, job: Job) -> None: ...

    def wait(self) -> list[Finished]:
        """Block until at least one submitted job ends; the jobs that ended."""
        ...

    def running(self) -> int: ...

    def interrupt(self) -> None:
        """Ask every running job to stop as Ctrl-C would (trials save a checkpoint) and
        wait for them."""
        ...


class LocalExecutor:
    """Worker processes on this machine, at most `workers` at once (the caller keeps to it)."""

    def __init__(self) -> None:
        self.procs: dict[subprocess.Popen[bytes], tuple[Job, float]] = {}

    def submit(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with job.log.open("wb") as err:
            proc = subprocess.Popen(
                job.argv,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the tuner, which stops trials itself
                env={**os.environ, **job.env},
            )
        self.procs[proc] = (job, time.perf_counter())

    def running(self) -> int:
        return len(self.procs)

    def wait(self) -> list[Finished]:
        while True:
            done = [p for p in self.procs if p.poll() is not None]
            if done:
                return [self._collect(p) for p in done]
            time.sleep(0.05)

    def _collect(self, proc: subprocess.Popen[bytes]) -> Finished:
        job, started = self.procs.pop(proc)
        stdout = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
        return Finished(job, proc.returncode, stdout, time.perf_counter() - started)

    def interrupt(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        for proc in list(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._collect(proc)


def _run_job(argv: Sequence[str], env: dict[str, str], log: str) -> tuple[int, str, float]:
    """The body of a Ray task: the same process a local worker would start."""
    started = time.perf_counter()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err:
        done = subprocess.run(
            list(argv), stdout=subprocess.PIPE, stderr=err, env={**os.environ, **env}, check=False
        )
    return done.returncode, done.stdout.decode("utf-8", "replace"), time.perf_counter() - started


class RayExecutor:
    """Trials as Ray tasks, on a local Ray (`ray.init()`) or an existing cluster
    (`address`). With a cluster, the search directory must be on storage every node sees."""

    def __init__(self, address: str | None, workers: int, threads: int) -> None:
        try:
            import ray
        except ImportError:
            raise error(
                "the ray backend needs Ray, which is not installed",
                help="install it with: pip install 'dnnspec[ray]', or use --backend local",
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                options["address"] = address
            else:
                options["num_cpus"] = workers * threads
            try:
                ray.init(**options)
            except Exception as exc:  # Ray raises several unrelated types for "cannot connect"
                raise error(f"cannot start or reach Ray ({address or 'local'}): {exc}") from None
        self.task = ray.remote(num_cpus=threads)(_run_job)
        self.refs: dict[Any, Job] = {}

    def submit(self, job: Job) -> None:
        self.refs[self.task.remote(job.argv, job.env, str(job.log))] = job

    def running(self) -> int:
        return len(self.refs)

    def wait(self) -> list[Finished]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        out = []
        for ref in ready:
            job = self.refs.pop(ref)
            rc, stdout, seconds = self.ray.get(ref)
            out.append(Finished(job, rc, stdout, seconds))
        return out

    def interrupt(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref)
        self.refs.clear()
