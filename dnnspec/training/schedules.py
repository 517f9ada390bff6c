"""Learning-rate schedules: a multiplier of the base rate computed in-graph from the step."""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Duration, Signature

WARMUP = ArgSpec(name="warmup", type="duration", default=Duration(value=0, unit="steps"),
                 doc="linear warm-up from 0 before the schedule starts")


@dataclass(frozen=True)
class ScheduleDef:
    signature: Signature
    doc: str = ""


SCHEDULES: Registry[ScheduleDef] = Registry("schedule")

SCHEDULES.add("constant", ScheduleDef(Signature(args=(WARMUP,))))
SCHEDULES.add("cosine", ScheduleDef(Signature(args=(
    WARMUP, ArgSpec(name="min_factor", type="float", default=0.0, min=0.0, max=1.0)))))
SCHEDULES.add("step", ScheduleDef(Signature(args=(
    ArgSpec(name="every", type="duration"),
    ArgSpec(name="factor", type="float", default=0.1, min=0.0, min_exclusive=True),
    WARMUP))))
SCHEDULES.add("exponential", ScheduleDef(Signature(args=(
    ArgSpec(name="rate", type="float", min=0.0, min_exclusive=True, max=1.0),
    ArgSpec(name="every", type="duration", default=Duration(value=1, unit="epochs")),
    WARMUP))))
SCHEDULES.add("linear", ScheduleDef(Signature(args=(
    WARMUP, ArgSpec(name="end_factor", type="float", default=0.0, min=0.0)))))
