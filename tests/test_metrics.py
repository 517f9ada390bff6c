"""Every metric against a NumPy reference: the per-batch sum the graph emits, divided by
the count the registry says it is averaged over (samples or target elements), is the
metric's value.

`METRIC_CASES` holds at least one case per registered metric (a completeness test fails
otherwise); targets are drawn by the metric's target kind from the registry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import onnxruntime as ort
import pytest
from conftest import TARGETS, bind

from dnnspec.graph.builder import GraphBuilder
from dnnspec.runtime.trainer import EpochStats
from dnnspec.training.losses import Target
from dnnspec.training.metrics import METRICS, Per

# reference(output, target) -> the metric's value over the whole set
Reference = Callable[[np.ndarray, np.ndarray], float]


def confusion(out: np.ndarray, y: np.ndarray) -> np.ndarray:
    m = np.zeros((out.shape[-1], out.shape[-1]))
    np.add.at(m, (y.reshape(-1), out.argmax(-1).reshape(-1)), 1)
    return m


def macro(kind: str) -> Reference:
    """scikit-learn's precision/recall/f1_score(average='macro', zero_division=0)."""

    def ref(out: np.ndarray, y: np.ndarray) -> float:
        pred, truth = out.argmax(-1).reshape(-1), y.reshape(-1)
        scores = []
        for c in range(out.shape[-1]):
            tp = float(((pred == c) & (truth == c)).sum())
            predicted, actual = float((pred == c).sum()), float((truth == c).sum())
            p = tp / predicted if predicted else 0.0
            r = tp / actual if actual else 0.0
            f = 2 * tp / (predicted + actual) if predicted + actual else 0.0
            scores.append({"precision": p, "recall": r, "f1": f}[kind])
        return float(np.mean(scores))

    return ref


def r2(out: np.ndarray, y: np.ndarray) -> float:
    """scikit-learn's r2_score, multioutput='uniform_average'."""
    flat_y, flat_p = y.reshape(-1, y.shape[-1]), out.reshape(-1, y.shape[-1])
    res = ((flat_y - flat_p) ** 2).sum(0)
    tot = ((flat_y - flat_y.mean(0)) ** 2).sum(0)
    return float((1 - res / tot).mean())


def top_k(k: int) -> Reference:
    def ref(out: np.ndarray, y: np.ndarray) -> float:
        best = np.argsort(-out, axis=-1)[..., :k]
        return float((best == y[..., None]).any(-1).mean())

    return ref


def perplexity(out: np.ndarray, y: np.ndarray) -> float:
    shifted = out - out.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, y[..., None], -1)
    return float(np.exp(-picked.mean()))


@dataclass(frozen=True)
class MetricCase:
    metric: str
    reference: Reference
    output: tuple[int, ...]
    args: dict[str, Any] = field(default_factory=dict)


METRIC_CASES: list[MetricCase] = [
    MetricCase("accuracy", lambda out, y: float((out.argmax(-1) == y).mean()), (40, 3)),
    MetricCase("accuracy", lambda out, y: float((out.argmax(-1) == y).mean()), (6, 5, 3)),
    MetricCase("exact_match", lambda out, y: float((out.argmax(-1) == y).mean()), (40, 3)),
    MetricCase(
        "exact_match",
        lambda out, y: float((out.argmax(-1) == y).all(axis=1).mean()),
        (60, 2, 3),
    ),
    MetricCase("top_k_accuracy", top_k(2), (40, 5), {"k": 2}),
    MetricCase("top_k_accuracy", top_k(3), (8, 4, 6), {"k": 3}),
    MetricCase("precision", macro("precision"), (50, 4)),
    MetricCase("recall", macro("recall"), (50, 4)),
    MetricCase("f1", macro("f1"), (50, 4)),
    MetricCase("f1", macro("f1"), (6, 7, 3)),
    MetricCase("perplexity", perplexity, (20, 5)),
    MetricCase("binary_accuracy", lambda out, y: float(((out > 0) == (y == 1)).mean()), (10, 3)),
    MetricCase("mae", lambda out, y: float(np.abs(out - y).mean()), (6, 2, 3)),
    MetricCase("mse", lambda out, y: float(((out - y) ** 2).mean()), (6, 4)),
    MetricCase("rmse", lambda out, y: float(np.sqrt(((out - y) ** 2).mean())), (6, 4)),
    MetricCase("r2", r2, (30, 3)),
]


def test_every_metric_has_a_case() -> None:
    assert set(METRICS) <= {METRICS.canonical(c.metric) for c in METRIC_CASES}


def test_every_target_kind_can_be_drawn() -> None:
    assert set(TARGETS) == set(get_args(Target))


