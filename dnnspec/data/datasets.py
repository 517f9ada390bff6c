"""The dataset registry: built-in datasets and the user's data files, each registered with
the arguments a spec may pass.

A loader returns one `Dataset` (inputs and targets as found); `runtime.data.conform`
checks them against the model and the loss, and `split` divides them once, seeded, into
training and validation parts. A data file is read by its format (`formats/`), the same
readers `dnnspec predict` uses (`read_batch`).

Over 600 lines because every dataset a spec can name is registered here, each entry beside
its loader, so the registry is read in one place; the readers of folder datasets live in
their own modules (`images.py`, `audio.py`, `texts.py`) and each file format in
`formats/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.audio import read_folder as read_audio_folder
from dnnspec.data.dataset import Dataset, named_inputs, named_targets
from dnnspec.data.files import locate_file
from dnnspec.data.folders import LEAST
from dnnspec.data.formats import (
    FORMATS,
    UNNAMED,
    Arrays,
    Batch,
    Feed,
    Limits,
    Wanted,
    format_for,
    suffixes,
)
from dnnspec.data.images import list_images
from dnnspec.data.split import split, split_indices
from dnnspec.errors import Span, error
from dnnspec.files import GiB, MiB
from dnnspec.metadata import AudioMeta, ModelMetadata
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

__all__ = [
    "DATASETS",
    "MAX_CSV_BYTES",
    "MAX_DATA_BYTES",
    "VALIDATION",
    "Dataset",
    "DatasetDef",
    "TrainingRows",
    "locate_file",
    "read_batch",
    "read_inputs",
    "split",
    "split_indices",
]

VALIDATION = ArgSpec(
    name="validation",
    type="float",
    default=0.2,
    min=0.0,
    max=0.9,
    doc="fraction held out for validation",
)


Loader = Callable[[dict[str, Any], int, Span | None], Dataset]
TargetsLoader = Callable[[dict[str, Any], tuple[str, ...], int, Span | None], Dataset]
"""Loads the targets of named outputs (in `Dataset.targets`, by output name)."""
InputsLoader = Callable[
    [dict[str, Any], tuple[str, ...], tuple[str, ...], int, Span | None], Dataset
]
"""Loads one array per input of a model of several (in `Dataset.inputs`, by input name),
given the input names and the named outputs' (none: the one target in `Dataset.y`)."""
HeldOutLoader = Callable[[dict[str, Any], tuple[str, ...], Dataset, Span | None], Dataset]
"""Reads held-out data (`test "dir/"`, `dnnspec eval RUN dir/`) as the training data was
read: given the training call's arguments with the held-out path, the model's inputs and
the training data (whose tokenizer a text reader reuses)."""
TrainingRows = Callable[[np.ndarray], np.ndarray]
"""Given the class ids of every sample as loaded, the rows that train (data preparation's
split, as indices into the data as loaded)."""
RowsLoader = Callable[
    [dict[str, Any], tuple[str, ...], tuple[str, ...], TrainingRows, Span | None], Dataset
]
"""Loads the data with what it learns from its samples (a text tokenizer) learned from
exactly the training rows, which it asks for once it has read the class ids (so it reads
and learns once); for the model's inputs and named outputs."""


def _all_args(args: dict[str, Any]) -> dict[str, Any]:
    return args


@dataclass(frozen=True)
class DatasetDef:
    signature: Signature
    load: Loader
    doc: str = ""
    shown: Callable[[dict[str, Any]], dict[str, Any]] = _all_args
    """The arguments that apply to this call (a CSV file has no array names), for reports."""
    paths: tuple[str, ...] = ()
    """Arguments that name files: spec.lock.json records them as absolute paths."""
    targets: TargetsLoader | None = None
    """How a model with named outputs gets one target array each (None: it cannot)."""
    recent: tuple[str, ...] = ()
    """Arguments added since runs were first written: left out of the spec hash at their
    default, so a spec written before them keeps its hash (and its runs resume)."""
    compile_reads: str = ""
    """Why even compiling reads this data, as its note says (model.onnx takes images as
    decoded; a text model's tokenizer is learned from the texts); empty: it need not."""
    inputs: InputsLoader | None = None
    """How a model with several inputs gets one array each (None: it cannot)."""
    held_out: HeldOutLoader | None = None
    """How a held-out path is read as the training data was (None: as a data `file`)."""
    refit: RowsLoader | None = None
    """How data preparation loads the data with what it learns learned from the run's
    training rows alone (None: it learns nothing from its samples)."""
    declares: Callable[[dict[str, Any], ModelMetadata], None] | None = None
    """What the call's arguments alone tell model.onnx's metadata (an audio folder's rate
    and length), recorded by compiling without the data as training records it."""


