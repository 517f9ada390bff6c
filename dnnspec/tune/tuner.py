"""Run a search: ask the method's strategy for trials, run them, record every result.

The search directory holds `search.json` (what was searched, to refuse a resume of a
different search), `results.jsonl` (one line per finished trial stage, appended as each
ends), `results.csv`, `best.dnn`, `logs/` and `trials/<k>/` (ordinary run directories).
A resumed search replays the recorded results into a fresh strategy, so finished trials
are not run again and the search ends where an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dnnspec.errors import error
from dnnspec.files import write_text
from dnnspec.frontend import read_spec_text
from dnnspec.ir import SearchSpec, Spec
from dnnspec.search.methods import SEARCH_METHODS
from dnnspec.search.space import Params
from dnnspec.search.strategies import Plan
from dnnspec.tune.best_spec import render_value, write_best_spec
from dnnspec.tune.executors import Executor, Finished, Job, LocalExecutor, RayExecutor


@dataclass
class TrialResult:
    """One finished stage of a trial (a halving trial has one per rung it reached)."""

    trial: int
    params: Params
    until: int | None
    status: str  # "ok" or "failed"
    objective: float | None
    epochs: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None

    @property
    def key(self) -> tuple[int, int | None]:
        return self.trial, self.until


@dataclass
class TuneResult:
    out: Path
    objective: str
    direction: str
    trials: list[TrialResult]
    """The last stage of every trial, best first (failed trials last)."""
    best: TrialResult | None
    best_spec: Path | None
    interrupted: bool = False


class Interrupted(Exception):
    def __init__(self, out: Path) -> None:
        self.out = out


ProgressFn = Callable[[str, Mapping[str, Any]], None]
"""Called with ("started" | "finished", details) as trials start and end."""


def metric_key(objective: str) -> str:
    """The metrics.jsonl key of an objective: `train_accuracy` is logged as `accuracy`."""
    return objective.removeprefix("train_")


def objective_of(
    run_dir: Path, objective: str, direction: str
) -> tuple[float | None, dict[str, float], int]:
    """The best value of the objective over a run's epochs, that epoch's record, and the
    number of epochs trained."""
    key, best, record, epochs = metric_key(objective), None, {}, 0
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None, {}, 0
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        epochs = max(epochs, int(row.get("epoch", 0)))
        value = row.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        if best is None or (value > best if direction == "max" else value < best):
            best, record = float(value), row
    return best, {k: v for k, v in record.items() if k not in ("step", "seconds")}, epochs


def _sort_key(direction: str) -> Callable[[TrialResult], tuple[Any, ...]]:
    def key(r: TrialResult) -> tuple[Any, ...]:
        if r.objective is None:
            return (1, 0, 0.0, r.trial)
        value = -r.objective if direction == "max" else r.objective
        return (0, -(r.until or math.inf), value, r.trial)

    return key


@dataclass
class Tuner:
    spec_path: Path
    spec: Spec
    overrides: dict[str, str]
    out: Path
    workers: int
    trials: int | None = None
    epochs: int | None = None
    device: str = "cpu"
    backend: str = "local"
    address: str | None = None
    resume: bool = False
    overwrite: bool = False
    progress: ProgressFn | None = None

    def __post_init__(self) -> None:
        if self.spec.search is None:
            raise error(
                f"spec '{self.spec_path}' has no search section",
                self.spec.model.span,
                help="add one, e.g. search random(trials = 10) { lr in log_uniform(1e-4, 1e-2) }",
            )
        if self.spec.train is None:
            raise error(f"spec '{self.spec_path}' has no train section", self.spec.model.span)
        if self.workers < 1:
            raise error(f"--workers must be at least 1, got {self.workers}")
        if self.trials is not None and self.trials < 1:
            raise error(f"--trials must be at least 1, got {self.trials}")
        self.search: SearchSpec = self.spec.search
        self.run_epochs = self.epochs or self.spec.train.epochs
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)

    # -- the search directory ------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        text = read_spec_text(self.spec_path)
        return {
            "spec": str(self.spec_path.resolve()),
            "spec_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "set": self.overrides,
            "epochs": self.run_epochs,
            "trials": self.trials,
            "method": self.search.method.name,
            "objective": self.search.objective,
            "direction": self.search.direction,
        }

    def _claim(self) -> list[TrialResult]:
        """Prepare the directory; on resume, the results recorded so far."""
        state = self.out / "search.json"
        if self.out.exists() and not self.out.is_dir():
            raise error(f"--out '{self.out}' is a file, not a directory")
        identity = self._identity()
        if self.resume:
            if not state.is_file():
                raise error(f"'{self.out}' holds no search to resume", help="run without --resume")
            try:
                recorded = json.loads(state.read_text())
            except (OSError, json.JSONDecodeError):
                raise error(f"'{state}' is damaged", help="start again with --overwrite") from None
            changed = [k for k in identity if recorded.get(k) != identity[k]]
            if changed:
                raise error(
                    f"the search in '{self.out}' was started with a different "
                    + ", ".join(changed),
                    help="resume with the same spec and options, or start again with --overwrite",
                )
            return self._read_results()
        if state.exists() and not self.overwrite:
            raise error(
                f"'{self.out}' already holds a search",
                help="continue it with --resume, replace it with --overwrite, "
                "or choose another --out",
            )
        if self.overwrite and state.exists():
            for name in ("trials", "logs"):
                shutil.rmtree(self.out / name, ignore_errors=True)
            for name in ("results.jsonl", "results.csv", "best.dnn"):
                (self.out / name).unlink(missing_ok=True)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(state, json.dumps(identity, indent=2) + "\n")
            (self.out / "results.jsonl").write_text("")
        except OSError as exc:
            raise error(f"cannot write the search directory '{self.out}': {exc.strerror}") from None
        return []

    def _read_results(self) -> list[TrialResult]:
        results = []
        path = self.out / "results.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            try:
                results.append(TrialResult(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue  # a line cut short by a kill: that stage runs again
        return results

    def _record(self, result: TrialResult) -> None:
        with (self.out / "results.jsonl").open("a") as log:
            log.write(json.dumps(asdict(result)) + "\n")
            log.flush()
            os.fsync(log.fileno())

    # -- running trials ------------------------------------------------------------------
    def _job(self, plan: Plan) -> Job:
        run_dir = self.out / "trials" / str(plan.trial)
        argv = [
            sys.executable,
            "-m",
            "dnnspec",
            "train",
            str(self.spec_path),
            "--out",
            str(run_dir),
        ]
        argv += ["--json", "--no-plot", "--device", self.device]
        for name, value in {
            **self.overrides,
            **{k: render_value(v) for k, v in plan.params.items()},
        }.items():
            argv += ["--set", f"{name}={value}"]
        if self.epochs:
            argv += ["--epochs", str(self.epochs)]
        if plan.until is not None:
            argv += ["--stop-after", str(plan.until)]
        if (run_dir / "checkpoint").exists():
            argv.append("--resume")
        elif run_dir.exists():
            argv.append("--overwrite")
        log = self.out / "logs" / f"{plan.trial}-{plan.until or 'end'}.log"
        return Job(plan, tuple(argv), {"DNNSPEC_THREADS": str(self.threads)}, log)

    def _result(self, done: Finished) -> TrialResult:
        plan: Plan = done.job.key
        run_dir = self.out / "trials" / str(plan.trial)
        value, metrics, epochs = objective_of(run_dir, self.search.objective, self.search.direction)
        reason = None
        if done.returncode != 0:
            reason = _failure(done)
        elif value is None:
            reason = f"the run logged no finite {self.search.objective}"
        return TrialResult(
            trial=plan.trial,
            params=plan.params,
            until=plan.until,
            status="ok" if reason is None else "failed",
            objective=value if reason is None else None,
            epochs=epochs,
            seconds=round(done.seconds, 3),
            metrics=metrics if reason is None else {},
            reason=reason,
        )

    def _executor(self) -> Executor:
        if self.backend == "ray":
            return RayExecutor(self.address, self.workers, self.threads)
        if self.backend != "local":
            raise error(f"unknown backend '{self.backend}'", help="use --backend local or ray")
        return LocalExecutor()

    def run(self) -> TuneResult:
        method = SEARCH_METHODS.get(self.search.method.name, self.search.method.span)
        strategy = method.strategy(
            self.search, self.search.method.args, self.run_epochs, self.trials
        )
        recorded = {r.key: r for r in self._claim()}
        executor = self._executor()
        history: list[TrialResult] = []
        queue: list[Plan] = []
        try:
            while True:
                queue += strategy.ask(self.workers - executor.running() - len(queue))
                replayed = False
                for plan in list(queue):
                    old = recorded.get((plan.trial, plan.until))
                    if old is not None and old.params == plan.params:
                        queue.remove(plan)
                        history.append(old)
                        strategy.tell(plan, old.objective)
                        replayed = True
                if replayed:
                    continue
                while queue and executor.running() < self.workers:
                    plan = queue.pop(0)
                    executor.submit(self._job(plan))
                    self._notify("started", history, executor.running())
                if executor.running() == 0:
                    break
                for done in executor.wait():
                    result = self._result(done)
                    self._record(result)
                    history.append(result)
                    strategy.tell(done.job.key, result.objective)
                    self._notify("finished", history, executor.running(), result)
        except KeyboardInterrupt:
            executor.interrupt()
            self._finish(history)
            raise Interrupted(self.out) from None
        return self._finish(history)

    def _notify(
        self,
        event: str,
        history: list[TrialResult],
        running: int,
        result: TrialResult | None = None,
    ) -> None:
        if self.progress is None:
            return
        ranked = sorted(history, key=_sort_key(self.search.direction))
        self.progress(
            event,
            {
                "result": result,
                "objective": self.search.objective,
                "done": len(history),
                "running": running,
                "failed": sum(r.status == "failed" for r in history),
                "best": ranked[0] if ranked and ranked[0].objective is not None else None,
            },
        )

    def _finish(self, history: list[TrialResult]) -> TuneResult:
        last: dict[int, TrialResult] = {}
        for result in history:
            seconds = result.seconds + (last[result.trial].seconds if result.trial in last else 0)
            last[result.trial] = TrialResult(**{**asdict(result), "seconds": round(seconds, 3)})
        table = sorted(last.values(), key=_sort_key(self.search.direction))
        best = table[0] if table and table[0].objective is not None else None
        write_text(self.out / "results.csv", _csv(table, [d.param for d in self.search.dims]))
        best_spec = None
        if best is not None:
            best_spec = self.out / "best.dnn"
            note = (
                f"best trial {best.trial} of the search in {self.out}: "
                f"{self.search.objective} {best.objective:.6g}"
            )
            values = {**self.overrides_values(), **best.params}
            write_best_spec(self.spec_path, values, best_spec, note, self.epochs)
        return TuneResult(
            self.out, self.search.objective, self.search.direction, table, best, best_spec
        )

    def overrides_values(self) -> dict[str, Any]:
        """The `--set` values, as the spec holds them (they go into best.dnn too)."""
        return {k: v for k, v in self.spec.params.items() if k in self.overrides}


def _failure(done: Finished) -> str:
    """Why a trial process failed: its diagnostic when it printed one, else its stderr."""
    try:
        payload = json.loads(done.stdout)
    except json.JSONDecodeError:
        payload = None
    if isinstance(payload, list):  # `--json` prints a failed command's diagnostics as a list
        messages = [str(d.get("message", "")) for d in payload if isinstance(d, dict)]
        if any(messages):
            return "; ".join(m for m in messages if m)
    try:
        tail = done.job.log.read_text(errors="replace").strip().splitlines()
    except OSError:
        tail = []
    if done.returncode in (-2, 130):
        return "interrupted"
    return (tail[-1] if tail else f"exit status {done.returncode}")[:500]


def _csv(table: list[TrialResult], params: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["rank", "trial", "status", "objective", *params, "epochs", "seconds", "reason"]
    )
    for rank, r in enumerate(table, 1):
        writer.writerow(
            [rank, r.trial, r.status, "" if r.objective is None else r.objective]
            + [r.params.get(p, "") for p in params]
            + [r.epochs, r.seconds, r.reason or ""]
        )
    return buf.getvalue()
