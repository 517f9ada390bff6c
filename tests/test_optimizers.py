"""Every optimizer's in-graph update over several steps against a NumPy reference of its
published formula (PyTorch's formulations, which the docs promise), state included.

`OPTIMIZER_CASES` holds at least one case per registered optimizer (a completeness test
fails otherwise); a reference names the state it keeps, and the registry must name the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import bind

from dnnspec.graph.builder import GraphBuilder
from dnnspec.training.optim import OPTIMIZERS

State = dict[str, np.ndarray]
# reference(param, grad, state, t (1-based step), args) -> (new param, new state)
Reference = Callable[[np.ndarray, np.ndarray, State, int, dict[str, Any]], tuple[np.ndarray, State]]


def sgd(
    p: np.ndarray, g: np.ndarray, s: State, t: int, a: dict[str, Any]
) -> tuple[np.ndarray, State]:
    """torch.optim.SGD: g += wd p; v = mu v + (1 - dampening) g, v = g on the first step;
    nesterov steps along g + mu v."""
    g = g + a["weight_decay"] * p
    if a["momentum"] == 0:
        return p - a["lr"] * g, {}
    v = g if t == 1 else a["momentum"] * s["velocity"] + (1 - a["dampening"]) * g
    direction = g + a["momentum"] * v if a["nesterov"] else v
    return p - a["lr"] * direction, {"velocity": v}


def adam(
    p: np.ndarray, g: np.ndarray, s: State, t: int, a: dict[str, Any]
) -> tuple[np.ndarray, State]:
    """Kingma & Ba (2015), Algorithm 1, with eps added to sqrt(v_hat) as in PyTorch; AdamW
    first shrinks p by lr * wd (Loshchilov & Hutter, decoupled); AMSGrad divides by the
    running maximum of v (Reddi et al. 2018, bias-corrected as PyTorch does). The state is
    kept undivided: m_sum = m / (1 - beta1), v_sum = v / (1 - beta2)."""
    b1, b2 = a["beta1"], a["beta2"]
    zeros = np.zeros_like(p)
    p = p * (1 - a["lr"] * a.get("weight_decay", 0.0))
    m = b1 * (1 - b1) * s.get("m_sum", zeros) + (1 - b1) * g
    v = b2 * (1 - b2) * s.get("v_sum", zeros) + (1 - b2) * g * g
    state = {"m_sum": m / (1 - b1), "v_sum": v / (1 - b2)}
    second = v
    if a["amsgrad"]:
        second = np.maximum((1 - b2) * s.get("v_sum_max", zeros), v)
        state["v_sum_max"] = second / (1 - b2)
    m_hat, v_hat = m / (1 - b1**t), second / (1 - b2**t)
    return p - a["lr"] * m_hat / (np.sqrt(v_hat) + a["eps"]), state


def rmsprop(
    p: np.ndarray, g: np.ndarray, s: State, t: int, a: dict[str, Any]
) -> tuple[np.ndarray, State]:
    """torch.optim.RMSprop: square_avg = rho sq + (1 - rho) g^2; eps outside the root;
    centered subtracts the squared running mean of g under the root."""
    sq = a["rho"] * s.get("square_avg", np.zeros_like(p)) + (1 - a["rho"]) * g * g
    state = {"square_avg": sq}
    second = sq
    if a["centered"]:
        mean = a["rho"] * s.get("grad_avg", np.zeros_like(p)) + (1 - a["rho"]) * g
        state["grad_avg"] = mean
        second = sq - mean * mean
    scaled = g / (np.sqrt(second) + a["eps"])
    if a["momentum"] > 0:
        buf = a["momentum"] * s.get("momentum_buf", np.zeros_like(p)) + scaled
        return p - a["lr"] * buf, {**state, "momentum_buf": buf}
    return p - a["lr"] * scaled, state


def adagrad(
    p: np.ndarray, g: np.ndarray, s: State, t: int, a: dict[str, Any]
) -> tuple[np.ndarray, State]:
    """Duchi et al. (2011) as torch.optim.Adagrad: sum += g^2; lr / (1 + (t - 1) lr_decay)."""
    total = s.get("sum", np.zeros_like(p)) + g * g
    lr = a["lr"] / (1 + (t - 1) * a["lr_decay"])
    return p - lr * g / (np.sqrt(total) + a["eps"]), {"sum": total}


@dataclass(frozen=True)
class OptimizerCase:
    optimizer: str
    reference: Reference
    args: dict[str, Any] = field(default_factory=dict)
    steps: int = 5

    @property
    def id(self) -> str:
        return "-".join([self.optimizer, *(f"{k}={v}" for k, v in self.args.items())])


OPTIMIZER_CASES: list[OptimizerCase] = [
    OptimizerCase("sgd", sgd, {"lr": 0.1}),
    OptimizerCase("sgd", sgd, {"lr": 0.1, "momentum": 0.9}),
    OptimizerCase("sgd", sgd, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    OptimizerCase("sgd", sgd, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}),
    OptimizerCase("sgd", sgd, {"lr": 0.1, "weight_decay": 0.05}),
    OptimizerCase("adam", adam, {"lr": 0.01}),
    # a large eps and a short beta2 memory, where eps-placement variants of Adam differ
    OptimizerCase("adam", adam, {"lr": 0.01, "eps": 0.1, "beta2": 0.9}),
    OptimizerCase("adam", adam, {"lr": 0.01, "amsgrad": True}, steps=8),
    OptimizerCase("adamw", adam, {"lr": 0.01}),
    OptimizerCase("adamw", adam, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    OptimizerCase("rmsprop", rmsprop, {"lr": 0.01}),
    OptimizerCase("rmsprop", rmsprop, {"lr": 0.01, "momentum": 0.5}),
    OptimizerCase("rmsprop", rmsprop, {"lr": 0.01, "centered": True, "momentum": 0.5}),
    OptimizerCase("adagrad", adagrad, {"lr": 0.1}),
    OptimizerCase("adagrad", adagrad, {"lr": 0.1, "lr_decay": 0.05}),
]


def test_every_optimizer_has_a_case() -> None:
    assert set(OPTIMIZERS) <= {OPTIMIZERS.canonical(c.optimizer) for c in OPTIMIZER_CASES}


SHAPE = (3, 4)


def update_session(name: str, args: dict[str, Any]) -> tuple[ort.InferenceSession, tuple[str, ...]]:
    """(p, g, step, state...) -> (new p, new state...) for one parameter, in float64."""
    opt = OPTIMIZERS.get(name)
    kinds = opt.state(args)
    b = GraphBuilder("opt", "float64")
    for name_ in ("p", "g", *kinds):
        b.add_input(name_, "float64", SHAPE)
    b.add_input("step", "float64", [])
    scalars = opt.prepare(b, "step", b.const(args["lr"]), args)
    new_p, new_state = opt.update(b, "p", "g", {k: k for k in kinds}, scalars, args)
    b.add_output(new_p, "float64", SHAPE)
    for kind in kinds:
        b.add_output(new_state[kind], "float64", SHAPE)
    b.prune()
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session, kinds


@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=lambda c: c.id)
def test_optimizer_steps_match_the_published_formula(case: OptimizerCase) -> None:
    opt = OPTIMIZERS.get(case.optimizer)
    args = bind(opt.signature, case.optimizer, case.args)
    session, kinds = update_session(case.optimizer, args)
    shape = SHAPE
    rng = np.random.default_rng(0)
    p = rng.normal(size=shape)
    state: State = {k: np.zeros(shape) for k in kinds}
    ref_p, ref_state = p.copy(), State()
    for step in range(case.steps):
        g = rng.normal(size=shape)
        outs = session.run(None, {"p": p, "g": g, "step": np.array(float(step)), **state})
        p, state = outs[0], dict(zip(kinds, outs[1:], strict=True))
        ref_p, ref_state = case.reference(ref_p, g, ref_state, step + 1, args)
        assert set(state) == set(ref_state)
        np.testing.assert_allclose(p, ref_p, rtol=1e-12, atol=1e-12)
        for kind in kinds:
            np.testing.assert_allclose(state[kind], ref_state[kind], rtol=1e-12, atol=1e-12)


def torch_optimizer(case: OptimizerCase, param: Any, args: dict[str, Any]) -> Any:
    """The torch.optim counterpart of a case, with the same arguments."""
    torch = pytest.importorskip("torch")
    a = args
    if case.optimizer == "sgd":
        keys = ("lr", "momentum", "nesterov", "dampening", "weight_decay")
        return torch.optim.SGD([param], **{k: a[k] for k in keys})
    if case.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if case.optimizer == "adam" else torch.optim.AdamW
        extra = {"weight_decay": a["weight_decay"]} if case.optimizer == "adamw" else {}
        return cls(
            [param],
            lr=a["lr"],
            betas=(a["beta1"], a["beta2"]),
            eps=a["eps"],
            amsgrad=a["amsgrad"],
            **extra,
        )
    if case.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            [param],
            lr=a["lr"],
            alpha=a["rho"],
            eps=a["eps"],
            momentum=a["momentum"],
            centered=a["centered"],
        )
    return torch.optim.Adagrad([param], lr=a["lr"], lr_decay=a["lr_decay"], eps=a["eps"])


@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=lambda c: c.id)
def test_optimizer_steps_match_torch_optim(case: OptimizerCase) -> None:
    """The same gradients fed to torch.optim (float64) and to the in-graph update."""
    torch = pytest.importorskip("torch")
    opt = OPTIMIZERS.get(case.optimizer)
    args = bind(opt.signature, case.optimizer, case.args)
    session, kinds = update_session(case.optimizer, args)
    rng = np.random.default_rng(1)
    p = rng.normal(size=SHAPE)
    param = torch.nn.Parameter(torch.tensor(p.copy()))
    reference = torch_optimizer(case, param, args)
    state: State = {k: np.zeros(SHAPE) for k in kinds}
    for step in range(case.steps):
        g = rng.normal(size=SHAPE)
        outs = session.run(None, {"p": p, "g": g, "step": np.array(float(step)), **state})
        p, state = outs[0], dict(zip(kinds, outs[1:], strict=True))
        param.grad = torch.tensor(g)
        reference.step()
        np.testing.assert_allclose(p, param.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_adam_bias_corrections_are_exact_in_a_float32_graph() -> None:
    """With beta2 = 0.99999, 1 - beta2^t in float32 is off by ~7e-4 relative; computed in
    float64 and cast, the first float32 updates match the float64 formula to float32
    precision."""
    args = bind(OPTIMIZERS.get("adam").signature, "adam", {"lr": 0.01, "beta2": 0.99999})
    opt = OPTIMIZERS.get("adam")
    b = GraphBuilder("opt", "float32")
    for name in ("p", "g", "m_sum", "v_sum"):
        b.add_input(name, "float32", SHAPE)
    b.add_input("step", "float32", [])
    scalars = opt.prepare(b, "step", b.const(args["lr"]), args)
    new_p, new_state = opt.update(b, "p", "g", {"m_sum": "m_sum", "v_sum": "v_sum"}, scalars, args)
    b.add_output(new_p, "float32", SHAPE)
    b.add_output(new_state["m_sum"], "float32", SHAPE)
    b.add_output(new_state["v_sum"], "float32", SHAPE)
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(2)
    p = rng.normal(size=SHAPE).astype(np.float32)
    m = v = np.zeros(SHAPE, np.float32)
    ref_state = State()
    for step in range(3):
        g = rng.normal(size=SHAPE).astype(np.float32)
        before = p.astype(np.float64)
        feed = {"p": p, "g": g, "m_sum": m, "v_sum": v, "step": np.array(step, np.float32)}
        p, m, v = session.run(None, feed)
        ref_p, ref_state = adam(before, g.astype(np.float64), ref_state, step + 1, args)
        # float32 rounding of p (|p| < 4) is < 2.4e-7; a float32 correction is off by
        # ~3e-4 of an update of ~lr = 0.01, 3e-6
        np.testing.assert_allclose(p - before, ref_p - before, rtol=0, atol=2.5e-7)
