"""The data contract: arrays are checked against the spec's declared input and output.

Mismatches (shape, dtype, non-finite values, labels out of range) are reported at the
spec line that declares what was expected, before any training step runs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

import numpy as np

from dnnspec.check.shapes import TypedModel
from dnnspec.data.datasets import Dataset
from dnnspec.errors import Note, error
from dnnspec.ir import Call, InputDecl
from dnnspec.layers.base import TensorType, token_vocab


def _shape(dims: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def fits_shape(dims: tuple[int | str, ...], shape: tuple[int, ...], sizes: dict[str, int]) -> bool:
    """Whether `shape` matches declared `dims` past the batch: a literal must be equal, a
    name takes the size it first meets (recorded in `sizes`) and must keep it; a derived
    name such as `T*4` matches anything."""
    if len(dims) != len(shape):
        return False
    for dim, size in zip(dims[1:], shape[1:], strict=True):
        if isinstance(dim, int):
            if dim != size:
                return False
        elif dim.isidentifier() and sizes.setdefault(dim, size) != size:
            return False
    return True


def _check_finite(
    array: np.ndarray,
    what: str,
    source: Call,
    hint: str = "remove or impute non-finite values before training",
) -> None:
    """NaN or inf in the data would surface later as a diverged loss; name the cell now."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return
    index = np.argwhere(~np.isfinite(array))[0]
    where = f"sample {index[0]}" + (
        f", position {tuple(index[1:].tolist())}" if len(index) > 1 else ""
    )
    raise error(
        f"the {what} contain {array[tuple(index)]} at {where} (counting from 0)",
        source.span,
        help=hint,
    )


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32(array: np.ndarray, what: str, source: Call) -> np.ndarray:
    """`array` as float32; a value that is finite in float64 but not in float32 (1e300, or
    1e39 in a CSV) is named here rather than surfacing as a diverged loss at step 0."""
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and array.size:
        too_big = np.abs(array) > FLOAT32_MAX
        if too_big.any():
            index = np.argwhere(too_big)[0]
            where = f"sample {index[0]}" + (
                f", position {tuple(index[1:].tolist())}" if len(index) > 1 else ""
            )
            raise error(
                f"the {what} contain {array[tuple(index)]:g} at {where} (counting from 0), "
                f"beyond float32's range (±{FLOAT32_MAX:.4g})",
                source.span,
                help="rescale the data: the graphs compute in float32",
            )
    return np.asarray(array, np.float32)  # float32 data is not copied


def from_text(table: np.ndarray, dtype: str, where: str) -> np.ndarray:
    """Numbers read from text (a CSV) as the declared input dtype, refusing any that would
    change: fractions for an integer input, values beyond the dtype's range."""
    target = np.dtype(dtype)
    finite = np.isfinite(table)
    if target.kind == "f":
        big = finite & (np.abs(table) > float(np.finfo(target).max))
        if big.any():
            cell = np.argwhere(big)[0]
            raise error(
                f"{where} row {cell[0] + 1}: {table[tuple(cell)]:g} is beyond {dtype}'s range"
            )
        return table.astype(target)
    if target.kind == "b":
        if not np.isin(table, (0, 1)).all():
            raise error(f"{where} holds values other than 0 and 1 for a bool input")
        return table.astype(target)
    info = np.iinfo(target)
    if not (finite.all() and (table == np.round(table)).all()):
        raise error(f"{where} holds values that are not whole numbers, for a {dtype} input")
    if table.size and (table.min() < info.min or table.max() > info.max):
        raise error(f"{where} holds values beyond {dtype}'s range")
    return table.astype(target)


def _where(y: np.ndarray, flat: int) -> str:
    """`sample 3` for [N] labels, `sample 3, position (5,)` for sequence labels."""
    index = np.unravel_index(flat, y.shape)
    rest = tuple(int(i) for i in index[1:])
    return f"sample {int(index[0])}" + (f", position {rest}" if rest else "")


def _as_names(source: Call) -> str:
    """The other way out for labels from 1, where the data call can take it."""
    if source.name != "file":
        return ""
    return "; or read them as class names: `labels = names` in the data call"


