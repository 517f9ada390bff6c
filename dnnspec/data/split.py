"""Dividing a dataset once, seeded, into training and validation parts."""

from __future__ import annotations

import numpy as np

from dnnspec.data.dataset import Dataset


def split_indices(
    data: Dataset, validation: float, seed: int, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted sample indices of the training and validation parts: a seeded shuffle, or
    with `stratify` (class labels [N]) the same fraction of every class, so a rare class
    is in both parts in proportion."""
    rng = np.random.default_rng(seed + 7919)
    if not stratify or data.y.ndim != 1 or data.y.dtype.kind not in "iu":
        order = rng.permutation(len(data))
        n_val = int(round(len(data) * validation))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    held: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    for label in np.unique(data.y):
        members = rng.permutation(np.flatnonzero(data.y == label))
        n_val = int(round(len(members) * validation))
        held.append(members[:n_val])
        kept.append(members[n_val:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def split(
    data: Dataset, validation: float, seed: int, stratify: bool = False
) -> tuple[Dataset, Dataset]:
    """The training and validation parts (see `split_indices`)."""
    kept, held = split_indices(data, validation, seed, stratify)
    return data.take(kept), data.take(held)
