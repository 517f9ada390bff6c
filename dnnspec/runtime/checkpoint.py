"""Checkpoints: carried tensors plus progress, written atomically with a checksum.

A checkpoint is a plain `.npz` (never a pickle) holding every parameter and optimizer
state tensor and a JSON header (step, epoch, seed, spec hash, best metric). It is
written to a temporary file, fsynced and renamed, so an interrupted run never leaves a
torn file; the checksum catches a corrupt one on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.data.datasets import load_failure
from dnnspec.errors import error

HEADER = "__header__"


def _digest(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def save(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    """Write `arrays` and `header` to `path` atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full = dict(header, checksum=_digest(arrays, header))
    buffer = io.BytesIO()
    entries: dict[str, Any] = {**arrays, HEADER: np.frombuffer(json.dumps(full).encode(), np.uint8)}
    np.savez(buffer, **entries)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint; a missing, unreadable or tampered file is a clear error."""
    if not path.exists():
        raise error(f"no checkpoint at '{path}'", help="train first, or pass the run directory")
    if not zipfile.is_zipfile(path):
        raise error(f"checkpoint '{path}' is corrupt: it is not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != HEADER}
            header = json.loads(bytes(npz[HEADER]).decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise error(f"checkpoint '{path}' is corrupt or unreadable: {load_failure(exc)}") from None
    checksum = header.pop("checksum", None)
    if checksum != _digest(arrays, header):
        raise error(f"checkpoint '{path}' is corrupt: its checksum does not match its contents")
    return arrays, header
