"""Named parameter initialisers: a layer's ParamSpec names one, and the trainer draws
each parameter's first value from it with the run's seeded generator.

`auto` is not an initialiser but a request, settled by `check` from the layer's consumers
(He for weights feeding only ReLU-like activations, Glorot otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dnnspec.layers.base import ParamSpec
from dnnspec.registry import Registry

# draw(rng, shape, fan_in, fan_out) -> float64 array of `shape`
Draw = Callable[[np.random.Generator, tuple[int, ...], int, int], np.ndarray]


@dataclass(frozen=True)
class InitDef:
    draw: Draw
    doc: str


INITIALISERS: Registry[InitDef] = Registry("initialiser")


def initial_value(spec: ParamSpec, rng: np.random.Generator, dtype: np.dtype) -> np.ndarray:
    """A fresh array for one parameter; fan-in/out come from the layer that owns it."""
    draw = INITIALISERS.get(spec.init).draw
    return draw(rng, spec.shape, max(1, spec.fan_in), max(1, spec.fan_out)).astype(dtype)


def _orthogonal(
    rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int
) -> np.ndarray:
    """Saxe et al. (2014): the Q of a Gaussian matrix's QR, sign-fixed so that it is
    uniform over orthogonal matrices; rows or columns (whichever are fewer) orthonormal."""
    flat = rng.normal(0.0, 1.0, (shape[0], int(np.prod(shape[1:]))))
    tall = flat.shape[0] >= flat.shape[1]
    q, r = np.linalg.qr(flat if tall else flat.T)
    q = q * np.sign(np.diag(r))
    return (q if tall else q.T).reshape(shape)


def _uniform(limit: Callable[[int, int], float]) -> Draw:
    def draw(
        rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int
    ) -> np.ndarray:
        bound = limit(fan_in, fan_out)
        return rng.uniform(-bound, bound, shape)

    return draw


def _normal(std: Callable[[int, int], float]) -> Draw:
    def draw(
        rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int
    ) -> np.ndarray:
        return rng.normal(0.0, std(fan_in, fan_out), shape)

    return draw


for _name, _def in {
    "zeros": InitDef(lambda rng, shape, fan_in, fan_out: np.zeros(shape), "all zeros"),
    "ones": InitDef(lambda rng, shape, fan_in, fan_out: np.ones(shape), "all ones"),
    "he_normal": InitDef(
        _normal(lambda fan_in, fan_out: float(np.sqrt(2.0 / fan_in))), "N(0, 2 / fan_in)"
    ),
    "he_uniform": InitDef(
        _uniform(lambda fan_in, fan_out: float(np.sqrt(6.0 / fan_in))),
        "U(-a, a), a = sqrt(6 / fan_in)",
    ),
    "glorot_normal": InitDef(
        _normal(lambda fan_in, fan_out: float(np.sqrt(2.0 / (fan_in + fan_out)))),
        "N(0, 2 / (fan_in + fan_out))",
    ),
    "glorot_uniform": InitDef(
        _uniform(lambda fan_in, fan_out: float(np.sqrt(6.0 / (fan_in + fan_out)))),
        "U(-a, a), a = sqrt(6 / (fan_in + fan_out))",
    ),
    "normal": InitDef(_normal(lambda fan_in, fan_out: 1.0), "N(0, 1)"),
    "normal_002": InitDef(_normal(lambda fan_in, fan_out: 0.02), "N(0, 0.02^2)"),
    "orthogonal": InitDef(_orthogonal, "a random orthogonal matrix over the first axis"),
}.items():
    INITIALISERS.add(_name, _def)
