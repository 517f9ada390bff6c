"""Every metric against a NumPy reference: the per-batch sum the graph emits, divided by
the count the registry says it is averaged over (samples or target elements), is the
metric's value.

`METRIC_CASES` holds at least one case per registered metric (a completeness test fails
otherwise); targets are drawn by the metric's target kind from the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import numpy as np
import onnxruntime as ort
import pytest
from conftest import TARGETS

from dnnspec.graph.builder import GraphBuilder
from dnnspec.training.losses import Target
from dnnspec.training.metrics import METRICS, Per

# reference(output, target) -> the metric's value over the batch
Reference = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class MetricCase:
    metric: str
    reference: Reference
    output: tuple[int, ...]


METRIC_CASES: list[MetricCase] = [
    MetricCase("accuracy", lambda out, y: float((out.argmax(-1) == y).mean()), (40, 3)),
    MetricCase("accuracy", lambda out, y: float((out.argmax(-1) == y).mean()), (8, 5, 3)),
    MetricCase("exact_match", lambda out, y: float((out.argmax(-1) == y).mean()), (40, 3)),
    MetricCase(
        "exact_match",
        lambda out, y: float((out.argmax(-1) == y).all(axis=1).mean()),
        (60, 2, 3),
    ),
    MetricCase("mae", lambda out, y: float(np.abs(out - y).mean()), (6, 2, 3)),
    MetricCase("mse", lambda out, y: float(((out - y) ** 2).mean()), (6, 4)),
]


def test_every_metric_has_a_case() -> None:
    assert set(METRICS) <= {METRICS.canonical(c.metric) for c in METRIC_CASES}


def test_every_target_kind_can_be_drawn() -> None:
    assert set(TARGETS) == set(get_args(Target))


def count(per: Per, target: np.ndarray) -> int:
    return len(target) if per == "sample" else target.size


@pytest.mark.parametrize("case", METRIC_CASES, ids=lambda c: c.metric)
def test_metric_sum_over_its_count_matches_the_reference(case: MetricCase) -> None:
    definition = METRICS.get(case.metric)
    dims: list[int | str] = ["N", *case.output[1:]]
    b = GraphBuilder("metric", "float32")
    b.add_input("output", "float32", dims)
    if definition.target == "class":
        b.add_input("target", "int64", dims[:-1])
    else:
        b.add_input("target", "float32", dims)
    b.add_output(definition.build(b, "output", "target"), "float32", [])
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    target = TARGETS[definition.target](rng, case.output)
    if target.dtype.kind == "f":
        target = target.astype(np.float32)
    out = rng.normal(size=case.output).astype(np.float32)
    (total,) = session.run(None, {"output": out, "target": target})
    value = float(total) / count(definition.per, target)
    assert value == pytest.approx(case.reference(out, target), rel=1e-5)
