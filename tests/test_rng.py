"""The counter-based RNG that dropout draws from: uniform, reproducible from (seed, step),
and independent across steps, salts (layers) and neighbouring elements."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort

from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.rng import HashRandom


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


def test_keep_mask_is_exactly_the_uniforms_at_or_above_p() -> None:
    """The integer-threshold mask dropout uses equals `uniform >= p` element for element,
    for probabilities that are and are not exact in float32, including p rounding to 1."""
    probabilities = (0.0, 0.1, 0.2, 0.5, 1 / 3, 0.9, 1 - 2.0**-24, 1 - 2.0**-30)
    b = GraphBuilder("keep")
    b.add_input("seed", "int64", [])
    b.add_input("step", "int64", [])
    b.add_input("x", "float32", ["N", 256])
    rng = HashRandom(b, "seed", "step")
    b.add_output(rng.uniform_like(b, "x", 3), "float32", None)
    for p in probabilities:
        b.add_output(rng.keep_like(b, "x", 3, p), "bool", None)
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = np.zeros((64, 256), np.float32)
    u, *keeps = session.run(None, {"seed": np.array(4), "step": np.array(9), "x": x})
    for p, keep in zip(probabilities, keeps, strict=True):
        assert keep.shape == x.shape
        assert np.array_equal(keep, u >= np.float32(p)), p
