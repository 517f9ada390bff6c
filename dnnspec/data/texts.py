"""Texts for classification (`text_folder`): a folder of one sub-folder of `.txt` files per
class (each file one text, as Keras' `text_dataset_from_directory`), or a CSV with a text
column and a label column, tokenized into subword ids by a tokenizer learned from the
training texts (data/tokenizer.py).

The data is the ids `int64 [N, length]` (0 pads) and, for a model of two inputs, each
text's count of real ids `int64 [N]` (input `lengths`, for masking: `attention(lengths =
...)`); the tokenizer travels with the dataset as the bytes of its tokenizer.json, which
the run saves beside model.onnx.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.dataset import Dataset, named_inputs
from dnnspec.data.datasets import (
    DATASETS,
    MAX_CSV_BYTES,
    VALIDATION,
    DatasetDef,
    TrainingRows,
    locate_file,
)
from dnnspec.data.folders import LEAST, Files, class_folders, listing_classes, listing_rows
from dnnspec.data.split import split_indices
from dnnspec.data.tokenizer import FILE, KINDS, encode, parse, save, train
from dnnspec.errors import Span, error
from dnnspec.files import read_bytes
from dnnspec.metadata import TextMeta
from dnnspec.schema import ArgSpec, Signature

SUFFIXES = (".txt",)

TEXTS = Files(
    source="text_folder",
    one="text",
    many="texts",
    accepts=lambda path: path.suffix.lower() in SUFFIXES,
    foreign="a .txt file",
    folder=".txt files",
    only=".txt files",
    holding=".txt files",
)
"""The files of a class folder of texts."""

INPUTS = ("tokens", "lengths")
"""The inputs a model of two reads: the ids and each text's count of real ids."""


def _decode(data: bytes, where: str, span: Span | None) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}", span) from None


