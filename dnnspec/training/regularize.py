"""Parameter penalties: their gradients are added to the data gradient inside the step.

The reported `loss` stays the data loss (comparable with `val_loss`); the penalty
strength * sum |w| (l1) or strength * sum w^2 (l2) over decayed parameters (weights,
not biases) shapes the update through its exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

# grad(b, param, args) -> gradient of the penalty with respect to param
PenaltyGrad = Callable[[GraphBuilder, str, dict[str, Any]], str]


@dataclass(frozen=True)
class RegularizerDef:
    signature: Signature
    grad: PenaltyGrad
    doc: str = ""


REGULARIZERS: Registry[RegularizerDef] = Registry("regularizer")

STRENGTH = ArgSpec(name="strength", type="float", min=0.0)


def _l1(b: GraphBuilder, p: str, args: dict[str, Any]) -> str:
    return b.op("Mul", [b.op("Sign", [p]), b.const(args["strength"])])


def _l2(b: GraphBuilder, p: str, args: dict[str, Any]) -> str:
    return b.op("Mul", [p, b.const(2.0 * args["strength"])])


REGULARIZERS.add(
    "l1", RegularizerDef(Signature(args=(STRENGTH,)), _l1, "strength * sum |w| over weights")
)
REGULARIZERS.add(
    "l2", RegularizerDef(Signature(args=(STRENGTH,)), _l2, "strength * sum w^2 over weights")
)
