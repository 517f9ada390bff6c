"""The `digit_strings` dataset: sequence-to-sequence tasks on strings of digits.

Each sample is `length` random digits (ids 0-9, seeded); the target is the same string
reversed, or sorted ascending, one label per position, so a model maps [N, length] ids to
[N, length, 10] scores. Exact match (every position right) is the natural metric: a
model that copies the input gets `reverse` right with probability 10^-(length/2).

With `min_length` the strings have random lengths in [min_length, length] and are padded
to `length` with random digits (padding a model must learn to ignore, not a constant it
could recognise); the `lengths` input says where each ends, and the target covers only the
string (`last`: its last digit, one class per sample). A model of several inputs also gets
`decoder_in`, the target shifted right behind a start token (`START`): the decoder input
of teacher forcing, as PyTorch's seq2seq tutorials build it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from dnnspec.data.dataset import named_inputs
from dnnspec.data.datasets import DATASETS, VALIDATION, Dataset, DatasetDef
from dnnspec.errors import Span, error
from dnnspec.schema import ArgSpec, Signature

TASKS = ("reverse", "sort", "last")
START = 10
"""The start token of `decoder_in` (digits are 0-9, so a decoder embeds 11 ids)."""


def _strings(args: dict[str, Any], seed: int, span: Span | None) -> tuple[np.ndarray, np.ndarray]:
    """The padded strings [N, length] and their lengths [N]."""
    samples, length, shortest = args["samples"], args["length"], args["min_length"] or 0
    if shortest > length:
        raise error(
            f"digit_strings: min_length = {shortest} is longer than length = {length}",
            span,
            help=f"use min_length <= {length}",
        )
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, (samples, length), dtype=np.int64)
    if not shortest:
        return x, np.full(samples, length, np.int64)
    return x, rng.integers(shortest, length + 1, samples, dtype=np.int64)


def _target(task: str, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    if task == "last":
        last: np.ndarray = x[np.arange(len(x)), lengths - 1]
        return last
    return np.ascontiguousarray(x[:, ::-1] if task == "reverse" else np.sort(x, axis=1))


def _digit_strings(args: dict[str, Any], seed: int, span: Span | None) -> Dataset:
    _per_position(args, span)
    x, lengths = _strings(args, seed, span)
    return Dataset(x, _target(args["task"], x, lengths))


def _per_position(args: dict[str, Any], span: Span | None) -> None:
    """Padded strings have a target only for task `last`."""
    if args["min_length"] and args["task"] != "last":
        raise error(
            f"digit_strings: task = {args['task']} labels every position, which padded "
            "strings (min_length) do not have",
            span,
            help="use task = last with min_length, or drop min_length",
        )


def _digit_strings_inputs(
    args: dict[str, Any],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    seed: int,
    span: Span | None,
) -> Dataset:
    """Inputs `digits` (the padded strings), `lengths` and, for the per-position tasks,
    `decoder_in` (START, then the target but its last digit)."""
    data = _digit_strings(args, seed, span)
    _, lengths = _strings(args, seed, span)
    offered = {"digits": data.x, "lengths": lengths}
    if args["task"] != "last":
        start = np.full((len(data.y), 1), START, np.int64)
        offered["decoder_in"] = np.concatenate([start, data.y[:, :-1]], axis=1)
    found = named_inputs(offered, inputs, "digit_strings", span)
    return replace(data, x=found[inputs[0]], inputs=found)


DATASETS.add(
    "digit_strings",
    DatasetDef(
        Signature(
            args=(
                ArgSpec(name="task", type="str", default="reverse", choices=TASKS),
                ArgSpec(name="length", type="int", default=8, min=1, doc="digits per string"),
                ArgSpec(name="samples", type="int", default=4000, min=10),
                VALIDATION,
                ArgSpec(
                    name="min_length",
                    type="int",
                    default=0,
                    min=0,
                    doc="shortest string (0: all `length` long); shorter ones are padded "
                    "with random digits",
                ),
            )
        ),
        _digit_strings,
        "digit strings [N, length] (ids 0-9) and the same strings reversed or sorted, or "
        "their last digit; a model of several inputs also gets `lengths` and `decoder_in`",
        recent=("min_length",),
        inputs=_digit_strings_inputs,
    ),
)