def read_folder(
    root: Path, limit: int, span: Span | None, least: int = LEAST
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Every text of the class folders of `root` (at least `least`; one text per file,
    without the whitespace around it), with its class id (classes in name order) and the
    class names; more than `limit` bytes in all is refused."""
    classes = class_folders(root, TEXTS, span, least)
    texts: list[str] = []
    labels: list[int] = []
    left = limit
    for label, (_, files) in enumerate(classes):
        for path in files:
            data = read_bytes(path, "text", left, span)
            left -= len(data)
            texts.append(_decode(data, f"'{path}'", span).strip())
            labels.append(label)
    return texts, np.array(labels, np.int64), tuple(name for name, _ in classes)


def read_listing(
    listing: Path,
    columns: tuple[str, str],
    limit: int,
    span: Span | None,
    classes: bool = True,
    least: int = LEAST,
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """The texts of a CSV, one per row: `columns` names the column of texts and that of
    class names (at least `least` classes, in name order), read from its header
    (`classes` False: the texts alone, for predict)."""
    text = _decode(read_bytes(listing, "text table", limit, span), f"'{listing}'", span)
    rows = listing_rows(
        listing,
        text,
        columns,
        span,
        help="name the columns of texts and class names with text_column and label_column"
        if classes
        else "name the column of texts with --text-column",
    )
    texts = [t for _, t, _ in rows]
    if not classes:
        return texts, np.zeros(0, np.int64), ()
    labels, found = listing_classes(listing, [n for _, _, n in rows], span, least)
    return texts, labels, found


def read_texts(path: Path, column: str, limit: int = MAX_CSV_BYTES) -> list[str]:
    """The texts of a file for `predict`: a CSV's `column` (by its header), else one text
    per non-empty line."""
    if path.suffix.lower() == ".csv":
        return read_listing(path, (column, column), limit, None, classes=False)[0]
    text = _decode(read_bytes(path, "text file", limit), f"'{path}'", None)
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read(
    args: dict[str, Any], span: Span | None, least: int = LEAST
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """The texts `args` name (a folder of class folders or a CSV, of at least `least`
    classes), their class ids and the class names."""
    root = locate_file(args["path"], span)
    if root.suffix.lower() == ".csv" and root.is_file():
        columns = (args["text_column"], args["label_column"])
        return read_listing(root, columns, MAX_CSV_BYTES, span, least=least)
    return read_folder(root, MAX_CSV_BYTES, span, least)


def _encoded(
    tokenizer: Any, meta: TextMeta, read: tuple[list[str], np.ndarray, tuple[str, ...]]
) -> tuple[Dataset, np.ndarray]:
    """The `read` texts as ids `int64 [N, length]` with their class ids, carrying the
    tokenizer (`meta` says which), and each text's count of real ids."""
    texts, labels, classes = read
    ids, lengths = encode(tokenizer, texts)
    data = Dataset(ids, labels, labels=classes, text=meta, files={FILE: save(tokenizer)})
    return data, lengths


def _tokenized(
    args: dict[str, Any], training_rows: TrainingRows, span: Span | None
) -> tuple[Dataset, np.ndarray]:
    """The texts tokenized by a tokenizer learned from the training rows alone (chosen by
    `training_rows` from the class ids), so no held-out text shapes the vocabulary."""
    read = _read(args, span)
    texts, labels, _ = read
    rows = training_rows(labels)
    kind, length = args["tokenizer"], args["length"]
    tokenizer = train([texts[i] for i in rows], kind, args["vocab"], length)
    return _encoded(tokenizer, TextMeta(input="", tokenizer=FILE, kind=kind, length=length), read)


def _default_split(args: dict[str, Any], seed: int) -> TrainingRows:
    """The training rows of the split the train section makes by default (seeded by its
    seed, each class in proportion): for readers of the data alone, such as `check`; data
    preparation hands in the run's own split (`DatasetDef.refit`)."""

    def rows(labels: np.ndarray) -> np.ndarray:
        placeholder = Dataset(np.zeros(len(labels)), labels)
        return split_indices(placeholder, args["validation"], seed, stratify=True)[0]

    return rows


def _text_folder(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    return _tokenized(args, _default_split(args, seed), span)[0]


def _with_lengths(
    tokenized: tuple[Dataset, np.ndarray], inputs: tuple[str, ...], span: Span | None
) -> Dataset:
    """A model of two inputs: `tokens`, the ids, and `lengths`, each text's count of real
    ids (the keys `attention(lengths = ...)` reads past are padding)."""
    data, lengths = tokenized
    found = named_inputs(
        dict(zip(INPUTS, (data.x, lengths), strict=True)), inputs, "text_folder", span
    )
    assert data.text is not None
    text = data.text.model_copy(update={"input": INPUTS[0], "lengths": INPUTS[1]})
    return replace(data, x=found[inputs[0]], inputs=found, text=text)


def _one_target(outputs: tuple[str, ...], span: Span | None) -> None:
    if outputs:
        raise error(
            "text_folder gives one target, the class, but the model has named outputs",
            span,
            help="return one output",
        )


def _text_folder_inputs(
    args: dict[str, Any],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    seed: int,
    span: Span | None,
) -> Dataset:
    _one_target(outputs, span)
    return _with_lengths(_tokenized(args, _default_split(args, seed), span), inputs, span)


def _for_inputs(
    tokenized: tuple[Dataset, np.ndarray], inputs: tuple[str, ...], span: Span | None
) -> Dataset:
    return _with_lengths(tokenized, inputs, span) if len(inputs) > 1 else tokenized[0]


def _refit(
    args: dict[str, Any],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    training_rows: TrainingRows,
    span: Span | None,
) -> Dataset:
    """The texts, read once, tokenized by a tokenizer learned once from exactly the run's
    training rows."""
    _one_target(outputs, span)
    return _for_inputs(_tokenized(args, training_rows, span), inputs, span)


def _held_out(
    args: dict[str, Any], inputs: tuple[str, ...], like: Dataset, span: Span | None
) -> Dataset:
    """Held-out texts tokenized by the training data's tokenizer (`like`'s)."""
    assert like.text is not None
    tokenizer = parse(like.files[FILE], f"the training data's {FILE}", span)
    return _for_inputs(_encoded(tokenizer, like.text, _read(args, span, 1)), inputs, span)


DATASETS.add(
    "text_folder",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(
                    name="path",
                    type="str",
                    doc="a folder of one sub-folder of .txt files per class, or a CSV",
                ),
                ArgSpec(
                    name="vocab",
                    type="int",
                    default=2000,
                    min=3,
                    doc="most token ids the tokenizer learns (with [PAD] 0 and [UNK] 1)",
                ),
                ArgSpec(
                    name="length",
                    type="int",
                    default=64,
                    min=1,
                    doc="ids per text: longer texts are cut, shorter padded with 0",
                ),
                ArgSpec(
                    name="tokenizer",
                    type="str",
                    default="bpe",
                    choices=KINDS,
                    doc="the subword tokenizer learned from the training texts",
                ),
                VALIDATION,
                ArgSpec(
                    name="text_column",
                    type="str",
                    default="text",
                    doc="a CSV: the column of texts",
                ),
                ArgSpec(
                    name="label_column",
                    type="str",
                    default="label",
                    doc="a CSV: the column of class names",
                ),
            )
        ),
        _text_folder,
        "texts (.txt files, one text each) in one sub-folder per class (class names: the "
        "folder names, sorted), or a CSV's text and label columns; tokenized by a BPE or "
        "WordPiece tokenizer (the text extra) learned from the training texts and saved "
        "with the run as tokenizer.json, as int64 ids [N, length] (0 pads); for a model of "
        "two inputs, `tokens` and `lengths` (each text's count of real ids, int64 [N])",
        paths=("path",),
        inputs=_text_folder_inputs,
        compile_reads="model.onnx reads the ids of a tokenizer learned from the training "
        f"texts, saved beside it as {FILE}",
        held_out=_held_out,
        refit=_refit,
    ),
)
