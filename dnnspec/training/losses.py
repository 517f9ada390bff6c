"""Losses: each is its forward formula, the batch-mean loss of the model output.

The training step seeds the autodiff engine at the loss, so a loss brings no gradient of
its own: every op it uses has a VJP rule (checked against finite differences), and the
derived gradient is the exact gradient of the formula as computed. Like JAX's custom_vjp,
a loss may hand back a `vjp` that writes d(loss)/d(output) itself from the forward's
values; the step then seeds the engine at the output instead. Only cross-entropy does:
"softmax - target" is 6 nodes where the derivation emits 14, and faster
(docs/performance.md).
tests/test_losses.py checks every hand-written gradient against the derived one.

A loss names the kind of target it reads (`Target`) and may check its arguments against
the model's output (`check`, e.g. one class weight per class), so a mismatch is a located
error before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

Target = Literal["class", "value", "binary"]
"""class: int64 class ids shaped like the output without its last axis ([N] or [N, T]);
value: floats shaped like the output; binary: 0/1 floats shaped like the output."""

TARGET_WORDS: dict[str, str] = {
    "class": "class labels",
    "value": "values",
    "binary": "0/1 targets",
}


@dataclass(frozen=True)
class LossOut:
    """The scalar batch-mean loss and, rarely, a hand-written `vjp` that emits its gradient
    with respect to the model output when called (residuals captured from the forward)."""

    loss: str
    vjp: Callable[[], str] | None = None


# build(b, output, target, classes, args) -> the loss (a name, or a LossOut with its vjp)
BuildLoss = Callable[[GraphBuilder, str, str, int | None, dict[str, Any]], str | LossOut]
# check(args, output dims) -> (message, help) for each argument that does not fit the model
CheckLoss = Callable[[dict[str, Any], tuple[int | str, ...]], list[tuple[str, str]]]


def _no_check(args: dict[str, Any], dims: tuple[int | str, ...]) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True)
class LossDef:
    signature: Signature
    target: Target
    build: BuildLoss
    doc: str = ""
    check: CheckLoss = _no_check
    probabilities: Callable[[np.ndarray], np.ndarray] | None = None
    """How the model's outputs become probabilities (`predict --proba`); None for values."""
    applies: str | None = None
    """The activation the loss applies to the model's output itself (it takes logits): a
    model ending in an activation that outputs probabilities would be squashed twice."""
    recent: tuple[str, ...] = ()
    """Arguments added since runs were first written: left out of the spec hash at their
    default, so a spec written before them keeps its hash (and its runs resume)."""


def softmax(scores: np.ndarray) -> np.ndarray:
    """Over the last axis, shifted by the maximum so large logits do not overflow."""
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return out


def sigmoid(scores: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * scores))  # no overflow for any logit
    return out


LOSSES: Registry[LossDef] = Registry("loss")


def loss_out(built: str | LossOut) -> LossOut:
    """What a loss's `build` returned, as a LossOut."""
    return built if isinstance(built, LossOut) else LossOut(built)


NO_INDEX = -1
"""`ignore_index` when no class is ignored (class ids are never negative)."""

CLASS_WEIGHTS = ArgSpec(
    name="class_weights",
    type="floats",
    default=[],
    doc="one weight per class; the loss is the weighted mean, as in PyTorch",
)
IGNORE_INDEX = ArgSpec(
    name="ignore_index",
    type="int",
    default=NO_INDEX,
    min=-1,
    doc="a class id (e.g. padding) whose positions count neither in the loss nor its mean",
)


def _class_checks(args: dict[str, Any], dims: tuple[int | str, ...]) -> list[tuple[str, str]]:
    classes = dims[-1] if dims else None
    if not isinstance(classes, int):
        return []
    found = []
    weights = args["class_weights"]
    if weights and len(weights) != classes:
        found.append(
            (
                f"class_weights has {len(weights)} weight(s) but the model outputs {classes} "
                "classes",
                f"give one weight per class ({classes})",
            )
        )
    elif weights and not any(w > 0 for w in weights):
        found.append(("class_weights are all zero", "give at least one class a positive weight"))
    if any(w < 0 for w in weights):
        found.append(("class_weights must not be negative", "weights are >= 0"))
    ignore = args["ignore_index"]
    if ignore != NO_INDEX and not 0 <= ignore < classes:
        found.append(
            (
                f"ignore_index {ignore} is not one of the model's {classes} classes "
                f"(0..{classes - 1})",
                "ignore a class id the targets use for padding, e.g. ignore_index = 0",
            )
        )
    return found


