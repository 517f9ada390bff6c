"""Subword tokenizers for text data: trained on the training texts with the `tokenizers`
library (the `text` extra, imported when first needed), saved with the run as a standard
`tokenizer.json`, and read back for `predict`.

A tokenizer lower-cases (after NFKC normalisation) and cuts words into subwords: `bpe`
splits at spaces and marks a word's start with `▁` (as SentencePiece does; decoding
restores the spaces), `wordpiece` splits at spaces and punctuation and marks a piece
inside a word with `##` (as BERT does). Id 0 is `[PAD]` and id 1 `[UNK]` (a
subword the training texts never held); every text is truncated or padded with 0 to the
spec's `length`. Padding and truncation are part of tokenizer.json, so another runtime
reading it (tokenizers in Python, tokenizers.js or transformers.js in JavaScript) makes
the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.errors import Span, error
from dnnspec.files import MiB, read_bytes, write_text

PAD, UNK = "[PAD]", "[UNK]"
"""The special tokens, ids 0 and 1: padding, and a subword not in the vocabulary."""

KINDS = ("bpe", "wordpiece")

FILE = "tokenizer.json"
"""The tokenizer's file in a run directory, beside model.onnx."""

MAX_TOKENIZER_BYTES = 64 * MiB
"""Largest tokenizer.json read (a 2,000-subword one is about 60 KB)."""


def tokenizers() -> Any:
    """The tokenizers package, or a message saying how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise error(
            "tokenizing text needs the tokenizers package, which is not installed",
            help="pip install 'dnnspec[text]' (or pip install tokenizers)",
        ) from None
    return tokenizers


def train(texts: Sequence[str], kind: str, vocab: int, length: int | None) -> Any:
    """A `kind` tokenizer of at most `vocab` ids (the special tokens included) learned
    from `texts`, padding and truncating to `length` ids (None: neither, for a language
    model's running text). The same texts give the same
    tokenizer (resuming a run re-learns it), so the pieces are learned by the library's
    BPE trainer without continuation marks: its ids for marked pieces follow hash order
    and change from run to run."""
    lib = tokenizers()
    normalizers = lib.normalizers
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    learner = lib.Tokenizer(lib.models.BPE(unk_token=UNK))
    learner.normalizer = normalizer
    split_words = (
        lib.pre_tokenizers.Metaspace() if kind == "bpe" else lib.pre_tokenizers.Whitespace()
    )
    learner.pre_tokenizer = split_words
    pieces = vocab if kind == "bpe" else (vocab + 2) // 2
    trainer = lib.trainers.BpeTrainer(
        vocab_size=pieces, special_tokens=[PAD, UNK], show_progress=False
    )
    learner.train_from_iterator(list(texts), trainer=trainer)
    if kind == "bpe":
        tokenizer, learner.decoder = learner, lib.decoders.Metaspace()
    else:
        tokenizer = lib.Tokenizer(lib.models.WordPiece(_word_pieces(learner, vocab), unk_token=UNK))
        tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, split_words
        tokenizer.decoder = lib.decoders.WordPiece()
        tokenizer.add_special_tokens([PAD, UNK])  # ids 0 and 1 already: decoding skips them
    if length is not None:
        tokenizer.enable_truncation(max_length=length)
        tokenizer.enable_padding(pad_id=0, pad_token=PAD, length=length)
    return tokenizer


def _word_pieces(learner: Any, vocab: int) -> dict[str, int]:
    """A WordPiece vocabulary from the pieces BPE learned: each piece as a word start and,
    `##`-marked, inside a word (as the library's WordPiece trainer, itself a BPE trainer,
    makes them), in the order learned, at most `vocab` with the special tokens."""
    learned = sorted(learner.get_vocab().items(), key=lambda item: item[1])
    words = [PAD, UNK]
    for piece, _ in learned:
        if piece not in (PAD, UNK):
            words += [piece, "##" + piece]
    return {word: i for i, word in enumerate(words[:vocab])}


def encode(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ids of `texts` as int64 `[N, length]` (padded with 0) and each text's count of
    real ids as int64 `[N]`, at least 1 (an empty text reads as one `[PAD]`, so attention
    masked by the lengths always has a key)."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], np.int64).reshape(len(encodings), -1)
    mask = np.array([e.attention_mask for e in encodings], np.int64).reshape(ids.shape)
    return ids, np.maximum(mask.sum(axis=1), 1)


def save(tokenizer: Any) -> bytes:
    """The tokenizer as the bytes of a standard tokenizer.json."""
    text: str = tokenizer.to_str(pretty=True)
    return text.encode("utf-8")


def write(tokenizer: Any, path: Path) -> None:
    write_text(path, save(tokenizer).decode("utf-8"), "the tokenizer")


def load(path: Path, span: Span | None = None) -> Any:
    """The tokenizer of a tokenizer.json (at most `MAX_TOKENIZER_BYTES`); a file the
    tokenizers library cannot read is a diagnostic naming it."""
    data = read_bytes(path, "tokenizer", MAX_TOKENIZER_BYTES, span)
    return parse(data, f"'{path}'", span)


def parse(data: bytes, where: str, span: Span | None = None) -> Any:
    """The tokenizer of a tokenizer.json's bytes (`where`: what they were read from)."""
    lib = tokenizers()
    try:
        return lib.Tokenizer.from_str(data.decode("utf-8"))
    except (UnicodeDecodeError, Exception) as exc:  # noqa: BLE001 - the library raises Exception
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise error(f"cannot read tokenizer {where}: {reason}", span) from None
