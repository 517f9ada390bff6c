"""Every loss against a NumPy reference of its formula: the value, and the gradient with
respect to the model output that the autodiff engine derives from the loss nodes (seeded at
the loss, as the training step does) against central differences of the reference.

`LOSS_CASES` holds at least one case per registered loss (a completeness test fails
otherwise). Targets are drawn by the loss's target kind from the registry, so a case
names only the loss, its arguments, the output shape and the formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import TARGETS, bind, ort_runner, reference_runner

from dnnspec.autodiff import gradients
from dnnspec.graph.builder import GraphBuilder
from dnnspec.training.losses import LOSSES, loss_out

Reference = Callable[[np.ndarray, np.ndarray, dict[str, Any]], float]
"""(model output, target, bound args) -> the batch-mean loss, in float64 NumPy."""


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(out: np.ndarray, labels: np.ndarray, args: dict[str, Any]) -> float:
    classes, eps = out.shape[-1], args["label_smoothing"]
    target = np.full(out.shape, eps / classes) + (1.0 - eps) * np.eye(classes)[labels]
    return float(-(target * log_softmax(out)).sum(axis=-1).mean())


def mse(out: np.ndarray, target: np.ndarray, args: dict[str, Any]) -> float:
    return float(((out - target) ** 2).mean())


@dataclass(frozen=True)
class LossCase:
    loss: str
    reference: Reference
    output: tuple[int, ...]
    args: dict[str, Any] = field(default_factory=dict)
    rtol: float = 1e-7

    @property
    def id(self) -> str:
        return "-".join([self.loss, *(f"{k}={v}" for k, v in self.args.items())])


LOSS_CASES: list[LossCase] = [
    LossCase("cross_entropy", cross_entropy, (5, 4)),
    LossCase("cross_entropy", cross_entropy, (6, 3), {"label_smoothing": 0.1}),
    LossCase("cross_entropy", cross_entropy, (3, 4, 5)),  # one label per position
    LossCase("mse", mse, (5, 3)),
    LossCase("mse", mse, (4, 2, 3)),
]


def test_every_loss_has_a_case() -> None:
    assert set(LOSSES) <= {LOSSES.canonical(case.loss) for case in LOSS_CASES}


def loss_graph(
    case: LossCase, float_dtype: str
) -> tuple[Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], dict[str, Any]]:
    """A graph (output, target) -> (value, grad = d value / d output derived by the engine,
    and the loss's own `hand_written` gradient if it has one); runs in onnxruntime, or in
    onnx.reference where it lacks a kernel."""
    definition = LOSSES.get(case.loss)
    args = bind(definition.signature, case.loss, case.args)
    dims: list[int | str] = ["N", *case.output[1:]]
    b = GraphBuilder("loss", float_dtype)
    b.add_input("output", b.float_dtype, dims)
    if definition.target == "class":
        b.add_input("target", "int64", dims[:-1])
    else:
        b.add_input("target", b.float_dtype, dims)
    built = loss_out(definition.build(b, "output", "target", case.output[-1], args))
    loss = b.rename(built.loss, "value")
    (grad,) = gradients(b, {loss: b.const(1.0)}, ["output"]).values()
    b.add_output(loss, b.float_dtype, [])
    b.add_output(b.rename(grad, "grad"), b.float_dtype, dims)
    if built.vjp is not None:
        b.add_output(b.rename(built.vjp(), "hand_written"), b.float_dtype, dims)
    model = b.model()
    return ort_runner(model) or reference_runner(model), args


def has_vjp(case: LossCase) -> bool:
    """Whether the loss writes its gradient itself (selected from the registry entry)."""
    definition = LOSSES.get(case.loss)
    b = GraphBuilder("probe", "float64")
    b.add_input("output", b.float_dtype, case.output)
    args = bind(definition.signature, case.loss, case.args)
    return loss_out(definition.build(b, "output", "target", case.output[-1], args)).vjp is not None


def draw(case: LossCase, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = TARGETS[LOSSES.get(case.loss).target](rng, case.output)
    return rng.normal(size=case.output), target


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.id)
def test_loss_value_and_derived_gradient_match_the_reference(case: LossCase) -> None:
    run, args = loss_graph(case, "float64")
    out, target = draw(case)
    got = run({"output": out, "target": target})
    assert float(got["value"]) == pytest.approx(case.reference(out, target, args), rel=1e-12)
    h = 1e-6
    expected = np.zeros_like(out)
    for index in np.ndindex(out.shape):
        up, down = out.copy(), out.copy()
        up[index] += h
        down[index] -= h
        expected[index] = (
            case.reference(up, target, args) - case.reference(down, target, args)
        ) / (2 * h)
    np.testing.assert_allclose(got["grad"], expected, rtol=case.rtol, atol=1e-9)


@pytest.mark.parametrize("case", [c for c in LOSS_CASES if has_vjp(c)], ids=lambda c: c.id)
def test_hand_written_gradient_equals_the_derived_one(case: LossCase) -> None:
    """A loss's own vjp is an optimisation, never a different function."""
    for float_dtype, rtol in (("float64", 1e-12), ("float32", 1e-5)):
        run, _ = loss_graph(case, float_dtype)
        out, target = draw(case, seed=2)
        if float_dtype == "float32":
            out = out.astype(np.float32)
            target = target.astype(np.float32) if target.dtype.kind == "f" else target
        got = run({"output": out, "target": target})
        np.testing.assert_allclose(got["hand_written"], got["grad"], rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.id)
def test_loss_in_float32_agrees_with_float64(case: LossCase) -> None:
    """The graphs train in float32: the same formula, to float32 precision."""
    run64, _ = loss_graph(case, "float64")
    run32, _ = loss_graph(case, "float32")
    out, target = draw(case, seed=1)
    target32 = target.astype(np.float32) if target.dtype.kind == "f" else target
    got64 = run64({"output": out, "target": target})
    got32 = run32({"output": out.astype(np.float32), "target": target32})
    assert float(got32["value"]) == pytest.approx(float(got64["value"]), rel=1e-5)
    np.testing.assert_allclose(got32["grad"], got64["grad"], rtol=1e-4, atol=1e-6)
