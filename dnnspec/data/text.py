"""The `text` dataset: next-token prediction on a text, for language models: one id per
character, or BPE subwords (`tokenizer = bpe`).

The text (the bundled generated corpus, or a user's UTF-8 file) is cut into windows of
`context` characters; x holds a window's character ids and y the ids one position later,
so a causal model learns p(c[t+1] | c[..t]) at every position. Ids index the sorted
distinct characters, which travel as the dataset's `vocab` into model.onnx; with `bpe`,
the subwords a tokenizer learned from the text, which travels as tokenizer.json.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.datasets import DATASETS, VALIDATION, Dataset, DatasetDef
from dnnspec.data.files import find
from dnnspec.data.tokenizer import FILE, save, train
from dnnspec.errors import Span, error
from dnnspec.metadata import TextMeta
from dnnspec.schema import ArgSpec, Signature

CORPUS = "data/corpus.txt"
"""120,000 characters of generated sentences (tools/make_corpus.py), 29 distinct."""


def read_text(path: str, span: Span | None) -> str:
    if not path:
        return resources.files("dnnspec").joinpath(CORPUS).read_text(encoding="utf-8")
    found = find(Path(path), span)
    try:
        return found.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"'{found}' is not UTF-8 text: {exc.reason} at byte {exc.start}", span
        ) from None
    except OSError as exc:
        raise error(f"cannot read '{found}': {exc.strerror}", span) from None


def windows(text: str, context: int, span: Span | None) -> Dataset:
    """Non-overlapping windows: x = ids[i : i + context], y = ids[i + 1 : i + 1 + context]."""
    vocab = tuple(sorted(set(text)))
    ids = np.searchsorted(np.array(vocab), np.array(list(text))).astype(np.int64)
    count = (len(ids) - 1) // context
    if count < 2:
        raise error(
            f"the text has {len(text)} characters: too short for two windows of "
            f"{context} + 1 characters",
            span,
            help="use a longer text or a smaller context",
        )
    starts = np.arange(count) * context
    index = starts[:, None] + np.arange(context)[None, :]
    return Dataset(ids[index], ids[index + 1], vocab)


def subword_windows(text: str, vocab: int, context: int, span: Span | None) -> Dataset:
    """Windows of BPE ids: a tokenizer of at most `vocab` ids is learned from the whole
    text (data/tokenizer.py) and travels as tokenizer.json; `vocab` holds each id's text,
    a word start's `▁` as the space it stands for."""
    tokenizer = train([text], "bpe", vocab, None)
    ids = np.array(tokenizer.encode(text).ids, np.int64)
    count = (len(ids) - 1) // context
    if count < 2:
        raise error(
            f"the text has {len(ids)} tokens: too short for two windows of {context} + 1 tokens",
            span,
            help="use a longer text or a smaller context",
        )
    pieces = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    index = (np.arange(count) * context)[:, None] + np.arange(context)[None, :]
    meta = TextMeta(input="", tokenizer=FILE, kind="bpe", length=context)
    return Dataset(
        ids[index],
        ids[index + 1],
        tuple(piece.replace("▁", " ") for piece, _ in pieces),
        text=meta,
        files={FILE: save(tokenizer)},
    )


def _text(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    text = read_text(args["path"], span)
    if args["tokenizer"] == "bpe":
        return subword_windows(text, args["vocab"], args["context"], span)
    return windows(text, args["context"], span)


DATASETS.add(
    "text",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="context", type="int", default=64, min=1, doc="window length T"),
                ArgSpec(
                    name="path",
                    type="str",
                    default="",
                    doc="a UTF-8 text file; empty: the bundled corpus (29 characters)",
                ),
                VALIDATION,
                ArgSpec(
                    name="tokenizer",
                    type="str",
                    default="chars",
                    choices=("chars", "bpe"),
                    doc="chars: one id per distinct character; bpe: subwords learned from "
                    "the text, saved with the run as tokenizer.json",
                ),
                ArgSpec(
                    name="vocab",
                    type="int",
                    default=2000,
                    min=3,
                    doc="bpe: most token ids the tokenizer learns",
                ),
            )
        ),
        _text,
        "next-token prediction: x = int64 ids [N, context], y = the ids one step later "
        "(characters, or BPE subwords)",
        recent=("tokenizer", "vocab"),
    ),
)
