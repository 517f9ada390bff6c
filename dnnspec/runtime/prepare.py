"""Data preparation: a spec's data loaded, checked against the model, split, and its
preprocessing fitted on the training part; then the graphs assembled for it.

`prepare` is what training, evaluation and inspection start from; `program_from_data`
is the `with_data` that compiling (`assemble/compile.py`) calls when the graphs depend on
the data. What the data tells the deployable model (class names, vocabulary, fitted
preprocessing, the columns it expects) is written into the program's metadata in one
place, `record_data`.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnnspec.assemble.compile import Compiled, compile_spec, train_section
from dnnspec.assemble.steps import Program, build_train_step
from dnnspec.check.shapes import TypedModel, check_spec
from dnnspec.data.dataset import digest_arrays
from dnnspec.data.datasets import DATASETS, Dataset, TrainingRows, locate_file, split_indices
from dnnspec.data.stream import Chunked, Streamed
from dnnspec.errors import Span, error
from dnnspec.ir import Call, Spec, TrainSpec
from dnnspec.metadata import Expects, PreprocessStep
from dnnspec.runtime.columns import (
    check_width,
    encoded_columns,
    expects,
    fit_preprocess,
    imputed_columns,
    transform,
)
from dnnspec.runtime.data import conform, head_labels, head_targets, with_heads
from dnnspec.runtime.start import start_values
from dnnspec.runtime.streamed import StreamedData, stream_data, stream_held_out
from dnnspec.runtime.streamed_images import stream_images
from dnnspec.schema import arg_float, arg_int
from dnnspec.training.losses import LOSSES
from dnnspec.training.preprocess import Preprocessing
from dnnspec.training.schedules import Timing


@dataclass
class Prepared:
    """A spec made ready to train: typed model, split data and the assembled graphs."""

    spec: Spec
    train: TrainSpec
    typed: TypedModel
    train_data: Dataset
    val_data: Dataset
    program: Program
    train_index: np.ndarray
    """Which samples of the loaded data train and which validate (split.npz in a run)."""
    val_index: np.ndarray
    test_data: Dataset | Chunked | None = None
    """Evaluated once at the end with model.onnx's weights, never for early stopping (a
    Parquet table over its memory budget chunk by chunk)."""
    streamed: StreamedData | None = None
    """Data over its memory budget: training reads it streamed (`train_data` is a sample)."""

    @property
    def training(self) -> Dataset | Streamed:
        """What the epochs train on: the training data, or the stream of it."""
        return self.train_data if self.streamed is None else self.streamed.stream

    @functools.cached_property
    def data_sha256(self) -> str:
        """A digest of the data as trained on: a resumed run must see the same samples."""
        if self.streamed is not None:
            return self.streamed.digest
        h = hashlib.sha256()
        parts = (self.train_data, self.val_data)
        arrays = (a for d in parts for a in (d.x, d.y, *d.targets.values(), *d.inputs.values()))
        digest_arrays(h, arrays)
        return h.hexdigest()


@dataclass
class Parts:
    """A spec's data as the graphs read it: split, with the preprocessing fitted on the
    training part and applied to every part."""

    data: Dataset
    """All the samples as loaded and checked, before the split and preprocessing."""
    classes: int | None
    train_data: Dataset
    val_data: Dataset
    test_data: Dataset | Chunked | None
    kept: np.ndarray
    held: np.ndarray
    preprocessing: Preprocessing | None
    """The preprocessing fitted on the training part (already applied to every part)."""
    expected: dict[str, Any] | None
    """`dnnspec.expects` for model.onnx (see runtime/columns.py)."""
    streamed: StreamedData | None = None

    @property
    def training(self) -> Dataset | Streamed:
        return self.train_data if self.streamed is None else self.streamed.stream


def load_parts(train: TrainSpec, typed: TypedModel) -> Parts:
    """Load, check and split the data, and fit the preprocessing on the training part
    (data over its memory budget: checked and split as it streams past, `runtime/streamed.py`)."""

    def checked(loaded: Dataset) -> tuple[Dataset, int | None]:
        return _with_classes(_conform(train, typed, loaded, train.data))

    streamed = stream_data(train, typed, checked) or stream_images(
        train, _input_names(typed), checked, functools.partial(_split_labels, train)
    )
    if streamed is not None:
        loaded, sample, fitted = streamed.loaded, streamed.sample, streamed.preprocessing
        found = expects(typed, loaded, fitted, list(loaded.labels) if loaded.labels else None)
        test: Dataset | Chunked | None = streamed.test_data
        if isinstance(train.test, str):
            test = _test_file(train, train.test, typed, loaded, lambda d: transform(d, fitted))
        return Parts(
            loaded, streamed.classes, sample, streamed.val_data, test, streamed.kept,
            streamed.held, fitted, found, streamed,
        )  # fmt: skip
    splits: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []

    def training_rows(labels: np.ndarray) -> np.ndarray:
        """The split of data that learns from its training rows (a tokenizer), made from
        its class ids before it learns."""
        splits.append(_split_labels(train, labels))
        return splits[0][1]

    data, classes = load_data(train, typed, train.data, training_rows)
    test_index, kept, held = splits[0] if splits else _split(train, data)
    train_data, val_data = data.take(kept), data.take(held)
    if len(train_data) == 0:
        raise error("no training samples left after the validation split", train.data.span)
    preprocessing = fit_preprocess(train, typed, train_data)
    if preprocessing is not None and preprocessing.widens():
        check_width(preprocessing, typed, len(train_data), train.data.span)
    expected = expects(typed, train_data, preprocessing, list(data.labels) if data.labels else None)

    def ready(part: Dataset) -> Dataset:
        """Test data as the graphs read it (a table with other columns refused)."""
        if preprocessing is None:
            return part
        if preprocessing.widens() and part.x.shape[1] != preprocessing.width:
            raise error(
                f"the test data has {part.x.shape[1]} feature columns, the training "
                f"data {preprocessing.width}",
                train.span,
            )
        return transform(part, preprocessing)

    test_data: Dataset | Chunked | None = None
    if isinstance(train.test, str):
        test_data = _test_file(train, train.test, typed, data, ready)
    elif test_index is not None:
        test_data = ready(data.take(test_index))
    train_data, val_data = transform(train_data, preprocessing), transform(val_data, preprocessing)
    return Parts(
        data, classes, train_data, val_data, test_data, kept, held, preprocessing, expected
    )


def _test_file(
    train: TrainSpec,
    path: str,
    typed: TypedModel,
    like: Dataset,
    ready: Callable[[Dataset], Dataset],
) -> Dataset | Chunked:
    """`test "file"`, read as the training data `like` and made ready for the graphs by
    `ready`; a table over its memory budget is checked now and evaluated chunk by chunk."""
    test = read_held_out(train, path, typed, head_labels(like), ready, like=like)
    if isinstance(test, Chunked):
        test.check()
    return test


def _split(train: TrainSpec, data: Dataset) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The rows of `data` held out for testing (`test 0.2`; None without), then those that
    train and validate: seeded, each class in proportion for a class target, unless the
    `split` setting says otherwise."""
    args = train.data.args
    validation = arg_float(args, "validation") if "validation" in args else 0.0
    first = LOSSES.get(train.trained()[0].loss.name)
    split_seed, stratify = train.seed, first.target == "class"
    if train.split is not None:
        chosen = arg_int(train.split.args, "seed")
        split_seed = train.seed if chosen < 0 else chosen
        stratify = stratify and bool(train.split.args["stratify"])
    rest = np.arange(len(data))
    test_index = None
    if isinstance(train.test, float):  # held out first, so validation never sees it
        rest, test_index = split_indices(data, train.test, split_seed + 1, stratify)
    kept, held = split_indices(data.take(rest), validation, split_seed, stratify)
    return test_index, rest[kept], rest[held]


