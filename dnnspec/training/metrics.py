"""Metrics computed in-graph next to the loss, exact over a whole pass.

Each metric emits per-batch *sufficient statistics* of a fixed shape (`stats`: a scalar for
the sums most metrics are, a confusion matrix for precision/recall/F1, column sums for R²,
score histograms for the areas under curves); the runtime adds them over every batch of an
epoch and `finish` turns the totals into the metric, so a partial last batch weighs exactly
what it should and F1 or R² are those of the whole set, not an average of per-batch values.

A metric may read more than one kind of target (`precision` of class labels and of 0/1
targets): each kind has its own statistics, and `finish` tells them apart by their shape.

Over 600 lines because each metric's statistics graph, `finish` and registration sit
together, and the confusion-matrix and score-histogram metrics share the counting helpers
(`_counts`, `_units`) that build their statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from onnx import TensorProto, numpy_helper

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature
from dnnspec.training.losses import Target, one_hot

Per = Literal["sample", "element"]
# build(b, output, target, classes (or output units), args) -> statistics summed per batch
BuildMetric = Callable[[GraphBuilder, str, str, int, dict[str, Any]], str]
# finish(statistics summed over the pass, count of samples or elements) -> the metric
Finish = Callable[[np.ndarray, int], float]
# stats(classes or output units) -> the shape of the statistics
StatsShape = Callable[[int], tuple[int, ...]]


def _mean(total: np.ndarray, count: int) -> float:
    return float(total) / max(1, count)


def _scalar(width: int) -> tuple[int, ...]:
    return ()


@dataclass(frozen=True)
class Reading:
    """How a metric reads one more kind of target: the statistics it builds, and their shape."""

    target: Target
    build: BuildMetric
    stats: StatsShape


@dataclass(frozen=True)
class MetricDef:
    signature: Signature
    target: Target
    higher_is_better: bool
    per: Per
    build: BuildMetric
    doc: str = ""
    finish: Finish = _mean
    stats: StatsShape = _scalar
    per_class: Callable[[np.ndarray], list[float] | None] | None = None
    """Per-class (per-label) values from the same statistics, logged as `<name>_per_class`
    where it returns a list."""
    others: tuple[Reading, ...] = ()
    """The other kinds of target it reads (`finish` and `per_class` serve every kind)."""
    recent: tuple[str, ...] = ()
    """Arguments added since runs were first written: left out of the spec hash at their
    default, so a spec written before them keeps its hash (and its runs resume)."""

    @property
    def targets(self) -> tuple[Target, ...]:
        """Every kind of target the metric reads, its first `target` first."""
        return (self.target, *(r.target for r in self.others))

    def on(self, target: Target) -> MetricDef:
        """The metric as it reads `target` (its loss's kind), which it must read."""
        if target == self.target:
            return self
        reading = next(r for r in self.others if r.target == target)
        return replace(self, target=target, build=reading.build, stats=reading.stats, others=())


METRICS: Registry[MetricDef] = Registry("metric")


IGNORE = "ignore_index"
"""Passed to class metrics from the loss: positions with this label count nowhere."""


def _kept(b: GraphBuilder, labels: str, args: dict[str, Any]) -> str | None:
    ignore = int(args.get(IGNORE, -1))
    if ignore < 0:
        return None
    kept = b.op("Not", [b.op("Equal", [labels, b.const(ignore, "int64")])])
    return b.op("Cast", [kept], hint="counted", to=b.float_elem)


def _counted(b: GraphBuilder, per_position: str, labels: str, args: dict[str, Any]) -> str:
    """[sum of the per-position values, positions counted]: padding excluded."""
    keep = _kept(b, labels, args)
    if keep is None:
        keep = b.op("Add", [b.op("Mul", [per_position, b.const(0.0)]), b.const(1.0)])
    else:
        per_position = b.op("Mul", [per_position, keep])
    axis = b.const([0], "int64")
    total = b.op("Unsqueeze", [b.op("ReduceSum", [per_position], keepdims=0), axis])
    count = b.op("Unsqueeze", [b.op("ReduceSum", [keep], keepdims=0), axis])
    return b.op("Concat", [total, count], hint="sum_count", axis=0)


def _pair(width: int) -> tuple[int, ...]:
    return (2,)


def _share(total: np.ndarray, count: int) -> float:
    """The summed value over the positions counted (the graph counts them)."""
    s, n = np.asarray(total, np.float64)
    return float(s / max(1.0, n))


def _accuracy(b: GraphBuilder, logits: str, labels: str, width: int, args: dict[str, Any]) -> str:
    pred = b.op("ArgMax", [logits], hint="pred", axis=-1, keepdims=0)
    hits = b.op("Cast", [b.op("Equal", [pred, labels])], to=b.float_elem)
    return _counted(b, hits, labels, args)


def _top_k(b: GraphBuilder, logits: str, labels: str, width: int, args: dict[str, Any]) -> str:
    """The label is among the k highest scores (ties broken by TopK's lower index)."""
    k = min(int(args["k"]), width)
    _, index = b.op_multi("TopK", [logits, b.const([k], "int64")], 2, hint="top", axis=-1)
    wanted = b.op("Unsqueeze", [labels, b.const([-1], "int64")])
    hits = b.op("Cast", [b.op("Equal", [index, wanted])], to=b.float_elem)
    per = b.op("ReduceSum", [hits, b.const([-1], "int64")], keepdims=0)
    return _counted(b, per, labels, args)


def _binary_accuracy(
    b: GraphBuilder, logits: str, target: str, width: int, args: dict[str, Any]
) -> str:
    """A unit predicts 1 where its logit is positive (probability above one half)."""
    pred = b.op("Cast", [b.op("Greater", [logits, b.const(0.0)])], to=b.float_elem)
    hits = b.op("Cast", [b.op("Equal", [pred, target])], to=b.float_elem)
    return b.op("ReduceSum", [hits], hint="correct", keepdims=0)


def _exact_match(
    b: GraphBuilder, logits: str, labels: str, width: int, args: dict[str, Any]
) -> str:
    """Samples whose every label is predicted: the minimum hit over a sample's positions
    (Flatten makes [N] and [N, T] labels alike)."""
    pred = b.op("ArgMax", [logits], hint="pred", axis=-1, keepdims=0)
    hits = b.op("Flatten", [b.op("Cast", [b.op("Equal", [pred, labels])], to=b.float_elem)])
    whole = b.op("ReduceMin", [hits, b.const([1], "int64")], keepdims=0)
    return b.op("ReduceSum", [whole], hint="exact", keepdims=0)


def _abs_error(b: GraphBuilder, pred: str, target: str, width: int, args: dict[str, Any]) -> str:
    diff = b.op("Abs", [b.op("Sub", [pred, target])])
    return b.op("ReduceSum", [diff], hint="abs_error", keepdims=0)


def _sq_error(b: GraphBuilder, pred: str, target: str, width: int, args: dict[str, Any]) -> str:
    diff = b.op("Sub", [pred, target])
    return b.op("ReduceSum", [b.op("Mul", [diff, diff])], hint="sq_error", keepdims=0)


def _rmse(total: np.ndarray, count: int) -> float:
    return float(np.sqrt(float(total) / max(1, count)))


def _nll_sum(b: GraphBuilder, logits: str, labels: str, width: int, args: dict[str, Any]) -> str:
    """Summed negative log-likelihood of the labels under softmax(logits), and the count."""
    logp = b.op("LogSoftmax", [logits], axis=-1)
    hot = one_hot(b, labels, width)
    per = b.op("ReduceSum", [b.op("Mul", [hot, logp]), b.const([-1], "int64")], keepdims=0)
    return _counted(b, b.op("Neg", [per], hint="nll"), labels, args)


def _perplexity(total: np.ndarray, count: int) -> float:
    return float(np.exp(_share(total, count)))


def confusion(
    b: GraphBuilder, logits: str, labels: str, width: int, args: dict[str, Any] | None = None
) -> str:
    """[true class, predicted class] counts of a batch: one-hot(labels)^T one-hot(pred),
    positions of an ignored label left out."""
    flat = b.const([-1], "int64")
    pred = b.op("Reshape", [b.op("ArgMax", [logits], axis=-1, keepdims=0), flat])
    truth = b.op("Reshape", [labels, flat])
    hot_true = one_hot(b, truth, width)
    keep = _kept(b, truth, args or {})
    if keep is not None:
        hot_true = b.op("Mul", [hot_true, b.op("Unsqueeze", [keep, b.const([-1], "int64")])])
    hot_pred = one_hot(b, pred, width)
    return b.op("MatMul", [b.op("Transpose", [hot_true], perm=[1, 0]), hot_pred], hint="confusion")


def _confusion(b: GraphBuilder, logits: str, labels: str, width: int, args: dict[str, Any]) -> str:
    return confusion(b, logits, labels, width, args)


def _square(width: int) -> tuple[int, ...]:
    return (width, width)


def _counts(b: GraphBuilder, index: str, weight: str | None, shape: tuple[int, ...]) -> str:
    """How many positions fall in each cell of `shape` (their flat cell `index`, any shape),
    each counted with its `weight` (one when None): a histogram by ScatterElements, whose
    cost grows with the positions, not the cells."""
    flat = b.const([-1], "int64")
    cells = b.op("Shape", [index])
    if weight is None:
        updates = b.op("ConstantOfShape", [cells], value=_filler(b, 1.0))
    else:
        updates = b.op("Expand", [weight, cells])
    index, updates = b.op("Reshape", [index, flat]), b.op("Reshape", [updates, flat])
    zeros = b.op(
        "ConstantOfShape", [b.const([int(np.prod(shape))], "int64")], value=_filler(b, 0.0)
    )
    counts = b.op("ScatterElements", [zeros, index, updates], axis=0, reduction="add")
    return b.op("Reshape", [counts, b.const(list(shape), "int64")], hint="counts")


def _filler(b: GraphBuilder, value: float) -> Any:
    return numpy_helper.from_array(np.array([value], b.float_dtype))


def _as_index(b: GraphBuilder, value: str) -> str:
    return b.op("Cast", [value], to=TensorProto.INT64)


def _units(b: GraphBuilder, value: str, width: int) -> str:
    """[positions, units]: every axis but the last flattened (a sequence's positions too)."""
    return b.op("Reshape", [value, b.const([-1, width], "int64")])


def _unit_offsets(b: GraphBuilder, width: int, cells: int) -> str:
    """Each unit's first cell in a flat [units, cells] table."""
    return b.const(np.arange(width, dtype=np.int64) * cells, "int64")


THRESHOLD = ArgSpec(
    name="threshold",
    type="float",
    default=0.5,
    min=0.0,
    max=1.0,
    min_exclusive=True,
    max_exclusive=True,
    doc="0/1 targets: a unit predicts 1 where its probability is above it",
)


def _binary_confusion(
    b: GraphBuilder, logits: str, target: str, width: int, args: dict[str, Any]
) -> str:
    """[unit, true, predicted] counts of 0/1 targets: a unit predicts 1 where its
    probability is above the threshold, compared on the logit (log(t / (1 - t)), computed in
    float64), so 0.5 is `logit > 0` exactly as binary_accuracy decides."""
    t = float(args.get("threshold", 0.5))
    cut = b.const(float(np.log(t) - np.log1p(-t)))
    pred = _as_index(b, b.op("Greater", [_units(b, logits, width), cut]))
    truth = _as_index(b, _units(b, target, width))
    cell = b.op("Add", [b.op("Mul", [truth, b.const(2, "int64")]), pred])
    index = b.op("Add", [cell, _unit_offsets(b, width, 4)])
    return _counts(b, index, None, (width, 2, 2))


def binary_confusion(b: GraphBuilder, logits: str, target: str) -> str:
    """[true, predicted] counts of one 0/1 unit, predicted 1 where the logit exceeds 0."""
    counts = _binary_confusion(b, logits, target, 1, {})
    return b.op("Reshape", [counts, b.const([2, 2], "int64")], hint="confusion")


def _units_square(width: int) -> tuple[int, ...]:
    return (width, 2, 2)


def _tallies(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, predicted, actual) per class: of a [true, predicted] confusion
    matrix of class labels, or per unit of [unit, true, predicted] counts of 0/1 targets,
    where the class is the positive one (1)."""
    m = np.asarray(m, np.float64)
    if m.ndim == 3:
        return m[:, 1, 1], m[:, :, 1].sum(-1), m[:, 1, :].sum(-1)
    return np.diag(m), m.sum(axis=0), m.sum(axis=1)


def _ratio(hits: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """hits / totals with 0 where a class has no total (scikit-learn's zero_division=0)."""
    out = np.zeros(hits.shape, np.float64)
    np.divide(hits, totals, out=out, where=totals > 0)
    return out


def precision_per_class(m: np.ndarray) -> np.ndarray:
    tp, predicted, _ = _tallies(m)
    return _ratio(tp, predicted)


def recall_per_class(m: np.ndarray) -> np.ndarray:
    tp, _, actual = _tallies(m)
    return _ratio(tp, actual)


def f1_per_class(m: np.ndarray) -> np.ndarray:
    tp, predicted, actual = _tallies(m)
    return _ratio(2 * tp, predicted + actual)


def _macro(per_class: Callable[[np.ndarray], np.ndarray]) -> Finish:
    """The unweighted mean over the classes (scikit-learn's average='macro'), or over the
    units of 0/1 targets (one unit: its value)."""
    return lambda total, count: float(np.mean(per_class(np.asarray(total))))


def _listed(
    per_class: Callable[[np.ndarray], np.ndarray],
) -> Callable[[np.ndarray], list[float] | None]:
    """Each class's value, or each label's of several 0/1 units; none for one 0/1 unit,
    whose value is the metric itself."""

    def values(total: np.ndarray) -> list[float] | None:
        total = np.asarray(total)
        if total.ndim == 3 and total.shape[0] == 1:
            return None
        return [float(v) for v in per_class(total)]

    return values


BINS = 2048
"""Bins the areas under curves count scores in, over the log-odds (logit) of each score."""
ODDS_SPAN = 100.0
"""The log-odds the bins reach on each side; scores beyond count in the end bins."""


def bin_of(log_odds: np.ndarray) -> np.ndarray:
    """The bin of each log-odds z, as the graph computes it: bins equal in
    sign(z) log(1 + |z|), so each is about 0.0045 (1 + |z|) of log-odds wide (0.0011 of
    probability at one half) and scores of a confident model (|z| of 10 or 50, whose
    probabilities are all but 0 or 1) still fall in bins apart."""
    u = np.sign(log_odds) * np.log1p(np.abs(log_odds)) / np.log1p(ODDS_SPAN)
    bins: np.ndarray = np.clip(np.floor((u + 1) * (BINS / 2)), 0, BINS - 1).astype(np.int64)
    return bins


def _binned(b: GraphBuilder, log_odds: str, positive: str, weight: str | None, width: int) -> str:
    """[unit, negative/positive, bin] counts of [positions, units] scores, given as
    log-odds, by whether each position is a positive of its unit (`bin_of`); a NaN score
    counts in the middle bin."""
    z = b.op("Where", [b.op("IsNaN", [log_odds]), b.const(0.0), log_odds])
    spread = b.op("Log", [b.op("Add", [b.op("Abs", [z]), b.const(1.0)])])
    u = b.op("Mul", [b.op("Sign", [z]), spread])
    scale = b.const(float(BINS / 2 / np.log1p(ODDS_SPAN)))
    scaled = b.op("Floor", [b.op("Add", [b.op("Mul", [u, scale]), b.const(float(BINS / 2))])])
    bins = _as_index(b, b.op("Clip", [scaled, b.const(0.0), b.const(float(BINS - 1))]))
    cell = b.op("Add", [b.op("Mul", [_as_index(b, positive), b.const(BINS, "int64")]), bins])
    index = b.op("Add", [cell, _unit_offsets(b, width, 2 * BINS)])
    return _counts(b, index, weight, (width, 2, BINS))


def _binary_scores(
    b: GraphBuilder, logits: str, target: str, width: int, args: dict[str, Any]
) -> str:
    """Each unit's logits (the log-odds of its probability) binned by its 0/1 target."""
    return _binned(b, _units(b, logits, width), _units(b, target, width), None, width)


def _class_scores(
    b: GraphBuilder, logits: str, labels: str, width: int, args: dict[str, Any]
) -> str:
    """Each class's softmax probability p, as log p - log(1 - p), binned by whether the
    label is that class (one against the rest); positions of an ignored label count
    nowhere. (1 - p rounds to 0 for p within float precision of 1: the top bin.)"""
    flat = _units(b, logits, width)
    log_p = b.op("LogSoftmax", [flat], axis=-1)
    rest = b.op("Sub", [b.const(1.0), b.op("Softmax", [flat], axis=-1)])
    log_odds = b.op("Sub", [log_p, b.op("Log", [rest])])
    truth = b.op("Reshape", [labels, b.const([-1], "int64")])
    hot = one_hot(b, truth, width)
    keep = _kept(b, truth, args)
    weight = None if keep is None else b.op("Unsqueeze", [keep, b.const([-1], "int64")])
    return _binned(b, log_odds, hot, weight, width)


def _scores_shape(width: int) -> tuple[int, ...]:
    return (width, 2, BINS)


def _descending(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per unit, from the highest bin down: negatives and positives in each bin, and the
    negatives and positives at or above it."""
    counts = np.asarray(counts, np.float64)[..., ::-1]
    neg, pos = counts[:, 0], counts[:, 1]
    return neg, pos, np.cumsum(neg, -1), np.cumsum(pos, -1)


def roc_auc_per_class(counts: np.ndarray) -> np.ndarray:
    """The area under each unit's ROC curve: the chance a positive outscores a negative,
    a tie (one bin) counting half, as scikit-learn's roc_auc_score counts equal scores; NaN
    for a unit whose positions are all of one class."""
    neg, pos, _, tps = _descending(counts)
    pairs = tps[:, -1] * neg.sum(-1)
    won = (neg * (tps - pos / 2)).sum(-1)
    out = np.full(pairs.shape, np.nan)
    np.divide(won, pairs, out=out, where=pairs > 0)
    return out


def average_precision_per_class(counts: np.ndarray) -> np.ndarray:
    """Each unit's average precision: the precision at each bin's threshold weighted by the
    share of positives it adds (scikit-learn's average_precision_score, a bin one
    threshold); 0 for a unit without positives, as scikit-learn gives."""
    _, pos, fps, tps = _descending(counts)
    precision = _ratio(tps, tps + fps)
    total = tps[:, -1]
    return _ratio((pos * precision).sum(-1), total)


def _nan_macro(per_class: Callable[[np.ndarray], np.ndarray]) -> Finish:
    """The mean over the classes (units) where the value is defined; NaN where none is."""

    def finish(total: np.ndarray, count: int) -> float:
        values = per_class(np.asarray(total))
        defined = values[~np.isnan(values)]
        return float(defined.mean()) if defined.size else float("nan")

    return finish


def _r2_stats(b: GraphBuilder, pred: str, target: str, width: int, args: dict[str, Any]) -> str:
    """[sum y, sum y^2, sum (y - pred)^2] per output unit, over every other axis."""
    flat = b.const([-1, width], "int64")
    y = b.op("Reshape", [target, flat])
    residual = b.op("Sub", [b.op("Reshape", [pred, flat]), y])
    axis = b.const([0], "int64")
    sums = [
        b.op("ReduceSum", [v, axis], keepdims=1)
        for v in (y, b.op("Mul", [y, y]), b.op("Mul", [residual, residual]))
    ]
    return b.op("Concat", sums, hint="r2_stats", axis=0)


def _r2_shape(width: int) -> tuple[int, ...]:
    return (3, width)


def _r2(total: np.ndarray, count: int) -> float:
    """1 - SS_res / SS_tot per output unit, averaged (scikit-learn's uniform_average); a
    constant target unit scores 1 when predicted exactly, else 0."""
    s, s2, res = np.asarray(total, np.float64)
    n = max(1, count // max(1, s.size))
    tot = s2 - s * s / n
    score = np.where(tot > 0, 1 - res / np.where(tot > 0, tot, 1), np.where(res == 0, 1.0, 0.0))
    return float(score.mean())


NO_ARGS = Signature()

METRICS.add(
    "accuracy",
    MetricDef(
        NO_ARGS,
        "class",
        True,
        "element",
        _accuracy,
        "fraction of labels (samples, or positions of a sequence) whose arg-max class is right",
        finish=_share,
        stats=_pair,
    ),
)
METRICS.add(
    "exact_match",
    MetricDef(
        NO_ARGS,
        "class",
        True,
        "sample",
        _exact_match,
        "fraction of samples whose labels are all predicted (a whole sequence right)",
    ),
)
METRICS.add(
    "top_k_accuracy",
    MetricDef(
        Signature(args=(ArgSpec(name="k", type="int", default=5, min=1),)),
        "class",
        True,
        "element",
        _top_k,
        "fraction of labels among the k highest-scoring classes",
        finish=_share,
        stats=_pair,
    ),
)
for _name, _per_class, _doc in (
    ("precision", precision_per_class, "of the samples predicted as a class, the share right"),
    ("recall", recall_per_class, "of the samples of a class, the share found"),
    ("f1", f1_per_class, "harmonic mean of precision and recall"),
):
    METRICS.add(
        _name,
        MetricDef(
            Signature(args=(THRESHOLD,)),
            "class",
            True,
            "element",
            _confusion,
            f"{_doc}; the macro average over classes (per class as {_name}_per_class), "
            "from the whole pass's confusion matrix; of 0/1 targets, that of the positive "
            f"class (several units: the macro average over them, per unit as {_name}_per_class)",
            finish=_macro(_per_class),
            stats=_square,
            per_class=_listed(_per_class),
            others=(Reading("binary", _binary_confusion, _units_square),),
            recent=("threshold",),
        ),
    )
for _name, _area, _doc in (
    ("auc", roc_auc_per_class, "area under the ROC curve (scikit-learn's roc_auc_score)"),
    (
        "pr_auc",
        average_precision_per_class,
        "area under the precision-recall curve as average precision "
        "(scikit-learn's average_precision_score)",
    ),
):
    METRICS.add(
        _name,
        MetricDef(
            NO_ARGS,
            "binary",
            True,
            "element",
            _binary_scores,
            f"{_doc}, from the whole pass's scores counted in {BINS} bins of log-odds; several "
            "0/1 units or class labels (one class against the rest): the macro average "
            f"(per unit or class as {_name}_per_class)",
            finish=_nan_macro(_area),
            stats=_scores_shape,
            per_class=_listed(_area),
            others=(Reading("class", _class_scores, _scores_shape),),
        ),
    )
METRICS.add(
    "perplexity",
    MetricDef(
        NO_ARGS,
        "class",
        False,
        "element",
        _nll_sum,
        "exp of the mean cross-entropy per label (per token of a language model)",
        finish=_perplexity,
        stats=_pair,
    ),
)
METRICS.add(
    "binary_accuracy",
    MetricDef(
        NO_ARGS,
        "binary",
        True,
        "element",
        _binary_accuracy,
        "fraction of 0/1 targets matched by logit > 0",
    ),
)
METRICS.add("mae", MetricDef(NO_ARGS, "value", False, "element", _abs_error, "mean absolute error"))
METRICS.add("mse", MetricDef(NO_ARGS, "value", False, "element", _sq_error, "mean squared error"))
METRICS.add(
    "rmse",
    MetricDef(
        NO_ARGS,
        "value",
        False,
        "element",
        _sq_error,
        "root of the mean squared error",
        finish=_rmse,
    ),
)
METRICS.add(
    "r2",
    MetricDef(
        NO_ARGS,
        "value",
        True,
        "element",
        _r2_stats,
        "coefficient of determination per output unit, averaged, over the whole pass",
        finish=_r2,
        stats=_r2_shape,
    ),
)
