"""Sampling text from a trained next-token model (`dnnspec generate`).

The model reads int64 ids [N, T] and outputs next-token scores [N, T, vocab]. Each step
feeds the last T ids (a model with a fixed T gets the context right-padded: causal
attention makes position t independent of what follows it, so the padding is never
seen), takes the scores at the last real position, and samples from softmax(scores /
temperature); temperature 0 takes the most likely token. Sampling is seeded, so a
prompt, seed and temperature always give the same text.

An encoder-decoder trained with teacher forcing (an input `decoder_in`: the target shifted
right behind a start token, the id one past the classes) is decoded greedily by `decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dnnspec.errors import error

Scores = Callable[[np.ndarray], np.ndarray]
"""ids [1, t] -> scores [1, t, classes]"""

DECODER_INPUT = "decoder_in"
"""The input of teacher forcing that predict fills by decoding when it is not given."""


def encode(prompt: str, vocab: Sequence[str]) -> list[int]:
    """The prompt's ids; a character outside the vocabulary is an error naming it."""
    if not prompt:
        raise error("--prompt is empty", help="give at least one character to continue from")
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted({c for c in prompt if c not in index})
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        raise error(
            f"the prompt has characters the model never saw: {shown}",
            help="the model knows " + "".join(c for c in vocab if c.isprintable()),
        )
    return [index[c] for c in prompt]


def sample(
    scores: Scores,
    prompt: Sequence[int],
    tokens: int,
    vocab_size: int,
    context: int,
    fixed: bool,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[int]:
    """`tokens` new ids after `prompt`. `context` is the most positions the model reads;
    `fixed`: its input length is exactly `context`. Ids past `vocab_size` (a model wider
    than its data's vocabulary) are never drawn."""
    if tokens < 1:
        raise error(f"--tokens must be at least 1, got {tokens}")
    if temperature < 0 or not np.isfinite(temperature):
        raise error(f"--temperature must be 0 or more, got {temperature}")
    if seed < 0:
        raise error(f"--seed must be 0 or more, got {seed}")
    rng = np.random.default_rng(seed)
    ids = list(prompt)
    for _ in range(tokens):
        window = ids[-context:]
        feed = window + [0] * (context - len(window)) if fixed else window
        logits = scores(np.array([feed], np.int64))[0, len(window) - 1, :vocab_size]
        logits = logits.astype(np.float64)
        if temperature == 0:
            ids.append(int(np.argmax(logits)))
            continue
        z = logits / temperature
        p = np.exp(z - z.max())
        ids.append(int(rng.choice(vocab_size, p=p / p.sum())))
    return ids[len(prompt) :]


def decode(scores: Scores, rows: int, length: int, start: int) -> np.ndarray:
    """Greedy autoregressive decoding: `decoder_in` [rows, length] starts as `start`
    everywhere and each pass t writes the most likely class at position t into position
    t + 1 (a causal decoder reads at t only positions up to t, so later ones are never
    seen). The last pass's scores [rows, length, classes]: each position's, given the
    decoded ones before it."""
    decoder_in = np.full((rows, length), start, np.int64)
    out = scores(decoder_in)
    for t in range(length - 1):
        decoder_in[:, t + 1] = out[:, t].argmax(-1)
        out = scores(decoder_in)
    return out