def _split_labels(
    train: TrainSpec, labels: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """`_split` of data known by its class ids alone, before it is read (or learns)."""
    return _split(train, Dataset(np.zeros(len(labels)), labels))


def prepare(spec: Spec, epochs: int | None = None) -> Prepared:
    """Check the spec, load and validate its data, and assemble its graphs."""
    train = train_section(spec)
    if epochs is not None and epochs < 1:
        raise error(f"--epochs must be at least 1, got {epochs}")
    train = train if epochs is None else train.model_copy(update={"epochs": epochs})
    typed = check_spec(spec)
    parts = load_parts(train, typed)
    steps_per_epoch = math.ceil(len(parts.training) / train.batch)
    timing = Timing(steps_per_epoch, steps_per_epoch * train.epochs)
    targets = parts.preprocessing.targets if parts.preprocessing is not None else None
    program = build_train_step(typed, train, parts.classes, timing, targets=targets)
    record_data(program, parts)
    _start_from(program, train)
    return Prepared(
        spec,
        train,
        typed,
        parts.train_data,
        parts.val_data,
        program,
        parts.kept,
        parts.held,
        parts.test_data,
        parts.streamed,
    )


def _start_from(program: Program, train: TrainSpec) -> None:
    """Give the parameters `init from(...)` names their earlier values."""
    if train.init is not None:
        slots = {s.name: s.spec for s in program.model_slots()}
        program.start = start_values(train.init, slots, np.dtype(program.float_dtype))


def program_from_data(spec: Spec) -> Program:
    """The graphs of `spec` assembled for its data: `compile_spec`'s `with_data`."""
    return prepare(spec).program


def compile_program(spec: Spec) -> Compiled:
    """`compile_spec` with this stage's data reading, and the spec's `init from(...)`
    weights as the starting values even where the data is not read."""
    compiled = compile_spec(spec, program_from_data)
    if compiled.read_data is None:
        _start_from(compiled.program, train_section(spec))
    return compiled


def record_data(program: Program, parts: Parts) -> None:
    """What only the data tells, written into `program` for model.onnx: the fitted
    preprocessing (model.onnx then reads the raw columns), how it takes images (uint8
    pixels, channels last), class names, the vocabulary of token data and the columns a
    prediction file must hold (`dnnspec.expects`)."""
    data, preprocessing, expected = parts.data, parts.preprocessing, parts.expected
    program.preprocess, meta = preprocessing, program.metadata
    if preprocessing is not None:
        meta.preprocess = [PreprocessStep.model_validate(s) for s in preprocessing.to_json()]
        if preprocessing.widens() and meta.inputs:  # model.onnx takes the raw columns
            meta.inputs[0].shape = [meta.inputs[0].shape[0], preprocessing.width]
    if data.image is not None and meta.inputs:  # model.onnx takes the decoded pixels
        first = meta.inputs[0]
        meta.image = data.image.model_copy(update={"input": first.name})
        height, width = data.image.size
        first.dtype, first.shape = "uint8", [first.shape[0], height, width, data.image.channels]
    for declared in meta.inputs or []:  # several inputs from a table: each one's columns
        if declared.name in data.input_columns:
            declared.columns = list(data.input_columns[declared.name])
    if data.audio is not None and meta.inputs:  # model.onnx takes waveforms at this rate
        meta.audio = data.audio.model_copy(update={"input": meta.inputs[0].name})
    if data.text is not None and meta.inputs:  # model.onnx takes the tokenizer's ids
        meta.text = data.text.model_copy(update={"input": data.text.input or meta.inputs[0].name})
    program.files = dict(data.files)
    if data.labels is not None:  # the CSV's class names, in id order, for model.onnx
        meta.class_labels = list(data.labels)
    for entry in meta.outputs or []:  # class names of named outputs given as words
        if entry.name in data.target_labels:
            entry.class_labels = list(data.target_labels[entry.name])
    if data.vocab:
        # token data: model.onnx says what each id means (`dnnspec generate` reads it), and
        # a model predicting the next token labels its classes with the same text
        meta.vocab, meta.context = list(data.vocab), data.x.shape[1]
        if parts.classes == len(data.vocab):
            meta.class_labels = list(data.vocab)
    if expected is not None:
        if expected["classes"] is None and meta.class_labels is not None:
            expected["classes"] = list(meta.class_labels)
        meta.expects = Expects.model_validate(expected)


def load_data(
    train: TrainSpec, typed: TypedModel, source: Call, training_rows: TrainingRows | None = None
) -> tuple[Dataset, int | None]:
    """The data `source` names, checked for the model, one target per trained output;
    with the class count of a model's one unnamed output (named outputs count their own).
    `training_rows`: the run's split, for data that learns from its training rows."""
    loaded = _load(train, source, _input_names(typed), training_rows)
    data, classes = _conform(train, typed, loaded, source)
    return data, classes.get("")


def _load(
    train: TrainSpec,
    source: Call,
    inputs: tuple[str, ...],
    training_rows: TrainingRows | None = None,
) -> Dataset:
    """The dataset `source` names, as loaded: one target array per trained output, and
    for a model of several `inputs` one array per input; what it learns from its samples
    (a tokenizer) learned from the `training_rows` given (`DatasetDef.refit`)."""
    dataset = DATASETS.get(source.name)
    names = tuple(h.output for h in train.trained() if h.output)
    if len(inputs) > 1:
        if dataset.inputs is None:
            raise error(
                f"dataset '{source.name}' provides one input array, but the model's inputs "
                f"{', '.join(inputs)} need one each",
                source.span,
                help="train on a file with an .npz array named after each input (or a table "
                "with a list of columns per input in features), or on digits (inputs top "
                "and bottom)",
            )
    elif names and dataset.targets is None:
        raise error(
            f"dataset '{source.name}' has one target, but the model's outputs "
            f"{', '.join(names)} need one each",
            source.span,
            help="train on a file with an .npz array or a CSV column named after each "
            "output, or on digits (targets digit and ink)",
        )
    if dataset.refit is not None and training_rows is not None:
        return dataset.refit(source.args, inputs, names, training_rows, source.span)
    if len(inputs) > 1 and dataset.inputs is not None:
        return dataset.inputs(source.args, inputs, names, train.seed, source.span)
    if names and dataset.targets is not None:
        return dataset.targets(source.args, names, train.seed, source.span)
    return dataset.load(source.args, train.seed, source.span)  # the one unnamed output's


def _with_classes(
    conformed: tuple[Dataset, dict[str, int | None]],
) -> tuple[Dataset, int | None]:
    """A conformed dataset with the class count of a model's one unnamed output."""
    return conformed[0], conformed[1].get("")


def _input_names(typed: TypedModel) -> tuple[str, ...]:
    return tuple(decl.name for decl in typed.spec.model.inputs)


def _conform(
    train: TrainSpec, typed: TypedModel, loaded: Dataset, source: Call
) -> tuple[Dataset, dict[str, int | None]]:
    """`loaded` cast and checked against the model and each output's loss."""
    inputs = _input_names(typed)
    columns = [c for c in train.preprocess if c.name != "scale_target"]
    if len(inputs) > 1 and columns:
        raise error(
            f"preprocess {columns[0].name} reads the columns of a model's one input, but the "
            f"model has {len(inputs)} inputs ({', '.join(inputs)})",
            columns[0].span,
            help="prepare the inputs of a model of several before training (scale_target applies)",
        )
    kinds = {h.output: LOSSES.get(h.loss.name).target for h in train.trained()}
    losses = {h.output: h.loss for h in train.trained()}
    encoded = encoded_columns(train, loaded)
    imputed = imputed_columns(train, loaded)
    indicators = any(c.name == "impute" and c.args["add_indicator"] for c in train.preprocess)
    # with one_hot or missing indicators the declared input is the encoded width, checked
    # once it is fitted
    return conform(
        loaded,
        typed,
        kinds,
        source,
        input_shape=not (encoded or indicators),
        positives=losses,
        imputed=imputed,
    )


def read_like_data(
    train: TrainSpec,
    path: str,
    typed: TypedModel,
    labels: dict[str, tuple[str, ...]],
    span: Span | None = None,
    what: str = "test file",
    like: Dataset | None = None,
) -> Dataset:
    """`test "file.csv"` (or `dnnspec eval RUN file.csv`): read as the spec's data file is
    (same columns; a folder of images, clips or texts as the spec's folder is, by
    `DatasetDef.held_out`: at its size and channels, or tokenized by the tokenizer of the
    training data `like`), each output's class names mapped to the training data's ids
    (`labels`, by output as `head_labels` gives them); errors at `span` (by default the
    train section)."""
    source = _held_out_call(train, path, span)
    held_out = DATASETS.get(train.data.name).held_out
    if held_out is None:
        raw = _load(train, source, _input_names(typed))
    else:
        assert like is not None, "held-out data read as the training data needs that data"
        raw = held_out(source.args, _input_names(typed), like, source.span)
    return _as_trained(train, typed, raw, labels, source, what)


def read_held_out(
    train: TrainSpec,
    path: str,
    typed: TypedModel,
    labels: dict[str, tuple[str, ...]],
    fitted: Callable[[Dataset], Dataset],
    span: Span | None = None,
    what: str = "test file",
    like: Dataset | None = None,
) -> Dataset | Chunked:
    """`read_like_data` made ready for the graphs by `fitted` (the fitted preprocessing);
    a Parquet table over its memory budget is read row group by row group as it is
    evaluated (`runtime/streamed.py`), each made ready so."""
    if DATASETS.get(train.data.name).held_out is None:
        source = _held_out_call(train, path, span)
        chunked = stream_held_out(
            train,
            typed,
            locate_file(str(source.args["path"]), source.span),
            source,
            lambda raw: fitted(_as_trained(train, typed, raw, labels, source, what)),
        )
        if chunked is not None:
            return chunked
    return fitted(read_like_data(train, path, typed, labels, span, what, like))


def _held_out_call(train: TrainSpec, path: str, span: Span | None) -> Call:
    """The data call that reads held-out `path` as the spec's data is read."""
    held_out = DATASETS.get(train.data.name).held_out
    name = train.data.name if held_out is not None else "file"
    definition = DATASETS.get(name)
    span = span or train.span
    given: list[tuple[str, Any, Span]] = [("path", path, span)]
    if train.data.name == name:
        given += [(k, v, span) for k, v in train.data.args.items() if k not in ("path",)]
    args = definition.signature.bind(name, [], given, span)
    return Call(name=name, args=args, span=span)


def _as_trained(
    train: TrainSpec,
    typed: TypedModel,
    raw: Dataset,
    labels: dict[str, tuple[str, ...]],
    source: Call,
    what: str,
) -> Dataset:
    """Held-out data with the training data's class ids, checked for the model."""
    targets, words = head_targets(raw), head_labels(raw)
    for name, own in head_labels(raw).items():
        known = labels.get(name)
        if known is not None:
            targets[name] = _map_labels(own, known, targets[name], source, what)
            words[name] = known
    held, _ = _conform(train, typed, with_heads(raw, targets, words), source)
    return held


def _map_labels(
    words: tuple[str, ...], known: tuple[str, ...], ids: np.ndarray, source: Call, what: str
) -> np.ndarray:
    """Class ids of held-out data (`ids` index its own sorted `words`) as the training
    data's ids (`known`, its class names)."""
    unknown = sorted(set(words) - set(known))
    if unknown:
        raise error(
            f"{what} '{source.args['path']}' has class labels the training data lacks: "
            f"{', '.join(unknown[:5])}",
            source.span,
        )
    mapping = np.array([known.index(name) for name in words], np.int64)
    mapped: np.ndarray = mapping[ids]
    return mapped
