"""When a run writes its checkpoint: every N epochs, or at most every M seconds.

Writing one costs an fsync and a SHA-256 over every carried tensor, more than an epoch of
a small model's training (docs/performance.md), so by default a run checkpoints at most
once a minute. Whatever the cadence, the run also checkpoints at its end, on an early
stop, on Ctrl-C and on divergence (the state of the last finished epoch), so `--resume`
after any of those loses nothing; after a kill it replays the epochs since the last one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dnnspec.errors import error

_FORM = re.compile(r"^\s*(\d+)\s*(s|m|min)?\s*$")


@dataclass(frozen=True)
class Cadence:
    """Checkpoint every `epochs` epochs, or (when `epochs` is None) at an epoch end once
    `seconds` have passed since the last checkpoint."""

    epochs: int | None = None
    seconds: float = 60.0

    @classmethod
    def parse(cls, text: str) -> Cadence:
        """`5` (epochs), `30s` or `2m` (time); anything else is a clear error."""
        match = _FORM.match(text)
        if match is None or int(match.group(1)) < 1:
            raise error(
                f"--checkpoint-every expects a number of epochs or a time, got '{text}'",
                help="e.g. --checkpoint-every 5 (epochs), 30s or 2m (at most that often)",
            )
        count, unit = int(match.group(1)), match.group(2)
        if unit is None:
            return cls(epochs=count)
        return cls(seconds=float(count * (1 if unit == "s" else 60)))

    def due(self, epoch: int, seconds_since_last: float) -> bool:
        """Whether to checkpoint after finishing `epoch` (counted from 1)."""
        if self.epochs is not None:
            return epoch % self.epochs == 0
        return seconds_since_last >= self.seconds

    def __str__(self) -> str:
        if self.epochs is not None:
            return f"every {self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"at most every {self.seconds:g} s"
