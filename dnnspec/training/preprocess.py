"""Declared preprocessing of 2-D float inputs, fitted on the training split only.

`impute` fills missing values (NaN) first, as scikit-learn's `SimpleImputer`, optionally
appending a 0/1 column per imputed column that had gaps in training (`add_indicator`, as
sklearn appends its `MissingIndicator` after the features). Then two kinds of step: a
scaling step (`standardize`, `min_max`) becomes a per-feature affine map,
(x - shift) * scale; `one_hot` replaces a column of categories by one 0/1 column per
category seen in training. `scale_target` scales the targets of the outputs trained on
values with one of the scaling steps (as scikit-learn's `TransformedTargetRegressor`):
the step graphs scale the target for the loss and unscale the output for the metrics, and
model.onnx unscales its output. The runtime applies the fitted `Preprocessing` to every split,
and model.onnx carries it as graph nodes in front of the model (IsNaN and Where, Sub/Mul,
then one Gather, a distance test and Where), so the deployed model takes the raw columns.

A raw categorical value reaches the model as a float: a column of numbers (integer codes)
as the number itself, a CSV column of words as the index of the word in the fitted
categories (sorted), which the metadata lists. A value matches a category within MATCH; one
that matches none (a word or code never seen in training, -1, NaN) encodes as all zeros,
as scikit-learn's `OneHotEncoder(handle_unknown="ignore")` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

# fit(training features [N, F] of the chosen columns) -> (shift, scale), or the message
# naming why a column cannot be scaled
Fit = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | str]


Fills = Callable[[np.ndarray, dict[str, Any]], np.ndarray | str]
"""fills(training features [N, F] of the chosen columns, NaN where missing; the call's
arguments) -> the value that replaces NaN in each column, or the message naming why not."""


@dataclass(frozen=True)
class PreprocessDef:
    signature: Signature
    fit: Fit | None
    """None for `one_hot`, which fits categories, and `impute`, which fits `fills`."""
    doc: str = ""
    fills: Fills | None = None
    """For `impute`: the fitted value of each column's missing cells."""


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
STRATEGIES = ("mean", "median", "most_frequent", "constant")
"""`impute`'s strategies, as scikit-learn's `SimpleImputer` names them."""


def _most_frequent(column: np.ndarray) -> float:
    """The most frequent value, the smallest of those tied (as SimpleImputer)."""
    values, counts = np.unique(column, return_counts=True)
    return float(values[np.argmax(counts)])


def _fills(x: np.ndarray, args: dict[str, Any]) -> np.ndarray | str:
    """SimpleImputer's statistics over the present values of each column; a column with
    none cannot be imputed from them (sklearn drops it with a warning)."""
    strategy = args["strategy"]
    if strategy == "constant":
        return np.full(x.shape[1], float(args["fill"]))
    present = ~np.isnan(x)
    empty = np.flatnonzero(~present.any(axis=0))
    if len(empty):
        return f"feature column {int(empty[0])} has no values on the training split"
    if strategy == "mean":
        mean: np.ndarray = np.nanmean(x, axis=0)
        return mean
    if strategy == "median":
        median: np.ndarray = np.nanmedian(x, axis=0)
        return median
    return np.array([_most_frequent(x[present[:, c], c]) for c in range(x.shape[1])])


