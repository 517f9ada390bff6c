"""Losses: each is its forward formula, the batch-mean loss of the model output.

The training step seeds the autodiff engine at the loss, so a loss brings no gradient of
its own: every op it uses has a VJP rule (checked against finite differences), and the
derived gradient is the exact gradient of the formula as computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

Target = Literal["class", "value"]

# build(b, output, target, classes, args) -> name of the scalar batch-mean loss
BuildLoss = Callable[[GraphBuilder, str, str, int | None, dict[str, Any]], str]


@dataclass(frozen=True)
class LossDef:
    signature: Signature
    target: Target  # "class": int64 labels, the output's dims but the last; "value":
    # floats shaped like the output
    build: BuildLoss
    doc: str = ""


LOSSES: Registry[LossDef] = Registry("loss")


def _cross_entropy(
    b: GraphBuilder, logits: str, labels: str, classes: int | None, args: dict[str, Any]
) -> str:
    assert classes is not None
    eps = float(args["label_smoothing"])
    off, on = eps / classes, 1.0 - eps + eps / classes
    logp = b.op("LogSoftmax", [logits], hint="logp", axis=-1)
    # onnxruntime's OneHot has float32 values only: float64 (gradient-check) graphs cast a
    # 0/1 one-hot and smooth it in float64, so that they compute the formula exactly
    wide = b.float_dtype != "float32"
    values = [0.0, 1.0] if wide else [off, on]
    target = b.op(
        "OneHot",
        [labels, b.const(classes, "int64"), b.const(values, "float32")],
        hint="target",
        axis=-1,
    )
    if wide:
        target = b.op("Cast", [target], to=b.float_elem)
        if eps:
            target = b.op("Add", [b.op("Mul", [target, b.const(on - off)]), b.const(off)])
    per_label = b.op("ReduceSum", [b.op("Mul", [target, logp]), b.const([-1], "int64")], keepdims=0)
    return b.op("Neg", [b.op("ReduceMean", [per_label], keepdims=0)], hint="loss")


def _mse(b: GraphBuilder, pred: str, target: str, classes: int | None, args: dict[str, Any]) -> str:
    diff = b.op("Sub", [pred, target], hint="residual")
    return b.op("ReduceMean", [b.op("Mul", [diff, diff])], hint="loss", keepdims=0)


LOSSES.add(
    "cross_entropy",
    LossDef(
        Signature(
            args=(
                ArgSpec(
                    name="label_smoothing",
                    type="float",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    doc="mix the one-hot target with a uniform distribution",
                ),
            )
        ),
        "class",
        _cross_entropy,
        "softmax cross-entropy from logits, mean over the labels (one per sample, or per "
        "position of a sequence)",
    ),
)
LOSSES.add("mse", LossDef(Signature(), "value", _mse, "mean squared error over all elements"))