def _labels(
    y: np.ndarray,
    dims: tuple[int | str, ...],
    sizes: dict[str, int],
    output: str,
    source: Call,
    for_output: str = "",
    named: bool = False,
) -> np.ndarray:
    """Class ids as int64 shaped like the output without its class axis ([N] or [N, T]);
    integral floats (as CSV and many .npz files store them) pass. `named`: the ids come
    from class names (a held-out file may lack some classes, class 0 among them)."""
    classes = int(dims[-1])
    if not fits_shape(dims[:-1], y.shape, sizes) or y.dtype.kind not in "biuf":
        raise error(
            f"{for_output}the loss expects integer class labels of shape "
            f"{_shape(dims[:-1])} for the model's output {output}, got {y.dtype} "
            f"{_shape(('N',) + y.shape[1:]) if y.ndim else '[]'}",
            source.span,
        )
    if y.dtype.kind == "f":
        _check_finite(y, f"labels of {for_output[:-2]}" if for_output else "labels", source)
        fractional = np.flatnonzero(y != np.round(y))
        if len(fractional):
            raise error(
                f"{for_output}label {y.flat[fractional[0]]} of {_where(y, int(fractional[0]))} "
                "is not a whole number",
                source.span,
                help="a classification loss needs class ids 0, 1, 2, ...; "
                "for real-valued targets use loss mse",
            )
    if y.size and y.min() < 0:
        raise error(
            f"{for_output}label {int(y.min())} of {_where(y, int(np.argmin(y)))} is negative",
            source.span,
            help=f"class ids run from 0 to {classes - 1}",
        )
    if not named and y.size and y.min() == 1 and y.max() == classes - 1 and classes > 2:
        # labels 1..C on an output of C + 1: training would learn a class 0 nothing has
        raise error(
            f"{for_output}no sample has class 0: the labels run from 1 to {classes - 1}, and "
            f"the model's output {output} has a class 0 that nothing would ever be labelled",
            source.span,
            help=f"class ids must start at 0: these labels run from 1 to {classes - 1}, so "
            f"subtract 1 from each and make the last dense layer {classes - 1} wide (ids then "
            f"run from 0 to {classes - 2})" + _as_names(source),
        )
    if y.size and y.max() >= classes:
        starts_at_one = y.size and y.min() == 1 and y.max() == classes
        raise error(
            f"{for_output}label {int(y.max())} of {_where(y, int(np.argmax(y)))} is outside "
            f"the model's {classes} classes "
            f"(0..{classes - 1})",
            source.span,
            help="class ids must start at 0: these labels run from 1 to "
            f"{classes}, so subtract 1 from each (ids run from 0 to {classes - 1})"
            + _as_names(source)
            if starts_at_one
            else f"the model outputs {output}; make its last dense layer "
            f"as wide as the number of classes ({int(y.max()) + 1})",
        )
    return y.astype(np.int64)


def _check_ids(x: np.ndarray, name: str, typed: TypedModel, source: Call) -> None:
    """Token ids read by an embedding must index its table (Gather fails mid-run otherwise)."""
    for node in typed.spec.model.nodes:
        vocab = token_vocab(node, name)
        if vocab is None or not x.size:
            continue
        bad = np.argwhere((x < 0) | (x >= vocab))
        if len(bad):
            index = tuple(bad[0].tolist())
            raise error(
                f"input '{name}' holds token id {int(x[index])} at sample {index[0]}, "
                f"position {index[1:]}, outside {node.name}'s vocabulary of {vocab} "
                f"(0..{vocab - 1})",
                source.span,
                notes=[Note(message=f"{node.name} is declared here", span=node.span)],
                help=f"make the embedding's vocab at least {int(x.max()) + 1}"
                if x.min() >= 0
                else "token ids are counted from 0",
            )


