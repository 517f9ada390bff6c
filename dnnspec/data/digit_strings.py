"""The `digit_strings` dataset: sequence-to-sequence tasks on strings of digits.

Each sample is `length` random digits (ids 0-9, seeded); the target is the same string
reversed, or sorted ascending, one label per position, so a model maps [N, length] ids to
[N, length, 10] scores. Exact match (every position right) is the natural metric: a
model that copies the input gets `reverse` right with probability 10^-(length/2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dnnspec.data.datasets import DATASETS, VALIDATION, Dataset, DatasetDef
from dnnspec.errors import Span
from dnnspec.schema import ArgSpec, Signature

TASKS = ("reverse", "sort")


def _digit_strings(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, (args["samples"], args["length"]), dtype=np.int64)
    y = x[:, ::-1] if args["task"] == "reverse" else np.sort(x, axis=1)
    return Dataset(x, np.ascontiguousarray(y))


DATASETS.add(
    "digit_strings",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="task", type="str", default="reverse", choices=TASKS),
                ArgSpec(name="length", type="int", default=8, min=1, doc="digits per string"),
                ArgSpec(name="samples", type="int", default=4000, min=10),
                VALIDATION,
            )
        ),
        _digit_strings,
        "digit strings [N, length] (ids 0-9) and the same strings reversed or sorted",
    ),
)
