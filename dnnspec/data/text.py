"""The `text` dataset: next-character prediction on a text, for character language models.

The text (the bundled generated corpus, or a user's UTF-8 file) is cut into windows of
`context` characters; x holds a window's character ids and y the ids one position later,
so a causal model learns p(c[t+1] | c[..t]) at every position. Ids index the sorted
distinct characters, which travel as the dataset's `vocab` into model.onnx.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.datasets import DATASETS, VALIDATION, Dataset, DatasetDef
from dnnspec.data.files import find
from dnnspec.errors import Span, error
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


def _text(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    return windows(read_text(args["path"], span), args["context"], span)


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
            )
        ),
        _text,
        "next-character prediction: x = int64 ids [N, context], y = the ids one step later",
    ),
)
