"""One training run from a prepared spec (`runtime/prepare.py`): the run directory (its
claim and lock, graphs, checkpoints, metrics, confusion CSVs) and the epoch loop with
early stopping.

The run directory receives model.onnx, train_step.onnx, eval_step.onnx,
spec.lock.json, metrics.jsonl and checkpoint/last.npz. Progress is reported through a
`Reporter` so the CLI can draw a progress bar and the API can stay silent.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import onnx

from dnnspec.assemble.steps import Program, build_inference
from dnnspec.errors import Diagnostic, DiagnosticError, error
from dnnspec.files import (
    DirectoryLock,
    finite_json,
    is_regular,
    json_line,
    make_directory,
    sweep_temporary,
    write_bytes,
)
from dnnspec.files import write_text as write_file_text
from dnnspec.ir import Spec, TrainSpec
from dnnspec.resolve import pin_paths, write_lock
from dnnspec.runtime import checkpoint, interrupts
from dnnspec.runtime.backend import DEFAULT, Device
from dnnspec.runtime.cadence import Cadence
from dnnspec.runtime.choose import AUTO, check_name, choose
from dnnspec.runtime.parallel import FOLLOWER, ParallelTrainer, parallel_trainer, worker_rank
from dnnspec.runtime.prepare import Prepared, prepare
from dnnspec.runtime.trainer import Diverged, Trainer
from dnnspec.training.early_stop import EarlyStop, higher_is_better
from dnnspec.training.schedules import LR_FACTOR, SCHEDULES, Plateau


class Reporter(Protocol):
    """Receives progress; the CLI draws it, the library API ignores it."""

    def warn(self, warnings: Sequence[Diagnostic]) -> None: ...
    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...
    def advance(self, epoch: int, steps: int, samples: int, loss: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, message: str) -> None: ...


class Silent:
    def warn(self, warnings: Sequence[Diagnostic]) -> None: ...
    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...
    def advance(self, epoch: int, steps: int, samples: int, loss: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, message: str) -> None: ...


@dataclass
class RunResult:
    """What a finished run reports: final and best metrics, and where things were written."""

    run_dir: Path
    metrics: dict[str, float]
    best: dict[str, float]
    epochs: int
    steps: int
    stopped: str
    seconds: float
    cpu_seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)


def _finite(params: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(v).all() for v in params.values())


def write_graphs(program: Program, run_dir: Path) -> dict[str, Path]:
    """The train-step and eval-step graphs, each written atomically."""
    paths = {"train_step": run_dir / "train_step.onnx", "eval_step": run_dir / "eval_step.onnx"}
    write_bytes(paths["train_step"], program.train_step.SerializeToString())
    write_bytes(paths["eval_step"], program.eval_step.SerializeToString())
    return paths


def export_model(program: Program, params: dict[str, np.ndarray], path: Path) -> Path:
    """Write the deployable model and check it fully before anyone ships it."""
    model = build_inference(
        program.typed, program.model_slots(), params, program.metadata, program.preprocess
    )
    onnx.checker.check_model(model, full_check=True)
    with interrupts.deferred():  # a second Ctrl-C must not leave the run without a model
        for name, data in program.files.items():  # what model.onnx names (tokenizer.json)
            write_bytes(path.parent / name, data)
        write_bytes(path, model.SerializeToString())
    return path


def _diverged(
    exc: Diverged, epoch: int, train: TrainSpec, kept: Path, which: str
) -> DiagnosticError:
    where = "by" if exc.what == "the parameters" else "at"
    return DiagnosticError(
        Diagnostic(
            message=f"training diverged: {exc.what} became {exc.loss} {where} step {exc.step} "
            f"(epoch {epoch + 1})",
            span=train.optimizer.span,
            help=f"lower the learning rate or check the data; {kept} holds {which}",
        )
    )


class Interrupted(Exception):
    """Ctrl-C during training: model.onnx and the checkpoint of the last epoch are kept.
    `resumable` is False when no epoch had finished (nothing was saved to resume from)."""

    def __init__(self, run_dir: Path, epoch: int, resumable: bool = True) -> None:
        super().__init__(f"interrupted in epoch {epoch + 1}")
        self.run_dir, self.epoch, self.resumable = run_dir, epoch, resumable


BEST = "best:"


@dataclass
class _Run:
    """The mutable state of one training run, and the steps of its epoch loop."""

    prep: Prepared
    trainer: Trainer
    run_dir: Path
    reporter: Reporter
    stop: EarlyStop | None
    plateau: Plateau | None = None
    cadence: Cadence = field(default_factory=Cadence)
    epoch: int = 0
    last_good: dict[str, np.ndarray] = field(default_factory=dict)
    best_params: dict[str, np.ndarray] | None = None
    best_record: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None
    values: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every finished epoch's record: the checkpoint carries it, metrics.jsonl is rebuilt
    from it on resume, so no epoch is lost whatever happened to that file."""
    pending: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None
    saved_at: float = field(default_factory=time.perf_counter)
    validated: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
    """The parameters of the last validation and its confusion counts by output, so the
    end of the run need not evaluate them again."""

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint" / "last.npz"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def expected_arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Name -> (shape, dtype) of every tensor a checkpoint of this program holds."""
        program = self.prep.program
        dtype = program.float_dtype
        carried = set(program.carried())
        shapes = {
            i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim)
            for i in program.train_step.graph.input
            if i.name in carried
        }
        expected = {name: (shapes[name], dtype) for name in program.carried()}
        return expected

    def restore(self) -> None:
        """Continue from the last checkpoint. The checksum only catches damage, so every
        header field and every tensor is checked against this program before it is used."""
        program, path = self.prep.program, self.checkpoint_path
        expected = self.expected_arrays()
        best = {BEST + s.name: expected[s.name] for s in program.model_slots()}
        # the tensors (twice: the best copy) and a few KiB of records per epoch
        limit = sum(int(np.prod(shape)) * 8 for shape, _ in expected.values()) * 2
        limit += 4096 * self.prep.train.epochs
        arrays, raw = checkpoint.load(path, limit)
        header = checkpoint.header_of(path, raw)
        if header.spec_hash != program.metadata.spec_hash:
            raise error(
                f"checkpoint '{path}' was written by a different spec",
                help="resume with the spec (and --set values) that started the run, "
                "or train into a new --out directory",
            )
        checkpoint.check_arrays(
            path, arrays, {**expected, **best} if any(k in arrays for k in best) else expected
        )
        self._check_progress(path, header)
        if header.data_sha256 != self.prep.data_sha256:
            raise error(
                f"the data changed since the run in '{self.run_dir}' started: its samples "
                "differ from those the checkpoint was trained on",
                self.prep.train.data.span,
                help="restore the original data, or start over with --overwrite",
            )
        schedule, started = self.prep.train.schedule, header.epochs
        if started != self.prep.train.epochs and SCHEDULES.get(schedule.name).spans_run:
            raise error(
                f"the run in '{self.run_dir}' was started for {started} "
                f"epoch{'s' if started != 1 else ''}, not {self.prep.train.epochs}, "
                f"and its {schedule.name} schedule spans them",
                help=f"resume with --epochs {started}, or train into a new --out directory",
            )
        self.trainer.load_values({k: arrays[k] for k in program.carried()})
        self.trainer.step = header.step
        self.epoch = header.epoch
        kept = {k.removeprefix(BEST): v for k, v in arrays.items() if k.startswith(BEST)}
        self.best_params = kept or None
        self.best_record = dict(header.best_record)
        self.record = dict(header.record)
        self.history = [dict(r) for r in header.history]
        self.stopped = header.stopped
        if self.stop is not None and header.early_stop is not None:
            self.stop.best, self.stop.waited = header.early_stop
        if self.plateau is not None and header.plateau is not None:
            lowest, waited, factor = header.plateau
            self.plateau.best = None if lowest is None else float(lowest)
            self.plateau.waited, self.plateau.current = waited, float(factor)
        # epochs logged after the checkpoint are trained again; whatever the log holds, it
        # is rewritten (atomically) from the records the checkpoint carries
        write_file_text(self.log_path, "".join(json_line(r) for r in self.history))

    def _check_progress(self, path: Path, header: checkpoint.Header) -> None:
        """The header's counters agree with each other and with this program's data."""
        steps_per_epoch = math.ceil(len(self.prep.training) / self.prep.train.batch)
        problem = None
        if header.seed != self.prep.train.seed:
            problem = f"seed {header.seed}, but the spec's is {self.prep.train.seed}"
        elif header.epoch > header.epochs:
            problem = f"epoch {header.epoch} of {header.epochs}"
        elif header.step != header.epoch * steps_per_epoch:
            problem = f"step {header.step} after {header.epoch} epochs of {steps_per_epoch} steps"
        elif len(header.history) != header.epoch:
            problem = f"{len(header.history)} epoch records for {header.epoch} epochs"
        elif (header.early_stop is None) != (self.stop is None):
            problem = "early-stopping state that does not match the spec's early_stop"
        elif header.stopped is not None and self.stop is None:
            problem = "an early stop, but the spec has no early_stop"
        if problem is not None:
            raise error(
                f"checkpoint '{path}' is inconsistent: {problem}",
                help="it was not written by this run; start over with --overwrite",
            )

    def train_epoch(self) -> dict[str, np.ndarray]:
        """One pass over the training data; divergence keeps finite parameters and stops."""
        prep, trainer, epoch = self.prep, self.trainer, self.epoch
        try:
            result = trainer.run_epoch(
                prep.training,
                prep.spec.model.inputs[0].name,
                prep.train.batch,
                epoch,
                lambda losses, n: self.reporter.advance(epoch, len(losses), n, float(losses[-1])),
            )
            self.values = trainer.values()
            params = {s.name: self.values[s.name] for s in prep.program.model_slots()}
            if not _finite(params):
                # e.g. ReLU turned NaN weights into finite outputs, so the loss looked fine
                raise Diverged(trainer.step, epoch, math.nan, "the parameters")
        except Diverged as exc:
            current = trainer.params()
            if self.best_params is not None:
                kept, which = self.best_params, "the weights of the best epoch"
            else:
                kept = current if _finite(current) else self.last_good
                which = "the last finite weights"
            self.flush()
            raise _diverged(exc, epoch, prep.train, self.export(kept), which) from None
        self.record = {"epoch": epoch + 1, "step": trainer.step, **result}
        self.last_good = params
        return params

    def validate(self) -> None:
        """Validation of the parameters the epoch ended with (`last_good`)."""
        if len(self.prep.val_data):
            stats = self.trainer.evaluate_stats(
                self.prep.val_data, self.prep.spec.model.inputs[0].name
            )
            self.record.update({f"val_{k}": v for k, v in stats.result().items()})
            self.validated = self.last_good, stats.confusions

    def snapshot(self) -> None:
        """The state after the epoch just finished, to be written when the cadence says so
        (or at the end, an early stop, Ctrl-C or divergence)."""
        arrays = dict(self.values)
        arrays.update({BEST + k: v for k, v in (self.best_params or {}).items()})
        header = {
            "data_sha256": self.prep.data_sha256,
            "history": list(self.history),
            "step": self.trainer.step,
            "epoch": self.epoch,
            "epochs": self.prep.train.epochs,
            "stopped": self.stopped,
            "seed": self.prep.train.seed,
            "spec_hash": self.prep.program.metadata.spec_hash,
            "early_stop": [self.stop.best, self.stop.waited] if self.stop else None,
            "plateau": [self.plateau.best, self.plateau.waited, self.plateau.current]
            if self.plateau
            else None,
            "best_record": self.best_record,
            "record": self.record,
        }
        self.pending = arrays, header

    def flush(self) -> None:
        """Write the pending snapshot, if any (a Ctrl-C meanwhile waits until it is written)."""
        if self.pending is not None:
            with interrupts.deferred():
                checkpoint.save(self.checkpoint_path, *self.pending)
                self.pending, self.saved_at = None, time.perf_counter()

    def write_confusion(self, params: dict[str, np.ndarray]) -> dict[str, Path]:
        """confusion.csv (a named class output `digit`: confusion_digit.csv): [true,
        predicted] counts of model.onnx's weights on the validation split (the training
        data when there is none), headed by the class names. Returns the paths by output."""
        if self.validated is not None and self.validated[0] is params:
            confusions = self.validated[1]
        else:
            data = self.prep.val_data if len(self.prep.val_data) else self.prep.train_data
            name = self.prep.spec.model.inputs[0].name
            confusions = self.trainer.evaluate_stats(data, name, params=params).confusions
        meta = self.prep.program.metadata
        named = {o.name: o.class_labels for o in meta.outputs or []}
        paths = {}
        for output, counts in confusions.items():
            ids = [str(i) for i in range(len(counts))]  # a binary output given 0/1 numbers
            if output:
                labels = named[output] or ids
                path = self.run_dir / f"confusion_{output}.csv"
            else:
                labels = meta.class_labels or ids
                path = self.run_dir / "confusion.csv"
            write_confusion(path, counts, labels)
            paths[output] = path
        return paths

    def export(self, params: dict[str, np.ndarray]) -> Path:
        return export_model(self.prep.program, params, self.run_dir / "model.onnx")

    def loop(self, log: TextIO, stop_after: int | None = None) -> str:
        """Epochs until done or early-stopped; returns why it stopped. A resumed run that
        had already stopped early stays stopped, as it would have without the interruption.
        `stop_after` pauses the run after that epoch: the schedule still spans the whole
        run, so `--resume` continues it exactly as if it had never paused."""
        last = min(stop_after or self.prep.train.epochs, self.prep.train.epochs)
        while self.stopped is None and self.epoch < last:
            t0 = time.perf_counter()
            params = self.train_epoch()
            self.validate()
            if self.plateau is not None:
                self.record["lr_factor"] = self.plateau.current
                factor = self.plateau.update(self.record[self.plateau.key])
                if factor != self.record["lr_factor"]:
                    self.trainer.set_control(LR_FACTOR, factor)
                    self.values = self.trainer.values()
            self.record["seconds"] = round(time.perf_counter() - t0, 4)
            self.history.append(self.record)
            log.write(json_line(self.record))
            log.flush()
            self.reporter.epoch(self.record)
            if self.stop is not None and self.stop.update(self.record[self.stop.key]):
                self.best_params, self.best_record = params, self.record
            self.epoch += 1
            if self.stop is not None and self.stop.exhausted:
                self.stopped = f"early stop: {self.stop.key} did not improve for " + (
                    "1 epoch" if self.stop.patience == 1 else f"{self.stop.patience} epochs"
                )
            self.snapshot()
            if self.cadence.due(self.epoch, time.perf_counter() - self.saved_at):
                self.flush()
        self.flush()
        if self.stopped is None and self.epoch < self.prep.train.epochs:
            return f"paused after epoch {self.epoch} of {self.prep.train.epochs}"
        return self.stopped or "completed"


