"""How `dnnspec train` shows its progress: a rich progress bar and one line per epoch, or
nothing but the warnings under --json."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from dnnspec.cli.common import metrics_text, show_warnings

if TYPE_CHECKING:
    from dnnspec.errors import Diagnostic


class JsonReporter:
    """Training under --json: no progress drawn, warnings on stderr and kept for the JSON."""

    def __init__(self) -> None:
        self.warnings: list[Diagnostic] = []

    def warn(self, warnings: Sequence[Diagnostic]) -> None:
        self.warnings.extend(warnings)
        show_warnings(warnings)

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...
    def advance(self, epoch: int, steps: int, samples: int, loss: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, message: str) -> None: ...


class ProgressReporter:
    """A rich progress bar (epoch, step, loss, samples/s, ETA) and one line per epoch."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]:,.0f} samples/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.epochs = 0
        self.samples = 0
        self.t0 = time.perf_counter()

    def warn(self, warnings: Sequence[Diagnostic]) -> None:
        show_warnings(warnings)

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.epochs = epochs
        self.progress.start()
        self.task = self.progress.add_task(
            "train",
            total=(epochs - first_epoch) * steps_per_epoch,
            epoch=first_epoch + 1,
            epochs=epochs,
            loss="-",
            rate=0.0,
        )
        self.t0 = time.perf_counter()

    def advance(self, epoch: int, steps: int, samples: int, loss: float) -> None:
        self.samples += samples
        rate = self.samples / max(1e-9, time.perf_counter() - self.t0)
        assert self.task is not None, "advance() before start()"
        self.progress.update(
            self.task, advance=steps, epoch=epoch + 1, loss=f"{loss:.4f}", rate=rate
        )

    def epoch(self, record: dict[str, Any]) -> None:
        shown = metrics_text(record, skip=("epoch", "step", "seconds"))
        self.console.print(
            f"epoch {record['epoch']:>3}/{self.epochs}  {shown}  ({record['seconds']:.2f}s)",
            highlight=False,
        )

    def finish(self, message: str) -> None:
        self.stop()

    def stop(self) -> None:
        """Idempotent, and silent when the bar never started (an error before training)."""
        if self.task is not None:
            self.progress.stop()
            self.task = None
