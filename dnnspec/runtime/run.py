"""One training run from a resolved spec: data, graphs, loop, early stop, outputs.

The run directory receives model.onnx, train_step.onnx, eval_step.onnx,
spec.lock.json, metrics.jsonl and checkpoint/last.npz. Progress is reported through a
`Reporter` so the CLI can draw a progress bar and the API can stay silent.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from dnnspec.check.shapes import TypedModel, check_spec
from dnnspec.errors import Diagnostic, DiagnosticError, error
from dnnspec.graph.assemble import Program, build_inference, build_train_step
from dnnspec.ir import Spec, TrainSpec
from dnnspec.resolve import write_lock
from dnnspec.runtime import checkpoint
from dnnspec.runtime.data import conform
from dnnspec.runtime.datasets import DATASETS, Dataset, split
from dnnspec.runtime.session import Device
from dnnspec.runtime.trainer import Diverged, Trainer
from dnnspec.training.losses import LOSSES
from dnnspec.training.metrics import METRICS
from dnnspec.training.schedules import Timing


class Reporter(Protocol):
    """Receives progress; the CLI draws it, the library API ignores it."""

    def start(self, epochs: int, steps_per_epoch: int) -> None: ...
    def step(self, epoch: int, samples: int, loss: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, message: str) -> None: ...


class Silent:
    def start(self, epochs: int, steps_per_epoch: int) -> None: ...
    def step(self, epoch: int, samples: int, loss: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, message: str) -> None: ...


@dataclass
class Prepared:
    """A spec made ready to train: typed model, split data and the assembled graphs."""

    spec: Spec
    train: TrainSpec
    typed: TypedModel
    train_data: Dataset
    val_data: Dataset
    program: Program


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
    paths: dict[str, Path] = field(default_factory=dict)


def prepare(spec: Spec, epochs: int | None = None) -> Prepared:
    """Check the spec, load and validate its data, and assemble its graphs."""
    if spec.train is None:
        raise error(
            f"spec '{spec.source}' has no train section",
            spec.model.span,
            help="add a `train { data ... loss ... optimizer ... batch ... epochs ... }`",
        )
    train = spec.train if epochs is None else spec.train.model_copy(update={"epochs": epochs})
    typed = check_spec(spec)
    loss = LOSSES.get(train.loss.name)
    dataset = DATASETS.get(train.data.name)
    data, classes = conform(
        dataset.load(train.data.args, train.seed, train.data.span), typed, loss.target, train.data
    )
    train_data, val_data = split(data, train.data.args.get("validation", 0.0), train.seed)
    if len(train_data) == 0:
        raise error("no training samples left after the validation split", train.data.span)
    steps_per_epoch = math.ceil(len(train_data) / train.batch)
    timing = Timing(steps_per_epoch, steps_per_epoch * train.epochs)
    program = build_train_step(typed, train, classes, timing)
    return Prepared(spec, train, typed, train_data, val_data, program)


def _monitor(train: TrainSpec) -> tuple[str, str, float, int] | None:
    """(metric, 'min'|'max', min_delta, patience) of early stopping, checked up front."""
    if train.early_stop is None:
        return None
    args = train.early_stop.args
    name = args["monitor"]
    base = name.removeprefix("val_").removeprefix("train_")
    known = {"loss", *(m.name for m in train.metrics)}
    if base not in known:
        raise error(
            f"early_stop monitors '{name}', which this run does not compute",
            train.early_stop.span,
            help="monitor one of: " + ", ".join(f"val_{k}" for k in sorted(known)),
        )
    mode = "max" if base != "loss" and METRICS.get(base).higher_is_better else "min"
    key = name if name.startswith(("val_", "train_")) else f"val_{name}"
    return key.removeprefix("train_"), mode, args["min_delta"], args["patience"]


def _improved(value: float, best: float | None, mode: str, delta: float) -> bool:
    if best is None:
        return True
    return value < best - delta if mode == "min" else value > best + delta


def _finite(params: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(v).all() for v in params.values())


def write_graphs(program: Program, run_dir: Path) -> dict[str, Path]:
    paths = {"train_step": run_dir / "train_step.onnx", "eval_step": run_dir / "eval_step.onnx"}
    onnx.save(program.train_step, paths["train_step"])
    onnx.save(program.eval_step, paths["eval_step"])
    return paths


def export_model(program: Program, params: dict[str, np.ndarray], path: Path) -> Path:
    """Write the deployable model and check it fully before anyone ships it."""
    model = build_inference(program.typed, program.slots, params, program.metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def run_training(
    spec: Spec,
    run_dir: Path,
    device: Device = "cpu",
    epochs: int | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Train `spec` and write everything to `run_dir`."""
    reporter = reporter or Silent()
    prep = prepare(spec, epochs)
    train, program = prep.train, prep.program
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = write_graphs(program, run_dir)
    paths["lock"] = run_dir / "spec.lock.json"
    write_lock(spec, paths["lock"])
    paths["metrics"] = run_dir / "metrics.jsonl"
    paths["checkpoint"] = run_dir / "checkpoint" / "last.npz"

    trainer = Trainer(program, device, train.seed)
    input_name = spec.model.inputs[0].name
    monitor = _monitor(train)
    if monitor and not len(prep.val_data) and monitor[0].startswith("val_"):
        raise error(
            "early_stop monitors a validation metric but validation = 0",
            train.early_stop.span if train.early_stop else None,
        )
    best_value: float | None = None
    best_params: dict[str, np.ndarray] | None = None
    best_record: dict[str, Any] = {}
    waited = 0
    stopped = "completed"
    record: dict[str, Any] = {}
    started = time.perf_counter()
    last_good = trainer.params()
    reporter.start(train.epochs, math.ceil(len(prep.train_data) / train.batch))
    with paths["metrics"].open("w") as log:
        for epoch in range(train.epochs):
            t0 = time.perf_counter()
            try:
                result = trainer.run_epoch(
                    prep.train_data,
                    input_name,
                    train.batch,
                    epoch,
                    lambda n, loss, e=epoch: reporter.step(e, n, loss),
                )
                params = trainer.params()
                if not _finite(params):
                    # e.g. ReLU turned NaN weights into finite outputs, so the loss looked fine
                    raise Diverged(trainer.step, epoch, math.nan, "the parameters")
            except Diverged as exc:
                current = trainer.params()
                kept = export_model(
                    program, current if _finite(current) else last_good, run_dir / "model.onnx"
                )
                raise DiagnosticError(
                    Diagnostic(
                        message=f"training diverged: {exc.what} became {exc.loss} "
                        f"{'by' if exc.what == 'the parameters' else 'at'} step {exc.step} "
                        f"(epoch {epoch + 1})",
                        span=train.optimizer.span,
                        help="lower the learning rate, add gradient clipping or check the data; "
                        f"the last good parameters were kept in {kept}",
                    )
                ) from None
            last_good = params
            record = {"epoch": epoch + 1, "step": trainer.step, **result}
            if len(prep.val_data):
                record.update(
                    {f"val_{k}": v for k, v in trainer.evaluate(prep.val_data, input_name).items()}
                )
            record["seconds"] = round(time.perf_counter() - t0, 4)
            log.write(json.dumps(record) + "\n")
            log.flush()
            reporter.epoch(record)
            checkpoint.save(
                paths["checkpoint"],
                trainer.values(),
                {
                    "step": trainer.step,
                    "epoch": epoch + 1,
                    "seed": train.seed,
                    "spec_hash": program.metadata["dnnspec.spec_hash"],
                },
            )
            if monitor:
                key, mode, delta, patience = monitor
                if _improved(record[key], best_value, mode, delta):
                    best_value, best_params, best_record, waited = (
                        record[key],
                        trainer.params(),
                        record,
                        0,
                    )
                else:
                    waited += 1
                    if waited >= patience:
                        stopped = f"early stop: {key} did not improve for {patience} epochs"
                        break
    final_params = best_params if best_params is not None else trainer.params()
    paths["model"] = export_model(program, final_params, run_dir / "model.onnx")
    metrics = {k: v for k, v in record.items() if k not in ("epoch", "step", "seconds")}
    best = {k: v for k, v in (best_record or record).items() if k != "seconds"}
    reporter.finish(stopped)
    return RunResult(
        run_dir,
        metrics,
        best,
        int(record.get("epoch", 0)),
        trainer.step,
        stopped,
        time.perf_counter() - started,
        paths,
    )
