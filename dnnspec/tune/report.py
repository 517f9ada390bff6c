"""What `dnnspec tune` shows: live progress while trials run, then the results table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from dnnspec.tune.best_spec import render_value
from dnnspec.tune.tuner import TrialResult, TuneResult


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else render_value(value)


def _params(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


class TuneProgress:
    """A status line (done / running / failed, best so far) and one line per finished trial."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status = console.status("starting trials")
        self.status.start()

    def __call__(self, event: str, details: Mapping[str, Any]) -> None:
        if event == "finished":
            result: TrialResult = details["result"]
            stage = f" (to epoch {result.until})" if result.until else ""
            shown = (
                f"{details['objective']} {result.objective:.4f}"
                if result.objective is not None
                else f"failed: {result.reason}"
            )
            self.console.print(
                f"trial {result.trial}{stage}  {shown}  {_params(result.params)}"
                f"  ({result.seconds:.1f}s)",
                highlight=False,
            )
        best: TrialResult | None = details["best"]
        shown_best = (
            f", best {best.objective:.4f} (trial {best.trial})"
            if best is not None and best.objective is not None
            else ""
        )
        self.status.update(
            f"trials: {details['done']} done, {details['running']} running, "
            f"{details['failed']} failed{shown_best}"
        )

    def stop(self) -> None:
        self.status.stop()


def render_results(result: TuneResult, console: Console) -> None:
    params = list(result.trials[0].params) if result.trials else []
    table = Table(title=f"search results ({result.direction} {result.objective})")
    for column in ("rank", "trial", result.objective, *params, "epochs", "time", "status"):
        table.add_column(column, justify="right" if column not in ("status",) else "left")
    for rank, r in enumerate(result.trials, 1):
        table.add_row(
            str(rank),
            str(r.trial),
            "-" if r.objective is None else f"{r.objective:.4f}",
            *(_short(r.params.get(p, "")) for p in params),
            str(r.epochs),
            f"{r.seconds:.1f}s",
            r.status if r.reason is None else f"{r.status}: {r.reason}",
        )
    console.print(table)
    if result.best is not None and result.best_spec is not None:
        console.print(
            f"best: trial {result.best.trial}, {result.objective} {result.best.objective:.4f} "
            f"with {_params(result.best.params)}",
            highlight=False,
        )
        console.print(
            f"wrote {result.out}/results.csv, results.jsonl and {result.best_spec} "
            f"(train it with: dnnspec train {result.best_spec})",
            highlight=False,
        )
    else:
        console.print(f"no trial succeeded; see {result.out}/results.csv and {result.out}/logs/")


def results_json(result: TuneResult) -> dict[str, Any]:
    best = result.best
    return {
        "out": str(result.out),
        "objective": result.objective,
        "direction": result.direction,
        "trials": [asdict(r) for r in result.trials],
        "best": None
        if best is None
        else {
            "trial": best.trial,
            "objective": best.objective,
            "params": best.params,
            "run_dir": str(result.out / "trials" / str(best.trial)),
            "spec": str(result.best_spec),
        },
    }
