"""The input columns of a run: fitting the declared preprocessing on the training split,
applying it to every split, and saying in model.onnx what the model expects.

Columns are the features as loaded (a CSV's feature columns in order, or the second axis
of an .npz's `x`); a step names them by CSV header name or by 0-based index. Reading a
prediction file by these columns is its format's job (`data/formats/`); `pick_columns`
(`data/tables.py`) is also importable from here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from dnnspec.check.shapes import TypedModel
from dnnspec.data.datasets import Dataset
from dnnspec.data.tables import pick_columns as pick_columns
from dnnspec.errors import Span, did_you_mean, error
from dnnspec.ir import Call, TrainSpec
from dnnspec.runtime.data import fits_shape
from dnnspec.runtime.targets import fit_targets
from dnnspec.schema import arg_int
from dnnspec.training.preprocess import (
    APPLY_ROWS,
    PREPROCESS,
    Affine,
    Impute,
    OneHot,
    Preprocessing,
)


def _pick(call: Call, data: Dataset, width: int) -> list[int]:
    """The columns a step names (all of them when it names none)."""
    chosen = call.args["columns"]
    items = chosen if isinstance(chosen, list) else [chosen]
    if not items and call.name == "one_hot":
        raise error("one_hot needs the columns of categories: columns = [...]", call.span)
    picked: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise error(
                f"{call.name}: columns are CSV header names or 0-based indices, got {item!r}",
                call.span,
            )
        if isinstance(item, int):
            if not 0 <= item < width:
                raise error(
                    f"{call.name}: column {item} is outside the {width} features (0..{width - 1})",
                    call.span,
                )
            column = item
        else:
            if data.columns is None:
                raise error(
                    f"{call.name}: the data has no column names, so column '{item}' cannot "
                    "be found by name",
                    call.span,
                    help="pick columns by 0-based index (a CSV without a header row, or an "
                    ".npz, names none)",
                )
            if item not in data.columns:
                raise error(
                    f"{call.name}: the data has no feature column '{item}'",
                    call.span,
                    help=did_you_mean(item, list(data.columns))
                    or f"feature columns: {', '.join(data.columns)}",
                )
            column = data.columns.index(item)
        if column in picked:
            raise error(f"{call.name}: column '{item}' is listed twice", call.span)
        picked.append(column)
    return picked


def _name(data: Dataset, column: int) -> str:
    return f"'{data.columns[column]}'" if data.columns else str(column)


def encoded_columns(train: TrainSpec, data: Dataset) -> dict[int, Call]:
    """The one_hot columns by the step that encodes them; every column of words must be
    one of them (a model reads numbers), and no column is encoded twice."""
    encoded = _encoded(train, data)
    for column, words in data.words.items():
        if column not in encoded:
            name = data.columns[column] if data.columns else str(column)
            shown = ", ".join(words[:4]) + (", ..." if len(words) > 4 else "")
            chosen = f'"{name}"' if data.columns else name
            raise error(
                f"feature column {_name(data, column)} holds words ({shown}), but a model "
                "reads numbers",
                train.data.span,
                help=f"one-hot encode it: preprocess one_hot(columns = [{chosen}]), or leave "
                "it out with features = [...]",
            )
    return encoded


def _encoded(train: TrainSpec, data: Dataset) -> dict[int, Call]:
    width = data.x.shape[1] if data.x.ndim == 2 else 0
    encoded: dict[int, Call] = {}
    for call in train.preprocess:
        if call.name != "one_hot":
            continue
        for column in _pick(call, data, width):
            if column in encoded:
                raise error(f"one_hot: column {_name(data, column)} is encoded twice", call.span)
            encoded[column] = call
    return encoded


def imputed_columns(train: TrainSpec, data: Dataset) -> set[int]:
    """The columns the `impute` step fills (never a column of words); an empty cell of any
    other column is an error naming the first one, which suggests `impute`."""
    width = data.x.shape[1] if data.x.ndim == 2 else 0
    imputed: set[int] = set()
    for call in train.preprocess:
        if call.name != "impute":
            continue
        for column in _pick(call, data, width) or _numeric(data, width):
            if column in data.words:
                raise error(
                    f"impute: column {_name(data, column)} holds words; impute fills "
                    "columns of numbers",
                    call.span,
                    help="leave it out with columns = [...]",
                )
            imputed.add(column)
    for column, where in sorted(data.missing.items()):
        if column not in imputed:
            chosen = f'"{data.columns[column]}"' if data.columns else str(column)
            raise error(
                f"{where} is empty",
                train.data.span,
                help=f"fill missing values: preprocess impute(columns = [{chosen}]) (strategy "
                "= mean, median, most_frequent or constant), or remove the row",
            )
    return imputed


def _numeric(data: Dataset, width: int) -> list[int]:
    return [c for c in range(width) if c not in data.words]


class Fit(Protocol):
    """What fitting the preprocessing reads of the training split's raw columns: the rows
    themselves (`Rows`), or statistics gathered in one streamed pass
    (`runtime/streamed.py`). Each answer is about the columns as the steps fitted so far
    leave them."""

    def fills(self, columns: list[int], args: dict[str, Any]) -> np.ndarray | str:
        """`impute`'s values for `columns` (a message where one cannot be imputed)."""
        ...

    def gaps(self, columns: list[int]) -> np.ndarray:
        """Whether each of `columns` has a missing value."""
        ...

    def impute(self, step: Impute) -> None: ...

    def fit(self, name: str, columns: list[int]) -> tuple[np.ndarray, np.ndarray] | str:
        """The scaling step `name` fitted on `columns` (a message where one is constant)."""
        ...

    def scale(self, step: Affine) -> None: ...

    def unique(self, column: int) -> np.ndarray:
        """The distinct values of `column` after imputation (word columns: word indices)."""
        ...


