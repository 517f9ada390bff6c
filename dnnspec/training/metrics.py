"""Metrics computed in-graph next to the loss.

Each metric emits a per-batch *sum* (correct predictions, absolute errors); the runtime
adds the sums over an epoch and divides by the number of samples or elements, so a
partial last batch weighs exactly what it should.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import Signature
from dnnspec.training.losses import Target

Per = Literal["sample", "element"]
BuildMetric = Callable[[GraphBuilder, str, str], str]


@dataclass(frozen=True)
class MetricDef:
    signature: Signature
    target: Target
    higher_is_better: bool
    per: Per
    build: BuildMetric
    doc: str = ""


METRICS: Registry[MetricDef] = Registry("metric")


def _accuracy(b: GraphBuilder, logits: str, labels: str) -> str:
    pred = b.op("ArgMax", [logits], hint="pred", axis=-1, keepdims=0)
    hits = b.op("Cast", [b.op("Equal", [pred, labels])], to=b.float_elem)
    return b.op("ReduceSum", [hits], hint="correct", keepdims=0)


def _exact_match(b: GraphBuilder, logits: str, labels: str) -> str:
    """Samples whose every label is predicted: the minimum hit over a sample's positions
    (Flatten makes [N] and [N, T] labels alike)."""
    pred = b.op("ArgMax", [logits], hint="pred", axis=-1, keepdims=0)
    hits = b.op("Flatten", [b.op("Cast", [b.op("Equal", [pred, labels])], to=b.float_elem)])
    whole = b.op("ReduceMin", [hits, b.const([1], "int64")], keepdims=0)
    return b.op("ReduceSum", [whole], hint="exact", keepdims=0)


def _abs_error(b: GraphBuilder, pred: str, target: str) -> str:
    diff = b.op("Abs", [b.op("Sub", [pred, target])])
    return b.op("ReduceSum", [diff], hint="abs_error", keepdims=0)


def _sq_error(b: GraphBuilder, pred: str, target: str) -> str:
    diff = b.op("Sub", [pred, target])
    return b.op("ReduceSum", [b.op("Mul", [diff, diff])], hint="sq_error", keepdims=0)


METRICS.add(
    "accuracy",
    MetricDef(
        Signature(),
        "class",
        True,
        "element",
        _accuracy,
        "fraction of labels (samples, or positions of a sequence) whose arg-max class is the label",
    ),
)
METRICS.add(
    "exact_match",
    MetricDef(
        Signature(),
        "class",
        True,
        "sample",
        _exact_match,
        "fraction of samples whose labels are all predicted (a whole sequence right)",
    ),
)
METRICS.add(
    "mae", MetricDef(Signature(), "value", False, "element", _abs_error, "mean absolute error")
)
METRICS.add(
    "mse", MetricDef(Signature(), "value", False, "element", _sq_error, "mean squared error")
)
