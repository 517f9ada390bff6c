"""A folder of WAV clips, one sub-folder per class (`audio_folder`), as training data.

Each clip is read as `formats/wav.py` reads a file for `predict` (mono, resampled to the
sample rate, cut or padded to the length), so training and prediction see the same waveform.
The whole set is held in memory as the float32 `[N, samples]` the steps read, so its size
is checked against a limit before the first file is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnnspec.data.folders import LEAST, Files, class_folders
from dnnspec.data.formats.wav import SUFFIXES, is_wav, read_clip
from dnnspec.errors import Span, error
from dnnspec.files import size_text

CLIPS = Files(
    source="audio_folder",
    one="clip",
    many="clips",
    accepts=is_wav,
    foreign=f"a {' or '.join(SUFFIXES)} file",
    folder="WAV files",
    only="WAV clips",
    holding="WAV clips",
)
"""The files of a class folder of clips."""


def read_folder(
    root: Path,
    sample_rate: int,
    samples: int,
    limit: int,
    span: Span | None,
    least: int = LEAST,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every clip of the class folders of `root` (at least `least`) as float32 `[N,
    samples]`, with its class id (classes in name order) and the class names; refused
    before reading when the set would exceed `limit` bytes."""
    classes = class_folders(root, CLIPS, span, least)
    count = sum(len(files) for _, files in classes)
    needed = count * samples * 4
    if needed > limit:
        raise error(
            f"'{root}' holds {count:,} clips, {size_text(needed)} as float32 [N, {samples}], "
            f"over the limit of {size_text(limit)} held in memory",
            span,
            help="use shorter clips (seconds), a lower sample_rate or fewer clips",
        )
    waves = np.empty((count, samples), np.float32)
    labels = np.empty(count, np.int64)
    i = 0
    for label, (_, files) in enumerate(classes):
        for path in files:
            waves[i], labels[i] = read_clip(path, sample_rate, samples, span), label
            i += 1
    return waves, labels, tuple(name for name, _ in classes)
