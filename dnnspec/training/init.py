"""Seeded parameter initialisation (He / Glorot / constants) from each layer's ParamSpec."""

from __future__ import annotations

import numpy as np

from dnnspec.layers.base import ParamSpec


def initial_value(spec: ParamSpec, rng: np.random.Generator, dtype: np.dtype) -> np.ndarray:
    """A fresh array for one parameter; fan-in/out come from the layer that owns it."""
    shape, fan_in, fan_out = spec.shape, max(1, spec.fan_in), max(1, spec.fan_out)
    if spec.init == "zeros":
        value = np.zeros(shape)
    elif spec.init == "ones":
        value = np.ones(shape)
    elif spec.init == "he_normal":
        value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif spec.init == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        value = rng.uniform(-limit, limit, shape)
    elif spec.init == "glorot_normal":
        value = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)
    elif spec.init == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        value = rng.uniform(-limit, limit, shape)
    elif spec.init == "normal":
        value = rng.normal(0.0, 1.0, shape)
    elif spec.init == "normal_002":
        value = rng.normal(0.0, 0.02, shape)
    elif spec.init == "orthogonal":
        flat = rng.normal(0.0, 1.0, (shape[0], int(np.prod(shape[1:]))))
        q, r = np.linalg.qr(flat if flat.shape[0] >= flat.shape[1] else flat.T)
        q = q * np.sign(np.diag(r))
        value = (q if flat.shape[0] >= flat.shape[1] else q.T).reshape(shape)
    else:
        raise ValueError(f"unknown initialiser {spec.init!r}")
    return value.astype(dtype)