def one_hot(b: GraphBuilder, labels: str, classes: int, off: float = 0.0, on: float = 1.0) -> str:
    """labels -> [..., classes] of `off`/`on` in the graph's float type: the labels
    compared with 0..classes-1 (an `Equal`, then a `Cast` or a `Where`), which onnxruntime
    runs several times faster than `OneHot` (whose values are float32 only there)."""
    hot = b.op(
        "Equal",
        [
            b.op("Unsqueeze", [labels, b.const([-1], "int64")]),
            b.const(np.arange(classes), "int64"),
        ],
        hint="target",
    )
    if (off, on) == (0.0, 1.0):
        return b.op("Cast", [hot], to=b.float_elem)
    return b.op("Where", [hot, b.const(on), b.const(off)])


@dataclass(frozen=True)
class Reduced:
    """A weighted mean: `value` = sum(w_i l_i) / `count`; `weights` None means all 1."""

    value: str
    weights: str | None
    count: str


def _weighted_mean(
    b: GraphBuilder, per_position: str, labels: str, args: dict[str, Any]
) -> Reduced:
    """Mean of the per-position losses, or with class weights / an ignored class
    sum(w_i l_i) / sum(w_i), w_i = weight[label_i] (0 where ignored): PyTorch's reduction.
    A batch with nothing to count has loss 0, not 0/0."""
    weights, ignore = args["class_weights"], args["ignore_index"]
    if not weights and ignore == NO_INDEX:
        count = b.op("Cast", [b.op("Size", [per_position])], hint="positions", to=b.float_elem)
        return Reduced(b.op("ReduceMean", [per_position], keepdims=0), None, count)
    keep = None
    if ignore != NO_INDEX:
        kept = b.op("Not", [b.op("Equal", [labels, b.const(ignore, "int64")])])
        keep = b.op("Cast", [kept], hint="kept", to=b.float_elem)
    if weights:
        # ignore_index is one of the classes (checked), so every label indexes the weights
        w = b.op("Gather", [b.const(weights), labels], hint="class_weight")
        w = w if keep is None else b.op("Mul", [w, keep])
    else:
        assert keep is not None
        w = keep
    total = b.op("ReduceSum", [b.op("Mul", [w, per_position])], keepdims=0)
    count = b.op("Max", [b.op("ReduceSum", [w], keepdims=0), b.const(1e-30)], hint="counted")
    return Reduced(b.op("Div", [total, count]), w, count)


def _cross_entropy(
    b: GraphBuilder, logits: str, labels: str, classes: int | None, args: dict[str, Any]
) -> LossOut:
    assert classes is not None
    eps = float(args["label_smoothing"])
    logp = b.op("LogSoftmax", [logits], hint="logp", axis=-1)
    target = one_hot(b, labels, classes, eps / classes, 1.0 - eps + eps / classes)
    per = b.op("ReduceSum", [b.op("Mul", [target, logp]), b.const([-1], "int64")], keepdims=0)
    mean = _weighted_mean(b, per, labels, args)
    loss = b.op("Neg", [mean.value], hint="loss")

    def vjp() -> str:
        """w_i (softmax - target) / count: the gradient, since each target row sums to 1."""
        diff = b.op("Sub", [b.op("Exp", [logp], hint="probs"), target])
        if mean.weights is not None:
            diff = b.op("Mul", [diff, b.op("Unsqueeze", [mean.weights, b.const([-1], "int64")])])
        return b.op("Div", [diff, mean.count], hint="d_output")

    return LossOut(loss, vjp)


def _nll(b: GraphBuilder, logp: str, labels: str, classes: int | None, args: dict[str, Any]) -> str:
    assert classes is not None
    target = one_hot(b, labels, classes)
    per = b.op("ReduceSum", [b.op("Mul", [target, logp]), b.const([-1], "int64")], keepdims=0)
    return b.op("Neg", [_weighted_mean(b, per, labels, args).value], hint="loss")


def _mse(b: GraphBuilder, pred: str, target: str, classes: int | None, args: dict[str, Any]) -> str:
    diff = b.op("Sub", [pred, target], hint="residual")
    return b.op("ReduceMean", [b.op("Mul", [diff, diff])], hint="loss", keepdims=0)


def _mae(b: GraphBuilder, pred: str, target: str, classes: int | None, args: dict[str, Any]) -> str:
    diff = b.op("Abs", [b.op("Sub", [pred, target])], hint="abs_residual")
    return b.op("ReduceMean", [diff], hint="loss", keepdims=0)


