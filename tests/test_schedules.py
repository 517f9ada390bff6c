"""Every learning-rate schedule's factor at chosen steps, computed in-graph from the step
counter, against values worked out by hand from its definition.

`SCHEDULE_CASES` holds at least one case per registered schedule (a completeness test
fails otherwise).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import SPECS, bind

from dnnspec.graph.builder import GraphBuilder
from dnnspec.schema import Duration
from dnnspec.training.schedules import SCHEDULES, Timing, curve_summary, factor_curve


def steps(n: float) -> Duration:
    return Duration(value=n, unit="steps")


def epochs(n: float) -> Duration:
    return Duration(value=n, unit="epochs")


@dataclass(frozen=True)
class ScheduleCase:
    """`factors`: step (updates done so far) -> the multiplier of the base rate."""

    schedule: str
    timing: Timing
    factors: dict[int, float]
    args: dict[str, Any] = field(default_factory=dict)
    id: str = ""


SCHEDULE_CASES: list[ScheduleCase] = [
    ScheduleCase("constant", Timing(10, 100), {0: 1.0, 99: 1.0}),
    ScheduleCase(
        "constant",
        Timing(10, 100),
        {0: 0.25, 1: 0.5, 3: 1.0, 50: 1.0},
        {"warmup": steps(4)},
        "warmup",
    ),
    ScheduleCase(
        "cosine",
        Timing(10, 110),
        {
            0: 0.1,
            4: 0.5,
            9: 1.0,
            10: 1.0,
            60: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)),
            110: 0.1,
        },
        {"warmup": epochs(1), "min_factor": 0.1},
        "warmup-then-min_factor",
    ),
    ScheduleCase(
        "step",
        Timing(5, 100),
        {0: 1.0, 9: 1.0, 10: 0.5, 25: 0.25},
        {"every": epochs(2), "factor": 0.5},
    ),
    # decay counts periods from the end of the warm-up
    ScheduleCase(
        "step",
        Timing(10, 100),
        {0: 0.2, 4: 1.0, 14: 1.0, 15: 0.5, 25: 0.25},
        {"every": steps(10), "factor": 0.5, "warmup": steps(5)},
        "after-warmup",
    ),
    ScheduleCase("exponential", Timing(10, 100), {0: 1.0, 5: 0.5**0.5, 20: 0.25}, {"rate": 0.5}),
    ScheduleCase(
        "exponential",
        Timing(10, 100),
        {4: 1.0, 25: 0.25},
        {"rate": 0.5, "every": steps(10), "warmup": steps(5)},
        "after-warmup",
    ),
    ScheduleCase("linear", Timing(10, 100), {0: 1.0, 50: 0.5, 100: 0.0, 120: 0.0}),
    # the in-graph part (the host's factor multiplies it; tests/test_plateau.py)
    ScheduleCase(
        "reduce_on_plateau", Timing(10, 100), {0: 0.5, 1: 1.0, 70: 1.0}, {"warmup": steps(2)}
    ),
    ScheduleCase(
        "multistep",
        Timing(10, 100),
        {0: 1.0, 19: 1.0, 20: 0.5, 49: 0.5, 50: 0.25, 99: 0.25},
        {"milestones": [5, 2], "factor": 0.5},
    ),
    # peak 4 at step 0.25 * 100 - 1 = 24, from 4 / 8 = 0.5, down to 0.5 / 100 at step 99
    ScheduleCase(
        "one_cycle",
        Timing(10, 100),
        {
            0: 0.5,
            12: 0.5 + 3.5 * 0.5 * (1 - math.cos(math.pi * 12 / 24)),
            24: 4.0,
            99: 0.005,
            120: 0.005,
        },
        {"max_factor": 4.0, "pct_start": 0.25, "div_factor": 8.0, "final_div_factor": 100.0},
    ),
    ScheduleCase(
        "linear", Timing(10, 100), {0: 1.0, 50: 1.5, 100: 2.0}, {"end_factor": 2.0}, "rising"
    ),
]


def test_every_schedule_has_a_case() -> None:
    assert set(SCHEDULES) <= {SCHEDULES.canonical(c.schedule) for c in SCHEDULE_CASES}


@pytest.mark.parametrize(
    "case", SCHEDULE_CASES, ids=lambda c: "-".join(filter(None, [c.schedule, c.id]))
)
def test_schedule_factor_at_chosen_steps(case: ScheduleCase) -> None:
    definition = SCHEDULES.get(case.schedule)
    b = GraphBuilder("schedule", "float64")
    b.add_input("step", "float64", [])
    args = bind(definition.signature, case.schedule, case.args)
    b.add_output(definition.build(b, "step", args, case.timing), "float64", [])
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = {s: float(session.run(None, {"step": np.array(float(s))})[0]) for s in case.factors}
    assert got == pytest.approx(case.factors, abs=1e-12)


def torch_factors(case: ScheduleCase, steps: list[int]) -> list[float]:
    """The same schedule in torch.optim.lr_scheduler, stepped once per update."""
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    args = bind(SCHEDULES.get(case.schedule).signature, case.schedule, case.args)
    if case.schedule == "one_cycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=args["max_factor"],
            total_steps=case.timing.total_steps,
            pct_start=args["pct_start"],
            div_factor=args["div_factor"],
            final_div_factor=args["final_div_factor"],
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    else:
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt,
            [m * case.timing.steps_per_epoch for m in args["milestones"]],
            gamma=args["factor"],
        )
    got = []
    for step in range(max(steps) + 1):
        if step in steps:
            got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return got


@pytest.mark.parametrize(
    "case",
    [c for c in SCHEDULE_CASES if c.schedule in ("one_cycle", "multistep")],
    ids=lambda c: c.schedule,
)
def test_schedule_matches_torch_lr_scheduler(case: ScheduleCase) -> None:
    steps_ = [s for s in case.factors if s < case.timing.total_steps]
    assert [case.factors[s] for s in steps_] == pytest.approx(
        torch_factors(case, steps_), abs=1e-12
    )


def test_check_summarises_the_learning_rate_curve() -> None:
    """start, peak and end of the rate with their steps, from the schedule's own graph."""
    args = bind(SCHEDULES.get("one_cycle").signature, "one_cycle", {"max_factor": 4.0})
    factors = factor_curve("one_cycle", args, Timing(10, 100), np.arange(100.0))
    assert len(factors) == 100
    assert int(np.argmax(factors)) == 29
    text = curve_summary(0.01, factors, 10)
    assert text.startswith("start 0.0016 at step 0 (epoch 1), peak 0.04 at step 29 (epoch 3)")
    assert text.endswith("end 1.6e-07 at step 99 (epoch 10); 100 steps, 10 per epoch")


def test_dnnspec_check_prints_the_learning_rate_curve() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dnnspec", "check", str(SPECS / "digits_mlp.dnn")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert (
        "learning rate  start 4.35e-05 at step 0 (epoch 1), peak 0.001 at step 22" in result.stdout
    )
