"""Declared preprocessing of 2-D float inputs, fitted on the training split only.

Two kinds of step: a scaling step (`standardize`, `min_max`) becomes a per-feature affine
map, (x - shift) * scale; `one_hot` replaces a column of categories by one 0/1 column per
category seen in training. The runtime applies the fitted `Preprocessing` to every split,
and model.onnx carries it as graph nodes in front of the model (Sub/Mul, then one
Gather, a distance test and Where), so the deployed model takes the raw columns.

A raw categorical value reaches the model as a float: a column of numbers (integer codes)
as the number itself, a CSV column of words as the index of the word in the fitted
categories (sorted), which the metadata lists. A value matches a category within MATCH; one
that matches none (a word or code never seen in training, -1, NaN) encodes as all zeros,
as scikit-learn's `OneHotEncoder(handle_unknown="ignore")` does.
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
    fit: Fit | None
    """None for `one_hot`, which fits categories instead of an affine map."""
    doc: str = ""


PREPROCESS: Registry[PreprocessDef] = Registry("preprocessing")

COLUMNS = ArgSpec(
    name="columns",
    type="any",
    default=[],
    doc="feature columns to transform, by CSV header name or 0-based index (default: all)",
)

MATCH = 0.5
"""A one-hot column indicates a category when the input lies within MATCH of its value:
exact for the whole numbers categories are, and NaN or a value far from every category
(an unseen one) matches none."""

MAX_CATEGORIES = 100
"""one_hot's default limit on the categories of one column: more than that is usually an
identifier or a number, not a category (raise it with `max_categories`)."""


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
PREPROCESS.add(
    "one_hot",
    PreprocessDef(
        Signature(
            args=(
                ArgSpec(
                    name="columns",
                    type="any",
                    doc="the columns of categories, by CSV header name or 0-based index",
                ),
                ArgSpec(
                    name="max_categories",
                    type="int",
                    default=MAX_CATEGORIES,
                    min=2,
                    doc="most categories one column may have",
                ),
            )
        ),
        None,
        "one 0/1 column per category seen in training (words or whole numbers); "
        "an unseen category encodes as all zeros",
    ),
)


@dataclass(frozen=True)
class Affine:
    """One fitted scaling step over all F raw features (untouched columns: shift 0, scale 1)."""

    name: str
    shift: np.ndarray
    scale: np.ndarray
    columns: tuple[int, ...] = ()
    """The columns it scales (the others pass through)."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((x - self.shift) * self.scale).astype(x.dtype)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    def column_json(self, column: int) -> dict[str, Any]:
        """What this step does to one column, in the terms of its definition."""
        shift, scale = float(self.shift[column]), float(self.scale[column])
        if self.name == "standardize":
            return {"step": self.name, "mean": shift, "std": 1.0 / scale}
        return {"step": self.name, "min": shift, "max": shift + 1.0 / scale}


@dataclass(frozen=True)
class OneHot:
    """A fitted `one_hot` of one raw column: the model input value of each category."""

    column: int
    values: np.ndarray
    """float64 [K]: what the model input holds for category k (the number itself, or k)."""
    categories: tuple[str, ...]
    words: bool
    """The column held words: the model input is the index of the word in `categories`."""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": "one_hot",
            "categories": list(self.categories),
            "values": self.values.tolist(),
            "encoded": "index" if self.words else "value",
            "unknown": "zeros",
        }


@dataclass(frozen=True)
class Preprocessing:
    """The fitted steps over a raw input of `width` columns (named `names`, when known):
    the scaling steps in order, then each one-hot column expanded where it stands."""

    width: int
    names: tuple[str, ...] | None
    scale: tuple[Affine, ...] = ()
    one_hot: tuple[OneHot, ...] = ()

    def encoders(self) -> dict[int, OneHot]:
        return {step.column: step for step in self.one_hot}

    def column_name(self, column: int) -> str:
        return self.names[column] if self.names else str(column)

    def features(self) -> list[str]:
        """The model's input columns: a raw name, or `name=category` for a one-hot column."""
        encoders = self.encoders()
        out: list[str] = []
        for c in range(self.width):
            name = self.column_name(c)
            step = encoders.get(c)
            out += [f"{name}={k}" for k in step.categories] if step else [name]
        return out

    def expansion(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each model input column: the raw column it reads, whether it is a one-hot
        indicator, and the category value it indicates (0 for a plain column)."""
        encoders = self.encoders()
        source: list[int] = []
        hot: list[bool] = []
        value: list[float] = []
        for c in range(self.width):
            step = encoders.get(c)
            count = len(step.values) if step else 1
            source += [c] * count
            hot += [step is not None] * count
            value += step.values.tolist() if step else [0.0]
        return np.array(source, np.int64), np.array(hot, bool), np.array(value, np.float64)

    def encode(self, x: np.ndarray, words: dict[int, tuple[str, ...]]) -> np.ndarray:
        """Raw model input from loaded columns, where column c of `words` holds the index
        of each cell's word in words[c]: as the index of the word in the fitted categories
        (-1, all zeros after one_hot, for a word training never saw)."""
        out = np.array(x, dtype=np.float64)
        for column, vocabulary in words.items():
            step = self.encoders().get(column)
            if step is None or not step.words:
                continue
            position = {word: float(i) for i, word in enumerate(step.categories)}
            table = np.array([position.get(word, -1.0) for word in vocabulary] or [-1.0])
            out[:, column] = table[x[:, column].astype(np.int64)]
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """What the model sees, from raw model input `x` [N, width]: the graph's own steps."""
        for step in self.scale:
            x = step.apply(x)
        if not self.one_hot:
            return x
        source, hot, value = self.expansion()
        picked = x[:, source]
        near = np.abs(picked - value) < MATCH
        out: np.ndarray = np.where(hot, near.astype(x.dtype), picked)
        return out.astype(x.dtype)

    def to_json(self) -> list[dict[str, Any]]:
        """`dnnspec.preprocess`: each step in order (one_hot steps name their column)."""
        steps: list[dict[str, Any]] = [s.to_json() for s in self.scale]
        steps += [{"column": s.column} | s.to_json() for s in self.one_hot]
        return steps

    def columns_json(self) -> list[dict[str, Any]]:
        """One entry per raw input column, in order: its name and what is done to it."""
        encoders = self.encoders()
        out = []
        for c in range(self.width):
            steps = [s.column_json(c) for s in self.scale if c in s.columns]
            step = encoders.get(c)
            if step is not None:
                steps.append(step.to_json())
            out.append({"name": self.names[c] if self.names else None, "steps": steps})
        return out
