"""Gradient clipping, inside the train step between the backward pass and the update.

`clip norm(1.0)` rescales every gradient by one factor so that their global L2 norm is
at most 1 (torch.nn.utils.clip_grad_norm_, eps 1e-6 included); `clip value(0.5)` clamps
each gradient element to [-0.5, 0.5] (clip_grad_value_). Penalties (l1/l2, an
optimizer's weight decay) are added after clipping, as in PyTorch where they live in the
optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

# build(b, gradients by parameter, args) -> clipped gradients by parameter
BuildClip = Callable[[GraphBuilder, dict[str, str], dict[str, Any]], dict[str, str]]


@dataclass(frozen=True)
class ClipDef:
    signature: Signature
    build: BuildClip
    doc: str = ""


CLIPPING: Registry[ClipDef] = Registry("clipping")


def _norm(b: GraphBuilder, grads: dict[str, str], args: dict[str, Any]) -> dict[str, str]:
    squares = [b.op("ReduceSumSquare", [g], keepdims=0) for g in grads.values()]
    total = squares[0] if len(squares) == 1 else b.op("Sum", squares)
    norm = b.op("Sqrt", [total], hint="grad_norm")
    coef = b.op("Div", [b.const(float(args["max_norm"])), b.op("Add", [norm, b.const(1e-6)])])
    coef = b.op("Min", [coef, b.const(1.0)], hint="clip_coef")
    return {name: b.op("Mul", [g, coef], hint="clipped") for name, g in grads.items()}


def _value(b: GraphBuilder, grads: dict[str, str], args: dict[str, Any]) -> dict[str, str]:
    limit = float(args["limit"])
    lo, hi = b.const(-limit), b.const(limit)
    return {name: b.op("Clip", [g, lo, hi], hint="clipped") for name, g in grads.items()}


CLIPPING.add(
    "norm",
    ClipDef(
        Signature(args=(ArgSpec(name="max_norm", type="float", min=0.0, min_exclusive=True),)),
        _norm,
        "scale all gradients together so their global L2 norm is at most max_norm",
    ),
)
CLIPPING.add(
    "value",
    ClipDef(
        Signature(args=(ArgSpec(name="limit", type="float", min=0.0, min_exclusive=True),)),
        _value,
        "clamp each gradient element to [-limit, limit]",
    ),
)
