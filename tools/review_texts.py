"""Write a small sentiment set as text files, one sub-folder per class: a folder to try
`text_folder` and its subword tokenizer on (`tests/specs/reviews_sentiment.dnn`).

The reviews are generated (so free of any licence: CC0): each is one to three templated
sentences about a film, book or meal with a positive or a negative opinion word (some
negated: "not bad" is positive), among neutral filler, with a few letters changed in some
words (typos a subword tokenizer still splits into known pieces). Seeded: the same call
writes the same files.

Usage: python tools/review_texts.py OUT_FOLDER [TEXTS_PER_CLASS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CLASSES = ("negative", "positive")
GOOD = ("great", "wonderful", "excellent", "delightful", "charming", "brilliant", "lovely")
BAD = ("awful", "boring", "terrible", "dreadful", "dull", "disappointing", "bland")
THINGS = ("film", "movie", "book", "novel", "meal", "dinner", "show", "story", "soundtrack")
TEMPLATES = (
    "the {thing} was {word}.",
    "what a {word} {thing}!",
    "i found the {thing} {word} from start to end.",
    "honestly, a {word} {thing}.",
    "my friends thought the {thing} was {word}.",
    "overall the {thing} felt {word}.",
)
NEGATED = ("the {thing} was not {word}.", "it was never {word}, this {thing}.")
FILLER = (
    "we went on a tuesday.",
    "the tickets were cheap.",
    "it lasted two hours.",
    "the place was busy.",
    "i read it on the train.",
    "my sister came along.",
)


def _typo(word: str, rng: np.random.Generator) -> str:
    """`word` with one letter swapped for a random one (one word in twenty)."""
    if len(word) < 4 or rng.random() > 0.05:
        return word
    at = int(rng.integers(1, len(word) - 1))
    return word[:at] + chr(int(rng.integers(97, 123))) + word[at + 1 :]


def review(positive: bool, rng: np.random.Generator) -> str:
    """One review of the given sentiment: an opinion sentence among 0-2 fillers."""
    negated = rng.random() < 0.2
    words = (BAD if positive else GOOD) if negated else (GOOD if positive else BAD)
    template = NEGATED if negated else TEMPLATES
    opinion = str(rng.choice(template)).format(thing=rng.choice(THINGS), word=rng.choice(words))
    sentences = [str(s) for s in rng.choice(FILLER, int(rng.integers(0, 3)), replace=False)]
    sentences.insert(int(rng.integers(0, len(sentences) + 1)), opinion)
    text = " ".join(sentences)
    return " ".join(_typo(w, rng) for w in text.split(" ")).capitalize()


def write(folder: Path, per_class: int = 400, seed: int = 0) -> int:
    """Write `per_class` reviews of each class as `folder/<class>/<index>.txt`; returns how
    many."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            text = review(bool(label), rng) + "\n"
            (folder / name / f"{index:03d}.txt").write_text(text, encoding="utf-8")
    return per_class * len(CLASSES)


if __name__ == "__main__":
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    print(f"wrote {write(Path(sys.argv[1]), count)} reviews under {sys.argv[1]}")
