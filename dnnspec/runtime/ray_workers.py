"""Data-parallel training on Ray (`dnnspec train SPEC --workers N --backend ray
[--address ADDR]`): the workers are Ray actors, on a local Ray started for the run or on
the cluster at ADDR, and each runs the very `dnnspec train` command of an MPI rank
(runtime/parallel.py): the same split graphs, the same `Iallreduce` with its deadlines,
the same leader writing the run.

What differs is how the ranks meet. Ray places the actors; MPI joins them with its
dynamic-process calls: rank 0 opens a port (`MPI_Open_port`), the driver hands its name to
the others through Ray, and each connects and is merged into one intracommunicator
(`MPI_Comm_connect`/`accept`, `MPI_Intercomm_merge`), whatever the order they arrive in.
Each actor's process is started through `mpiexec -n 1` (Ray's `py_executable`), a
one-process MPI job with its own process manager: MPICH names the job of every process
that starts MPI without a launcher (a singleton) alike, and connecting two of those fails
("Local and remote groups ... must not contain the same processes", MPICH 5.0).

Rank 0 runs on the driver's node: it writes the run directory there, and the driver shows
its output as it comes. Every wait of the driver has a deadline (`DNNSPEC_WORKER_TIMEOUT`):
actors that cannot be placed or cannot reach each other end the run with a message. An
actor that dies (kill -9, out of memory, its node lost) restarts them all from the last
checkpoint as under MPI (`parallel.restarting`); the actors of a try are killed before the
next, and with the run, so none outlives it. Ctrl-C is passed on to the workers; the
leader keeps its last checkpoint and says how to resume.

Why MPI between actors rather than Ray's collective library: its CPU backend is gloo,
through `pygloo` (no distribution for this Python) or, in Ray 2.60, `torch.distributed`,
which would make PyTorch (1.2 GB) a dependency of one call, blocking without a deadline.
"""

from __future__ import annotations

import os
import runpy
import shlex
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnnspec.errors import error
from dnnspec.runtime.parallel import (
    ENV,
    STOP_SECONDS,
    mpi,
    mpiexec,
    restarting,
    timeout,
    use_communicator,
)

DEFAULT_PORT = 6379
"""The port of a Ray cluster's head when ADDR gives none (`ray start --head`'s)."""
PROBE_SECONDS = 5.0
"""How long the driver tries to reach `--address` before saying no cluster is there."""
POLL_SECONDS = 0.2
"""How often the driver shows rank 0's new output and looks for ended workers."""


def launch_ray(
    workers: int,
    argv: Sequence[str],
    run_dir: Path,
    address: str | None,
    script: str | None = None,
) -> int:
    """`dnnspec ARGV` (training into `run_dir`) as `workers` Ray actors; their exit status.
    `script`: run that Python file with ARGV instead (tools/bench_parallel.py's ranks)."""
    ray = _connect(address, workers)
    started_here = not address
    try:
        return restarting(lambda args: _run_actors(ray, workers, args, script), argv, run_dir)
    finally:
        if started_here:
            ray.shutdown()


def _connect(address: str | None, workers: int) -> Any:
    """Ray, started here (with at least a CPU per worker) or connected to `address`."""
    mpiexec()  # MPI is missing: say so before starting anything
    if address:
        _probe(address)
    try:
        import ray
    except ImportError:
        raise error(
            "--backend ray needs Ray, which is not installed",
            help="pip install 'dnnspec[ray]'",
        ) from None
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        options["address"] = address
    else:  # a new Ray, even where `ray start` left one running
        options |= {"address": "local", "num_cpus": max(os.cpu_count() or 1, workers)}
    try:
        ray.init(**options, logging_level="ERROR")
    except Exception as exc:  # Ray raises several unrelated types for "cannot connect"
        raise error(f"cannot start or reach Ray ({address or 'local'}): {exc}") from None
    return ray


