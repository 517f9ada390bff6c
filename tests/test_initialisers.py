"""Every initialiser against its published distribution: a large draw's mean, standard
deviation and bounds (uniform ones fill (-a, a)), orthogonality where promised, and the
same values from the same seed.

`INIT_CASES` holds at least one case per registered initialiser (a completeness test
fails otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from dnnspec.layers.base import ParamSpec
from dnnspec.layers.init import INITIALISERS, initial_value


@dataclass(frozen=True)
class InitCase:
    """`init` over `shape` with the given fans: standard deviation `std`; `bound` when
    the values are uniform in (-bound, bound); `orthogonal` when the rows or columns
    (whichever are fewer) are orthonormal."""

    init: str
    shape: tuple[int, ...]
    std: float
    fan_in: int = 1
    fan_out: int = 1
    bound: float | None = None
    orthogonal: bool = False
    constant: float = 0.0  # the value of a constant initialiser (std 0)


LARGE = (300, 400)
INIT_CASES: list[InitCase] = [
    InitCase("zeros", (7,), 0.0),
    InitCase("ones", (7,), 0.0, constant=1.0),
    InitCase("he_normal", LARGE, math.sqrt(2 / 300), fan_in=300, fan_out=400),
    InitCase(
        "he_uniform",
        LARGE,
        math.sqrt(2 / 300),
        fan_in=300,
        fan_out=400,
        bound=math.sqrt(6 / 300),
    ),
    InitCase("glorot_normal", LARGE, math.sqrt(2 / 700), fan_in=300, fan_out=400),
    InitCase(
        "glorot_uniform",
        LARGE,
        math.sqrt(2 / 700),
        fan_in=300,
        fan_out=400,
        bound=math.sqrt(6 / 700),
    ),
    InitCase("normal", LARGE, 1.0),
    InitCase("normal_002", LARGE, 0.02),
    InitCase("orthogonal", (40, 30), math.sqrt(1 / 40), orthogonal=True),
    InitCase("orthogonal", (8, 3, 10), math.sqrt(1 / 30), orthogonal=True),
]


def test_every_initialiser_has_a_case() -> None:
    assert set(INITIALISERS) <= {case.init for case in INIT_CASES}


def draw(case: InitCase, seed: int = 0) -> np.ndarray:
    spec = ParamSpec("weight", case.shape, case.init, case.fan_in, case.fan_out)
    return initial_value(spec, np.random.default_rng(seed), np.dtype("float64"))


@pytest.mark.parametrize("case", INIT_CASES, ids=lambda c: f"{c.init}-{c.shape}")
def test_initialiser_draws_its_published_distribution(case: InitCase) -> None:
    value = draw(case)
    assert value.shape == case.shape and value.dtype == np.float64
    np.testing.assert_array_equal(value, draw(case))
    if case.std == 0:
        np.testing.assert_array_equal(value, np.full(case.shape, case.constant))
        return
    assert abs(value.mean()) < 4 * case.std / math.sqrt(value.size)
    assert value.std() == pytest.approx(case.std, rel=0.02)
    if case.bound is not None:
        assert np.abs(value).max() < case.bound
        assert np.abs(value).max() > 0.99 * case.bound
    if case.orthogonal:
        flat = value.reshape(case.shape[0], -1)
        small = flat if flat.shape[0] <= flat.shape[1] else flat.T
        np.testing.assert_allclose(small @ small.T, np.eye(len(small)), atol=1e-12)
    assert not np.array_equal(value, draw(case, seed=1))
