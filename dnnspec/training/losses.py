"""Losses: each is its forward formula, the batch-mean loss of the model output.

The training step seeds the autodiff engine at the loss, so a loss needs no gradient of
its own: every op it uses has a VJP rule (checked against finite differences), and the
derived gradient is the exact gradient of the formula as computed. Like JAX's custom_vjp,
a loss may hand back a `vjp` that writes d(loss)/d(output) itself from the forward's
values; the step then seeds the engine at the output instead. Only cross-entropy does:
"softmax - target" is 6 nodes where the derivation emits 14, measured 25-40% faster for
the loss and its gradient alone and about 5% per step of the digits MLP with SGD.
tests/test_losses.py checks every hand-written gradient against the derived one.
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
    """The scalar batch-mean loss and, rarely, a hand-written `vjp` that emits its gradient
    with respect to the model output when called (residuals captured from the forward)."""

    loss: str
    vjp: Callable[[], str] | None = None


# build(b, output, target, classes, args) -> the loss (a name, or a LossOut with its vjp)
BuildLoss = Callable[[GraphBuilder, str, str, int | None, dict[str, Any]], str | LossOut]


@dataclass(frozen=True)
class LossDef:
    signature: Signature
    target: Target  # "class": int64 labels, the output's dims but the last; "value":
    # floats shaped like the output
    build: BuildLoss
    doc: str = ""


LOSSES: Registry[LossDef] = Registry("loss")


def loss_out(built: str | LossOut) -> LossOut:
    """What a loss's `build` returned, as a LossOut."""
    return built if isinstance(built, LossOut) else LossOut(built)


def label_count(b: GraphBuilder, labels: str) -> str:
    """How many labels the batch holds (samples, or samples x positions) as a float scalar."""
    return b.op("Cast", [b.op("Size", [labels])], hint="label_count", to=b.float_elem)


def _cross_entropy(
    b: GraphBuilder, logits: str, labels: str, classes: int | None, args: dict[str, Any]
) -> LossOut:
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
    loss = b.op("Neg", [b.op("ReduceMean", [per_label], keepdims=0)], hint="loss")

    def vjp() -> str:
        """(softmax - target) / labels: the gradient, since each target row sums to 1."""
        diff = b.op("Sub", [b.op("Exp", [logp], hint="probs"), target])
        return b.op("Div", [diff, label_count(b, labels)], hint="d_output")

    return LossOut(loss, vjp)


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