class Rows:
    """The training split's rows as `Fit` reads them."""

    def __init__(self, x: np.ndarray) -> None:
        self.current = self.filled = x.astype(np.float64)

    def fills(self, columns: list[int], args: dict[str, Any]) -> np.ndarray | str:
        fills = PREPROCESS.get("impute").fills
        assert fills is not None
        return fills(self.current[:, columns], args)

    def gaps(self, columns: list[int]) -> np.ndarray:
        return np.asarray(np.isnan(self.current[:, columns]).any(axis=0))

    def impute(self, step: Impute) -> None:
        self.current = self.filled = step.apply(self.current)

    def fit(self, name: str, columns: list[int]) -> tuple[np.ndarray, np.ndarray] | str:
        fit = PREPROCESS.get(name).fit
        assert fit is not None
        return fit(self.current[:, columns])

    def scale(self, step: Affine) -> None:
        self.current = step.apply(self.current)

    def unique(self, column: int) -> np.ndarray:
        return np.unique(self.filled[:, column])


def _impute(call: Call, data: Dataset, width: int, fit: Fit) -> Impute:
    """One `impute` fitted on the training split (NaN where missing)."""
    columns = _pick(call, data, width) or _numeric(data, width)
    fitted = fit.fills(columns, call.args) if columns else np.zeros(0)
    if isinstance(fitted, str):
        raise error(
            f"{call.name}: {_constant_message(fitted, data, columns)}, so it cannot be imputed",
            call.span,
            help="drop the column, or impute it with strategy = constant",
        )
    gaps = fit.gaps(columns) if columns else np.zeros(0, bool)
    indicated = [c for c, gap in zip(columns, gaps, strict=True) if gap]
    indicate = tuple(indicated) if call.args["add_indicator"] else ()
    return Impute(str(call.args["strategy"]), tuple(columns), fitted, indicate)


