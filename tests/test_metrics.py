"""Every metric against a NumPy reference: the per-batch sum the graph emits, divided by
the count the registry says it is averaged over (samples or target elements), is the
metric's value.

`METRIC_CASES` holds at least one case per registered metric and kind of target it reads
(a completeness test fails otherwise); targets are drawn by that kind. The binary and
class-label references are exact NumPy statements of scikit-learn's definitions, checked
against scikit-learn itself where it is installed.
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
from dnnspec.training.metrics import BINS, METRICS, ODDS_SPAN, Per, bin_of

# reference(output, target) -> the metric's value over the whole set
Reference = Callable[[np.ndarray, np.ndarray], float]
# bound(the statistics summed over the set) -> the most the value may differ from the reference
Bound = Callable[[np.ndarray], float]


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


def sigmoid(out: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-out.astype(np.float64)))


def softmax(out: np.ndarray) -> np.ndarray:
    e = np.exp(out.astype(np.float64) - out.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def positive_class(kind: str, threshold: float = 0.5) -> Reference:
    """scikit-learn's precision/recall/f1_score of 0/1 targets (pos_label=1,
    zero_division=0) on probability > threshold; several units: average='macro'."""

    def ref(out: np.ndarray, y: np.ndarray) -> float:
        pred = sigmoid(out).reshape(-1, out.shape[-1]) > threshold
        truth = y.reshape(-1, y.shape[-1]) == 1
        tp = (pred & truth).sum(0).astype(np.float64)
        predicted, actual = pred.sum(0), truth.sum(0)
        scores = {
            "precision": np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0),
            "recall": np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0),
            "f1": np.divide(
                2 * tp, predicted + actual, out=np.zeros_like(tp), where=predicted + actual > 0
            ),
        }
        return float(scores[kind].mean())

    return ref


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """scikit-learn's roc_auc_score: the chance a positive outscores a negative, ties half
    (undefined, NaN, without both)."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """scikit-learn's average_precision_score: sum over the distinct scores, from the
    highest, of (recall gained) x (precision at that threshold)."""
    ap = 0.0
    for t in np.unique(score)[::-1]:
        chosen = score >= t
        gained = (positive & (score == t)).sum() / positive.sum()
        ap += gained * (positive & chosen).sum() / chosen.sum()
    return float(ap)


def per_unit(area: Callable[[np.ndarray, np.ndarray], float]) -> Reference:
    """The macro average of an area over 0/1 units or classes one against the rest
    (probabilities by softmax: scikit-learn's multi_class='ovr'), over the units where it is
    defined (where scikit-learn would refuse). A unit's scores are its logits, which order
    samples as their probabilities do without float64's sigmoid rounding logits above 37
    alike (to 1)."""

    def ref(out: np.ndarray, y: np.ndarray) -> float:
        width = out.shape[-1]
        if y.shape == out.shape:
            score, truth = out.astype(np.float64), y == 1
        else:
            score, truth = softmax(out), np.eye(width, dtype=bool)[y]
        score, truth = score.reshape(-1, width), truth.reshape(-1, width)
        return float(np.nanmean([area(score[:, u], truth[:, u]) for u in range(width)]))

    return ref


def roc_bound(totals: np.ndarray) -> float:
    """The stated error of binned ROC AUC: half the positive-negative pairs that share a
    bin, over all pairs (per unit where defined, averaged)."""
    neg, pos = totals[:, 0], totals[:, 1]
    pairs = pos.sum(-1) * neg.sum(-1)
    shared = (neg * pos).sum(-1)
    return float(np.mean(shared[pairs > 0] / (2 * pairs[pairs > 0])))


def ap_bound(totals: np.ndarray) -> float:
    """The stated error of binned average precision: per bin, its share of the positives x
    (its samples - 1) / (samples in it and above), summed (per unit, averaged)."""
    counts = totals[..., ::-1]
    pos, n = counts[:, 1], counts.sum(1)
    above = np.cumsum(n, -1)
    terms = np.divide(pos * (n - 1), above, out=np.zeros_like(n), where=above > 0)
    return float(np.mean(terms.sum(-1) / np.maximum(pos.sum(-1), 1)))


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
    target: Target | None = None
    """The kind of target read (the metric's first when None)."""
    bound: Bound | None = None
    """A binned metric's stated error on the case's data (exact when None)."""

    @property
    def kind(self) -> Target:
        return self.target or METRICS.get(self.metric).target


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
    MetricCase("precision", positive_class("precision"), (50, 1), target="binary"),
    MetricCase("recall", positive_class("recall", 0.3), (50, 1), {"threshold": 0.3}, "binary"),
    MetricCase("f1", positive_class("f1"), (50, 1), target="binary"),
    MetricCase("f1", positive_class("f1", 0.7), (30, 4), {"threshold": 0.7}, "binary"),
    MetricCase("auc", per_unit(roc_auc), (200, 1), bound=roc_bound),
    MetricCase("auc", per_unit(roc_auc), (100, 3), bound=roc_bound),
    MetricCase("auc", per_unit(roc_auc), (8, 25, 2), bound=roc_bound),
    MetricCase("auc", per_unit(roc_auc), (150, 4), target="class", bound=roc_bound),
    MetricCase("pr_auc", per_unit(average_precision), (200, 1), bound=ap_bound),
    MetricCase("pr_auc", per_unit(average_precision), (100, 3), bound=ap_bound),
    MetricCase("pr_auc", per_unit(average_precision), (150, 4), target="class", bound=ap_bound),
]


def test_every_metric_has_a_case_for_every_kind_of_target_it_reads() -> None:
    demanded = {(name, kind) for name in METRICS for kind in METRICS.get(name).targets}
    assert demanded <= {(METRICS.canonical(c.metric), c.kind) for c in METRIC_CASES}


def test_every_target_kind_can_be_drawn() -> None:
    assert set(TARGETS) == set(get_args(Target))


def count(per: Per, target: np.ndarray) -> int:
    return len(target) if per == "sample" else target.size


def metric_session(case: MetricCase) -> tuple[ort.InferenceSession, dict[str, Any]]:
    definition = METRICS.get(case.metric).on(case.kind)
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
    target = TARGETS[case.kind](rng, case.output)
    if target.dtype.kind == "f":
        target = target.astype(np.float32)
    out = rng.normal(size=case.output).astype(np.float32)
    if case.metric == "r2":  # predictions near the targets, so R^2 is far from 0
        out = (target + 0.5 * out).astype(np.float32)
    return out, target


def case_id(case: MetricCase) -> str:
    return f"{case.metric}-{case.kind}-{'x'.join(map(str, case.output))}"


def summed(case: MetricCase, out: np.ndarray, target: np.ndarray) -> EpochStats:
    """The statistics of two uneven batches, added as the runtime adds them."""
    session, _ = metric_session(case)
    cut = len(out) // 3
    stats = EpochStats()
    for part in (slice(0, cut), slice(cut, None)):
        (total,) = session.run(None, {"output": out[part], "target": target[part]})
        stats.add(0.0, len(out[part]), target[part].size, {case.metric: total})
    return stats


@pytest.mark.parametrize("case", METRIC_CASES, ids=case_id)
def test_metric_over_split_batches_matches_the_reference_over_all(case: MetricCase) -> None:
    """Statistics of two uneven batches, summed and finished, are the metric of the whole
    set: exact (binned ones within their stated error), not an average of per-batch values."""
    definition = METRICS.get(case.metric)
    out, target = draw(case, 0)
    stats = summed(case, out, target)
    value = stats.result()[case.metric]
    if case.bound is None:
        assert value == pytest.approx(case.reference(out, target), rel=1e-5)
    else:
        error = case.bound(stats.metric_sums[case.metric])
        assert error < 0.01  # the bins are fine enough to matter on 100 samples
        assert abs(value - case.reference(out, target)) <= error + 1e-9
    per_class = stats.result().get(f"{case.metric}_per_class")
    if definition.per_class is not None and (case.kind != "binary" or case.output[-1] > 1):
        assert per_class is not None and len(per_class) == case.output[-1]
    else:  # one 0/1 unit: its value is the metric
        assert per_class is None


AREAS = [c for c in METRIC_CASES if c.bound is not None]


@pytest.mark.parametrize("case", AREAS, ids=case_id)
def test_areas_are_exact_when_no_bin_holds_two_different_scores(case: MetricCase) -> None:
    """Scores one per bin, or tied (drawn from a few values, so many samples share a score,
    as scikit-learn then counts one threshold): the binned value is the exact one."""
    _, target = draw(case, 2)
    rng = np.random.default_rng(3)
    if case.kind == "binary":  # logits at the centres of distinct bins
        chosen = rng.permutation(BINS)[: int(np.prod(case.output))]
        u = (chosen + 0.5) / (BINS / 2) - 1
        out = (np.sign(u) * np.expm1(np.abs(u) * np.log1p(ODDS_SPAN))).astype(np.float32)
        assert np.array_equal(bin_of(out), chosen)
        out = out.reshape(case.output)
        tied = rng.choice([-2.0, -0.5, 0.0, 1.0, 3.0], size=case.output).astype(np.float32)
        cases = [out, tied]
    else:  # two classes' logits tie: every softmax row is one of a few
        rows = rng.normal(size=(3, case.output[-1])).astype(np.float32)
        cases = [rows[rng.integers(0, 3, case.output[:-1])]]
    for out in cases:
        value = summed(case, out, target).result()[case.metric]
        assert value == pytest.approx(case.reference(out, target), abs=1e-12)


def test_the_numpy_references_are_scikit_learns() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    out = (rng.normal(size=300) + y).astype(np.float32)[:, None]
    score, pred = sigmoid(out)[:, 0], sigmoid(out)[:, 0] > 0.3
    assert per_unit(roc_auc)(out, y[:, None]) == pytest.approx(metrics.roc_auc_score(y, score))
    ap = per_unit(average_precision)(out, y[:, None])
    assert ap == pytest.approx(metrics.average_precision_score(y, score))
    for kind, sk in (("precision", metrics.precision_score), ("recall", metrics.recall_score)):
        assert positive_class(kind, 0.3)(out, y[:, None]) == pytest.approx(sk(y, pred))
    assert positive_class("f1", 0.3)(out, y[:, None]) == pytest.approx(metrics.f1_score(y, pred))
    labels = rng.integers(0, 4, 300)
    logits = (rng.normal(size=(300, 4)) + np.eye(4)[labels]).astype(np.float32)
    expected = metrics.roc_auc_score(labels, softmax(logits), multi_class="ovr")
    assert per_unit(roc_auc)(logits, labels) == pytest.approx(expected)
    hot = np.eye(4)[labels]
    assert per_unit(average_precision)(logits, labels) == pytest.approx(
        metrics.average_precision_score(hot, softmax(logits), average="macro")
    )
    tied = np.round(score, 1)  # ties, as a saturated or duplicated score gives
    assert roc_auc(tied, y == 1) == pytest.approx(metrics.roc_auc_score(y, tied))
    assert average_precision(tied, y == 1) == pytest.approx(
        metrics.average_precision_score(y, tied)
    )


def test_an_area_is_undefined_for_a_unit_of_one_class_and_left_out_of_the_average() -> None:
    # scikit-learn refuses ROC AUC without both classes; average precision without a
    # positive is 0 as scikit-learn gives
    counts = np.zeros((2, 2, BINS))
    counts[0, 0, 10] = counts[0, 1, 900] = 1  # unit 0: separated
    counts[1, 0, 400] = 3  # unit 1: negatives only
    stats = EpochStats()
    stats.add(0.0, 5, 10, {"auc": counts, "pr_auc": counts})
    values = stats.result()
    assert values["auc"] == 1.0 and values["auc_per_class"] == [
        1.0,
        pytest.approx(np.nan, nan_ok=True),
    ]
    assert values["pr_auc_per_class"] == [1.0, 0.0]
    assert np.isnan(METRICS.get("auc").finish(counts[1:], 3))


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


@pytest.mark.parametrize("name", ["accuracy", "top_k_accuracy", "perplexity", "f1", "auc"])
def test_class_metrics_leave_out_the_loss_ignore_index(name: str) -> None:
    """Padding positions (the loss's ignore_index) count neither as hits nor in the total."""
    case = next(
        c
        for c in METRIC_CASES
        if c.metric == name
        and c.kind == "class"
        and (len(c.output) == 3 or name not in ("accuracy", "f1"))
    )
    definition = METRICS.get(name).on("class")
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
    expected = case.reference(out[kept][None], target[kept][None])
    error = 0.0 if case.bound is None else case.bound(np.asarray(total, np.float64)) + 1e-9
    assert value == pytest.approx(expected, rel=1e-5, abs=error)
