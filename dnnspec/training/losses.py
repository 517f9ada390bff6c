"""Losses: each emits the batch-mean loss and its gradient with respect to the model output.

The gradient is written analytically (softmax minus target, 2 (pred - y) / n) rather than
differentiated through the loss nodes: it is exact and costs a few nodes per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

Target = Literal["class", "value"]


@dataclass(frozen=True)
class LossOut:
    """Names of the scalar batch-mean loss and of d(loss)/d(output)."""

    loss: str
    grad: str | None


# build(b, output, target, classes, args, need_grad) -> LossOut
BuildLoss = Callable[[GraphBuilder, str, str, int | None, dict[str, Any], bool], LossOut]


@dataclass(frozen=True)
class LossDef:
    signature: Signature
    target: Target  # "class": int64 labels [N]; "value": floats shaped like the output
    build: BuildLoss
    doc: str = ""


LOSSES: Registry[LossDef] = Registry("loss")


def batch_size(b: GraphBuilder, value: str) -> str:
    """The (dynamic) leading dimension of `value` as a float scalar."""
    n = b.op("Shape", [value], hint="batch_shape", start=0, end=1)
    return b.op("Cast", [b.op("Squeeze", [n], hint="batch_n")], hint="batch_f", to=b.float_elem)


def _cross_entropy(
    b: GraphBuilder,
    logits: str,
    labels: str,
    classes: int | None,
    args: dict[str, Any],
    need_grad: bool,
) -> LossOut:
    assert classes is not None
    eps = float(args["label_smoothing"])
    off, on = eps / classes, 1.0 - eps + eps / classes
    logp = b.op("LogSoftmax", [logits], hint="logp", axis=-1)
    # onnxruntime's OneHot has float32 values only: cast for float64 (gradient-check) graphs
    target = b.op(
        "OneHot",
        [labels, b.const(classes, "int64"), b.const([off, on], "float32")],
        hint="target",
        axis=-1,
    )
    if b.float_dtype != "float32":
        target = b.op("Cast", [target], to=b.float_elem)
    per_sample = b.op("ReduceSum", [b.op("Mul", [target, logp]), b.const([1], "int64")], keepdims=0)
    loss = b.op("Neg", [b.op("ReduceMean", [per_sample], keepdims=0)], hint="loss")
    grad = None
    if need_grad:
        diff = b.op("Sub", [b.op("Exp", [logp], hint="probs"), target])
        grad = b.op("Div", [diff, batch_size(b, logits)], hint="d_output")
    return LossOut(loss, grad)


def _mse(
    b: GraphBuilder,
    pred: str,
    target: str,
    classes: int | None,
    args: dict[str, Any],
    need_grad: bool,
) -> LossOut:
    diff = b.op("Sub", [pred, target], hint="residual")
    loss = b.op("ReduceMean", [b.op("Mul", [diff, diff])], hint="loss", keepdims=0)
    grad = None
    if need_grad:
        count = b.op("Cast", [b.op("Size", [diff])], to=b.float_elem)
        grad = b.op("Div", [b.op("Add", [diff, diff]), count], hint="d_output")
    return LossOut(loss, grad)


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
        "softmax cross-entropy from logits, mean over the batch",
    ),
)
LOSSES.add("mse", LossDef(Signature(), "value", _mse, "mean squared error over all elements"))
