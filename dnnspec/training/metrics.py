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


def _binary_accuracy(b: GraphBuilder, logits: str, target: str) -> str:
    """A unit predicts 1 where its logit is positive (probability above one half)."""
    pred = b.op("Cast", [b.op("Greater", [logits, b.const(0.0)])], to=b.float_elem)
    hits = b.op("Cast", [b.op("Equal", [pred, target])], to=b.float_elem)
    return b.op("ReduceSum", [hits], hint="correct", keepdims=0)


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
        "fraction of labels (samples, or positions of a sequence) whose arg-max class is right",
    ),
)
METRICS.add(
    "binary_accuracy",
    MetricDef(
        Signature(),
        "binary",
        True,
        "element",
        _binary_accuracy,
        "fraction of 0/1 targets matched by logit > 0",
    ),
)
METRICS.add(
    "mae", MetricDef(Signature(), "value", False, "element", _abs_error, "mean absolute error")
)
METRICS.add(
    "mse", MetricDef(Signature(), "value", False, "element", _sq_error, "mean squared error")
)
