"""Learning-rate schedules, evaluated inside the train-step graph from the step counter.

Each schedule emits a multiplier of the optimizer's base rate as a float scalar; durations
(`2 epochs`, `500 steps`) are turned into steps when the graph is assembled, since the
number of steps per epoch is known then.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Duration, Signature
from dnnspec.training.early_stop import improves, monitored

WARMUP = ArgSpec(
    name="warmup",
    type="duration",
    default=Duration(value=0, unit="steps"),
    doc="linear warm-up from 0 before the schedule starts",
)


@dataclass(frozen=True)
class Timing:
    """What durations are measured against."""

    steps_per_epoch: int
    total_steps: int

    def steps(self, d: Duration) -> int:
        return d.to_steps(self.steps_per_epoch)


class NeedsSamples(Exception):
    """The schedule measures durations in epochs or spans the run: it needs the number
    of training samples."""


class UnknownTiming(Timing):
    """Timing whose numbers are unknown until the data is counted; reading one raises."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("steps_per_epoch", "total_steps"):
            raise NeedsSamples(name)
        return super().__getattribute__(name)

    def steps(self, d: Duration) -> int:
        """A duration in steps is known without the data."""
        if d.unit == "epochs" and d.value:
            raise NeedsSamples("steps_per_epoch")
        return int(round(d.value)) if d.unit != "epochs" else 0


# build(b, step: float scalar (updates done so far), args, timing) -> factor scalar
BuildSchedule = Callable[[GraphBuilder, str, dict[str, Any], Timing], str]


@dataclass(frozen=True)
class ScheduleDef:
    """`spans_run`: the factor depends on the run's total steps, so changing the epoch
    count changes every step's rate (a resumed run must keep its epochs)."""

    signature: Signature
    build: BuildSchedule
    doc: str = ""
    spans_run: bool = False
    host_fed: bool = False
    """The host sets a factor between epochs (`LR_FACTOR`, carried and checkpointed with
    the parameters) that multiplies what `build` emits."""


SCHEDULES: Registry[ScheduleDef] = Registry("schedule")


def with_warmup(
    b: GraphBuilder, step: str, factor: str | None, args: dict[str, Any], timing: Timing
) -> str:
    """Scale `factor` (None: 1) by min(1, (step + 1) / warmup) when a warm-up is set."""
    warm = timing.steps(args["warmup"])
    if warm <= 0:
        return factor or b.const(1.0)
    ramp = b.op(
        "Min",
        [b.op("Div", [b.op("Add", [step, b.const(1.0)]), b.const(float(warm))]), b.const(1.0)],
        hint="warmup",
    )
    return ramp if factor is None else b.op("Mul", [ramp, factor])


def _progress(b: GraphBuilder, step: str, start: int, timing: Timing) -> str:
    """(step - start) / (total - start), clipped to [0, 1]."""
    span = float(max(1, timing.total_steps - start))
    p = b.op("Div", [b.op("Sub", [step, b.const(float(start))]), b.const(span)])
    return b.op("Clip", [p, b.const(0.0), b.const(1.0)], hint="progress")


