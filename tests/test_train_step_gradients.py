"""The whole training step of every example spec differentiates correctly: the gradient
it computes for each parameter matches float64 central finite differences of its loss
(dropout included, since its mask is a pure function of the seed and step inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import EXAMPLES, assert_train_step_matches_finite_differences

from dnnspec.assemble.steps import SEED, STEP, TARGET, Program, build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.layers.init import initial_value
from dnnspec.training.schedules import Timing


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_train_step_gradient_matches_finite_differences(path: Path) -> None:
    assert_train_step_matches_finite_differences(load_spec(path), {"N": 6, "T": 5})


FOLDABLE_SGD = """
model m {
  input x: float32[N, 5]
  dense(12) -> tanh
  dense(3)
}
train {
  data spirals
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 7
  epochs 1
}
"""


def step_feeds(slots: list, seed: int = 1) -> dict[str, np.ndarray]:
    """A batch of 7 samples for FOLDABLE_SGD's model, step 0, and seeded parameters."""
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.normal(size=(7, 5)), TARGET: rng.integers(0, 3, 7)}
    feeds |= {STEP: np.array(0, np.int64), SEED: np.array(0, np.int64)}
    for slot in slots:
        feeds[slot.name] = initial_value(slot.spec, rng, np.dtype("float64"))
    return feeds


def run_step(program: Program, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(
        program.train_step.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def sgd_program(text: str, emit_grads: bool, dtype: str = "float64") -> Program:
    spec = load_spec_text(text, "<sgd>")
    assert spec.train is not None
    return build_train_step(
        check_spec(spec), spec.train, 3, Timing(10, 100), dtype, emit_grads=emit_grads
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sgd_update_folded_into_the_gradient_gemm_equals_param_minus_lr_times_grad(
    dtype: str,
) -> None:
    """Plain SGD's `W - lr * Gemm(A, B)` becomes one Gemm accumulating onto W; in float64
    it scales A for the [5, 12] weight and B for the [12, 3] one, in float32 the fixed
    learning rate is the Gemm's alpha (a float32 attribute). The result must not change."""
    folded, reference = sgd_program(FOLDABLE_SGD, False, dtype), sgd_program(FOLDABLE_SGD, True)
    nodes = {o: n for n in folded.train_step.graph.node for o in n.output}
    update = nodes["dense_1.weight.next"]
    assert update.op_type == nodes["dense_2.weight.next"].op_type == "Gemm"
    assert nodes["dense_1.bias.next"].op_type == "Sub"
    alpha = [a.f for a in update.attribute if a.name == "alpha"]
    negated_lr = any(o.startswith("neg_lr") for o in nodes)
    if dtype == "float32":
        assert alpha == [pytest.approx(-0.1)] and not negated_lr
    else:
        assert alpha == [] and negated_lr
    feeds = step_feeds(folded.slots)
    got = run_step(
        folded, {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    )
    ref = run_step(reference, feeds)
    tolerance = 1e-12 if dtype == "float64" else 1e-6
    for slot in folded.slots:
        expected = feeds[slot.name] - 0.1 * ref[f"grad.{slot.name}"]
        np.testing.assert_allclose(
            got[f"{slot.name}.next"], expected, rtol=tolerance, atol=tolerance
        )


def test_l1_and_l2_penalties_add_their_exact_gradient_to_weights_but_not_biases() -> None:
    """strength * sum |w| and strength * sum w^2 have gradients strength * sign(w) and
    2 * strength * w; the data gradient (grad.*) excludes them."""
    text = FOLDABLE_SGD.replace("  epochs 1\n", "  epochs 1\n  regularize l1(0.01), l2(0.003)\n")
    program = sgd_program(text, True)
    feeds = step_feeds(program.slots)
    out = run_step(program, feeds)
    for slot in program.slots:
        p, grad = feeds[slot.name], out[f"grad.{slot.name}"]
        penalty = 0.01 * np.sign(p) + 2 * 0.003 * p if slot.name.endswith("weight") else 0.0
        np.testing.assert_allclose(out[f"{slot.name}.next"], p - 0.1 * (grad + penalty), 1e-12)