def _probe(address: str) -> None:
    """A clear error, within PROBE_SECONDS, when nothing answers at `address` (Ray itself
    retries for minutes)."""
    text = address.removeprefix("ray://")
    if text == "auto":
        return
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(DEFAULT_PORT))
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except (OSError, ValueError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else getattr(exc, "strerror", None)
        raise error(
            f"no Ray cluster answers at --address {address} ({why or exc})",
            help="start one with `ray start --head` (it prints the address to give), or "
            "leave out --address to train on a Ray started for the run",
        ) from None


def _run_actors(ray: Any, workers: int, argv: list[str], script: str | None) -> int | str:
    """One try: the actors started, joined and run; the leader's exit status, or why a
    worker stopped when its actor died."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    runtime_env = {
        "py_executable": f"{shlex.quote(mpiexec())} -n 1 {shlex.quote(sys.executable)}",
        "env_vars": {ENV: str(workers)},
    }
    worker = ray.remote(num_cpus=1)(Rank)
    actors = [
        worker.options(
            runtime_env=runtime_env,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
            if rank == 0
            else "SPREAD",
        ).remote()
        for rank in range(workers)
    ]
    with tempfile.TemporaryDirectory(prefix="dnnspec-ray-") as tmp:
        shown = _Shown(Path(tmp))
        try:
            return _train(ray, actors, argv, shown, script)
        finally:
            for actor in actors:
                ray.kill(actor)
            shown.show()


def _train(
    ray: Any, actors: list[Any], argv: list[str], shown: _Shown, script: str | None
) -> int | str:
    """Start the actors, join them into one communicator and run the command."""
    workers = len(actors)
    outputs = [(str(shown.out), str(shown.err)), *[(None, None)] * (workers - 1)]
    where = _get(
        ray,
        [a.start.remote(*outputs[rank]) for rank, a in enumerate(actors)],
        f"{workers} Ray workers did not start",
        "the cluster needs a free CPU for each worker, one of them on this node",
    )
    port = _get(ray, [actors[0].open_port.remote()], "rank 0 opened no MPI port", None)[0]
    _get(
        ray,
        [a.join.remote(port, workers) for a in actors],
        "the Ray workers could not reach each other over MPI",
        "each worker connects to rank 0's port (on this node): a firewall between the "
        "nodes stops it",
    )
    refs = [a.run.remote(argv, os.getcwd(), script) for a in actors]
    try:
        return _watch(ray, refs, shown)
    except KeyboardInterrupt:
        here = ray.get_runtime_context().get_node_id()
        for (node, pid), ref in zip(where, refs, strict=True):
            if node == here:
                os.kill(pid, signal.SIGINT)
            else:
                ray.cancel(ref)
        ready, _ = ray.wait(refs[:1], timeout=STOP_SECONDS)
        return int(ray.get(ready[0])[0]) if ready else 130


def _get(ray: Any, refs: list[Any], failed: str, why: str | None) -> list[Any]:
    """The actors' answers, within the workers' deadline; else an error saying `failed`."""
    from ray.exceptions import GetTimeoutError, RayError

    seconds = timeout()
    try:
        return list(ray.get(refs, timeout=seconds))
    except GetTimeoutError:
        raise error(f"{failed} within {seconds:g} s", help=why) from None
    except RayError as exc:
        raise error(f"{failed}: {str(exc).strip().splitlines()[-1]}", help=why) from None


def _watch(ray: Any, refs: list[Any], shown: _Shown) -> int | str:
    """Show rank 0's output until it ends; its exit status, that of a follower which
    failed first (its message shown), or why a worker stopped when its actor died."""
    from ray.exceptions import RayActorError, RayTaskError

    pending = list(refs)
    while True:
        ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS)
        shown.show()
        for ref in ready:
            rank = refs.index(ref)
            try:
                code, said = ray.get(ref)
            except RayActorError:
                return f"worker {rank}'s Ray actor died"
            except RayTaskError as exc:  # a failure of ours, not of the user's spec
                print(f"error: worker {rank} failed: {exc}", file=sys.stderr)
                return 1
            if rank == 0 or code:
                if said:
                    print(said, end="", file=sys.stderr)
                return int(code)


class _Shown:
    """Rank 0's standard output and error, written to files on this node by the actor,
    copied to the driver's as they grow."""

    def __init__(self, folder: Path) -> None:
        self.out, self.err = folder / "stdout", folder / "stderr"
        self._at = {self.out: 0, self.err: 0}

    def show(self) -> None:
        for path, stream in ((self.out, sys.stdout), (self.err, sys.stderr)):
            try:
                with path.open("rb") as f:
                    f.seek(self._at[path])
                    new = f.read()
            except FileNotFoundError:
                continue
            self._at[path] += len(new)
            if new:
                stream.buffer.write(new)
                stream.flush()


class Rank:
    """One worker, a Ray actor whose process is a one-process MPI job (`mpiexec -n 1`)."""

    def start(self, stdout: str | None, stderr: str | None) -> tuple[str, int]:
        """Send this process's output to the driver's files (rank 0) or keep its errors to
        return them (the others); where it runs (node, pid)."""
        import ray

        self._said = tempfile.TemporaryFile()  # noqa: SIM115 (read back by `run`)
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if stdout else None
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if stderr else None
        os.dup2(out if out is not None else os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(err if err is not None else self._said.fileno(), 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the process's own streams)
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        # Ray starts its processes with SIGINT blocked: Ctrl-C passed on must reach the run
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return ray.get_runtime_context().get_node_id(), os.getpid()

    def open_port(self) -> str:
        """Rank 0: the MPI port the others connect to."""
        self._port = str(mpi().Open_port())
        return self._port

    def join(self, port: str, workers: int) -> int:
        """Connect to rank 0's `port` (rank 0: accept), then accept with those already
        joined until all `workers` are one communicator; this worker's rank in it."""
        MPI = mpi()
        comm = MPI.COMM_SELF
        if getattr(self, "_port", None) is None:
            comm = comm.Connect(port).Merge(high=True)
        while comm.Get_size() < workers:
            comm = comm.Accept(port, root=0).Merge(high=False)
        use_communicator(comm)
        return int(comm.Get_rank())

    def run(self, argv: list[str], cwd: str, script: str | None) -> tuple[int, str]:
        """`python -m dnnspec ARGV` (or `python SCRIPT ARGV`) in this process, as `mpiexec`
        starts each rank, from the driver's directory where this node has it; the exit
        status and what the worker said on its standard error."""
        if Path(cwd).is_dir():
            os.chdir(cwd)
        sys.argv = [script or sys.executable, *argv]
        try:
            if script is None:
                runpy.run_module("dnnspec", run_name="__main__", alter_sys=True)
            else:  # as `python SCRIPT` runs it: its folder first on the path
                sys.path.insert(0, str(Path(script).resolve().parent))
                runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        sys.stdout.flush()
        sys.stderr.flush()
        self._said.seek(0)
        return code, self._said.read().decode("utf-8", "replace")[-4000:]
