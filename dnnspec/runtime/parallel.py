"""Data-parallel training (`dnnspec train SPEC --workers N`) over MPI (mpi4py).

The driver starts N worker processes with the MPI launcher (`mpiexec`, from the `mpich`
wheel of the `parallel` extra), each running the same `dnnspec train` command; the
launcher marks them with `DNNSPEC_WORKERS`. Rank 0, the leader, runs the ordinary run
(`runtime/run.py`): it alone writes progress, metrics, checkpoints and model.onnx. The
other ranks follow: before each epoch the leader sends them the carried state and the
step, then every rank walks the same epoch order (a function of seed and epoch) and,
for each global batch of the spec's `batch` rows, computes the gradient graph on its own
`batch / N` rows only (`assemble/split.py`). One all-reduce (SUM) per step adds the
gradient sums, the rows and the statistics; each rank applies the same update graph to
the same sums, so all hold the same parameters without sending them. A checkpoint is
the global state alone, so a run resumes with any worker count. `--backend ray` starts
the same ranks as Ray actors instead (runtime/ray_workers.py).

Every wait has a deadline (`DNNSPEC_WORKER_TIMEOUT` seconds, default WAIT_SECONDS): a
worker that died or hangs ends the run with a message instead of a hang, and the last
checkpoint resumes. Ctrl-C on the driver is forwarded to every worker; the leader
keeps its last checkpoint as in a one-process run, and the launcher's process group is
killed if it has not ended after STOP_SECONDS, so no worker outlives the driver.

Why MPI: the all-reduce is an existing collective library's, not a home-made one, and it
must install from PyPI on Python 3.11 with a CPU path. `mpi4py` with the `mpich` wheel
does, `mpiexec` included, and its `Iallreduce` can be polled against a deadline. Ray's
collective library needs `pygloo` for its CPU backend, of which PyPI has no distribution
for this Python; NCCL is GPU only; torch.distributed (gloo) would bring PyTorch for one
call.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.assemble.compile import train_section
from dnnspec.assemble.split import ROWS, SplitStep, grad_sum_name, split_step
from dnnspec.assemble.steps import SEED, STEP, Program, build_train_step
from dnnspec.data.datasets import Dataset
from dnnspec.data.stream import Chunked, Streamed
from dnnspec.errors import DiagnosticError, Span, error
from dnnspec.graph.rng import FIRST_ROW
from dnnspec.ir import Spec, TrainSpec
from dnnspec.runtime.backend import threads
from dnnspec.runtime.session import make_session
from dnnspec.runtime.trainer import Diverged, EpochStats, Trainer, initial_values
from dnnspec.training.accumulate import update_timing
from dnnspec.training.schedules import Timing

ENV = "DNNSPEC_WORKERS"
"""Set by the driver for the processes it starts: the worker count."""
TIMEOUT_ENV = "DNNSPEC_WORKER_TIMEOUT"
WAIT_SECONDS = 300.0
"""How long a worker waits for the others (a step's all-reduce, the next epoch)."""
RESTARTS_ENV = "DNNSPEC_WORKER_RESTARTS"
RESTARTS = 2
"""How often a run whose worker was killed restarts from its last checkpoint."""
STOP_SECONDS = 30.0
"""After Ctrl-C, how long the driver waits for the workers before killing them."""
FOLLOWER = "follower"
"""`RunResult.stopped` of a rank other than 0: it wrote nothing."""
_COMMAND = 7
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process receives when its parent exits."""
_BROKEN: list[str] = []
"""The waits that ran out in this process (then MPI is not finalized at exit)."""
_STDERR: list[int] = []
"""A follower's own standard error, kept while its output is silenced."""
_JOINED: list[Any] = []
"""The communicator `use_communicator` gave, when not MPI's world."""


def worker_rank() -> int | None:
    """This process's rank when the driver started it as a worker, else None."""
    return None if ENV not in os.environ else int(_comm().Get_rank())


def check_workers(spec: Spec, workers: int) -> TrainSpec:
    """The train section, refused with a located error when `workers` cannot share it."""
    train = train_section(spec)
    if workers < 1:
        raise error(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return train
    span = _setting_span(train, "batch")
    if workers > train.batch:
        raise error(
            f"{workers} workers cannot share a batch of {train.batch} samples: each needs "
            "at least one",
            span,
            help=f"use at most {train.batch} workers, or a larger batch",
        )
    if train.batch % workers:
        raise error(
            f"batch {train.batch} does not divide among {workers} workers",
            span,
            help="the batch is the global batch: make it a multiple of --workers",
        )
    timeout()  # a bad deadline is refused here, before any worker starts
    return train


def _setting_span(train: TrainSpec, name: str) -> Span:
    """The line of setting `name` in the train section (the section's span if unread)."""
    span = train.span
    try:
        lines = Path(span.file).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return span
    for number in range(span.line, min(span.end_line, len(lines)) + 1):
        text = lines[number - 1]
        if text.strip().split(" ")[0] == name:
            col = len(text) - len(text.lstrip()) + 1
            return Span(
                file=span.file, line=number, col=col, end_line=number, end_col=len(text) + 1
            )
    return span


def launch(workers: int, argv: Sequence[str], run_dir: Path) -> int:
    """Run `dnnspec ARGV` (training into `run_dir`) as `workers` MPI processes and return
    their exit status, restarted from the last checkpoint when a worker is killed (by a
    signal, or the launcher after another's death; see `restarting`)."""
    prefix = [mpiexec(), "-n", str(workers), sys.executable, "-m", "dnnspec"]

    def once(args: list[str]) -> int | str:
        status = _run_workers([*prefix, *args], workers)
        return status if status in (0, 1, 2, 130) else f"exit status {status}"  # 0-2, 130: said why

    return restarting(once, argv, run_dir)


def mpiexec() -> str:
    """The MPI launcher beside this Python (the mpich wheel's), else on the PATH."""
    found = Path(sys.executable).with_name("mpiexec")
    command = str(found) if found.exists() else shutil.which("mpiexec")
    if command is None:
        raise error(
            "--workers needs MPI, which is not installed",
            help="pip install 'dnnspec[parallel]' (mpi4py and the mpich launcher)",
        )
    return command


def restarting(once: Callable[[list[str]], int | str], argv: Sequence[str], run_dir: Path) -> int:
    """`once(argv)` until it gives an exit status; where it says instead why a worker
    stopped (killed, or its process lost), all restart from the run's last checkpoint
    (`--resume`), up to RESTARTS_ENV times (RESTARTS by default); past that, or with no
    checkpoint yet, it is an error."""
    restarts = int(os.environ.get(RESTARTS_ENV, RESTARTS))
    args = list(argv)
    for restart in range(restarts + 1):
        got = once(args)
        if isinstance(got, int):
            return got
        if restart == restarts or not (run_dir / "checkpoint" / "last.npz").is_file():
            break
        print(
            f"note: a worker stopped ({got}): all restart from the last "
            f"checkpoint (restart {restart + 1} of {restarts})",
            file=sys.stderr,
        )
        again = [a for a in args if a != "--overwrite"]
        args = again if "--resume" in again else [*again, "--resume"]
    raise error(
        f"a worker stopped ({got}) and the run with it",
        help="the last checkpoint resumes with --resume (with any --workers)",
    )


def _run_workers(command: list[str], workers: int) -> int:
    """One launch of the workers; their exit status (130 after Ctrl-C)."""
    env = {**os.environ, ENV: str(workers)}
    # its own session, so Ctrl-C reaches the workers once, through the launcher, which
    # is asked to be stopped (and so to stop them) if the driver dies
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, preexec_fn=_stop_with(os.getpid())
    )
    try:
        return proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the launcher kills its workers
            proc.wait()
            return 130


def _stop_with(parent: int) -> Callable[[], None]:
    """What the launcher runs before starting: ask the kernel for a SIGTERM when the
    driver exits (Linux), on which it ends its workers."""
    prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None

    def prepare() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the driver died before the request was made
            os._exit(143)

    return prepare


def mpi() -> Any:
    """mpi4py's MPI module, initialised here (never finalized by mpi4py: see `_comm`)."""
    try:
        import mpi4py

        mpi4py.rc.finalize = False
        from mpi4py import MPI
    except ImportError:
        raise error("--workers needs mpi4py", help="pip install 'dnnspec[parallel]'") from None
    return MPI


def use_communicator(comm: Any) -> None:
    """Train over `comm` instead of MPI's world: the workers of `--backend ray`, each a
    one-process MPI job, join theirs (runtime/ray_workers.py). Before any `_comm()`."""
    _JOINED.append(comm)


@functools.cache
def _comm() -> Any:
    """The workers' communicator (MPI's world, or the one joined by `use_communicator`); a
    follower's output is silenced (the leader speaks). MPI is finalized at exit only when
    no wait ran out: finalizing with a request still pending would hang, while exiting
    without it makes the launcher end every worker."""
    MPI = mpi()
    comm = _JOINED[0] if _JOINED else MPI.COMM_WORLD
    if comm.Get_rank():
        _STDERR.append(os.dup(2))  # for what only this worker can tell (`follow`)
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
    atexit.register(lambda: None if _BROKEN or MPI.Is_finalized() else MPI.Finalize())
    return comm


def parallel_trainer(
    program: Program, seed: int, data_size: int, device: str = "cpu"
) -> ParallelTrainer:
    """The Trainer of one rank of a `--workers` run (on the CPU)."""
    if device == "cuda":
        raise error(
            "--workers trains on the CPU: --device cuda does not combine with it yet",
            help="leave out --device (or use --device cpu) with --workers",
        )
    comm = _comm()
    workers = comm.Get_size()
    check = check_workers(program.typed.spec, workers)
    if data_size < workers:
        raise error(
            f"{workers} workers but the training data has {data_size} samples",
            check.data.span,
            help="use fewer workers than training samples",
        )
    per_epoch = math.ceil(data_size / check.batch)
    targets = {o.head.output: o.scale for o in program.outputs if o.scale is not None}
    every = program.train.accumulate
    rebuilt = build_train_step(  # under `accumulate`, the host sums a group's gradients
        program.typed,
        program.train.model_copy(update={"accumulate": 1}),
        program.classes,
        update_timing(Timing(per_epoch, per_epoch * program.train.epochs), every),
        program.float_dtype,
        emit_grads=True,
        targets=targets,
        sharded=True,
    )
    return ParallelTrainer(program, split_step(rebuilt), comm, seed, per_epoch)


def timeout() -> float:
    """Seconds a worker waits for the others (TIMEOUT_ENV, else WAIT_SECONDS)."""
    text = os.environ.get(TIMEOUT_ENV, str(WAIT_SECONDS))
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise error(f"{TIMEOUT_ENV} must be a positive number of seconds, got '{text}'")
    return seconds


class ParallelTrainer(Trainer):
    """One rank's trainer: the carried state on the host, one global step per batch
    (gradient graph on this rank's rows, all-reduce, update graph). Evaluation runs
    the ordinary eval step on the host copy of the parameters.

    Under `accumulate K` a step is a micro-batch: each rank adds its rows' gradient sums
    up on the host and they are all-reduced with the group's last micro-batch only (as
    DDP's `no_sync`), followed by the update; the other micro-batches all-reduce their
    loss, statistics and layer state alone. `step` counts micro-batches as in one
    process, and a group ends where `training/accumulate.py` ends it (every K
    micro-batches and at the epoch's end), so checkpoints, taken between epochs when
    the sums are zero, are those of one process."""

    def __init__(
        self, program: Program, split: SplitStep, comm: Any, seed: int, per_epoch: int
    ) -> None:
        super().__init__(program, "cpu", seed)
        self.split, self.comm = split, comm
        self.every, self.per_epoch = program.train.accumulate, per_epoch
        self._group: dict[str, np.ndarray] = {}
        """This rank's gradient sums and rows (`ROWS`) of the group so far."""
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())
        self.leader = self.rank == 0
        # the machine's cores shared among the workers on it
        flops = 3.0 * program.typed.total_flops() * program.train.batch / self.size
        intra = max(1, threads(flops) // self.size)
        self._gradient = make_session(split.gradient, "cpu", weights_as_inputs=True, intra_op=intra)
        self._update = make_session(split.update, "cpu", weights_as_inputs=True, intra_op=intra)
        self._carried = initial_values(program, seed)
        shapes = {o.name: o.shape for o in self._gradient.get_outputs()}
        self._shapes = {  # what is all-reduced, by gradient-graph output, with its shape
            name: tuple(int(d) for d in shapes[name])
            for name in [*(grad_sum_name(p) for p in split.grads), *split.buffers, *split.scalars]
        }
        self._sums = [grad_sum_name(p) for p in split.grads]
        self._last_input: dict[str, np.ndarray] | None = None
        self.communication = 0.0
        """Seconds spent in the all-reduce (for the benchmark's share of a step)."""
        if self.leader:
            atexit.register(self._stop_followers)

    # state -------------------------------------------------------------------
    def values(self) -> dict[str, np.ndarray]:
        return {name: self._carried[name] for name in self.carried}

    def params(self) -> dict[str, np.ndarray]:
        return {s.name: self._carried[s.name] for s in self.program.model_slots()}

    def load_values(self, values: dict[str, np.ndarray]) -> None:
        self._carried = {name: np.asarray(values[name]) for name in self.carried}
        self._last_input, self._group = None, {}

    def set_control(self, name: str, value: float) -> None:
        self._carried[name] = np.array(value, self.dtype)

    def evaluate_stats(
        self,
        data: Dataset | Chunked,
        input_name: str,
        batch: int = 1024,
        params: dict[str, np.ndarray] | None = None,
    ) -> EpochStats:
        return super().evaluate_stats(
            data, input_name, batch, params if params is not None else self.params()
        )

    # the epoch loop ----------------------------------------------------------
    def run_epoch(
        self,
        data: Dataset | Streamed,
        input_name: str,
        batch: int,
        epoch: int,
        on_call: Callable[[np.ndarray, int], None] | None = None,
    ) -> dict[str, Any]:
        """The leader first hands the followers the state to start the epoch from."""
        if self.leader:
            for rank in range(1, self.size):
                request = self.comm.isend((epoch, batch, self.step, self._carried), rank, _COMMAND)
                self._wait(request, f"handing epoch {epoch + 1} to worker {rank}")
        return super().run_epoch(data, input_name, batch, epoch, on_call)

    def follow(self, data: Dataset | Streamed, input_name: str) -> None:
        """A follower's run: epochs as the leader says, until it says stop (None). What
        stops it here (its deadline, its memory) it says itself: the leader cannot."""
        try:
            self._follow(data, input_name)
        except Exception as exc:
            if _STDERR:
                text = exc.render() if isinstance(exc, DiagnosticError) else f"error: {exc}"
                os.write(_STDERR[0], f"worker {self.rank}: {text}\n".encode())
            raise

    def _follow(self, data: Dataset | Streamed, input_name: str) -> None:
        while True:
            deadline = time.monotonic() + timeout()
            while not self.comm.Iprobe(source=0, tag=_COMMAND):
                if time.monotonic() > deadline:
                    _BROKEN.append("the next epoch")
                    raise error(f"worker {self.rank}: the leader sent nothing for {timeout():g} s")
                time.sleep(0.001)
            command = self.comm.recv(source=0, tag=_COMMAND)
            if command is None:
                return
            epoch, batch, self.step, carried = command
            self.load_values(carried)
            try:
                self.run_epoch(data, input_name, batch, epoch)
            except Diverged:
                continue  # the leader saw the same loss and says what comes next

    def _stop_followers(self) -> None:
        """Tell the followers the run is over (however the leader ends)."""
        for rank in range(1, self.size):
            try:
                self._wait(self.comm.isend(None, rank, _COMMAND), "stopping", STOP_SECONDS)
            except Exception:  # a follower already gone: the launcher ends it
                return

    def run_steps(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Global steps, one per row of `rows` [K, batch]."""
        steps = [self._global_step(row) for row in rows]
        losses = np.array([loss for loss, _ in steps], self.dtype)
        return losses, {k: np.stack([stats[k] for _, stats in steps]) for k in self._keys}

    def _global_step(self, row: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """This rank's rows of the global batch `row` through the gradient graph, the
        sums all-reduced, the update applied (on a group's last micro-batch under
        `accumulate`); the global loss and statistics."""
        shards = np.array_split(row, self.size)
        first = sum(len(s) for s in shards[: self.rank])
        rows = len(shards[self.rank])
        local = self._local(row, first, rows)
        parts = {ROWS: np.array(rows, self.dtype)}
        for name, shape in self._shapes.items():
            if name not in self._sums:  # batch means are summed times the rows
                value = local.get(name, np.zeros(shape, self.dtype))
                parts[name] = value * rows if name in self.split.means else value
        group = self._add_to_group(local, rows)
        summed = self._all_reduce({**parts, **{f"group/{k}": v for k, v in group.items()}})
        total = summed[ROWS]
        for name in self.split.means:
            summed[name] = summed[name] / total
        loss = float(summed[self.split.scalars[0]])
        if not math.isfinite(loss):  # the update before this step broke the parameters
            if self._last_input is not None:
                self._carried = self._last_input
            raise Diverged(self.step, -1, loss)
        new = dict(self._carried)
        if group:
            feeds = {**self._carried, **{k: summed[f"group/{k}"] for k in group}}
            feeds[STEP] = np.array(self._updates_before(), np.int64)
            got = self._update.run(None, {i.name: feeds[i.name] for i in self._update.get_inputs()})
            for output, value in zip(self._update.get_outputs(), got, strict=True):
                new[output.name.removesuffix(".next")] = value
        new |= {b.removesuffix(".next"): summed[b] for b in self.split.buffers}
        self._last_input, self._carried = self._carried, new
        self.step += 1
        return loss, {key: summed[name] for key, name in self.program.scalar_outputs().items()}

    def _add_to_group(self, local: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """This micro-batch's gradient sums and rows added to the group's; the group's, to
        all-reduce, when this micro-batch ends it (always without `accumulate`), else {}."""
        for name in self._sums:
            value = local.get(name, np.zeros(self._shapes[name], self.dtype))
            self._group[name] = self._group[name] + value if name in self._group else value
        self._group[ROWS] = self._group.get(ROWS, np.array(0, self.dtype)) + rows
        after = self.step % self.per_epoch + 1
        if after % self.every and after != self.per_epoch:
            return {}
        group, self._group = self._group, {}
        return group

    def _updates_before(self) -> int:
        """Updates made before this step's (the update graph's `step`), as
        `training/accumulate.py` counts them."""
        epoch, position = divmod(self.step, self.per_epoch)
        return epoch * -(-self.per_epoch // self.every) + position // self.every

    def _local(self, row: np.ndarray, first: int, rows: int) -> dict[str, np.ndarray]:
        """The gradient graph's outputs on the `rows` rows of the global batch `row` from
        position `first` (nothing for no rows). In-memory data is gathered for those rows
        only; a stream's reader hands out the epoch's rows in order, so a worker reads the
        batch and keeps its rows."""
        if not rows:
            return {}
        assert self._data is not None
        if isinstance(self._data[0], Streamed):
            block = {k: v[first : first + rows] for k, v in self._block(row).items()}
        else:
            block = self._block(row[first : first + rows])
        feeds = {**self._carried, **block}
        feeds[FIRST_ROW] = np.array(first, np.int64)  # its rows' masks: the global rows'
        feeds[STEP], feeds[SEED] = np.array(self.step, np.int64), np.array(self.seed, np.int64)
        got = self._gradient.run(None, {i.name: feeds[i.name] for i in self._gradient.get_inputs()})
        return dict(zip((o.name for o in self._gradient.get_outputs()), got, strict=True))

    def _all_reduce(self, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sums over the workers of each of `parts`, in one buffer."""
        flat = np.concatenate([np.asarray(v, self.dtype).reshape(-1) for v in parts.values()])
        started = time.perf_counter()
        self._wait(self.comm.Iallreduce(_in_place(), flat), f"the all-reduce of step {self.step}")
        self.communication += time.perf_counter() - started
        summed, at = {}, 0
        for name, value in parts.items():
            size = int(np.prod(np.shape(value)))
            summed[name] = flat[at : at + size].reshape(np.shape(value))
            at += size
        return summed

    def _wait(self, request: Any, what: str, seconds: float | None = None) -> None:
        """Poll `request` until done; past the deadline the run stops with a message."""
        limit = timeout() if seconds is None else seconds
        deadline = time.monotonic() + limit
        spins = 0
        while not request.Test():
            spins += 1
            if spins > 1000:
                time.sleep(0.0005)
            if time.monotonic() > deadline:
                _BROKEN.append(what)
                raise error(
                    f"workers did not answer within {limit:g} s ({what}): one stopped or hangs",
                    help="the last checkpoint resumes with --resume (with any --workers)",
                )


def _in_place() -> Any:
    from mpi4py import MPI

    return MPI.IN_PLACE
