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

from dnnspec.graph.builder import GraphBuilder
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

LR = ArgSpec(
    name="lr", type="float", default=1e-3, min=0.0, min_exclusive=True, doc="learning rate"
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


def _sgd(
    b: GraphBuilder, p: str, g: str, state: dict[str, str], s: dict[str, str], args: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    mu = args["momentum"]
    if mu <= 0:
        return b.op("Sub", [p, b.op("Mul", [g, s["lr"]])]), {}
    v = b.op("Add", [b.op("Mul", [state["velocity"], b.const(mu)]), g], hint="velocity")
    direction = b.op("Add", [g, b.op("Mul", [v, b.const(mu)])]) if args["nesterov"] else v
    return b.op("Sub", [p, b.op("Mul", [direction, s["lr"]])]), {"velocity": v}


def _adam_prepare(b: GraphBuilder, step: str, lr: str, args: dict[str, Any]) -> dict[str, str]:
    """Bias-corrected scalars, t = step + 1, so the update is PyTorch's exactly.

    lr * m_hat / (sqrt(v_hat) + eps) equals lr_t * m / (sqrt(v) + eps_t) with
    lr_t = lr * sqrt(c2) / c1 and eps_t = eps * sqrt(c2) (c_i = 1 - beta_i^t): two scalars
    per step instead of two extra elementwise passes per parameter.
    """
    t = b.op("Add", [step, b.const(1.0)])
    c1 = b.op("Sub", [b.const(1.0), b.op("Pow", [b.const(args["beta1"]), t])])
    root_c2 = b.op("Sqrt", [b.op("Sub", [b.const(1.0), b.op("Pow", [b.const(args["beta2"]), t])])])
    return {
        "lr": b.op("Mul", [lr, b.op("Div", [root_c2, c1])], hint="lr_t"),
        "eps": b.op("Mul", [root_c2, b.const(args["eps"])], hint="eps_t"),
    }


def _adam(
    b: GraphBuilder, p: str, g: str, state: dict[str, str], s: dict[str, str], args: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    m = _ema(b, state["m"], g, args["beta1"])
    v = _ema(b, state["v"], b.op("Mul", [g, g]), args["beta2"])
    denom = b.op("Add", [b.op("Sqrt", [v]), s["eps"]])
    step = b.op("Div", [b.op("Mul", [m, s["lr"]]), denom])
    return b.op("Sub", [p, step]), {"m": m, "v": v}


def _rmsprop_state(args: dict[str, Any]) -> tuple[str, ...]:
    return ("square_avg", "momentum_buf") if args["momentum"] > 0 else ("square_avg",)


def _rmsprop(
    b: GraphBuilder, p: str, g: str, state: dict[str, str], s: dict[str, str], args: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    sq = _ema(b, state["square_avg"], b.op("Mul", [g, g]), args["rho"])
    scaled = b.op("Div", [g, b.op("Add", [b.op("Sqrt", [sq]), b.const(args["eps"])])])
    if args["momentum"] > 0:
        buf = b.op("Add", [b.op("Mul", [state["momentum_buf"], b.const(args["momentum"])]), scaled])
        return b.op("Sub", [p, b.op("Mul", [buf, s["lr"]])]), {
            "square_avg": sq,
            "momentum_buf": buf,
        }
    return b.op("Sub", [p, b.op("Mul", [scaled, s["lr"]])]), {"square_avg": sq}


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
            )
        ),
        _sgd_state,
        _lr_only,
        _sgd,
        "stochastic gradient descent, optional (Nesterov) momentum",
    ),
)
OPTIMIZERS.add(
    "adam",
    OptimizerDef(
        Signature(
            args=(
                LR,
                ArgSpec(
                    name="beta1", type="float", default=0.9, min=0.0, max=1.0, max_exclusive=True
                ),
                ArgSpec(
                    name="beta2", type="float", default=0.999, min=0.0, max=1.0, max_exclusive=True
                ),
                ArgSpec(name="eps", type="float", default=1e-8, min=0.0, min_exclusive=True),
            )
        ),
        lambda args: ("m", "v"),
        _adam_prepare,
        _adam,
        "Adam with bias correction",
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
            )
        ),
        _rmsprop_state,
        _lr_only,
        _rmsprop,
        "RMSprop, optional momentum",
    ),
)
