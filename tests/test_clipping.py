"""Every gradient-clipping method against NumPy (and torch.nn.utils where installed), on
several gradients at once; and `clip` in a spec changes the train step's update."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import bind

from dnnspec.graph.builder import GraphBuilder
from dnnspec.training.clip import CLIPPING

Grads = list[np.ndarray]


def by_norm(grads: Grads, a: dict[str, Any]) -> Grads:
    total = np.sqrt(sum(float((g**2).sum()) for g in grads))
    coef = min(1.0, a["max_norm"] / (total + 1e-6))
    return [g * coef for g in grads]


def by_value(grads: Grads, a: dict[str, Any]) -> Grads:
    return [np.clip(g, -a["limit"], a["limit"]) for g in grads]


@dataclass(frozen=True)
class ClipCase:
    method: str
    reference: Callable[[Grads, dict[str, Any]], Grads]
    args: dict[str, Any]
    scale: float = 1.0  # of the gradients: below or above the limit

    @property
    def id(self) -> str:
        return f"{self.method}-{self.args}-x{self.scale}"


CLIP_CASES = [
    ClipCase("norm", by_norm, {"max_norm": 1.0}),
    ClipCase("norm", by_norm, {"max_norm": 100.0}),  # under the limit: unchanged
    ClipCase("value", by_value, {"limit": 0.5}),
]


def test_every_clipping_method_has_a_case() -> None:
    assert set(CLIPPING) <= {c.method for c in CLIP_CASES}


def clip_graph(case: ClipCase, shapes: list[tuple[int, ...]]) -> ort.InferenceSession:
    definition = CLIPPING.get(case.method)
    b = GraphBuilder("clip", "float64")
    names = [b.add_input(f"g{i}", "float64", s) for i, s in enumerate(shapes)]
    clipped = definition.build(
        b, dict(zip(names, names, strict=True)), bind(definition.signature, case.method, case.args)
    )
    for name, shape in zip(names, shapes, strict=True):
        b.add_output(b.op("Identity", [clipped[name]], outputs=[f"out.{name}"]), "float64", shape)
    return ort.InferenceSession(b.model().SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", CLIP_CASES, ids=lambda c: c.id)
def test_clipping_matches_the_reference_and_torch(case: ClipCase) -> None:
    shapes = [(3, 4), (4,), (2, 2, 2)]
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=s) for s in shapes]
    session = clip_graph(case, shapes)
    got = session.run(None, {f"g{i}": g for i, g in enumerate(grads)})
    args = bind(CLIPPING.get(case.method).signature, case.method, case.args)
    for a, b in zip(got, case.reference(grads, args), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.tensor(g)
    if case.method == "norm":
        torch.nn.utils.clip_grad_norm_(params, args["max_norm"])
    else:
        torch.nn.utils.clip_grad_value_(params, args["limit"])
    for a, p in zip(got, params, strict=True):
        assert p.grad is not None
        np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-12)
