"""Early stopping: stop when a monitored metric has not improved for `patience` epochs.

`monitor` names a record key: `val_loss`/`val_<metric>`, or `train_loss`/`train_<metric>`
for the training value; a bare `loss` or metric name means the validation value.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.ir import TrainSpec
from dnnspec.schema import ArgSpec, Signature, arg_float, arg_int, arg_str
from dnnspec.training.metrics import METRICS

EARLY_STOP = Signature(
    args=(
        ArgSpec(name="monitor", type="str", default="val_loss"),
        ArgSpec(name="patience", type="int", default=5, min=1),
        ArgSpec(name="min_delta", type="float", default=0.0, min=0.0),
    )
)


@dataclass
class EarlyStop:
    """Early-stopping bookkeeping; it travels in checkpoints so a resumed run agrees."""

    key: str
    mode: str
    min_delta: float
    patience: int
    best: float | None = None
    waited: int = 0

    @classmethod
    def from_spec(cls, train: TrainSpec) -> EarlyStop | None:
        """The monitored record key and direction (resolve has checked the name)."""
        if train.early_stop is None:
            return None
        args = train.early_stop.args
        monitor = arg_str(args, "monitor")
        if monitor.startswith("train_"):
            key = base = monitor.removeprefix("train_")
        else:
            base = monitor.removeprefix("val_")
            key = f"val_{base}"
        mode = "max" if base != "loss" and METRICS.get(base).higher_is_better else "min"
        return cls(key, mode, arg_float(args, "min_delta"), arg_int(args, "patience"))

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when it is the best so far."""
        better = self.best is None or (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        return better

    @property
    def exhausted(self) -> bool:
        return self.waited >= self.patience
