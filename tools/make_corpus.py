"""Write dnnspec/data/corpus.txt, the text the built-in `text` dataset reads.

The corpus is generated, so it is ours to ship: short sentences from a seeded grammar
about a village, its people, animals and weather, with agreement (a fox runs, foxes
run), fixed phrases and punctuation. A character model has real structure to learn
(spelling, word order, which verbs follow which subjects) in about 120 KB.
"""

from __future__ import annotations

import random
from pathlib import Path

NAMES = ["anna", "tom", "mira", "oskar", "lena", "pavel", "ida", "jonas", "ruth", "emil"]
ANIMALS = ["fox", "cat", "dog", "horse", "goat", "owl", "crow", "hare", "mouse", "wolf"]
PLACES = [
    "the mill",
    "the river",
    "the old bridge",
    "the market",
    "the forest",
    "the hill",
    "the church",
    "the well",
    "the orchard",
    "the harbour",
]
THINGS = [
    "bread",
    "apples",
    "a letter",
    "the key",
    "a lamp",
    "some wood",
    "fresh milk",
    "a basket",
    "the map",
    "a song",
]
ADJECTIVES = ["small", "quiet", "brown", "old", "clever", "tired", "happy", "grey", "young"]
TIMES = [
    "in the morning",
    "at noon",
    "in the evening",
    "at night",
    "after the rain",
    "before dawn",
    "on sunday",
    "every day",
]
WEATHER = [
    "the sky was grey",
    "the wind was cold",
    "the sun was warm",
    "rain fell softly",
    "snow covered the roofs",
    "fog lay on the fields",
]
ACTIONS = [
    ("walks to", "walk to", "walked to"),
    ("looks at", "look at", "looked at"),
    ("runs past", "run past", "ran past"),
    ("waits near", "wait near", "waited near"),
]
GIVING = [
    ("brings", "bring", "brought"),
    ("finds", "find", "found"),
    ("sells", "sell", "sold"),
    ("carries", "carry", "carried"),
]


def plural(animal: str) -> str:
    return {"fox": "foxes", "mouse": "mice", "wolf": "wolves"}.get(animal, animal + "s")


def subject(rng: random.Random) -> tuple[str, int]:
    """A subject and its verb form: 0 singular present, 1 plural present."""
    kind = rng.random()
    if kind < 0.4:
        return rng.choice(NAMES), 0
    animal = rng.choice(ANIMALS)
    if kind < 0.7:
        return f"the {rng.choice(ADJECTIVES)} {animal}", 0
    return f"the {plural(animal)}", 1


def sentence(rng: random.Random) -> str:
    roll = rng.random()
    past = rng.random() < 0.4
    who, number = subject(rng)
    form = 2 if past else number
    if roll < 0.35:
        text = f"{who} {rng.choice(ACTIONS)[form]} {rng.choice(PLACES)}"
    elif roll < 0.65:
        text = f"{who} {rng.choice(GIVING)[form]} {rng.choice(THINGS)}"
        if rng.random() < 0.5:
            text += f" to {rng.choice(NAMES)}"
    elif roll < 0.8:
        text = f"{rng.choice(TIMES)}, {who} {rng.choice(ACTIONS)[form]} {rng.choice(PLACES)}"
    else:
        stay = "stayed" if past else ("stay" if number else "stays")
        text = f"{rng.choice(WEATHER)} and {who} {stay} home"
    return text + "."


def corpus(size: int = 120_000, seed: int = 1) -> str:
    rng = random.Random(seed)
    lines, length = [], 0
    while length < size:
        line = " ".join(sentence(rng) for _ in range(rng.randint(1, 3)))
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "dnnspec" / "data" / "corpus.txt"
    text = corpus()
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text)} characters, {len(set(text))} distinct)")


if __name__ == "__main__":
    main()