def _constant(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    return with_warmup(b, step, None, args, t)


def _cosine(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    p = _progress(b, step, t.steps(args["warmup"]), t)
    cos = b.op("Cos", [b.op("Mul", [p, b.const(math.pi)])])
    half = b.op("Mul", [b.op("Add", [cos, b.const(1.0)]), b.const(0.5 * (1 - args["min_factor"]))])
    return with_warmup(b, step, b.op("Add", [half, b.const(args["min_factor"])]), args, t)


def _periods(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    """Periods of `every` since the warm-up ended, as cosine and linear count progress."""
    warm = t.steps(args["warmup"])
    since = b.op("Max", [b.op("Sub", [step, b.const(float(warm))]), b.const(0.0)]) if warm else step
    return b.op("Div", [since, b.const(float(max(1, t.steps(args["every"]))))])


def _step(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    drops = b.op("Floor", [_periods(b, step, args, t)])
    return with_warmup(b, step, b.op("Pow", [b.const(args["factor"]), drops]), args, t)


def _exponential(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    exponent = _periods(b, step, args, t)
    return with_warmup(b, step, b.op("Pow", [b.const(args["rate"]), exponent]), args, t)


def _linear(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    p = _progress(b, step, t.steps(args["warmup"]), t)
    slope = b.op("Mul", [p, b.const(args["end_factor"] - 1.0)])
    return with_warmup(b, step, b.op("Add", [slope, b.const(1.0)]), args, t)


def _multistep(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    """factor ** (milestones passed), a milestone being an epoch count (MultiStepLR)."""
    passed = [
        b.op(
            "Cast",
            [b.op("GreaterOrEqual", [step, b.const(float(m * t.steps_per_epoch))])],
            to=b.float_elem,
        )
        for m in sorted(args["milestones"])
    ]
    if not passed:
        return with_warmup(b, step, None, args, t)
    count = passed[0] if len(passed) == 1 else b.op("Sum", passed, hint="milestones_passed")
    return with_warmup(b, step, b.op("Pow", [b.const(args["factor"]), count]), args, t)


def _annealed(b: GraphBuilder, start: float, end: float, pct: str) -> str:
    """end + (start - end) / 2 * (1 + cos(pi pct)): PyTorch's cosine annealing."""
    cos = b.op("Cos", [b.op("Mul", [pct, b.const(math.pi)])])
    half = b.op("Mul", [b.op("Add", [cos, b.const(1.0)]), b.const(0.5 * (start - end))])
    return b.op("Add", [half, b.const(end)])


def one_cycle_phases(args: dict[str, Any], t: Timing) -> tuple[float, float, float, float, float]:
    """(start, peak, end factors, last step of the rise, last step of the run)."""
    peak = float(args["max_factor"])
    start = peak / args["div_factor"]
    end = start / args["final_div_factor"]
    last = float(max(1, t.total_steps - 1))
    rise = max(1.0, float(args["pct_start"]) * t.total_steps - 1)
    return start, peak, end, rise, last


def _one_cycle(b: GraphBuilder, step: str, args: dict[str, Any], t: Timing) -> str:
    """OneCycleLR (Smith & Topin) with cosine phases: from peak / div_factor up to
    max_factor over the first pct_start of the run, then down to start / final_div_factor."""
    start, peak, end, rise, last = one_cycle_phases(args, t)
    up = _annealed(b, start, peak, b.op("Div", [step, b.const(rise)]))
    since = b.op("Sub", [step, b.const(rise)])
    pct = b.op("Div", [since, b.const(max(1.0, last - rise))])
    down = _annealed(b, peak, end, b.op("Clip", [pct, b.const(0.0), b.const(1.0)]))
    rising = b.op("Less", [step, b.const(rise)])
    return b.op("Where", [rising, up, down], hint="one_cycle")


SCHEDULES.add(
    "constant", ScheduleDef(Signature(args=(WARMUP,)), _constant, "the base rate throughout")
)
SCHEDULES.add(
    "cosine",
    ScheduleDef(
        Signature(
            args=(WARMUP, ArgSpec(name="min_factor", type="float", default=0.0, min=0.0, max=1.0))
        ),
        _cosine,
        "half a cosine from the base rate down to min_factor times it over the run",
        spans_run=True,
    ),
)
SCHEDULES.add(
    "step",
    ScheduleDef(
        Signature(
            args=(
                ArgSpec(name="every", type="duration", min=0.0, min_exclusive=True),
                ArgSpec(name="factor", type="float", default=0.1, min=0.0, min_exclusive=True),
                WARMUP,
            )
        ),
        _step,
        "multiply the rate by factor every `every` after the warm-up",
    ),
)
SCHEDULES.add(
    "exponential",
    ScheduleDef(
        Signature(
            args=(
                ArgSpec(name="rate", type="float", min=0.0, min_exclusive=True, max=1.0),
                ArgSpec(
                    name="every",
                    type="duration",
                    min=0.0,
                    min_exclusive=True,
                    default=Duration(value=1, unit="epochs"),
                ),
                WARMUP,
            )
        ),
        _exponential,
        "rate ** (steps since the warm-up / every), smoothly",
    ),
)
SCHEDULES.add(
    "linear",
    ScheduleDef(
        Signature(args=(WARMUP, ArgSpec(name="end_factor", type="float", default=0.0, min=0.0))),
        _linear,
        "straight line from the base rate to end_factor times it",
        spans_run=True,
    ),
)
SCHEDULES.add(
    "reduce_on_plateau",
    ScheduleDef(
        Signature(
            args=(
                ArgSpec(
                    name="monitor",
                    type="str",
                    default="val_loss",
                    doc="a record key, as early_stop's",
                ),
                ArgSpec(name="patience", type="int", default=10, min=0),
                ArgSpec(
                    name="factor",
                    type="float",
                    default=0.1,
                    min=0.0,
                    max=1.0,
                    min_exclusive=True,
                    max_exclusive=True,
                ),
                ArgSpec(name="min_factor", type="float", default=0.0, min=0.0, max=1.0),
                ArgSpec(name="min_delta", type="float", default=0.0, min=0.0),
                WARMUP,
            )
        ),
        _constant,
        "multiply the rate by factor when monitor has not improved for more than patience "
        "epochs (ReduceLROnPlateau), never below min_factor",
        host_fed=True,
    ),
)
SCHEDULES.add(
    "multistep",
    ScheduleDef(
        Signature(
            args=(
                ArgSpec(name="milestones", type="ints", doc="epochs after which the rate drops"),
                ArgSpec(name="factor", type="float", default=0.1, min=0.0, min_exclusive=True),
                WARMUP,
            )
        ),
        _multistep,
        "multiply the rate by factor at each milestone epoch",
    ),
)
SCHEDULES.add(
    "one_cycle",
    ScheduleDef(
        Signature(
            args=(
                ArgSpec(
                    name="max_factor",
                    type="float",
                    default=10.0,
                    min=0.0,
                    min_exclusive=True,
                    doc="the peak rate as a multiple of the optimizer's lr",
                ),
                ArgSpec(
                    name="pct_start",
                    type="float",
                    default=0.3,
                    min=0.0,
                    max=1.0,
                    min_exclusive=True,
                    max_exclusive=True,
                ),
                ArgSpec(name="div_factor", type="float", default=25.0, min=1.0),
                ArgSpec(name="final_div_factor", type="float", default=1e4, min=1.0),
            )
        ),
        _one_cycle,
        "rise from max_factor / div_factor to max_factor, then anneal far below (OneCycleLR)",
        spans_run=True,
    ),
)


def curve_summary(lr: float, factors: np.ndarray, steps_per_epoch: int) -> str:
    """'1e-03 at step 0, peak 1e-02 at step 299 (epoch 3), end 4e-08 at step 999'."""
    rates = lr * factors

    def at(i: int) -> str:
        return f"{rates[i]:.3g} at step {i} (epoch {i // steps_per_epoch + 1})"

    peak = int(np.argmax(rates))
    low = int(np.argmin(rates))
    parts = [f"start {at(0)}", f"peak {at(peak)}"]
    if low not in (0, len(rates) - 1):
        parts.append(f"lowest {at(low)}")
    parts.append(f"end {at(len(rates) - 1)}")
    return ", ".join(parts) + f"; {len(rates)} steps, {steps_per_epoch} per epoch"


LR_FACTOR = "control/lr_factor"
"""The train-step input (and carried state) holding a host-fed schedule's factor."""


@dataclass
class Plateau:
    """ReduceLROnPlateau's bookkeeping on the host; it travels in checkpoints (and the
    factor it sets in the carried `LR_FACTOR`), so a resumed run agrees bit for bit."""

    key: str
    mode: str
    patience: int
    factor: float
    min_factor: float
    min_delta: float
    best: float | None = None
    waited: int = 0
    current: float = 1.0

    @classmethod
    def from_spec(cls, schedule: Any, higher_is_better: Callable[[str], bool]) -> Plateau | None:
        if schedule.name != "reduce_on_plateau":
            return None
        a = schedule.args
        key, mode = monitored(str(a["monitor"]), higher_is_better)
        return cls(
            key,
            mode,
            int(a["patience"]),
            float(a["factor"]),
            float(a["min_factor"]),
            float(a["min_delta"]),
        )

    def update(self, value: float) -> float:
        """Record one epoch's value; returns the factor for the next epoch."""
        if improves(value, self.best, self.mode, self.min_delta):
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        if self.waited > self.patience:
            self.current = max(self.current * self.factor, self.min_factor)
            self.waited = 0
        return self.current


def factor_curve(name: str, args: dict[str, Any], timing: Timing, steps: np.ndarray) -> np.ndarray:
    """The schedule's factor at each of `steps` (updates done so far), computed by the very
    nodes the train step runs, so a plot or summary can never disagree with training."""
    from onnx.reference import ReferenceEvaluator

    b = GraphBuilder("schedule")
    b.add_input("step", "float32", [len(steps)])
    b.rename(SCHEDULES.get(name).build(b, "step", args, timing), "factor")
    b.add_output("factor", "float32", None)
    (factor,) = ReferenceEvaluator(b.model()).run(None, {"step": steps.astype(np.float32)})
    return np.broadcast_to(np.asarray(factor, dtype=np.float64), steps.shape).copy()
