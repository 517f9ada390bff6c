"""The records of a search: one `TrialResult` per finished trial stage, read back from
`results.jsonl` as untrusted input, and the objective a trial's `metrics.jsonl` reached.

Both files sit in a directory anyone may have edited, so every field read back is checked
against its type and a record that does not fit is a diagnostic, never a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeGuard

from dnnspec.errors import error
from dnnspec.files import MiB, read_bytes
from dnnspec.search.space import Params

MAX_RESULTS_BYTES = 256 * MiB
"""Largest results.jsonl read back (a record is a few hundred bytes)."""

MAX_METRICS_BYTES = 256 * MiB
"""Largest trial metrics.jsonl read (a line per epoch)."""

STATUSES = ("ok", "failed")


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
    retry: bool = False
    """A failure from outside the trial (killed, its directory busy, a full disk):
    `--resume` runs the stage again instead of replaying it."""

    @property
    def key(self) -> tuple[int, int | None]:
        return self.trial, self.until


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_CHECKS: dict[str, tuple[str, Any]] = {
    "trial": ("a trial number", _count),
    "params": ("an object of param values", lambda v: isinstance(v, dict)),
    "until": ("an epoch or null", lambda v: v is None or _count(v)),
    "status": ("'ok' or 'failed'", lambda v: v in STATUSES),
    "objective": ("a finite number or null", lambda v: v is None or _number(v)),
    "epochs": ("an epoch count", _count),
    "seconds": ("a number of seconds", _number),
    "metrics": (
        "an object of numbers",
        lambda v: isinstance(v, dict) and all(x is None or _number(x) for x in v.values()),
    ),
    "reason": ("text or null", lambda v: v is None or isinstance(v, str)),
    "retry": ("true or false", lambda v: isinstance(v, bool)),
}
REQUIRED = {f.name for f in fields(TrialResult) if f.name not in ("metrics", "reason", "retry")}


def _result(record: Any, where: str) -> TrialResult:
    """A record of results.jsonl as a `TrialResult`, or a diagnostic naming what is wrong."""
    help = "delete that line to run the stage again, or start again with --overwrite"
    if not isinstance(record, dict):
        raise error(f"{where} is not a trial record", help=help)
    missing = sorted(REQUIRED - record.keys())
    if missing:
        raise error(f"{where} has no {', '.join(missing)}", help=help)
    for name, (what, ok) in _CHECKS.items():
        if name in record and not ok(record[name]):
            shown = json.dumps(record[name], ensure_ascii=False)
            raise error(f"{where}: {name} must be {what}, not {shown}", help=help)
    known = {k: v for k, v in record.items() if k in _CHECKS}
    if known["status"] == "ok" and known["objective"] is None:
        raise error(f"{where}: status 'ok' needs an objective", help=help)
    return TrialResult(**known)


def read_results(path: Path) -> list[TrialResult]:
    """The records of results.jsonl (none when it is absent). A line that is not JSON was
    cut short by a kill and is skipped (its stage runs again); any other damage stops."""
    if not path.exists() and not path.is_symlink():
        return []
    text = _text(read_bytes(path, "search results", MAX_RESULTS_BYTES), path)
    results = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        results.append(_result(record, f"'{path}' line {number}"))
    return results


def results_text(results: list[TrialResult]) -> str:
    """results.jsonl holding `results`, one JSON line each."""
    return "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in results)


def _text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(
            f"'{path}' is not UTF-8 text: the search directory is damaged",
            help="start again with --overwrite, or choose another --out",
        ) from None


def metric_key(objective: str) -> str:
    """The metrics.jsonl key of an objective: `train_accuracy` is logged as `accuracy`."""
    return objective.removeprefix("train_")


def objective_of(
    run_dir: Path, objective: str, direction: str
) -> tuple[float | None, dict[str, float], int]:
    """The best value of the objective over a run's epochs, that epoch's record, and the
    number of epochs trained. A line cut short is skipped; a line that is JSON but no
    epoch record is a diagnostic (the trial then fails with it)."""
    key, record, epochs = metric_key(objective), {}, 0
    best: float | None = None
    path = run_dir / "metrics.jsonl"
    if not path.exists() and not path.is_symlink():
        return None, {}, 0
    text = read_bytes(path, "trial metrics", MAX_METRICS_BYTES).decode("utf-8", "replace")
    for number, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or not _count(row.get("epoch", 0)):
            raise error(f"'{path}' line {number} is not an epoch record")
        epochs = max(epochs, row.get("epoch", 0))
        raw = row.get(key)
        if not _number(raw):
            continue
        value = float(raw)
        if best is None or (value > best if direction == "max" else value < best):
            best, record = value, row
    return best, {k: v for k, v in record.items() if k not in ("step", "seconds")}, epochs
