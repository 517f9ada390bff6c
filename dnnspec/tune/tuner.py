"""Run a search: ask the method's strategy for trials, run them, record every result.

The search directory holds `search.json` (what was searched, to refuse a resume of a
different search), `results.jsonl` (one line per finished trial stage), `results.csv`,
`best.dnn`, `logs/` and `trials/<k>/` (ordinary run directories); `tune/directory.py`
guards it. A resumed search replays the recorded results into a fresh strategy, so
finished trials are not run again and the search ends where an uninterrupted one would
have; a stage that failed from outside (killed, its directory busy, a full disk) runs
again. Every trial reads the spec file itself, so the tuner checks before each trial and
after it that neither the spec nor a file it imports has changed since the search began.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from dnnspec.errors import DiagnosticError, SourceMap, error
from dnnspec.files import write_text
from dnnspec.frontend import parse_text, read_spec_text, with_imports
from dnnspec.ir import SearchSpec, Spec
from dnnspec.search.methods import SEARCH_METHODS
from dnnspec.search.strategies import Plan, Strategy
from dnnspec.tune.best_spec import render_value, write_best_spec
from dnnspec.tune.directory import SearchDirectory
from dnnspec.tune.executors import Executor, Finished, Job, LocalExecutor, RayExecutor
from dnnspec.tune.results import TrialResult, objective_of

__all__ = ["TrialResult", "TuneResult", "Tuner", "objective_of"]

RETRYABLE = ("is in use by another dnnspec command", "no space left on")
"""Failures of a trial that come from outside it (its run directory busy, a full disk):
`--resume` runs such a stage again. A trial killed by a signal is one too."""


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


def spec_digest(path: Path) -> str:
    """SHA-256 of the spec's text, then of each file it imports (in a fixed order), so
    that a change to any of them shows; a spec without imports hashes as its text."""
    text = read_spec_text(path)
    sources = SourceMap({str(path): text})
    with_imports(parse_text(text, str(path)), str(path), sources)
    digest = hashlib.sha256(text.encode())
    for name in sorted(sources.texts):
        if name != str(path):
            digest.update(b"\0" + sources.texts[name].encode())
    return digest.hexdigest()


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While the search runs, SIGTERM and SIGHUP stop it as Ctrl-C does (the trials keep
    their checkpoints and the table is written), unless they were set to be ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
        for flag, value in (("workers", self.workers), ("trials", self.trials)):
            if value is not None and value < 1:
                raise error(f"--{flag} must be at least 1, got {value}")
        if self.epochs is not None and self.epochs < 1:
            raise error(f"--epochs must be at least 1, got {self.epochs}")
        if self.backend not in ("local", "ray"):
            raise error(f"unknown backend '{self.backend}'", help="use --backend local or ray")
        if self.address is not None and self.backend != "ray":
            raise error(
                "--address only applies to --backend ray",
                help="add --backend ray to run the trials on that Ray cluster, or drop --address",
            )
        cores = os.cpu_count() or 1
        if self.workers > cores and self.address is None:
            raise error(
                f"--workers {self.workers} is more than the {cores} cores of this machine",
                help=f"use --workers {cores} or fewer: trials share the cores, and more "
                "trials than cores only slow each other down",
            )
        self.search: SearchSpec = self.spec.search
        self.run_epochs = self.epochs or self.spec.train.epochs
        self.threads = max(1, cores // self.workers)
        self.digest = ""

    # -- the search directory ------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        self.digest = spec_digest(self.spec_path)
        return {
            "spec": str(self.spec_path.resolve()),
            "spec_sha256": self.digest,
            "set": self.overrides,
            "epochs": self.run_epochs,
            "trials": self.trials,
            "method": self.search.method.name,
            "objective": self.search.objective,
            "direction": self.search.direction,
        }

    def _check_spec(self) -> None:
        """Stop when the spec or a file it imports changed since the search began: the
        trials would no longer train one spec."""
        try:
            same = spec_digest(self.spec_path) == self.digest
        except DiagnosticError:
            same = False
        if not same:
            raise error(
                f"the spec '{self.spec_path}' or a file it imports changed during the search",
                help="every trial must train the same spec: restore it and continue with "
                "--resume, or start the search again with --overwrite",
            )

    # -- running trials ------------------------------------------------------------------
    def _job(self, plan: Plan, folder: SearchDirectory) -> Job:
        run_dir = self.out / "trials" / str(plan.trial)
        log = self.out / "logs" / f"{plan.trial}-{plan.until or 'end'}.log"
        for path in (run_dir.parent, run_dir, log.parent, log):
            folder.refuse_link(path)
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
        return Job(plan, tuple(argv), {"DNNSPEC_THREADS": str(self.threads)}, log)

    def _result(self, done: Finished) -> TrialResult:
        plan: Plan = done.job.key
        run_dir = self.out / "trials" / str(plan.trial)
        reason = None
        try:
            value, metrics, epochs = objective_of(
                run_dir, self.search.objective, self.search.direction
            )
        except DiagnosticError as exc:
            (value, metrics, epochs), reason = (None, {}, 0), exc.diagnostics[0].message
        if done.returncode != 0:
            reason = _failure(done)
        elif reason is None and value is None:
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
            retry=reason is not None and _retryable(done, reason),
        )

    def _executor(self) -> Executor:
        if self.backend == "ray":
            return RayExecutor(self.address, self.workers, self.threads)
        return LocalExecutor()

    def run(self) -> TuneResult:
        method = SEARCH_METHODS.get(self.search.method.name, self.search.method.span)
        strategy = method.strategy(
            self.search, self.search.method.args, self.run_epochs, self.trials
        )
        if self.resume and not self.out.is_dir():
            raise error(f"'{self.out}' holds no search to resume", help="run without --resume")
        executor = self._executor()  # a backend that cannot start fails before the claim
        with SearchDirectory(self.out) as folder, _terminate_as_interrupt():
            recorded = folder.claim(self._identity(), self.resume, self.overwrite)
            return self._search(strategy, executor, folder, recorded)

    def _search(
        self,
        strategy: Strategy,
        executor: Executor,
        folder: SearchDirectory,
        recorded: list[TrialResult],
    ) -> TuneResult:
        replay = {r.key: r for r in recorded if not r.retry}
        history: list[TrialResult] = []
        queue: list[Plan] = []
        try:
            while True:
                queue += strategy.ask(self.workers - executor.running() - len(queue))
                replayed = False
                for plan in list(queue):
                    old = replay.get((plan.trial, plan.until))
                    if old is not None and old.params == plan.params:
                        queue.remove(plan)
                        history.append(old)
                        strategy.tell(plan, old.objective)
                        replayed = True
                if replayed:
                    continue
                while queue and executor.running() < self.workers:
                    self._check_spec()
                    plan = queue.pop(0)
                    executor.submit(self._job(plan, folder))
                    self._notify("started", history, executor.running())
                if executor.running() == 0:
                    break
                for done in executor.wait():
                    self._check_spec()  # the trial read the spec the search began with
                    result = self._result(done)
                    folder.record(result)
                    history.append(result)
                    strategy.tell(done.job.key, result.objective)
                    self._notify("finished", history, executor.running(), result)
        except KeyboardInterrupt:
            executor.interrupt()
            self._finish(history)
            raise Interrupted(self.out) from None
        except BaseException:
            executor.interrupt()
            raise
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


def _retryable(done: Finished, reason: str) -> bool:
    """Whether a failure came from outside the trial, so that running it again may pass."""
    said = reason.lower()
    return done.returncode < 0 or done.returncode == 130 or any(r in said for r in RETRYABLE)


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
