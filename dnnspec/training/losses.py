"""Losses: signature plus the in-graph loss and its gradient with respect to the model output."""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature


@dataclass(frozen=True)
class LossDef:
    signature: Signature
    target: str  # "class" (int64 labels) or "value" (same shape as the output)
    doc: str = ""


LOSSES: Registry[LossDef] = Registry("loss")

LOSSES.add("cross_entropy", LossDef(Signature(args=(
    ArgSpec(name="label_smoothing", type="float", default=0.0, min=0.0, max=1.0,
            doc="mix the one-hot target with a uniform distribution"),
)), target="class", doc="softmax cross-entropy from logits, mean over the batch"))
LOSSES.add("mse", LossDef(Signature(), target="value", doc="mean squared error"))