PREPROCESS.add(
    "impute",
    PreprocessDef(
        Signature(
            args=(
                ArgSpec(
                    name="strategy",
                    type="str",
                    default="mean",
                    choices=STRATEGIES,
                    doc="the value a missing cell takes: the column's mean, median or most "
                    "frequent value on the training split, or `fill`",
                ),
                COLUMNS,
                ArgSpec(
                    name="fill",
                    type="float",
                    default=0.0,
                    doc="the value of strategy = constant",
                ),
                ArgSpec(
                    name="add_indicator",
                    type="bool",
                    default=False,
                    doc="append a 0/1 column per imputed column that had missing values in "
                    "training, 1 where the value was missing",
                ),
            )
        ),
        None,
        "missing values (empty CSV cells, NaN) filled as scikit-learn's SimpleImputer",
        fills=_fills,
    ),
)
PREPROCESS.add(
    "scale_target",
    PreprocessDef(
        Signature(
            args=(
                ArgSpec(
                    name="method",
                    type="str",
                    default="standardize",
                    choices=tuple(n for n in PREPROCESS if PREPROCESS.get(n).fit is not None),
                    doc="the scaling step fitted on the training targets",
                ),
            )
        ),
        None,
        "the targets of outputs trained on values scaled for training; model.onnx's output "
        "and the metrics are in the targets' units",
    ),
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


APPLY_ROWS = 8192
"""Rows a scaling step computes in float64 at a time."""


@dataclass(frozen=True)
class Affine:
    """One fitted scaling step over all F raw features (untouched columns: shift 0, scale 1)."""

    name: str
    shift: np.ndarray
    scale: np.ndarray
    columns: tuple[int, ...] = ()
    """The columns it scales (the others pass through)."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        """`(x - shift) * scale` in float64, in x's dtype, `APPLY_ROWS` rows at a time so
        float32 data is never widened whole (held-out rows, a streamed row group)."""
        out = np.empty(x.shape, x.dtype)
        for start in range(0, len(x), APPLY_ROWS):
            rows = slice(start, start + APPLY_ROWS)
            out[rows] = (x[rows] - self.shift) * self.scale
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
class Impute:
    """A fitted `impute` over some raw columns: NaN in `columns[i]` becomes `fill[i]`;
    `indicated` lists those that get a 0/1 missing indicator, appended after the features."""

    strategy: str
    columns: tuple[int, ...]
    fill: np.ndarray
    """float64 [len(columns)]."""
    indicated: tuple[int, ...] = ()

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x)
        for column, value in zip(self.columns, self.fill.tolist(), strict=True):
            out[np.isnan(out[:, column]), column] = value
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "step": "impute",
            "strategy": self.strategy,
            "columns": list(self.columns),
            "fill": self.fill.tolist(),
            "indicator": list(self.indicated),
        }

    def column_json(self, column: int) -> dict[str, Any]:
        fill = float(self.fill[self.columns.index(column)])
        indicator = column in self.indicated
        return {"step": "impute", "strategy": self.strategy, "fill": fill, "indicator": indicator}


INDICATOR = "missingindicator_"
"""The feature name of a missing indicator is this and its column's name, as scikit-learn's
`get_feature_names_out` writes it."""


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
    impute: tuple[Impute, ...] = ()
    """Applied first; their missing indicators are appended after every other feature."""
    targets: dict[str, Affine] = field(default_factory=dict)
    """`scale_target`'s fit, by output name (`""`: a model's one unnamed output)."""

    def transforms_columns(self) -> bool:
        """Whether any step transforms the input's columns (`scale_target` alone does not)."""
        return bool(self.scale or self.one_hot or self.impute)

    def indicated(self) -> list[int]:
        """The raw columns with a missing indicator, in the order the features append them."""
        return [c for step in self.impute for c in step.indicated]

    def widens(self) -> bool:
        """Whether the model's input is wider than the raw columns (one_hot, indicators)."""
        return bool(self.one_hot or self.indicated())

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
        return out + [INDICATOR + self.column_name(c) for c in self.indicated()]

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
        missing = np.isnan(x[:, self.indicated()]).astype(x.dtype)
        for fill in self.impute:
            x = fill.apply(x)
        for step in self.scale:
            x = step.apply(x)
        if self.one_hot:
            source, hot, value = self.expansion()
            picked = x[:, source]
            near = np.abs(picked - value) < MATCH
            x = np.where(hot, near.astype(x.dtype), picked).astype(x.dtype)
        out: np.ndarray = np.concatenate([x, missing], axis=1) if missing.shape[1] else x
        return out

    def to_json(self) -> list[dict[str, Any]]:
        """`dnnspec.preprocess`: each step in order (one_hot steps name their column)."""
        steps: list[dict[str, Any]] = [s.to_json() for s in self.impute]
        steps += [s.to_json() for s in self.scale]
        steps += [{"column": s.column} | s.to_json() for s in self.one_hot]
        for output, target in self.targets.items():
            fitted = {"shift": target.shift.tolist(), "scale": target.scale.tolist()}
            steps.append({"step": "scale_target", "output": output, "method": target.name} | fitted)
        return steps

    def columns_json(self) -> list[dict[str, Any]]:
        """One entry per raw input column, in order: its name and what is done to it."""
        encoders = self.encoders()
        out = []
        for c in range(self.width):
            steps = [s.column_json(c) for s in self.impute if c in s.columns]
            steps += [s.column_json(c) for s in self.scale if c in s.columns]
            step = encoders.get(c)
            if step is not None:
                steps.append(step.to_json())
            out.append({"name": self.names[c] if self.names else None, "steps": steps})
        return out
