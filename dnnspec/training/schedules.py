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
