"""Checkpoints round-trip exactly, and a missing, torn or tampered file is a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dnnspec.errors import DiagnosticError
from dnnspec.runtime import checkpoint


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "dense_1.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "dense_1.weight.m": np.zeros((4, 3), np.float32),
    }


def test_checkpoint_round_trips_arrays_and_header(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.npz"
    checkpoint.save(path, sample(), {"step": 12, "epoch": 2})
    arrays, header = checkpoint.load(path)
    assert header == {"step": 12, "epoch": 2}
    for name, value in sample().items():
        np.testing.assert_array_equal(arrays[name], value)
    assert not path.with_name("last.npz.tmp").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nope.npz")


def test_truncated_checkpoint_is_reported_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "last.npz"
    checkpoint.save(path, sample(), {"step": 1})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DiagnosticError, match="corrupt"):
        checkpoint.load(path)


def test_tampered_checkpoint_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "last.npz"
    checkpoint.save(path, sample(), {"step": 1})
    arrays, header = checkpoint.load(path)
    arrays["dense_1.weight"][0, 0] += 1.0
    entries: dict[str, Any] = {
        **arrays,
        checkpoint.HEADER: np.frombuffer(b'{"step": 1, "checksum": "0"}', np.uint8),
    }
    np.savez(path, **entries)
    with pytest.raises(DiagnosticError, match="checksum"):
        checkpoint.load(path)