def _one_hot(call: Call, column: int, data: Dataset, values: np.ndarray) -> OneHot:
    """The categories of one column on the training split, from its distinct `values`."""
    limit = arg_int(call.args, "max_categories")
    name = _name(data, column)
    if column in data.words:
        codes = values.astype(np.int64)
        categories = tuple(data.words[column][c] for c in codes)
        values = np.arange(len(categories), dtype=np.float64)
        words = True
    else:
        fractional = values[values != np.round(values)]
        if len(fractional):
            raise error(
                f"one_hot: column {name} holds {fractional[0]:g}, which is not a category: "
                "one_hot encodes words or whole numbers (codes)",
                call.span,
                help="scale a measured quantity with standardize or min_max instead",
            )
        categories = tuple(f"{v:.0f}" for v in values)
        words = False
    if len(values) > limit:
        raise error(
            f"one_hot: column {name} has {len(values)} categories on the training split, "
            f"more than max_categories = {limit}",
            call.span,
            help="a column with that many values is rarely a category (an id, a number?): "
            "leave it out with features = [...], or raise max_categories",
        )
    return OneHot(column, values, categories, words)


def fit_preprocess(
    train: TrainSpec,
    typed: TypedModel,
    data: Dataset,
    fit: Fit | None = None,
    targets: dict[str, Affine] | None = None,
) -> Preprocessing | None:
    """Fit each declared step on the training split `data` (or, for data too large to hold,
    on `fit`, with `data` a sample of it and `targets` scale_target's fit): imputation
    first, then the scaling steps in order (each sees the output of the steps before it);
    one-hot columns are expanded after scaling, and missing indicators appended last."""
    if not train.preprocess:
        return None
    targets = fit_targets(train, data) if targets is None else targets
    steps = [call for call in train.preprocess if call.name != "scale_target"]
    x = data.x
    if not steps:
        return Preprocessing(x.shape[1] if x.ndim == 2 else 0, data.columns, targets=targets)
    decl = typed.spec.model.inputs[0]
    if x.ndim != 2 or x.dtype.kind != "f":
        raise error(
            f"preprocessing reads float features [N, F], but input '{decl.name}' is "
            f"{decl.dtype}[{', '.join(map(str, decl.dims))}]",
            steps[0].span,
        )
    width = x.shape[1]
    encoded = encoded_columns(train, data)
    fit = Rows(x) if fit is None else fit
    impute = [_impute(c, data, width, fit) for c in train.preprocess if c.name == "impute"]
    for fill in impute:
        fit.impute(fill)
    scale: list[Affine] = []
    for call in train.preprocess:
        if PREPROCESS.get(call.name).fit is None:  # one_hot and impute are fitted apart
            continue
        columns = _pick(call, data, width) or [c for c in range(width) if c not in encoded]
        clash = [c for c in columns if c in encoded]
        if clash:
            raise error(
                f"{call.name}: column {_name(data, clash[0])} is one-hot encoded, so it "
                "cannot be scaled",
                call.span,
                notes=[],
                help="scaling applies to columns of numbers; leave it out with columns = [...]",
            )
        fitted = fit.fit(call.name, columns) if columns else (np.zeros(0), np.ones(0))
        if isinstance(fitted, str):
            raise error(
                f"{call.name}: {_constant_message(fitted, data, columns)}, so it cannot be scaled",
                call.span,
                help="drop the column, or leave it out with columns = [...]",
            )
        shift, factor = np.zeros(width), np.ones(width)
        shift[columns], factor[columns] = fitted
        step = Affine(call.name, shift, factor, tuple(columns))
        fit.scale(step)
        scale.append(step)
    one_hot = [_one_hot(call, c, data, fit.unique(c)) for c, call in sorted(encoded.items())]
    return Preprocessing(width, data.columns, tuple(scale), tuple(one_hot), tuple(impute), targets)


