"""A folder of WAV clips, one sub-folder per class (`audio_folder`), as training data.

Each clip is read as `formats/wav.py` reads a file for `predict` (mono, cut or padded to
the length, the sample rate checked), so training and prediction see the same waveform.
The whole set is held in memory as the float32 `[N, samples]` the steps read, so its size
is checked against a limit before the first file is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dnnspec.data.formats.base import folder_files
from dnnspec.data.formats.wav import SUFFIXES, is_wav, read_clip
from dnnspec.errors import Span, error
from dnnspec.files import size_text


def class_folders(root: Path, span: Span | None) -> list[tuple[str, list[Path]]]:
    """The class folders of `root` in name order, each with its WAV files in name order
    (names starting with `.` or `_` are skipped); a file beside them, another file in
    one, an empty one or fewer than two classes is a diagnostic."""
    if not os.path.isdir(root):
        raise error(
            f"'{root}' is not a folder",
            span,
            help="audio_folder reads a folder holding one sub-folder of WAV files per class",
        )
    classes = []
    for entry in folder_files(root):
        if not entry.is_dir():
            raise error(
                f"'{entry}' is a file beside the class folders of '{root}'",
                span,
                help="put each clip in the sub-folder named after its class",
            )
        files = folder_files(entry)
        foreign = [f for f in files if not is_wav(f)]
        if foreign:
            raise error(
                f"'{foreign[0]}' is not a {' or '.join(SUFFIXES)} file",
                span,
                help="a class folder holds only its WAV clips",
            )
        if not files:
            raise error(f"class folder '{entry}' holds no clips", span)
        classes.append((entry.name, files))
    if len(classes) < 2:
        raise error(
            f"'{root}' holds {len(classes)} class folder{'s' if len(classes) != 1 else ''}; "
            "a classifier needs at least two",
            span,
            help="one sub-folder per class, named after it, holding its WAV clips",
        )
    return classes


def read_folder(
    root: Path, sample_rate: int, samples: int, limit: int, span: Span | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every clip of the class folders of `root` as float32 `[N, samples]`, with its class
    id (classes in name order) and the class names; refused before reading when the set
    would exceed `limit` bytes."""
    classes = class_folders(root, span)
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
