"""`dnnspec plot`: learning curves of one or several runs as a PNG (matplotlib, an extra).

One panel for the loss and one per metric, each with the training value (solid) and the
validation value (dashed) per epoch, and one for the learning rate, recomputed from the
run's resolved spec by the same schedule nodes the train step ran. Several runs are
overlaid, one colour each, named by their directories.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.errors import DiagnosticError, error
from dnnspec.files import read_bytes, write_bytes
from dnnspec.resolve import read_lock
from dnnspec.training.accumulate import update_timing
from dnnspec.training.schedules import Timing, factor_curve

MAX_METRICS_BYTES = 64 << 20
"""Largest metrics.jsonl read (a million epochs of a dozen metrics is far less)."""


def _records(run: Path) -> list[dict[str, Any]]:
    text = read_bytes(run / "metrics.jsonl", "metrics log", MAX_METRICS_BYTES).decode(
        "utf-8", "replace"
    )
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise error(f"{run / 'metrics.jsonl'}:{number}: not a JSON record") from None
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            records.append(row)
    if not records:
        raise error(f"'{run}' has no finished epoch to plot", help="train it for an epoch first")
    return records


def learning_rates(run: Path, records: list[dict[str, Any]]) -> np.ndarray | None:
    """The learning rate of each epoch's last step, from the run's lock file."""
    try:
        spec = read_lock(run / "spec.lock.json")
    except DiagnosticError:  # a run without a readable lock file still plots its metrics
        return None
    train = spec.train
    first = records[0]
    if train is None or not isinstance(first.get("step"), int) or first["epoch"] < 1:
        return None
    per_epoch = max(1, first["step"] // first["epoch"])  # batches (micro-batches)
    timing = update_timing(Timing(per_epoch, per_epoch * train.epochs), train.accumulate)
    last = [r["step"] // per_epoch * timing.steps_per_epoch - 1 for r in records]
    steps = np.array([max(0, s) for s in last], dtype=np.int64)  # each epoch's last update
    lr = train.optimizer.args.get("lr", 1.0)
    base = float(lr) if isinstance(lr, int | float) else 1.0
    curve = factor_curve(train.schedule.name, dict(train.schedule.args), timing, steps)
    # a plateau schedule's host-fed factor, logged per epoch
    fed = np.array([float(r.get("lr_factor", 1.0)) for r in records])
    rates: np.ndarray = base * curve * fed
    return rates


def _series(records: list[dict[str, Any]]) -> list[str]:
    """The quantities logged: loss first, then each metric (validation keys fold in)."""
    names: list[str] = []
    for row in records:
        for key, value in row.items():
            base = key.removeprefix("val_").removeprefix("test_")
            if key in ("epoch", "step", "seconds") or not isinstance(value, int | float):
                continue
            if base not in names:
                names.append(base)
    return sorted(names, key=lambda n: (n != "loss", names.index(n)))


def plot_runs(runs: Sequence[Path], out: Path) -> Path:
    """Draw the curves of `runs` into the PNG `out`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise error(
            "plotting needs matplotlib, which is not installed",
            help="install it with: pip install 'dnnspec[plot]'",
        ) from None
    data = [(run, _records(run)) for run in runs]
    series = []
    for _, records in data:
        series += [s for s in _series(records) if s not in series]
    rates = [learning_rates(run, records) for run, records in data]
    panels = [*series, *(["learning rate"] if any(r is not None for r in rates) else [])]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (run, records) in enumerate(data):
        colour = colours[index % len(colours)]
        epochs = [r["epoch"] for r in records]
        label = run.name if len(data) > 1 else ""
        for ax, name in zip(axes.flat, series, strict=False):
            for key, style, part in ((name, "-", "train"), (f"val_{name}", "--", "validation")):
                values = [r.get(key, np.nan) for r in records]
                if all(v is None or not isinstance(v, int | float) for v in values):
                    continue
                shown = [np.nan if v is None else v for v in values]
                ax.plot(epochs, shown, style, color=colour, label=f"{label} {part}".strip())
            ax.set_title(name)
            ax.set_xlabel("epoch")
        if rates[index] is not None:
            ax = axes.flat[len(series)]
            ax.plot(epochs, rates[index], color=colour, label=label or "lr")
            ax.set_title("learning rate")
            ax.set_xlabel("epoch")
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax in axes.flat[: len(panels)]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(", ".join(run.name for run in runs))
    fig.tight_layout()
    picture = io.BytesIO()
    fig.savefig(picture, format="png", dpi=110)
    plt.close(fig)
    write_bytes(out, picture.getvalue(), "plot")
    return out


def can_plot() -> bool:
    """Whether matplotlib is installed (train then draws curves.png at the end)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None
