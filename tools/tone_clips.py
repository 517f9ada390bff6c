"""Write a small keyword-spotting set as WAV clips, one sub-folder per class: a folder to
try `audio_folder` and `log_mel` on (`tests/specs/keyword_tones.dnn`).

Four "keywords", each a 16 kHz, 16-bit clip of about one second: `rise` (a chirp up from
300-500 Hz to 1.2-2 kHz), `fall` (the same chirp down), `low` (a steady 350-550 Hz tone)
and `high` (a steady 1.3-2 kHz tone). Every clip draws its pitch, its length (0.3-0.7 s of
sound at a random start), its loudness and a background noise (about 10-25 dB below the
sound), and the clip itself lasts 0.9-1.1 s, so the reader pads some and cuts others.
Seeded: the same call writes the same files. A few of the clips are stereo, which the
reader averages to mono.

Usage: python tools/tone_clips.py OUT_FOLDER [CLIPS_PER_CLASS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile

RATE = 16000
CLASSES = ("fall", "high", "low", "rise")


def clip(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One clip of `kind`, float64 in [-1, 1], [samples] or [samples, 2]."""
    length = int(RATE * rng.uniform(0.9, 1.1))
    sound = int(RATE * rng.uniform(0.3, 0.7))
    start = int(rng.integers(0, max(1, min(length, RATE) - sound)))
    t = np.arange(sound) / RATE
    low, high = rng.uniform(300, 500), rng.uniform(1200, 2000)
    if kind in ("rise", "fall"):
        f0, f1 = (low, high) if kind == "rise" else (high, low)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
    else:
        hz = rng.uniform(350, 550) if kind == "low" else rng.uniform(1300, 2000)
        phase = 2 * np.pi * hz * t
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades
    wave = rng.normal(0.0, 1.0, length) * 10 ** (-rng.uniform(10, 25) / 20) * 0.3
    wave[start : start + sound] += 0.3 * np.sin(phase) * envelope
    wave *= rng.uniform(0.5, 1.0) / max(1.0, float(np.abs(wave).max()))
    return np.stack([wave, wave], axis=1) if rng.random() < 0.1 else wave


def write(folder: Path, per_class: int = 50, seed: int = 0) -> int:
    """Write `per_class` clips of each class as `folder/<class>/<index>.wav`; returns how
    many."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            soundfile.write(folder / kind / f"{index:03d}.wav", clip(kind, rng), RATE, "PCM_16")
    return per_class * len(CLASSES)


if __name__ == "__main__":
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    print(f"wrote {write(Path(sys.argv[1]), count)} clips under {sys.argv[1]}")
