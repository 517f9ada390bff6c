"""Where trials run: local worker processes, or Ray tasks.

A trial is the `dnnspec train ... --json` command a user could type, run as its own
process, so a trial directory is an ordinary run directory, a crash or divergence stays in
its trial, and each process gets its own onnxruntime thread count. Both executors run the
same command; only the scheduling differs.

A local trial dies with the tuner: on Linux the kernel sends it SIGINT when the tuner
exits for any reason, `kill -9` included (as Ctrl-C would, so it keeps its checkpoint), and
a later `--resume` finds no orphan still holding its run directory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dnnspec.errors import error
from dnnspec.files import os_reason

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process receives when its parent exits."""


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
        err = open_log(job.log)
        try:
            proc = subprocess.Popen(
                job.argv,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the tuner, which stops trials itself
                env={**os.environ, **job.env},
                preexec_fn=_die_with(os.getpid()),
            )
        finally:
            os.close(err)
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


def open_log(path: Path) -> int:
    """A trial's log, created or truncated, never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)
    except OSError as exc:
        raise error(f"cannot write the trial log '{path}': {os_reason(exc)}") from None


def _die_with(parent: int) -> Callable[[], None]:
    """What the trial process runs before its command: ask the kernel to interrupt it when
    the tuner exits (Linux), and restore the default Ctrl-C a tuner started in the
    background (SIGINT ignored) would otherwise pass on, so the trial can be stopped."""
    prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None

    def prepare() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
        if os.getppid() != parent:  # the tuner died before the request was made
            os._exit(130)

    return prepare


def _run_job(argv: Sequence[str], env: dict[str, str], log: str) -> tuple[int, str, float]:
    """The body of a Ray task: the same process a local worker would start."""
    started = time.perf_counter()
    err = open_log(Path(log))
    try:
        done = subprocess.run(
            list(argv), stdout=subprocess.PIPE, stderr=err, env={**os.environ, **env}, check=False
        )
    finally:
        os.close(err)
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
            else:  # a new Ray, even where `ray start` left one (or its address file) behind
                options |= {"address": "local", "num_cpus": workers * threads}
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
