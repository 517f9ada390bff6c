"""Metrics computed in-graph next to the loss (summed per batch, averaged per epoch)."""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.registry import Registry
from dnnspec.schema import Signature


@dataclass(frozen=True)
class MetricDef:
    signature: Signature
    target: str  # "class" or "value": which losses it makes sense with
    higher_is_better: bool
    doc: str = ""


METRICS: Registry[MetricDef] = Registry("metric")

METRICS.add("accuracy", MetricDef(Signature(), target="class", higher_is_better=True))
METRICS.add("mae", MetricDef(Signature(), target="value", higher_is_better=False))
METRICS.add("mse", MetricDef(Signature(), target="value", higher_is_better=False))
