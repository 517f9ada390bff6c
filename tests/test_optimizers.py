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
    """torch.optim.SGD: v = mu v + g; nesterov steps along g + mu v."""
    if a["momentum"] == 0:
        return p - a["lr"] * g, {}
    v = a["momentum"] * s.get("velocity", np.zeros_like(p)) + g
    direction = g + a["momentum"] * v if a["nesterov"] else v
    return p - a["lr"] * direction, {"velocity": v}


def adam(
    p: np.ndarray, g: np.ndarray, s: State, t: int, a: dict[str, Any]
) -> tuple[np.ndarray, State]:
    """Kingma & Ba (2015), Algorithm 1, with eps added to sqrt(v_hat) as in PyTorch."""
    b1, b2 = a["beta1"], a["beta2"]
    m = b1 * s.get("m", np.zeros_like(p)) + (1 - b1) * g
    v = b2 * s.get("v", np.zeros_like(p)) + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return p - a["lr"] * m_hat / (np.sqrt(v_hat) + a["eps"]), {"m": m, "v": v}


def rmsprop(
    p: np.ndarray, g: np.ndarray, s: State, t: int, a: dict[str, Any]
) -> tuple[np.ndarray, State]:
    """torch.optim.RMSprop: square_avg = rho sq + (1 - rho) g^2; eps outside the root."""
    sq = a["rho"] * s.get("square_avg", np.zeros_like(p)) + (1 - a["rho"]) * g * g
    scaled = g / (np.sqrt(sq) + a["eps"])
    if a["momentum"] > 0:
        buf = a["momentum"] * s.get("momentum_buf", np.zeros_like(p)) + scaled
        return p - a["lr"] * buf, {"square_avg": sq, "momentum_buf": buf}
    return p - a["lr"] * scaled, {"square_avg": sq}


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
    OptimizerCase("adam", adam, {"lr": 0.01}),
    # a large eps and a short beta2 memory, where eps-placement variants of Adam differ
    OptimizerCase("adam", adam, {"lr": 0.01, "eps": 0.1, "beta2": 0.9}),
    OptimizerCase("rmsprop", rmsprop, {"lr": 0.01}),
    OptimizerCase("rmsprop", rmsprop, {"lr": 0.01, "momentum": 0.5}),
]


def test_every_optimizer_has_a_case() -> None:
    assert set(OPTIMIZERS) <= {OPTIMIZERS.canonical(c.optimizer) for c in OPTIMIZER_CASES}


@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=lambda c: c.id)
def test_optimizer_steps_match_the_published_formula(case: OptimizerCase) -> None:
    opt = OPTIMIZERS.get(case.optimizer)
    args = bind(opt.signature, case.optimizer, case.args)
    kinds = opt.state(args)
    shape = (3, 4)
    b = GraphBuilder("opt", "float64")
    for name in ("p", "g", *kinds):
        b.add_input(name, "float64", shape)
    b.add_input("step", "float64", [])
    scalars = opt.prepare(b, "step", b.const(args["lr"]), args)
    new_p, new_state = opt.update(b, "p", "g", {k: k for k in kinds}, scalars, args)
    b.add_output(new_p, "float64", shape)
    for kind in kinds:
        b.add_output(new_state[kind], "float64", shape)
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
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
