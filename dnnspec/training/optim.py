"""Optimizers: the in-graph update of each parameter from its gradient and its state.

An optimizer names its per-parameter state tensors (zeros at the start), may compute
step-dependent scalars once per step (`prepare`, e.g. Adam's bias correction), and
emits the update for one parameter (`update`). Everything is standard ONNX, so the
training step runs in any ONNX runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

LR = ArgSpec(
    name="lr", type="float", default=1e-3, min=0.0, min_exclusive=True, doc="learning rate"
)

WEIGHT_DECAY = ArgSpec(
    name="weight_decay",
    type="float",
    default=0.0,
    min=0.0,
    doc="applied to weights only: biases, normalisation and position tables are exempt",
)

# prepare(b, step: float scalar (updates done so far), lr: float scalar, args) -> scalars
Prepare = Callable[[GraphBuilder, str, str, dict[str, Any]], dict[str, str]]
# update(b, param, grad, state, scalars, args) -> (new param, new state)
Update = Callable[
    [GraphBuilder, str, str, dict[str, str], dict[str, str], dict[str, Any]],
    tuple[str, dict[str, str]],
]


@dataclass(frozen=True)
class OptimizerDef:
    signature: Signature
    state: Callable[[dict[str, Any]], tuple[str, ...]]
    prepare: Prepare
    update: Update
    doc: str = ""


OPTIMIZERS: Registry[OptimizerDef] = Registry("optimizer")


def _lr_only(b: GraphBuilder, step: str, lr: str, args: dict[str, Any]) -> dict[str, str]:
    return {"lr": lr}


def _ema(b: GraphBuilder, old: str, new: str, decay: float) -> str:
    """decay * old + (1 - decay) * new, written as old + (1 - decay) * (new - old)."""
    return b.op("Add", [old, b.op("Mul", [b.op("Sub", [new, old]), b.const(1.0 - decay)])])


def _sgd_state(args: dict[str, Any]) -> tuple[str, ...]:
    return ("velocity",) if args["momentum"] > 0 else ()


def _sgd_prepare(b: GraphBuilder, step: str, lr: str, args: dict[str, Any]) -> dict[str, str]:
    scalars = {"lr": lr}
    if args["momentum"] > 0 and args["dampening"] > 0:
        scalars["first"] = b.op("Equal", [step, b.const(0.0)], hint="first_step")
    return scalars


def _sgd(
    b: GraphBuilder, p: str, g: str, state: dict[str, str], s: dict[str, str], args: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """torch.optim.SGD: g += wd p; v = mu v + (1 - dampening) g (v = g on the first step)."""
    mu, wd, damp = args["momentum"], args["weight_decay"], args["dampening"]
    if wd > 0:
        g = b.op("Add", [g, b.op("Mul", [p, b.const(wd)])], hint="decayed_grad")
    if mu <= 0:
        return b.op("Sub", [p, b.op("Mul", [g, s["lr"]])]), {}
    fresh = b.op("Mul", [g, b.const(1.0 - damp)]) if damp > 0 else g
    v = b.op("Add", [b.op("Mul", [state["velocity"], b.const(mu)]), fresh])
    if damp > 0:
        v = b.op("Where", [s["first"], g, v])
    v = b.op("Identity", [v], hint="velocity")
    direction = b.op("Add", [g, b.op("Mul", [v, b.const(mu)])]) if args["nesterov"] else v
    return b.op("Sub", [p, b.op("Mul", [direction, s["lr"]])]), {"velocity": v}


def _adam_prepare(b: GraphBuilder, step: str, lr: str, args: dict[str, Any]) -> dict[str, str]:
    """Bias-corrected scalars, t = step + 1, so the update is PyTorch's exactly.

    The state is kept as sums, M = m / (1 - beta1) and V = v / (1 - beta2) (PyTorch's
    exp_avg and exp_avg_sq undivided), so that M = beta1 M + g and V = beta2 V + g^2 take
    two and three elementwise passes instead of three and four. Then lr * m_hat /
    (sqrt(v_hat) + eps) equals lr_t * M / (sqrt(V) + eps_t) with
    lr_t = lr (1 - beta1) sqrt(c2) / (c1 sqrt(1 - beta2)) and
    eps_t = eps sqrt(c2) / sqrt(1 - beta2) (c_i = 1 - beta_i^t): scalars per step instead
    of elementwise passes per parameter. They are computed in float64 and then cast: in
    float32, 1 - 0.999^1 is off by 1.3e-5 relative, and with beta2 = 0.99999 the first
    updates would be off by about 7e-4.
    """
    f64 = int(onnx.TensorProto.DOUBLE)
    t = b.op("Add", [b.op("Cast", [step], to=f64), b.const(1.0, "float64")])
    c1 = b.op("Sub", [b.const(1.0, "float64"), b.op("Pow", [b.const(args["beta1"], "float64"), t])])
    c2 = b.op("Sub", [b.const(1.0, "float64"), b.op("Pow", [b.const(args["beta2"], "float64"), t])])
    # sqrt(c2 / (1 - beta2)), the factor between sqrt(V) and sqrt(v_hat)
    root = b.op("Sqrt", [b.op("Mul", [c2, b.const(1.0 / (1.0 - args["beta2"]), "float64")])])
    ratio = b.op("Div", [b.op("Mul", [root, b.const(1.0 - args["beta1"], "float64")]), c1])
    eps = b.op("Mul", [root, b.const(args["eps"], "float64")])
    return {
        "lr": b.op("Mul", [lr, b.op("Cast", [ratio], to=b.float_elem)], hint="lr_t"),
        "eps": b.op("Cast", [eps], hint="eps_t", to=b.float_elem),
        "base_lr": lr,
    }


def _adam_state(args: dict[str, Any]) -> tuple[str, ...]:
    return ("m_sum", "v_sum", "v_sum_max") if args["amsgrad"] else ("m_sum", "v_sum")


def _adam(
    b: GraphBuilder, p: str, g: str, state: dict[str, str], s: dict[str, str], args: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """torch.optim.Adam / AdamW: with `weight_decay` (AdamW only) the parameter first
    shrinks by lr * wd, decoupled from the gradient (Loshchilov & Hutter); amsgrad divides
    by the running maximum of v. Ten elementwise passes per parameter (`_adam_prepare`)."""
    wd = args.get("weight_decay", 0.0)
    if wd > 0:
        shrink = b.op("Sub", [b.const(1.0), b.op("Mul", [s["base_lr"], b.const(wd)])])
        p = b.op("Mul", [p, shrink], hint="decayed")
    m = b.op("Add", [b.op("Mul", [state["m_sum"], b.const(args["beta1"])]), g], hint="m_sum")
    v = b.op(
        "Add",
        [b.op("Mul", [state["v_sum"], b.const(args["beta2"])]), b.op("Mul", [g, g])],
        hint="v_sum",
    )
    new_state = {"m_sum": m, "v_sum": v}
    second = v
    if args["amsgrad"]:
        second = b.op("Max", [state["v_sum_max"], v], hint="v_sum_max")
        new_state["v_sum_max"] = second
    denom = b.op("Add", [b.op("Sqrt", [second]), s["eps"]])
    return b.op("Sub", [p, b.op("Mul", [b.op("Div", [m, denom]), s["lr"]])]), new_state


def _rmsprop_state(args: dict[str, Any]) -> tuple[str, ...]:
    kinds = ["square_avg"]
    if args["centered"]:
        kinds.append("grad_avg")
    if args["momentum"] > 0:
        kinds.append("momentum_buf")
    return tuple(kinds)


def _rmsprop(
    b: GraphBuilder, p: str, g: str, state: dict[str, str], s: dict[str, str], args: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """torch.optim.RMSprop; centered divides by the root of the variance estimate
    square_avg - grad_avg^2 instead of the raw second moment."""
    sq = _ema(b, state["square_avg"], b.op("Mul", [g, g]), args["rho"])
    new_state = {"square_avg": sq}
    second = sq
    if args["centered"]:
        mean = _ema(b, state["grad_avg"], g, args["rho"])
        new_state["grad_avg"] = mean
        second = b.op("Sub", [sq, b.op("Mul", [mean, mean])])
    scaled = b.op("Div", [g, b.op("Add", [b.op("Sqrt", [second]), b.const(args["eps"])])])
    if args["momentum"] > 0:
        buf = b.op("Add", [b.op("Mul", [state["momentum_buf"], b.const(args["momentum"])]), scaled])
        new_state["momentum_buf"] = buf
        return b.op("Sub", [p, b.op("Mul", [buf, s["lr"]])]), new_state
    return b.op("Sub", [p, b.op("Mul", [scaled, s["lr"]])]), new_state


def _adagrad_prepare(b: GraphBuilder, step: str, lr: str, args: dict[str, Any]) -> dict[str, str]:
    """lr / (1 + step * lr_decay), as torch.optim.Adagrad."""
    if args["lr_decay"] <= 0:
        return {"lr": lr}
    slow = b.op("Add", [b.const(1.0), b.op("Mul", [step, b.const(args["lr_decay"])])])
    return {"lr": b.op("Div", [lr, slow], hint="lr_t")}


def _adagrad(
    b: GraphBuilder, p: str, g: str, state: dict[str, str], s: dict[str, str], args: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    total = b.op("Add", [state["sum"], b.op("Mul", [g, g])], hint="sum")
    scaled = b.op("Div", [g, b.op("Add", [b.op("Sqrt", [total]), b.const(args["eps"])])])
    return b.op("Sub", [p, b.op("Mul", [scaled, s["lr"]])]), {"sum": total}


OPTIMIZERS.add(
    "sgd",
    OptimizerDef(
        Signature(
            args=(
                LR.model_copy(update={"default": 0.01}),
                ArgSpec(
                    name="momentum", type="float", default=0.0, min=0.0, max=1.0, max_exclusive=True
                ),
                ArgSpec(name="nesterov", type="bool", default=False),
                ArgSpec(
                    name="dampening",
                    type="float",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    doc="scale of the new gradient in the momentum sum (PyTorch's)",
                ),
                WEIGHT_DECAY.model_copy(
                    update={"doc": "L2 added to the gradient, " + WEIGHT_DECAY.doc}
                ),
            )
        ),
        _sgd_state,
        _sgd_prepare,
        _sgd,
        "stochastic gradient descent, optional (Nesterov) momentum",
    ),
)
ADAM_ARGS = (
    LR,
    ArgSpec(name="beta1", type="float", default=0.9, min=0.0, max=1.0, max_exclusive=True),
    ArgSpec(name="beta2", type="float", default=0.999, min=0.0, max=1.0, max_exclusive=True),
    ArgSpec(name="eps", type="float", default=1e-8, min=0.0, min_exclusive=True),
    ArgSpec(
        name="amsgrad",
        type="bool",
        default=False,
        doc="divide by the running maximum of the second moment",
    ),
)
OPTIMIZERS.add(
    "adam",
    OptimizerDef(
        Signature(args=ADAM_ARGS),
        _adam_state,
        _adam_prepare,
        _adam,
        "Adam with bias correction (optionally AMSGrad)",
    ),
)
OPTIMIZERS.add(
    "adamw",
    OptimizerDef(
        Signature(
            args=(
                *ADAM_ARGS,
                WEIGHT_DECAY.model_copy(
                    update={"default": 0.01, "doc": "decoupled, " + WEIGHT_DECAY.doc}
                ),
            )
        ),
        _adam_state,
        _adam_prepare,
        _adam,
        "Adam with decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW)",
    ),
)
OPTIMIZERS.add(
    "rmsprop",
    OptimizerDef(
        Signature(
            args=(
                LR,
                ArgSpec(
                    name="rho", type="float", default=0.9, min=0.0, max=1.0, max_exclusive=True
                ),
                ArgSpec(name="eps", type="float", default=1e-8, min=0.0, min_exclusive=True),
                ArgSpec(
                    name="momentum", type="float", default=0.0, min=0.0, max=1.0, max_exclusive=True
                ),
                ArgSpec(
                    name="centered",
                    type="bool",
                    default=False,
                    doc="normalise by the variance of the gradient rather than its second moment",
                ),
            )
        ),
        _rmsprop_state,
        _lr_only,
        _rmsprop,
        "RMSprop, optional momentum, optionally centered",
    ),
)
OPTIMIZERS.add(
    "adagrad",
    OptimizerDef(
        Signature(
            args=(
                LR.model_copy(update={"default": 0.01}),
                ArgSpec(name="lr_decay", type="float", default=0.0, min=0.0),
                ArgSpec(name="eps", type="float", default=1e-10, min=0.0, min_exclusive=True),
            )
        ),
        lambda args: ("sum",),
        _adagrad_prepare,
        _adagrad,
        "Adagrad: the rate divided by the root of each weight's summed squared gradients",
    ),
)
