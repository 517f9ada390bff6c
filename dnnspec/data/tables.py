"""Tables of columns: which columns a training file's `file(target, features, exclude)`
choose (`column`, `feature_columns`; each input's of a model of several, `input_columns`),
where the training file held a model's inputs and target (`Layout`), and which columns of
a prediction file the model reads (`pick_columns`, by what model.onnx records in
`dnnspec.expects`). Shared by every format read by columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnnspec.errors import Span, did_you_mean, error


@dataclass(frozen=True)
class Layout:
    """Where a CSV's inputs and target were: `dnnspec predict` picks the same columns out of
    a file of the training layout (by name with a header, by position without)."""

    width: int
    target: int
    features: tuple[int, ...]
    header: tuple[str, ...] | None = None

    def name(self, column: int) -> str:
        """`species` with a header, else `column 5` (counting from 1, as a spreadsheet)."""
        return self.header[column] if self.header else f"column {column + 1}"


def _drop_target_help(csv: dict[str, Any] | None) -> str:
    if csv is None:
        return "remove the extra column"
    target = csv["target_name"] or f"column {csv['target'] + 1}"
    return f"if the file still holds the target column ('{target}'), pass --drop-target"


def pick_columns(
    width: int,
    header: list[str] | None,
    expected: dict[str, Any] | None,
    raw_width: int,
    drop_target: bool,
    what: str,
) -> list[int]:
    """Which columns of a prediction file the model reads, in its order: by name when the
    file and the run both name them (other columns, such as the target, are ignored), as
    the training CSV held them with `drop_target`, else all of them (`raw_width` < 0: the
    model's width is symbolic)."""
    csv = expected.get("csv") if expected else None
    names = [c["name"] for c in expected["columns"]] if expected else []
    if header is not None and names and all(isinstance(n, str) for n in names):
        missing = [n for n in names if n not in header]
        if not missing:
            return [header.index(n) for n in names]
        if width != raw_width or drop_target:
            raise error(
                f"{what} has no column '{missing[0]}', which the model reads",
                help=did_you_mean(missing[0], header)
                or f"the model reads the columns {', '.join(names)} (in any order; "
                "others are ignored)",
            )
    if drop_target:
        if csv is None:
            raise error(
                f"--drop-target: the model was not trained from a CSV, so it records no "
                f"target column to drop from {what}"
            )
        if width != csv["width"]:
            raise error(
                f"--drop-target: {what} has {width} columns, but the training CSV had "
                f"{csv['width']} (the target in column {csv['target'] + 1})",
                help="pass a file with the training file's columns, or the model's "
                f"{raw_width} input columns without --drop-target",
            )
        return list(csv["features"])
    if width == raw_width or raw_width < 0:  # < 0: a symbolic width takes any
        return list(range(width))
    wider = "one more" if width == raw_width + 1 else "as many as the training CSV"
    targeted = width == raw_width + 1 or (csv is not None and width == csv["width"])
    raise error(
        f"{what} has {width} columns, but the model reads {raw_width}"
        + (f", {wider}: does it still hold the target column?" if targeted else ""),
        help=_drop_target_help(csv) if targeted else None,
    )


def find_column(
    path: Path, header: list[str] | None, chosen: Any, width: int, span: Span | None
) -> int:
    """A column picked by name (needs a header) or by 0-based index (negative from the end)."""
    if isinstance(chosen, int) and not isinstance(chosen, bool):
        if not -width <= chosen < width:
            raise error(
                f"'{path}' has {width} columns; column index {chosen} is outside 0..{width - 1}",
                span,
            )
        return chosen % width
    name = str(chosen)
    if header is None:
        raise error(
            f"'{path}' has no header row, so column '{name}' cannot be found by name",
            span,
            help="pick it by index (target = 0), or give the file a header (header = true)",
        )
    if name not in header:
        raise error(
            f"'{path}' has no column '{name}'",
            span,
            help=did_you_mean(name, header) or f"columns: {', '.join(header)}",
        )
    return header.index(name)


def _name(header: list[str] | None, column: int) -> str:
    """A column's header name, or its 0-based index without a header."""
    return header[column] if header else str(column)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def feature_columns(
    path: Path,
    header: list[str] | None,
    width: int,
    args: dict[str, Any],
    targets: list[int],
    span: Span | None,
) -> list[int]:
    """The input columns: those `features` lists, else every column but the targets and
    those `exclude` lists (an id column, say)."""
    features, exclude = args["features"], args.get("exclude", [])
    if features and exclude:
        raise error(
            "features and exclude both choose the input columns; give one of them",
            span,
            help="features lists the columns to read, exclude those to leave out",
        )
    if features:
        columns = [find_column(path, header, f, width, span) for f in _listed(features)]
        both = [c for c in columns if c in targets]
        if both and len(targets) == 1:
            raise error(f"'{path}': the target column is also listed among the features", span)
        if both:
            raise error(
                f"'{path}': target column '{_name(header, both[0])}' is also listed among the "
                "features",
                span,
            )
        return columns
    dropped = [find_column(path, header, c, width, span) for c in _listed(exclude)]
    for column in dropped:
        if column in targets:
            raise error(
                f"'{path}': exclude lists the target column '{_name(header, column)}', which is "
                "never an input",
                span,
            )
        if dropped.count(column) > 1:
            raise error(f"'{path}': exclude lists column '{_name(header, column)}' twice", span)
    columns = [c for c in range(width) if c not in targets and c not in dropped]
    if not columns:
        raise error(f"'{path}': exclude leaves no input columns", span)
    return columns


def input_columns(
    path: Path,
    header: list[str] | None,
    width: int,
    args: dict[str, Any],
    targets: list[int],
    inputs: tuple[str, ...],
    span: Span | None,
) -> dict[str, list[int]]:
    """The columns of each model input: of a model's one input, `feature_columns`; of
    several, `features` holds one list of columns per input, in the model's order."""
    if len(inputs) == 1:
        return {inputs[0]: feature_columns(path, header, width, args, targets, span)}
    features = args["features"]
    nested = isinstance(features, list) and all(isinstance(g, list) for g in features)
    shown = ", ".join(f"[{name} columns]" for name in inputs)
    if not features or not nested or len(features) != len(inputs):
        given = (
            "none given"
            if not features
            else f"{len(features)} lists given"
            if nested
            else "one list of columns given"
        )
        raise error(
            f"'{path}': the model has {len(inputs)} inputs ({', '.join(inputs)}), so features "
            f"lists the columns of each, one list per input ({given})",
            span,
            help=f"features = [{shown}], in the order the model declares its inputs",
        )
    if args.get("exclude"):
        raise error(
            "exclude chooses the columns of a model's one input; with several inputs, "
            "features lists each one's columns",
            span,
            help="drop exclude = [...]",
        )
    found: dict[str, list[int]] = {}
    for name, group in zip(inputs, features, strict=True):
        if not group:
            raise error(f"'{path}': features lists no columns for input '{name}'", span)
        found[name] = feature_columns(path, header, width, {"features": group}, targets, span)
    return found


@dataclass(frozen=True)
class Encoding:
    """How a prediction file's cells become the model's raw input, by input column, as
    model.onnx records (`dnnspec.expects`): the code of each word of a one_hot column
    encoded by index (its position in the categories; an unseen word is -1, all zeros),
    and the columns whose missing values model.onnx imputes (read as NaN)."""

    categories: dict[int, dict[str, float]]
    imputed: frozenset[int]


def encoding(expected: dict[str, Any] | None) -> Encoding:
    categories: dict[int, dict[str, float]] = {}
    imputed: set[int] = set()
    for j, column in enumerate(expected["columns"] if expected else []):
        for step in column["steps"]:
            if step.get("step") == "one_hot" and step.get("encoded") == "index":
                categories[j] = {str(w): float(i) for i, w in enumerate(step["categories"])}
            if step.get("step") == "impute":
                imputed.add(j)
    return Encoding(categories, frozenset(imputed))
