"""Every regularizer's in-graph gradient against central differences of a NumPy reference
of its penalty (the train step adds that gradient to decayed parameters; see
test_train_step_gradients for the whole step).

`REGULARIZER_CASES` holds at least one case per registered regularizer (a completeness
test fails otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import bind

from dnnspec.graph.builder import GraphBuilder
from dnnspec.training.regularize import REGULARIZERS

# penalty(param, bound args) -> the scalar added to the loss the update follows
Penalty = Callable[[np.ndarray, dict[str, Any]], float]


@dataclass(frozen=True)
class RegularizerCase:
    regularizer: str
    penalty: Penalty
    args: dict[str, Any]


REGULARIZER_CASES: list[RegularizerCase] = [
    RegularizerCase("l1", lambda w, a: a["strength"] * float(np.abs(w).sum()), {"strength": 0.01}),
    RegularizerCase("l2", lambda w, a: a["strength"] * float((w * w).sum()), {"strength": 0.003}),
]


def test_every_regularizer_has_a_case() -> None:
    assert set(REGULARIZERS) <= {REGULARIZERS.canonical(c.regularizer) for c in REGULARIZER_CASES}


@pytest.mark.parametrize("case", REGULARIZER_CASES, ids=lambda c: c.regularizer)
def test_penalty_gradient_matches_finite_differences_of_the_penalty(
    case: RegularizerCase,
) -> None:
    definition = REGULARIZERS.get(case.regularizer)
    args = bind(definition.signature, case.regularizer, case.args)
    b = GraphBuilder("penalty", "float64")
    b.add_input("w", "float64", [3, 4])
    b.add_output(definition.grad(b, "w", args), "float64", [3, 4])
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    # away from 0, where |w| has a kink
    w = rng.choice([-1.0, 1.0], (3, 4)) * rng.uniform(0.1, 1.0, (3, 4))
    (grad,) = session.run(None, {"w": w})
    h = 1e-6
    expected = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        up, down = w.copy(), w.copy()
        up[index] += h
        down[index] -= h
        expected[index] = (case.penalty(up, args) - case.penalty(down, args)) / (2 * h)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-12)