DATASETS: Registry[DatasetDef] = Registry("dataset")


def _digits(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    with (
        resources.files("dnnspec").joinpath("data/digits.npz").open("rb") as f,
        np.load(f, allow_pickle=False) as npz,
    ):
        data = Dataset((npz["x"].astype(np.float32) / 16.0), npz["y"].astype(np.int64))
    keep = list(args.get("keep") or [])
    if not keep:
        return data
    if len(set(keep)) != len(keep) or not set(keep) <= set(range(10)):
        raise error(f"digits: keep lists distinct digits 0 to 9, got {keep}", span)
    rows = np.flatnonzero(np.isin(data.y, keep))
    relabel = np.zeros(10, np.int64)
    relabel[keep] = np.arange(len(keep))
    return Dataset(data.x[rows], relabel[data.y[rows]], labels=tuple(map(str, keep)))


def _digits_targets(
    args: dict[str, Any], names: tuple[str, ...], seed: int, span: Span | None
) -> Dataset:
    """The digits with two targets: `digit`, the class, and `ink`, the image's mean pixel
    value standardised over the dataset (mean 0, std 1): an auxiliary regression beside
    the classification."""
    data = _digits(args, seed, span)
    ink = data.x.astype(np.float64).mean(axis=1, keepdims=True)
    ink = (ink - ink.mean()) / ink.std()
    offered = {"digit": data.y, "ink": ink.astype(np.float32)}
    targets = named_targets(offered, names, "digits", span)
    return Dataset(data.x, targets[names[0]], targets=targets)


def _digits_inputs(
    args: dict[str, Any],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    seed: int,
    span: Span | None,
) -> Dataset:
    """The digits as two inputs: `top` and `bottom`, the upper and lower four rows of each
    image (32 pixels each), with the class or the named targets."""
    data = _digits_targets(args, outputs, seed, span) if outputs else _digits(args, seed, span)
    offered = {"top": data.x[:, :32], "bottom": data.x[:, 32:]}
    found = named_inputs(offered, inputs, "digits", span)
    return replace(data, x=found[inputs[0]], inputs=found)


def _spirals(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    rng = np.random.default_rng(seed)
    n, k, noise = args["samples"], args["classes"], args["noise"]
    labels = np.arange(n) % k
    t = rng.uniform(0.0, 1.0, n)
    radius = 0.15 + 0.85 * t
    angle = 3.5 * np.pi * t + 2 * np.pi * labels / k
    pts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    pts += rng.normal(0.0, noise * 0.1, pts.shape)
    return Dataset((pts * 2.0).astype(np.float32), labels.astype(np.int64))


def _regression(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    rng = np.random.default_rng(seed)
    n, d = args["samples"], args["features"]
    x = rng.uniform(-1.5, 1.5, (n, d))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.3 * x[:, 0] * x[:, 2]
    y = y + rng.normal(0.0, args["noise"], n)
    return Dataset(x.astype(np.float32), y[:, None].astype(np.float32))


def _sequences(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    """Token sequences [N, length] whose label needs memory of earlier steps."""
    rng = np.random.default_rng(seed)
    n, length, symbols, task = args["samples"], args["length"], args["symbols"], args["task"]
    x = rng.integers(0, symbols, (n, length))
    if task == "parity":
        return Dataset(x.astype(np.int64), ((x == 1).sum(axis=1) % 2).astype(np.int64))
    if task == "recall":
        return Dataset(x.astype(np.int64), x[:, 0].astype(np.int64))
    # query: the last token is a symbol; label 1 when it occurs among the earlier ones
    labels = rng.integers(0, 2, n)
    for row, label in zip(x, labels, strict=True):
        if label:
            row[-1] = row[rng.integers(0, length - 1)]
        else:
            row[-1] = rng.integers(0, symbols)
            seen = row[:-1] == row[-1]
            others = (row[-1] + rng.integers(1, symbols, int(seen.sum()))) % symbols
            row[:-1][seen] = others
    return Dataset(x.astype(np.int64), labels.astype(np.int64))


MAX_DATA_BYTES = 2 * GiB
"""Largest array data one .npz/.npy file may declare (all its arrays together)."""

MAX_CSV_BYTES = 256 * MiB
"""Largest CSV file read (its cells become Python strings before they become numbers)."""


def _limits() -> Limits:
    """The limits above as the readers take them (read at each call, so they can be lowered)."""
    return Limits(MAX_DATA_BYTES, MAX_CSV_BYTES)


def _file_args(args: dict[str, Any]) -> dict[str, Any]:
    """A call shows only its format's own arguments: a CSV's no array names, an .npz's no
    column choices (a file no format reads shows those of the first)."""
    form = format_for(Path(str(args.get("path", ""))), training=True)
    own = (form or FORMATS.get("npz")).arguments
    drop = {a for name in FORMATS for a in FORMATS.get(name).arguments if a not in own}
    return {k: v for k, v in args.items() if k not in drop}


def _read_file(args: dict[str, Any], wanted: Wanted, span: Span | None) -> Arrays:
    """The arrays of the data file `args["path"]`, read by its format."""
    path = locate_file(args["path"], span)
    form = format_for(path, training=True)
    if form is None or form.read is None:
        if path.is_dir():
            folders = " or ".join(
                s for n in FORMATS if FORMATS.get(n).folders for s in FORMATS.get(n).suffixes
            )
            raise error(
                f"cannot read '{path}': it is a directory holding no {folders} files",
                span,
                help=f"name a {suffixes(training=True)} file, or a folder of {folders} files",
            )
        raise error(f"cannot read '{path}': expected a {suffixes(training=True)} file", span)
    return form.read(path, args, wanted, _limits(), span)


def _file(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    """A file's inputs and its one target (a model without named outputs)."""
    data = file_dataset(_read_file(args, Wanted(), span), Wanted())
    return _as_names(data, span) if args["labels"] == "names" else data


def _as_names(data: Dataset, span: Span | None) -> Dataset:
    """`labels = names`: each distinct target value is a class name, ids in sorted order
    (numerically for numbers), so labels 1..C become ids 0..C-1 named "1".."C"."""
    if data.labels is not None:
        return data
    y = np.asarray(data.y)
    if y.ndim != 1 or y.dtype.kind not in "biuf":
        raise error(
            f"labels = names reads one number per sample as its class name, but the targets "
            f"have shape {list(y.shape)}",
            span,
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise error("labels = names: the targets hold NaN or infinity", span)
    values, ids = np.unique(y, return_inverse=True)
    names = tuple(f"{v:g}" for v in values.tolist())
    return replace(data, y=ids.astype(np.int64), labels=names)


def _file_targets(
    args: dict[str, Any], names: tuple[str, ...], seed: int, span: Span | None
) -> Dataset:
    """A file's targets for named outputs: the .npz arrays, or the CSV columns (by header
    name), named like the outputs; the inputs are array `x`, or the other columns."""
    wanted = file_wanted(args, (UNNAMED,), names, span)
    return file_dataset(_read_file(args, wanted, span), wanted)


def file_wanted(
    args: dict[str, Any], inputs: tuple[str, ...], outputs: tuple[str, ...], span: Span | None
) -> Wanted:
    """What a `file(...)` read returns for a model's `inputs` (one: `(UNNAMED,)`) and named
    `outputs` (none: `()`), the arguments that choose one array or target refused where
    the model reads several."""
    if len(inputs) > 1 and args["x"] != "x":
        raise error(
            f"'x' names the array of a model's one input; the model's inputs "
            f"{', '.join(inputs)} read the arrays named after them",
            span,
            help=f"drop x = ..., and name the arrays {', '.join(inputs)}",
        )
    if outputs:
        _no_single_target(args, outputs, span)
    return Wanted(inputs if len(inputs) > 1 else (UNNAMED,), outputs or (UNNAMED,))


def file_dataset(read: Arrays, wanted: Wanted) -> Dataset:
    """A file's arrays as a `Dataset`: a model's one input as `x` with its columns, words
    and missing cells; several inputs by name; named outputs' targets by name."""
    first = read.targets[wanted.outputs[0]]
    heads: dict[str, Any] = (
        {"targets": read.targets, "target_labels": read.labels}
        if wanted.named
        else {"labels": read.labels.get(UNNAMED)}
    )
    if wanted.inputs == (UNNAMED,):
        return Dataset(
            read.inputs[UNNAMED],
            first,
            columns=read.columns.get(UNNAMED),
            words=read.words.get(UNNAMED, {}),
            layout=None if wanted.named else read.layout,
            missing=read.missing.get(UNNAMED, {}),
            **heads,
        )
    found = read.inputs
    return Dataset(
        found[wanted.inputs[0]], first, inputs=found, input_columns=read.columns, **heads
    )


def numeric_inputs(read: Arrays, wanted: Wanted, span: Span | None) -> None:
    """A model of several inputs reads numbers only: a column of words or with a missing
    cell is refused, naming it."""
    if wanted.inputs == (UNNAMED,):
        return
    for name in wanted.inputs:
        names = read.columns.get(name, ())
        for column, words in read.words.get(name, {}).items():
            shown = ", ".join(words[:4]) + (", ..." if len(words) > 4 else "")
            raise error(
                f"column '{names[column] if names else column}' of input '{name}' holds "
                f"words ({shown}), but a model of several inputs reads numbers only",
                span,
                help="one_hot encodes a model's one input; encode the column as numbers, or "
                "leave it out of features",
            )
        for where in read.missing.get(name, {}).values():
            raise error(
                f"{where} is empty",
                span,
                help="impute fills a model's one input; fill missing values before "
                "training a model of several inputs, or remove the row",
            )


def _no_single_target(args: dict[str, Any], names: tuple[str, ...], span: Span | None) -> None:
    """Refuse the arguments that choose the one target when the outputs are named."""
    defaults = (("target", -1), ("y", "y"), ("labels", "ids"))
    chosen_target = [k for k, default in defaults if args[k] != default]
    if chosen_target:
        raise error(
            f"'{chosen_target[0]}' applies to the one target of a model without named outputs; "
            f"the targets of outputs {', '.join(names)} are the arrays or columns named "
            "after them",
            span,
            help=f"drop {chosen_target[0]} = ..., and name the arrays or columns "
            f"{', '.join(names)}",
        )


def _file_inputs(
    args: dict[str, Any],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    seed: int,
    span: Span | None,
) -> Dataset:
    """A file's arrays for a model of several inputs: an .npz array named after each input,
    or the columns `features` lists for each; the targets as for one input."""
    wanted = file_wanted(args, inputs, outputs, span)
    read = _read_file(args, wanted, span)
    numeric_inputs(read, wanted, span)
    data = file_dataset(read, wanted)
    return _as_names(data, span) if not outputs and args["labels"] == "names" else data


def _image_folder(
    args: dict[str, Any], seed: int, span: Span | None, least: int = LEAST
) -> Dataset:
    """One sub-folder of images per class (Keras' `image_dataset_from_directory`): the
    pixels as float32 [N, channels, height, width] x 1/255, class ids in folder-name order
    (at least `least` classes: held-out data may hold one), held in memory (data
    preparation streams a training set over its budget, `runtime/streamed_images.py`)."""
    listed = list_images(args, span, least)
    listed.refuse_over(MAX_DATA_BYTES, span)
    return listed.dataset(np.arange(len(listed)), span)


def _audio_meta(args: dict[str, Any]) -> AudioMeta:
    """The waveforms an `audio_folder` call gives: its rate, and seconds x rate samples."""
    rate = args["sample_rate"]
    return AudioMeta(input="", sample_rate=rate, samples=max(1, round(rate * args["seconds"])))


def _audio_folder(
    args: dict[str, Any], seed: int, span: Span | None, least: int = LEAST
) -> Dataset:
    """One sub-folder of WAV clips per class (Keras' `audio_dataset_from_directory`): the
    waveforms as float32 [N, sample_rate x seconds], class ids in folder-name order (at
    least `least` classes: held-out data may hold one)."""
    audio = _audio_meta(args)
    root = locate_file(args["path"], span)
    waves, labels, classes = read_audio_folder(
        root, audio.sample_rate, audio.samples, MAX_DATA_BYTES, span, least
    )
    return Dataset(waves, labels, labels=classes, audio=audio)


def _audio_declares(args: dict[str, Any], meta: ModelMetadata) -> None:
    """model.onnx takes the waveforms at the call's rate and length, data read or not."""
    if meta.inputs:
        meta.audio = _audio_meta(args).model_copy(update={"input": meta.inputs[0].name})


def read_batch(path: Path, feed: Feed) -> Batch:
    """Prediction inputs from a file, read by its format (see `Feed`)."""
    form = format_for(path, training=False)
    if form is None:
        raise error(f"cannot read '{path}': expected {suffixes(training=False)}")
    return form.feed(path, feed, _limits())


def read_inputs(path: Path) -> np.ndarray:
    """The inputs of a one-input model as the file holds them, without the model: an .npy,
    an .npz (array `x`, or its only array) or a CSV's numbers."""
    return read_batch(path, Feed({UNNAMED: None})).arrays[UNNAMED]


DATASETS.add(
    "digits",
    DatasetDef(
        Signature(
            args=(
                VALIDATION,
                ArgSpec(
                    name="keep",
                    type="ints",
                    default=[],
                    doc="only these digits, as classes 0, 1, ... in this order (none: all)",
                ),
            )
        ),
        _digits,
        "scikit-learn's 1,797 8x8 handwritten digits, 10 classes; pixels (0..16) are "
        "divided by 16, so inputs lie in [0, 1]; for named outputs, targets `digit` (the "
        "class) and `ink` (the image's mean pixel, standardised over the dataset, [N, 1]); "
        "for a model of two inputs, `top` and `bottom`: the upper and lower four rows of each "
        "image, [N, 32] each",
        targets=_digits_targets,
        inputs=_digits_inputs,
        recent=("keep",),
    ),
)
DATASETS.add(
    "spirals",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="samples", type="int", default=2000, min=10),
                ArgSpec(name="classes", type="int", default=2, min=2),
                ArgSpec(name="noise", type="float", default=0.1, min=0.0),
                VALIDATION,
            )
        ),
        _spirals,
        "interleaved 2-D spirals, one arm per class",
    ),
)
DATASETS.add(
    "regression",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="samples", type="int", default=2000, min=10),
                ArgSpec(name="features", type="int", default=3, min=3),
                ArgSpec(name="noise", type="float", default=0.05, min=0.0),
                VALIDATION,
            )
        ),
        _regression,
        "y = sin(2 x0) + 0.5 x1^2 - 0.3 x0 x2 + noise",
    ),
)
DATASETS.add(
    "sequences",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(
                    name="task",
                    type="str",
                    default="query",
                    choices=("query", "recall", "parity"),
                    doc="query: did the last token occur earlier (2 classes); recall: the "
                    "first token (symbols classes); parity: is the count of 1s odd (2 classes)",
                ),
                ArgSpec(name="samples", type="int", default=2000, min=10),
                ArgSpec(name="length", type="int", default=12, min=2, doc="tokens per sample"),
                ArgSpec(name="symbols", type="int", default=8, min=2, doc="token ids 0..symbols-1"),
                VALIDATION,
            )
        ),
        _sequences,
        "int64 token sequences [N, length] whose label needs memory (seeded)",
    ),
)
DATASETS.add(
    "image_folder",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="path", type="str", doc="a folder of one sub-folder per class"),
                ArgSpec(name="size", type="ints", doc="[height, width] every image is resized to"),
                ArgSpec(
                    name="channels",
                    type="int",
                    default=3,
                    doc="1 (grey) or 3 (RGB): the channels every image is converted to",
                ),
                VALIDATION,
                ArgSpec(
                    name="image_column",
                    type="str",
                    default="path",
                    doc="a CSV listing: the column of image paths (relative to the CSV)",
                ),
                ArgSpec(
                    name="label_column",
                    type="str",
                    default="label",
                    doc="a CSV listing: the column of class names",
                ),
                ArgSpec(
                    name="memory",
                    type="str",
                    default="auto",
                    doc='the memory the decoded images may take, e.g. "2 GiB" (auto: a '
                    "quarter of RAM); a larger set, or one over 2 GiB, is decoded chunk by "
                    "chunk as training reads it",
                ),
            )
        ),
        _image_folder,
        "PNG and JPEG images (Pillow: the images extra), one sub-folder per class (class "
        "names: the folder names, sorted), or listed in a CSV of image paths and class "
        "names; decoded, converted and resized bilinearly, as "
        "float32 [N, channels, height, width] of pixel / 255, held in memory up to memory "
        "and 2 GiB, else decoded chunk by chunk as training reads them; model.onnx takes "
        "uint8 [N, height, width, channels]",
        paths=("path",),
        recent=("memory",),
        compile_reads="model.onnx takes the data's images as decoded (uint8 pixels, channels last)",
        held_out=lambda args, inputs, like, span: _image_folder(args, 0, span, 1),
    ),
)
DATASETS.add(
    "audio_folder",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="path", type="str", doc="a folder of one sub-folder per class"),
                ArgSpec(
                    name="sample_rate",
                    type="int",
                    default=16000,
                    min=1,
                    doc="Hz; a clip at another rate is resampled to it (soxr)",
                ),
                ArgSpec(
                    name="seconds",
                    type="float",
                    default=1.0,
                    min=0.0,
                    min_exclusive=True,
                    doc="every clip is cut or padded with silence to this length",
                ),
                VALIDATION,
            )
        ),
        _audio_folder,
        "WAV clips (soundfile: the audio extra), one sub-folder per class (class names: the "
        "folder names, sorted); mono (channels averaged), cut or zero-padded to seconds, as "
        "float32 [N, sample_rate x seconds] in [-1, 1], held in memory (at most 2 GiB)",
        paths=("path",),
        held_out=lambda args, inputs, like, span: _audio_folder(args, 0, span, 1),
        declares=_audio_declares,
    ),
)
DATASETS.add(
    "file",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="path", type="str"),
                VALIDATION,
                ArgSpec(
                    name="x", type="str", default="x", doc="array name of the inputs in an .npz"
                ),
                ArgSpec(
                    name="y", type="str", default="y", doc="array name of the targets in an .npz"
                ),
                ArgSpec(
                    name="target",
                    type="any",
                    default=-1,
                    doc="CSV, Parquet: the target column, by name or 0-based index (-1: the last)",
                ),
                ArgSpec(
                    name="features",
                    type="any",
                    default=[],
                    doc="CSV, Parquet: the input columns by name or index (default: all but the "
                    "target); for a model of several inputs, one list per input in the model's "
                    "order",
                ),
                ArgSpec(
                    name="exclude",
                    type="any",
                    default=[],
                    doc="CSV, Parquet: columns left out of the inputs, by name or index (an id "
                    "column)",
                ),
                ArgSpec(
                    name="header",
                    type="any",
                    default="auto",
                    doc="CSV: true or false, whether the first row names the columns "
                    "(auto: when it holds a word)",
                ),
                ArgSpec(
                    name="labels",
                    type="str",
                    default="ids",
                    choices=("ids", "names"),
                    doc="class targets: ids (numbers are class ids from 0) or names (each "
                    "distinct value names a class, ids in sorted order; words always do)",
                ),
                ArgSpec(
                    name="memory",
                    type="str",
                    default="auto",
                    doc='Parquet: the memory the data may take, e.g. "2 GiB" (auto: a '
                    "quarter of RAM); a larger table is streamed, row group by row group",
                ),
            )
        ),
        _file,
        "a user .npz (arrays x, y), .csv or .parquet (a file, or a folder of them; target "
        "column by name or index, default the last; string labels become class ids); for "
        "named outputs, one .npz array or column named after each output; for a model of "
        "several inputs, one .npz array named after each input, or one list of columns per "
        "input in `features`",
        shown=_file_args,
        paths=("path",),
        targets=_file_targets,
        inputs=_file_inputs,
        recent=("exclude", "memory"),
    ),
)