def fitted_columns(train: TrainSpec, data: Dataset) -> tuple[set[int], set[int]]:
    """The columns whose distinct values fitting reads (`Fit.unique`, a median or most
    frequent value), and of those the ones one_hot encodes; `data` a sample of the data."""
    width = data.x.shape[1] if data.x.ndim == 2 else 0
    counted: set[int] = set()
    for call in train.preprocess:
        if call.name == "impute" and call.args["strategy"] in ("median", "most_frequent"):
            counted |= set(_pick(call, data, width) or _numeric(data, width))
    encoded = set(_encoded(train, data))
    return counted | encoded, encoded


def _constant_message(message: str, data: Dataset, columns: list[int]) -> str:
    """`feature column 2 ('age') is constant ...`: the fit names positions among the
    columns it was given; say which feature that is."""
    prefix = "feature column "
    if not message.startswith(prefix):
        return message
    position, rest = message[len(prefix) :].split(" ", 1)
    column = columns[int(position)]
    named = f" ({data.columns[column]})" if data.columns else ""
    return f"{prefix}{column}{named} {rest}"


def check_width(prep: Preprocessing, typed: TypedModel, samples: int, span: Span | None) -> None:
    """With one_hot or missing indicators the model's input is wider than the raw data: the
    declared width must be the encoded one, and the message says how it adds up."""
    decl = typed.spec.model.inputs[0]
    width = len(prep.features())
    if fits_shape(decl.dims, (samples, width), {}):
        return
    parts = [f"{prep.width - len(prep.one_hot)} other columns"] + [
        f"{prep.column_name(s.column)} ({len(s.categories)} categories)" for s in prep.one_hot
    ]
    indicators = len(prep.indicated())
    if indicators:
        parts.append(f"{indicators} missing indicator{'s' if indicators > 1 else ''}")
    after = " and ".join(
        ["one_hot"] * bool(prep.one_hot) + ["impute(add_indicator = true)"] * bool(indicators)
    )
    raise error(
        f"input '{decl.name}' is declared [{', '.join(map(str, decl.dims))}], but after "
        f"{after} the {prep.width} raw columns are {width} features: {' + '.join(parts)}",
        decl.span,
        help=f"declare `input {decl.name}: {decl.dtype}[{decl.dims[0]}, {width}]`",
    )


def transform(data: Dataset, prep: Preprocessing | None) -> Dataset:
    """`data` as the model's graphs read it: words encoded, the fitted steps applied (the
    targets stay in their units: the graphs scale them)."""
    if prep is None or not prep.transforms_columns():
        return data
    dtype = data.x.dtype if data.x.dtype.kind == "f" else np.dtype(np.float32)
    x: np.ndarray | None = None
    for start in range(0, max(1, len(data.x)), APPLY_ROWS):  # rows never widened whole
        rows = slice(start, start + APPLY_ROWS)
        done = prep.apply(prep.encode(data.x[rows], data.words))
        if x is None:
            x = np.empty((len(data.x), *done.shape[1:]), dtype)
        x[rows] = done
    assert x is not None  # one block at least
    return replace(data, x=x, words={})


def expects(
    typed: TypedModel,
    data: Dataset,
    prep: Preprocessing | None,
    labels: list[str] | None,
) -> dict[str, Any] | None:
    """`dnnspec.expects` in model.onnx: for a model reading rows of features, the raw columns
    in order with what is done to each, the features the network itself sees, the class
    names, and where the training CSV held its inputs and target."""
    decl = typed.spec.model.inputs[0]
    if len(typed.spec.model.inputs) != 1 or data.x.ndim != 2 or decl.dtype == "int64":
        return None
    width = data.x.shape[1]
    if prep is None:
        prep = Preprocessing(width, data.columns)
    out: dict[str, Any] = {
        "input": decl.name,
        "width": width,
        "columns": prep.columns_json(),
        "features": prep.features(),
        "classes": labels,
        "unknown_category": "zeros",
    }
    if data.layout is not None:
        layout = data.layout
        out["csv"] = {
            "width": layout.width,
            "header": list(layout.header) if layout.header else None,
            "features": list(layout.features),
            "target": layout.target,
            "target_name": layout.header[layout.target] if layout.header else None,
        }
    return out
