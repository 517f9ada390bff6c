"""WAV files read by soundfile (the `audio` extra, imported when first needed): one file
feeds `predict` one clip, and `audio_folder` (data/audio.py) reads its training clips the
same way (`read_clip`).

A clip is read as float32 in [-1, 1]; several channels are averaged to mono; a file at
another sample rate than the model's is resampled to it by soxr (the `audio` extra; its
default "HQ" quality, the SoX resampler's band-limited conversion); the clip is then cut
or padded with zeros at its end to the model's length.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.formats.base import Batch, Feed, Format, Limits
from dnnspec.errors import Span, error

SUFFIXES = (".wav",)
"""The audio files read (by suffix, in any case); other files in a class folder are refused."""


def soundfile() -> Any:
    """The soundfile module, or a message saying how to install it."""
    try:
        import soundfile
    except ImportError:
        raise error(
            "reading WAV files needs soundfile, which is not installed",
            help="pip install 'dnnspec[audio]' (or pip install soundfile)",
        ) from None
    return soundfile


def soxr() -> Any:
    """The soxr module, or a message saying how to install it."""
    try:
        import soxr
    except ImportError:
        raise error(
            "resampling audio needs soxr, which is not installed",
            help="pip install 'dnnspec[audio]' (or pip install soxr)",
        ) from None
    return soxr


RESAMPLE_MARGIN = 0.1
"""Seconds read past the frames a cut clip needs before resampling, so the resampler's
filter sees the signal beyond the cut rather than an end."""


def is_wav(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def read_clip(
    path: Path, sample_rate: int | None, samples: int | None, span: Span | None = None
) -> np.ndarray:
    """One WAV file as float32 `[samples]`, mono (channels averaged), resampled to
    `sample_rate` (None: left at its rate), cut or zero-padded to `samples` (None: as long
    as the file). A file soundfile cannot read is a diagnostic naming it."""
    sf = soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            other = sample_rate is not None and rate != sample_rate
            frames = -1
            if samples is not None:  # the frames at the file's rate that make the clip
                frames = math.ceil((samples / (sample_rate or rate) + RESAMPLE_MARGIN) * rate)
                frames = frames if other else samples
            data = f.read(frames=frames, dtype="float32")
    except (RuntimeError, sf.SoundFileError, OSError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise error(f"cannot read audio file '{path}': {reason}", span) from None
    wave = np.asarray(data, np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1, dtype=np.float32)
    if other and len(wave):
        wave = np.asarray(soxr().resample(wave, rate, sample_rate), np.float32)
    if samples is not None:
        wave = wave[:samples]
    if samples is not None and len(wave) < samples:
        wave = np.pad(wave, (0, samples - len(wave)))
    return wave


def _feed(path: Path, feed: Feed, limits: Limits) -> Batch:
    """One clip as a batch of one, `float32 [1, samples]`, at the length of a model input
    `[N, samples]` and the model's sample rate (else as the file holds it)."""
    ((name, shape),) = feed.inputs.items()
    length = shape[1] if shape is not None and len(shape) == 2 else None
    samples = length if isinstance(length, int) else None
    return Batch({name: read_clip(path, feed.sample_rate, samples)[None]})


FORMAT = Format(SUFFIXES, _feed)