def write_confusion(path: Path, counts: np.ndarray, labels: list[str]) -> None:
    """Rows are true classes, columns predicted ones, headed by the class names."""
    text = io.StringIO(newline="")
    out = csv.writer(text)
    out.writerow(["true \\ predicted", *labels])
    for label, row in zip(labels, counts.tolist(), strict=True):
        out.writerow([label, *row])
    write_file_text(path, text.getvalue())


RUN_FILES = ("metrics.jsonl", "model.onnx", "checkpoint/last.npz")
"""What marks a directory as holding a training run, and what --overwrite clears first."""


def _claim(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Make `run_dir` usable, refusing to clobber an earlier run by accident; the caller
    holds the directory's lock, so no other run can claim it meanwhile."""
    if resume and overwrite:
        raise error(
            "--resume and --overwrite contradict each other",
            help="--resume continues the run in --out; --overwrite replaces it",
        )
    holds_run = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoint").exists()
    if holds_run and not (resume or overwrite):
        raise error(
            f"'{run_dir}' already holds a training run",
            help="continue it with --resume, replace it with --overwrite, or choose another --out",
        )
    sweep_temporary(run_dir)
    sweep_temporary(run_dir / "checkpoint")
    if overwrite:  # an interrupted replacement must not resume the run it replaced
        for name in RUN_FILES:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                raise error(f"cannot replace '{path}': it is a directory")
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise error(f"cannot replace '{path}': {exc.strerror}") from None
    if resume and not is_regular(run_dir / "checkpoint" / "last.npz"):
        checkpoint.load(run_dir / "checkpoint" / "last.npz")  # says what is there instead


def new_run_dir(spec_path: Path, suffix: str = "") -> Path:
    """runs/<spec name><suffix>, numbered (-2, -3, ...) when that exists."""
    base = Path("runs") / (spec_path.stem + suffix)
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def run_training(
    spec: Spec,
    run_dir: Path,
    device: Device = "cpu",
    epochs: int | None = None,
    reporter: Reporter | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: Cadence | None = None,
    stop_after: int | None = None,
    runtime: str | None = None,
) -> RunResult:
    """Train `spec` into `run_dir`; with `resume`, continue from its last checkpoint so the
    result is bit-identical to a run that was never interrupted. An existing run is only
    replaced with `overwrite`. Checkpoints follow `checkpoint_every` (default: at most once a
    minute) and are always written at the end, on an early stop, Ctrl-C and divergence.
    `stop_after` pauses after that epoch (see `_Run.loop`). `runtime`: the backend that
    trains (a `BACKENDS` name or `auto`; None: the spec's `runtime`, else onnxruntime)."""
    if stop_after is not None and stop_after < 1:
        raise error(f"--stop-after must be at least 1, got {stop_after}")
    prep = prepare(spec, epochs)
    train = prep.train
    stop = EarlyStop.from_spec(train)
    if stop and stop.key.startswith("val_") and not len(prep.val_data):
        raise error(
            "early_stop monitors a validation metric but validation = 0",
            train.early_stop.span if train.early_stop else None,
        )
    plateau = Plateau.from_spec(train.schedule, lambda m: higher_is_better(train, m))
    if plateau and plateau.key.startswith("val_") and not len(prep.val_data):
        raise error(
            "reduce_on_plateau monitors a validation metric but validation = 0",
            train.schedule.span,
            help="monitor train_loss, or keep a validation split",
        )
    trainer, chosen = _trainer(prep, device, runtime)
    if isinstance(trainer, ParallelTrainer) and not trainer.leader:
        trainer.follow(prep.training, prep.spec.model.inputs[0].name)
        return RunResult(run_dir, {}, {}, 0, trainer.step, FOLLOWER, 0.0)
    run = _Run(
        prep, trainer, run_dir, reporter or Silent(), stop, plateau, checkpoint_every or Cadence()
    )
    run.reporter.warn(prep.typed.warnings)
    run.reporter.warn([*chosen, *trainer.warnings])
    make_directory(run_dir, "the run directory")
    with DirectoryLock(run_dir):
        _claim(run_dir, resume, overwrite)
        return _train(run, spec, resume, stop_after)


def _trainer(
    prep: Prepared, device: Device, runtime: str | None
) -> tuple[Trainer, list[Diagnostic]]:
    """The run's Trainer in the runtime asked for (or the spec's); under `auto` with a
    note saying which one the probe chose."""
    if worker_rank() is not None:  # one of the processes of `--workers N`
        trainer = parallel_trainer(prep.program, prep.train.seed, len(prep.training), device)
        return trainer, []
    given = prep.train.runtime
    if runtime is not None:
        name = check_name(runtime)
    else:
        name = check_name(given.name, given.span) if given is not None else DEFAULT
    notes = []
    if name == AUTO:
        choice = choose(
            prep.program, prep.train_data, prep.spec.model.inputs[0].name, device, prep.train.seed
        )
        name, notes = choice.name, [choice.note()]
    return Trainer(prep.program, device, prep.train.seed, backend=name), notes


def _train(run: _Run, spec: Spec, resume: bool, stop_after: int | None) -> RunResult:
    """The run proper, in a claimed and locked run directory."""
    prep, train, run_dir = run.prep, run.prep.train, run.run_dir
    if resume:
        run.restore()
    run.last_good = run.trainer.params()
    paths = write_graphs(prep.program, run_dir)
    paths["lock"] = run_dir / "spec.lock.json"
    # as run: with --epochs, and data paths absolute
    write_lock(pin_paths(spec.model_copy(update={"train": train})), paths["lock"])
    paths["metrics"] = run.log_path
    paths["split"] = run_dir / "split.npz"
    buffer = io.BytesIO()
    np.savez(buffer, train=prep.train_index, validation=prep.val_index)
    write_bytes(paths["split"], buffer.getvalue())
    paths["checkpoint"] = run.checkpoint_path
    started, cpu_started = time.perf_counter(), time.process_time()
    run.reporter.start(train.epochs, math.ceil(len(prep.training) / train.batch), run.epoch)
    try:
        try:
            log = paths["metrics"].open("a" if resume else "w")
        except OSError as exc:
            raise error(f"cannot write '{paths['metrics']}': {exc.strerror}") from None
        with log:
            stopped = run.loop(log, stop_after)
    except KeyboardInterrupt:
        with interrupts.deferred(raise_after=False):
            run.flush()
            run.export(run.best_params or run.last_good)
        resumable = is_regular(run.checkpoint_path)
        raise Interrupted(run_dir, run.epoch, resumable) from None
    except OSError as exc:  # e.g. the disk filled while a line of metrics.jsonl was written
        raise error(
            f"cannot write the run in '{run_dir}': {exc.strerror}",
            help="free some space and continue with --resume",
        ) from None
    final = run.best_params if run.best_params is not None else run.last_good
    paths["model"] = run.export(final)
    if any(out.counted for out in prep.program.outputs):
        for output, path in run.write_confusion(final).items():
            paths[f"confusion_{output}" if output else "confusion"] = path
    tested: dict[str, Any] = {}
    if prep.test_data is not None and len(prep.test_data):
        scores = run.trainer.evaluate_stats(
            prep.test_data, spec.model.inputs[0].name, params=final
        ).result()
        tested = {f"test_{k}": v for k, v in scores.items()}
        paths["test"] = run_dir / "test.json"
        write_file_text(paths["test"], json.dumps(finite_json(tested), indent=2) + "\n")
    run.reporter.finish(stopped)
    record = run.record or run.best_record
    return RunResult(
        run_dir,
        {k: v for k, v in record.items() if k not in ("epoch", "step", "seconds")} | tested,
        {k: v for k, v in (run.best_record or record).items() if k != "seconds"},
        int(record.get("epoch", run.epoch)),
        run.trainer.step,
        stopped,
        time.perf_counter() - started,
        time.process_time() - cpu_started,
        paths,
    )
