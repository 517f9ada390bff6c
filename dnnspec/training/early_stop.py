"""Early stopping: stop when a monitored metric has not improved for `patience` epochs.

`monitor` names a record key: `val_loss`/`val_<metric>`, or `train_loss`/`train_<metric>`
for the training value; a bare `loss` or metric name means the validation value.
"""

from __future__ import annotations

from collections.abc import Callable
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


def monitored(monitor: str, higher_is_better: Callable[[str], bool]) -> tuple[str, str]:
    """The metrics-record key a monitor names and whether it is maximised or minimised:
    `train_x` is the training value `x`, `x` and `val_x` the validation one."""
    if monitor.startswith("train_"):
        key = base = monitor.removeprefix("train_")
    else:
        base = monitor.removeprefix("val_")
        key = f"val_{base}"
    return key, "max" if base != "loss" and higher_is_better(base) else "min"


def higher_is_better(train: TrainSpec, base: str) -> bool:
    """Whether record key `base` (`accuracy`, `digit_accuracy`, `digit_loss`) is a metric
    that is maximised; losses are minimised."""
    for head in train.trained():
        for metric in head.metrics:
            if head.prefix + metric.name == base:
                return METRICS.get(metric.name).higher_is_better
    return False


def improves(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in the direction `mode`."""
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


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
        key, mode = monitored(arg_str(args, "monitor"), lambda m: higher_is_better(train, m))
        return cls(key, mode, arg_float(args, "min_delta"), arg_int(args, "patience"))

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when it is the best so far."""
        better = improves(value, self.best, self.mode, self.min_delta)
        if better:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        return better

    @property
    def exhausted(self) -> bool:
        return self.waited >= self.patience
