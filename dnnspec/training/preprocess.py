"""Declared preprocessing of 2-D float inputs: each step is fitted on the training split
only and becomes a per-feature affine map, (x - shift) * scale, that the runtime applies
to every split and that model.onnx carries as Sub/Mul nodes in front of the model, so the
deployed model takes raw features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

# fit(training features [N, F] of the chosen columns) -> (shift, scale), or the message
# naming why a column cannot be scaled
Fit = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | str]


@dataclass(frozen=True)
class PreprocessDef:
    signature: Signature
    fit: Fit
    doc: str = ""


PREPROCESS: Registry[PreprocessDef] = Registry("preprocessing")

COLUMNS = ArgSpec(
    name="columns",
    type="ints",
    default=[],
    doc="0-based feature columns to transform (default: all)",
)


def _constant(spread: np.ndarray) -> str | None:
    flat = np.flatnonzero(spread == 0)
    if len(flat):
        return f"feature column {int(flat[0])} is constant on the training split"
    return None


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
    """z = (x - mean) / std, the population std as scikit-learn's StandardScaler."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    return _constant(std) or (mean, 1.0 / std)


def _min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
    """(x - min) / (max - min): the training range maps to [0, 1]."""
    low, high = x.min(axis=0), x.max(axis=0)
    return _constant(high - low) or (low, 1.0 / (high - low))


PREPROCESS.add(
    "standardize",
    PreprocessDef(Signature(args=(COLUMNS,)), _standardize, "zero mean, unit variance"),
)
PREPROCESS.add(
    "min_max",
    PreprocessDef(Signature(args=(COLUMNS,)), _min_max, "the training range scaled to [0, 1]"),
)


@dataclass(frozen=True)
class Affine:
    """One fitted step over all F features (untouched columns: shift 0, scale 1)."""

    name: str
    shift: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((x - self.shift) * self.scale).astype(x.dtype)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "shift": self.shift.tolist(), "scale": self.scale.tolist()}