def _huber_terms(b: GraphBuilder, pred: str, target: str, delta: float) -> str:
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), elementwise."""
    diff = b.op("Sub", [pred, target], hint="residual")
    size = b.op("Abs", [diff])
    quadratic = b.op("Mul", [b.op("Mul", [diff, diff]), b.const(0.5)])
    linear = b.op("Mul", [b.op("Sub", [size, b.const(0.5 * delta)]), b.const(delta)])
    return b.op("Where", [b.op("Less", [size, b.const(delta)]), quadratic, linear])


def _huber(
    b: GraphBuilder, pred: str, target: str, classes: int | None, args: dict[str, Any]
) -> str:
    terms = _huber_terms(b, pred, target, float(args["delta"]))
    return b.op("ReduceMean", [terms], hint="loss", keepdims=0)


def _smooth_l1(
    b: GraphBuilder, pred: str, target: str, classes: int | None, args: dict[str, Any]
) -> str:
    """PyTorch's SmoothL1Loss: Huber(delta = beta) / beta; beta = 0 is the L1 loss."""
    beta = float(args["beta"])
    if beta == 0:
        return _mae(b, pred, target, classes, args)
    terms = _huber_terms(b, pred, target, beta)
    return b.op("Div", [b.op("ReduceMean", [terms], keepdims=0), b.const(beta)], hint="loss")


def _bce_checks(args: dict[str, Any], dims: tuple[int | str, ...]) -> list[tuple[str, str]]:
    units = dims[-1] if dims else None
    weights = args["pos_weight"]
    if isinstance(units, int) and len(weights) not in (0, 1, units):
        return [
            (
                f"pos_weight has {len(weights)} weights but the model outputs {units} units",
                f"give one weight, or one per output unit ({units})",
            )
        ]
    if any(w <= 0 for w in weights):
        return [("pos_weight must be positive", "a weight > 1 favours recall of positives")]
    return []


def _binary_cross_entropy(
    b: GraphBuilder, logits: str, target: str, classes: int | None, args: dict[str, Any]
) -> str:
    """-(p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))), mean over all elements, as
    PyTorch's BCEWithLogitsLoss; log sigmoid(x) = -softplus(-x) keeps it finite."""
    neg_log_p = b.op("Softplus", [b.op("Neg", [logits])], hint="neg_log_sigmoid")
    neg_log_q = b.op("Softplus", [logits], hint="neg_log_one_minus_sigmoid")
    positive = b.op("Mul", [target, neg_log_p])
    weights = args["pos_weight"]
    if weights:
        positive = b.op("Mul", [positive, b.const(weights if len(weights) > 1 else weights[0])])
    negative = b.op("Mul", [b.op("Sub", [b.const(1.0), target]), neg_log_q])
    return b.op("ReduceMean", [b.op("Add", [positive, negative])], hint="loss", keepdims=0)


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
                CLASS_WEIGHTS,
                IGNORE_INDEX,
            )
        ),
        "class",
        _cross_entropy,
        "softmax cross-entropy from logits [N, C] (or [N, T, C] with targets [N, T]), "
        "mean over the counted positions",
        _class_checks,
        softmax,
        applies="softmax",
    ),
)
LOSSES.add(
    "nll",
    LossDef(
        Signature(args=(CLASS_WEIGHTS, IGNORE_INDEX)),
        "class",
        _nll,
        "negative log-likelihood of log-probabilities (end the model with log_softmax)",
        _class_checks,
        np.exp,
    ),
)
LOSSES.add(
    "binary_cross_entropy",
    LossDef(
        Signature(
            args=(
                ArgSpec(
                    name="pos_weight",
                    type="floats",
                    default=[],
                    doc="weight of the positive term: one for all units or one per unit",
                ),
                ArgSpec(
                    name="positive",
                    type="str",
                    default="",
                    doc="targets given as two words: the positive one (target 1); by "
                    "default the later in sorted order",
                ),
            )
        ),
        "binary",
        _binary_cross_entropy,
        "sigmoid cross-entropy from logits, one 0/1 target per output unit (multi-label)",
        _bce_checks,
        sigmoid,
        applies="sigmoid",
        recent=("positive",),
    ),
    aliases=("bce",),
)
LOSSES.add("mse", LossDef(Signature(), "value", _mse, "mean squared error over all elements"))
LOSSES.add(
    "mae",
    LossDef(Signature(), "value", _mae, "mean absolute error over all elements"),
    aliases=("l1",),
)
LOSSES.add(
    "huber",
    LossDef(
        Signature(
            args=(
                ArgSpec(
                    name="delta",
                    type="float",
                    default=1.0,
                    min=0.0,
                    min_exclusive=True,
                    doc="where the loss turns from quadratic to linear",
                ),
            )
        ),
        "value",
        _huber,
        "quadratic below delta, linear above it (PyTorch's HuberLoss)",
    ),
)
LOSSES.add(
    "smooth_l1",
    LossDef(
        Signature(
            args=(
                ArgSpec(
                    name="beta",
                    type="float",
                    default=1.0,
                    min=0.0,
                    doc="width of the quadratic part; 0 is the L1 loss",
                ),
            )
        ),
        "value",
        _smooth_l1,
        "huber(delta = beta) / beta (PyTorch's SmoothL1Loss)",
    ),
)