def _inputs(
    data: Dataset, typed: TypedModel, source: Call, input_shape: bool, imputed: Collection[int]
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Each input's arrays cast and checked against its declaration, by input name; the
    sizes their named dims took (the targets must agree with them). `input_shape=False`
    leaves the width of the inputs to the caller (one_hot widens them)."""
    declared = typed.spec.model.inputs
    where = Note(message=f"the data comes from {source.name}(...) here", span=source.span)
    given = data.feeds(declared[0].name)
    sizes: dict[str, int] = {}
    checked: dict[str, np.ndarray] = {}
    for decl in declared:
        if decl.name not in given:
            raise error(
                f"the data has no array for input '{decl.name}'",
                decl.span,
                notes=[where],
                help=f"the data holds arrays for {', '.join(given)}",
            )
        what = "inputs" if len(declared) == 1 else f"inputs of '{decl.name}'"
        x = np.asarray(given[decl.name])
        checked[decl.name] = _input(decl, x, typed, source, input_shape, imputed, sizes, what)
    return checked, sizes


def _input(
    decl: InputDecl,
    x: np.ndarray,
    typed: TypedModel,
    source: Call,
    input_shape: bool,
    imputed: Collection[int],
    sizes: dict[str, int],
    what: str,
) -> np.ndarray:
    """One input's array cast and checked against its declaration (`what`: how messages
    name its values)."""
    where = Note(message=f"the data comes from {source.name}(...) here", span=source.span)
    if x.dtype.kind not in "biuf":
        raise error(
            f"input '{decl.name}' expects {decl.dtype} data, but the data has dtype {x.dtype}",
            decl.span,
            notes=[where],
        )
    if decl.dtype.startswith("int") and x.dtype.kind == "f":
        raise error(
            f"input '{decl.name}' is {decl.dtype} but the data is {x.dtype}",
            decl.span,
            notes=[where],
            help="declare the input as float32, or supply integer data",
        )
    got = (("N",) + x.shape[1:]) if x.ndim else ()
    if not fits_shape(decl.dims, x.shape, sizes) and (input_shape or x.ndim != 2):
        raise error(
            f"input '{decl.name}' is declared {_shape(decl.dims)} but the data has "
            f"shape {_shape(got)} ({x.shape[0] if x.ndim else 0} samples)",
            decl.span,
            notes=[where],
            help=f"declare `input {decl.name}: {decl.dtype}{_shape(got)}`" if x.ndim else None,
        )
    gaps = np.isin(np.arange(x.shape[-1]), list(imputed)) & np.isnan(x) if imputed else None
    checked = np.where(gaps, 0, x) if gaps is not None and gaps.any() else x
    if x.ndim == 2:  # rows of features: preprocessing can fill them
        hint = "fill missing values with `preprocess impute`, or remove non-finite values"
        _check_finite(checked, what, source, hint)
    else:
        _check_finite(checked, what, source)
    _check_ids(x, decl.name, typed, source)
    # float inputs of every declared width run in float32 graphs
    if decl.dtype.startswith("float"):
        return _check_float32(x, what, source)
    return x.astype(decl.dtype)


def head_targets(data: Dataset) -> dict[str, np.ndarray]:
    """Each trained output's targets by output name, `""` for a model's one unnamed output
    (as `TrainSpec.trained()` names its head), whichever way the dataset holds them."""
    return dict(data.targets) if data.targets else {"": data.y}


def head_labels(data: Dataset) -> dict[str, tuple[str, ...]]:
    """The class names of each output whose targets were given as words, by output name."""
    if data.targets:
        return dict(data.target_labels)
    return {"": data.labels} if data.labels is not None else {}


def with_heads(
    data: Dataset, targets: dict[str, np.ndarray], labels: dict[str, tuple[str, ...]]
) -> Dataset:
    """`data` holding `targets` and `labels` by output name (see `head_targets`)."""
    if set(targets) == {""}:
        return replace(data, y=targets[""], labels=labels.get(""))
    first = next(iter(targets.values()))
    return replace(data, y=first, labels=None, targets=targets, target_labels=labels)


def conform(
    data: Dataset,
    typed: TypedModel,
    kinds: Mapping[str, str],
    source: Call,
    input_shape: bool = True,
    positives: Mapping[str, Call] | None = None,
    imputed: Collection[int] = (),
) -> tuple[Dataset, dict[str, int | None]]:
    """Cast and check `data` for the model: the inputs against the declared input, and the
    targets of each trained output (`kinds`: output name -> its loss's target kind, `""`
    for a model's one unnamed output) against the output's type and loss, errors naming
    the output. Two words as 0/1 targets become 0 and 1, the positive one 1: the one the
    output's loss names (`positives`: output name -> its loss, whose `positive` argument
    is the word, or "" for the later one in sorted order). Returns the data and each
    output's number of classes (None: it predicts values or 0/1 targets).
    `input_shape=False` leaves the width of the inputs to the caller (one_hot widens them);
    NaN in the feature columns `imputed` lists is a missing value that preprocessing fills."""
    inputs, sizes = _inputs(data, typed, source, input_shape, imputed)
    given, words = head_targets(data), head_labels(data)
    targets: dict[str, np.ndarray] = {}
    labels: dict[str, tuple[str, ...]] = {}
    classes: dict[str, int | None] = {}
    for name, kind in kinds.items():
        named, y = words.get(name), given[name]
        out = typed.outputs[name]
        loss = (positives or {}).get(name)
        if kind == "binary" and (named is not None or (loss and loss.args.get("positive"))):
            y, named = binary_words(y, named, out, loss, source, name)
            labels[name] = named
            named = None
        targets[name], classes[name] = _targets(y, out, kind, named, sizes, source, name)
        if named is not None and classes[name] is not None:
            labels[name] = named
    x = next(iter(inputs.values()))
    checked = replace(data, x=x, inputs=inputs if data.inputs else {})
    return with_heads(checked, targets, labels), classes


def binary_words(
    y: np.ndarray,
    words: tuple[str, ...] | None,
    out: TensorType,
    loss: Call | None,
    source: Call,
    name: str,
) -> tuple[np.ndarray, tuple[str, str]]:
    """Class ids of two words (in sorted order) as 0/1 targets, the positive word 1, and
    the words in that order (negative, positive); one word, three or more, numbers where
    `positive` names a word, or an output of several units is an error."""
    for_output = f"output '{name}': " if name else ""
    positive = str(loss.args.get("positive", "")) if loss is not None else ""
    at = loss.span if loss is not None and positive else source.span
    if words is None:
        raise error(
            f"{for_output}positive = {positive!r} names a word of the targets, but they are "
            "numbers (0/1)",
            at,
            help="drop positive: 1 is the positive class of numeric targets",
        )
    if len(words) != 2:
        shown = ", ".join(words[:5]) + (", ..." if len(words) > 5 else "")
        raise error(
            f"{for_output}the targets hold {len(words)} distinct word"
            f"{'s' if len(words) != 1 else ''} ({shown}); 0/1 targets need two, one per class",
            source.span,
            help="more classes need loss cross_entropy and a last dense layer as wide as "
            f"the number of classes ({len(words)})"
            if len(words) > 2
            else "a training set needs samples of both classes",
        )
    if positive and positive not in words:
        raise error(
            f"{for_output}positive = {positive!r} is not one of the targets' words "
            f"({words[0]}, {words[1]})",
            at,
            help=f"write positive = {words[1]!r} or positive = {words[0]!r}",
        )
    if out.dims[-1] != 1:
        raise error(
            f"{for_output}the targets are one word per sample, but the "
            f"{'output' if name else 'model'} gives {out}: one unit is the probability of "
            f"'{positive or words[1]}'",
            source.span,
            help="end the model with dense(1)",
        )
    ids = np.asarray(y).astype(np.int64)
    if positive == words[0]:
        return (1 - ids).astype(np.float32), (words[1], words[0])
    return ids.astype(np.float32), (words[0], words[1])


def _targets(
    y: np.ndarray,
    out: TensorType,
    target: str,
    labels: tuple[str, ...] | None,
    sizes: dict[str, int],
    source: Call,
    name: str,
) -> tuple[np.ndarray, int | None]:
    """One output's targets cast and checked against its type and loss (`name`: the
    output's, `""` for a model's one unnamed output)."""
    for_output = f"output '{name}': " if name else ""
    shown = f"'{name}' ({out})" if name else str(out)
    what = f"targets of output '{name}'" if name else "targets"
    y = np.asarray(y)
    if target == "class":
        classes = int(out.dims[-1])
        if labels is not None and len(labels) != classes:
            raise error(
                f"{for_output}the data names {len(labels)} classes ({', '.join(labels[:5])}"
                f"{', ...' if len(labels) > 5 else ''}) but the model outputs {out}",
                source.span,
                help=f"make the {'output' if name else 'model'}'s last dense layer "
                f"{len(labels)} wide",
            )
        ids = _labels(y, out.dims, sizes, shown, source, for_output, labels is not None)
        return ids, classes
    if labels is not None:
        raise error(
            f"{for_output}the targets are words ({', '.join(labels[:3])}, ...), but this loss "
            "needs numbers",
            source.span,
            help="class labels need a classification loss, e.g. loss cross_entropy",
        )
    if y.dtype.kind not in "biuf":
        raise error(f"{for_output}targets must be numbers, got dtype {y.dtype}", source.span)
    if y.ndim == 1 and out.dims[1:] == (1,):
        y = y[:, None]
    if not fits_shape(out.dims, y.shape, sizes):
        raise error(
            f"{'output ' + repr(name) + ' is' if name else 'the model outputs'} {out} but the "
            f"targets have shape {_shape(('N',) + y.shape[1:])}",
            source.span,
        )
    _check_finite(y, what, source)
    if target == "binary":
        bad = np.argwhere((y != 0) & (y != 1))
        if len(bad):
            index = tuple(bad[0].tolist())
            raise error(
                f"the {what} hold {y[index]} at sample {index[0]}"
                + (f", unit {index[1:]}" if len(index) > 1 else "")
                + "; this loss needs 0 or 1 per output unit",
                source.span,
                help="binary_cross_entropy reads one 0/1 target per output unit",
            )
    return _check_float32(y, what, source), None
