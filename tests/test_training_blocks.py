"""In-graph schedules, optimizers and the counter RNG, each against a numpy reference."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from dnnspec.errors import Span
from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.rng import HashRandom
from dnnspec.schema import Duration
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.schedules import SCHEDULES, Timing


def run(b: GraphBuilder, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def schedule_factors(name: str, args: dict, timing: Timing, steps: list[int]) -> list[float]:
    b = GraphBuilder("sched", "float64")
    b.add_input("step", "float64", [])
    kwargs = [(k, v, _span()) for k, v in args.items()]
    full = SCHEDULES.get(name).signature.bind(name, [], kwargs, _span())
    b.add_output(SCHEDULES.get(name).build(b, "step", full, timing), "float64", [])
    return [float(run(b, {"step": np.array(float(s))})[0]) for s in steps]


def _span() -> Span:
    return Span(file="t", line=1, col=1, end_line=1, end_col=2)


def test_cosine_schedule_warms_up_then_decays_to_min_factor() -> None:
    t = Timing(steps_per_epoch=10, total_steps=110)
    got = schedule_factors(
        "cosine",
        {"warmup": Duration(value=1, unit="epochs"), "min_factor": 0.1},
        t,
        [0, 4, 9, 10, 60, 110],
    )
    expected = [0.1, 0.5, 1.0, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), 0.1]
    assert got == pytest.approx(expected, abs=1e-12)


def test_step_schedule_drops_by_factor_every_period() -> None:
    t = Timing(steps_per_epoch=5, total_steps=100)
    got = schedule_factors(
        "step", {"every": Duration(value=2, unit="epochs"), "factor": 0.5}, t, [0, 9, 10, 25]
    )
    assert got == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_exponential_and_linear_schedules() -> None:
    t = Timing(steps_per_epoch=10, total_steps=100)
    exp = schedule_factors(
        "exponential", {"rate": 0.5, "every": Duration(value=1, unit="epochs")}, t, [0, 5, 20]
    )
    assert exp == pytest.approx([1.0, 0.5**0.5, 0.25])
    lin = schedule_factors("linear", {"end_factor": 0.0}, t, [0, 50, 100])
    assert lin == pytest.approx([1.0, 0.5, 0.0])


def reference_update(name: str, args: dict, p, g, state, step):
    """The PyTorch formulations of each optimizer, in numpy."""
    lr = args["lr"]
    if name == "sgd":
        if args["momentum"] == 0:
            return p - lr * g, {}
        v = state["velocity"] * args["momentum"] + g
        d = g + args["momentum"] * v if args["nesterov"] else v
        return p - lr * d, {"velocity": v}
    if name == "adam":
        b1, b2, eps = args["beta1"], args["beta2"], args["eps"]
        m = b1 * state["m"] + (1 - b1) * g
        v = b2 * state["v"] + (1 - b2) * g * g
        t = step + 1
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps), {"m": m, "v": v}
    rho, eps, mu = args["rho"], args["eps"], args["momentum"]
    sq = rho * state["square_avg"] + (1 - rho) * g * g
    scaled = g / (np.sqrt(sq) + eps)
    if mu > 0:
        buf = mu * state["momentum_buf"] + scaled
        return p - lr * buf, {"square_avg": sq, "momentum_buf": buf}
    return p - lr * scaled, {"square_avg": sq}


@pytest.mark.parametrize(
    "name,args",
    [
        ("sgd", {"lr": 0.1}),
        ("sgd", {"lr": 0.1, "momentum": 0.9}),
        ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("adam", {"lr": 0.01}),
        ("adam", {"lr": 0.01, "eps": 0.1, "beta2": 0.9}),
        ("rmsprop", {"lr": 0.01}),
        ("rmsprop", {"lr": 0.01, "momentum": 0.5}),
    ],
)
def test_optimizer_update_matches_reference_over_three_steps(name: str, args: dict) -> None:
    opt = OPTIMIZERS.get(name)
    full = opt.signature.bind(name, [], [(k, v, _span()) for k, v in args.items()], _span())
    kinds = opt.state(full)
    b = GraphBuilder("opt", "float64")
    for n in ("p", "g", *kinds):
        b.add_input(n, "float64", [3, 4])
    b.add_input("step", "float64", [])
    scalars = opt.prepare(b, "step", b.const(full["lr"]), full)
    new_p, new_state = opt.update(b, "p", "g", {k: k for k in kinds}, scalars, full)
    b.add_output(new_p, "float64", [3, 4])
    for k in kinds:
        b.add_output(new_state[k], "float64", [3, 4])
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 4))
    state = {k: np.zeros((3, 4)) for k in kinds}
    ref_p, ref_state = p.copy(), dict(state)
    for step in range(3):
        g = rng.normal(size=(3, 4))
        outs = run(b, {"p": p, "g": g, "step": np.array(float(step)), **state})
        p, state = outs[0], dict(zip(kinds, outs[1:], strict=True))
        ref_p, ref_state = reference_update(name, full, ref_p, g, ref_state, step)
        np.testing.assert_allclose(p, ref_p, rtol=1e-12, atol=1e-12)


def test_hash_rng_is_uniform_reproducible_and_distinct_per_step_and_salt() -> None:
    b = GraphBuilder("rng")
    b.add_input("seed", "int64", [])
    b.add_input("step", "int64", [])
    b.add_input("x", "float32", ["N", 256])
    rng = HashRandom(b, "seed", "step")
    for salt in (0, 1):
        b.add_output(rng.uniform_like(b, "x", salt), "float32", None)
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = np.zeros((64, 256), np.float32)

    def draw(seed: int, step: int) -> list[np.ndarray]:
        return session.run(None, {"seed": np.array(seed), "step": np.array(step), "x": x})

    a0, a1 = draw(0, 0)
    assert a0.shape == x.shape
    assert a0.min() >= 0.0 and a0.max() < 1.0
    assert abs(a0.mean() - 0.5) < 0.01 and abs(a0.std() - math.sqrt(1 / 12)) < 0.01
    assert abs(np.corrcoef(a0.ravel(), a1.ravel())[0, 1]) < 0.03
    assert np.array_equal(draw(0, 0)[0], a0)
    assert not np.array_equal(draw(0, 1)[0], a0)
    assert not np.array_equal(draw(1, 0)[0], a0)
    # neighbouring elements are not correlated
    assert abs(np.corrcoef(a0.ravel()[:-1], a0.ravel()[1:])[0, 1]) < 0.03


def test_step_and_exponential_decay_start_when_the_warm_up_ends() -> None:
    t = Timing(steps_per_epoch=10, total_steps=100)
    warm = Duration(value=5, unit="steps")
    every = Duration(value=10, unit="steps")
    got = schedule_factors(
        "step", {"every": every, "factor": 0.5, "warmup": warm}, t, [0, 4, 14, 15, 25]
    )
    assert got == pytest.approx([0.2, 1.0, 1.0, 0.5, 0.25])
    got = schedule_factors("exponential", {"rate": 0.5, "every": every, "warmup": warm}, t, [4, 25])
    assert got == pytest.approx([1.0, 0.25])