def count(per: Per, target: np.ndarray) -> int:
    return len(target) if per == "sample" else target.size


def metric_session(case: MetricCase) -> tuple[ort.InferenceSession, dict[str, Any]]:
    definition = METRICS.get(case.metric)
    args = bind(definition.signature, case.metric, case.args)
    dims: list[int | str] = ["N", *case.output[1:]]
    width = case.output[-1]
    b = GraphBuilder("metric", "float32")
    b.add_input("output", "float32", dims)
    if definition.target == "class":
        b.add_input("target", "int64", dims[:-1])
    else:
        b.add_input("target", "float32", dims)
    stats = definition.build(b, "output", "target", width, args)
    b.add_output(stats, "float32", list(definition.stats(width)))
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session, args


def draw(case: MetricCase, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = TARGETS[METRICS.get(case.metric).target](rng, case.output)
    if target.dtype.kind == "f":
        target = target.astype(np.float32)
    out = rng.normal(size=case.output).astype(np.float32)
    if case.metric == "r2":  # predictions near the targets, so R^2 is far from 0
        out = (target + 0.5 * out).astype(np.float32)
    return out, target


@pytest.mark.parametrize("case", METRIC_CASES, ids=lambda c: f"{c.metric}-{len(c.output)}d")
def test_metric_over_split_batches_matches_the_reference_over_all(case: MetricCase) -> None:
    """Statistics of two uneven batches, summed and finished, are the metric of the whole
    set: exact, not an average of per-batch values."""
    definition = METRICS.get(case.metric)
    session, _ = metric_session(case)
    out, target = draw(case, 0)
    cut = len(out) // 3
    stats = EpochStats()
    for part in (slice(0, cut), slice(cut, None)):
        (total,) = session.run(None, {"output": out[part], "target": target[part]})
        stats.add(0.0, len(out[part]), target[part].size, {case.metric: total})
    value = stats.result()[case.metric]
    assert value == pytest.approx(case.reference(out, target), rel=1e-5)
    if definition.per_class is not None:
        assert len(stats.result()[f"{case.metric}_per_class"]) == case.output[-1]


def test_k_steps_of_a_call_sum_to_the_bit_as_k_single_steps() -> None:
    # a call of the train loop hands back K steps at once; its totals must be those of the
    # host loop, which adds one step at a time, or the logged epochs would differ
    rng = np.random.default_rng(0)
    info = {"metric.accuracy": ("accuracy", ""), "loss/a": ("loss", "a")}
    for _ in range(50):
        k, n = int(rng.integers(1, 40)), int(rng.integers(1, 100))
        losses = rng.random(k).astype(np.float32)
        metrics = {
            "metric.accuracy": rng.random((k, 2)).astype(np.float32),
            "loss/a": rng.random(k).astype(np.float32),
        }
        one = EpochStats(info=info)  # an earlier call already counted
        one.add(
            0.3, 5, {"": 5, "a": 7}, {"metric.accuracy": rng.random(2), "loss/a": np.array(0.2)}
        )
        many = copy.deepcopy(one)
        for i in range(k):
            one.add(float(losses[i]), n, {"": n, "a": 2 * n}, {m: v[i] for m, v in metrics.items()})
        many.add_steps(losses, n, {"": n, "a": 2 * n}, metrics)
        assert (one.loss, one.samples, one.elements) == (many.loss, many.samples, many.elements)
        for key in metrics:
            assert np.array_equal(one.metric_sums[key], many.metric_sums[key])


@pytest.mark.parametrize("name", ["accuracy", "top_k_accuracy", "perplexity", "f1"])
def test_class_metrics_leave_out_the_loss_ignore_index(name: str) -> None:
    """Padding positions (the loss's ignore_index) count neither as hits nor in the total."""
    case = next(
        c
        for c in METRIC_CASES
        if c.metric == name
        and len(c.output) == 3
        or (c.metric == name and name != "accuracy" and name != "f1")
    )
    definition = METRICS.get(name)
    args = {**bind(definition.signature, name, case.args), "ignore_index": 0}
    width = case.output[-1]
    b = GraphBuilder("metric", "float32")
    dims: list[int | str] = ["N", *case.output[1:]]
    b.add_input("output", "float32", dims)
    b.add_input("target", "int64", dims[:-1])
    b.add_output(
        definition.build(b, "output", "target", width, args),
        "float32",
        list(definition.stats(width)),
    )
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    out, target = draw(case, 1)
    (total,) = session.run(None, {"output": out, "target": target})
    value = definition.finish(total, target.size)
    kept = target != 0
    assert value == pytest.approx(case.reference(out[kept][None], target[kept][None]), rel=1e-5)
