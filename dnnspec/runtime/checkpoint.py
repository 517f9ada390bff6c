"""Checkpoints: carried tensors plus progress, written atomically with a checksum.

A checkpoint is a plain `.npz` (never a pickle) holding every parameter and optimizer
state tensor and a JSON header (step, epoch, seed, spec hash, best metric). It is
written to an exclusively created temporary file, fsynced and renamed, so an interrupted
run never leaves a torn file and a planted symlink is never followed; the checksum
catches a corrupt file on load. The checksum is not a signature (anyone can recompute
it), so `dnnspec.runtime.run` also validates every header field and every array's name,
dtype and shape against the compiled program before using any of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from dnnspec import npz
from dnnspec.errors import DiagnosticError, error
from dnnspec.files import GiB, MiB, open_regular, write_with

HEADER = "__header__"
MAX_HEADER_BYTES = 1 * MiB


def _digest(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def save(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    """Write `arrays` and `header` to `path` atomically (exclusive temp file, fsync, rename)."""
    if path.parent.is_symlink() or (path.parent.exists() and not path.parent.is_dir()):
        raise error(f"cannot write the checkpoint: '{path.parent}' is not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create '{path.parent}': {exc.strerror}") from None
    full = dict(header, checksum=_digest(arrays, header))
    blob = np.frombuffer(json.dumps(full, allow_nan=False).encode(), np.uint8)
    payload: dict[str, Any] = {**arrays, HEADER: blob}
    write_with(path, lambda f: np.savez(f, **payload), f"checkpoint '{path}'")


def load(path: Path, limit: int = 4 * GiB) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint of at most `limit` bytes of arrays; a missing, unreadable or
    tampered file is a clear error. The header is a JSON object, nothing else."""
    if not path.exists() and not path.is_symlink():
        raise error(f"no checkpoint at '{path}'", help="train first, or pass the run directory")
    with open_regular(path, "checkpoint", limit + MAX_HEADER_BYTES) as f:
        try:
            arrays = npz.read_npz(f, "the file", limit + MAX_HEADER_BYTES)
        except DiagnosticError as exc:
            reason = exc.diagnostics[0].message
            raise error(f"checkpoint '{path}' is corrupt: {reason}") from None
    blob = arrays.pop(HEADER, None)
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise error(f"checkpoint '{path}' is corrupt: it has no header")
    try:
        header = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise error(f"checkpoint '{path}' is corrupt: its header is not JSON") from None
    if not isinstance(header, dict):
        raise error(f"checkpoint '{path}' is corrupt: its header is not a JSON object")
    checksum = header.pop("checksum", None)
    if checksum != _digest(arrays, header):
        raise error(f"checkpoint '{path}' is corrupt: its checksum does not match its contents")
    return arrays, header


Number = StrictInt | StrictFloat | None
Value = Number | list[Number]
"""A record's entry: a metric, or per-class values (`f1_per_class`)."""
"""A record value: metrics are floats (null where JSON could not hold them), epoch/step ints."""


class Header(BaseModel):
    """What a checkpoint's header must hold; nothing else is accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: StrictInt = Field(ge=0)
    epoch: StrictInt = Field(ge=0)
    epochs: StrictInt = Field(ge=1)
    stopped: StrictStr | None
    seed: StrictInt
    spec_hash: StrictStr
    data_sha256: StrictStr
    early_stop: tuple[StrictFloat | StrictInt | None, StrictInt] | None
    plateau: tuple[StrictFloat | StrictInt | None, StrictInt, StrictFloat | StrictInt] | None = None
    """reduce_on_plateau's best value, epochs waited and current factor."""
    best_record: dict[StrictStr, Value]
    record: dict[StrictStr, Value]
    history: list[dict[StrictStr, Value]]
    """Every epoch's record so far: metrics.jsonl is rewritten from it on resume."""


def header_of(path: Path, header: dict[str, Any]) -> Header:
    """The validated header; a forged or foreign one names the first field that is wrong."""
    try:
        return Header.model_validate(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "header"
        raise error(
            f"checkpoint '{path}' has an invalid header: {where}: {first['msg']}",
            help="it was not written by this version of dnnspec for this run; "
            "train into a new --out directory or start over with --overwrite",
        ) from None


def check_arrays(
    path: Path, arrays: dict[str, np.ndarray], expected: dict[str, tuple[tuple[int, ...], str]]
) -> None:
    """Every array named, typed and shaped as `expected` (name -> shape, dtype); no others."""
    foreign = (
        "it was written for another spec or by another version of dnnspec; "
        "train into a new --out directory or start over with --overwrite"
    )
    for name in sorted(set(expected) - set(arrays)):
        raise error(
            f"checkpoint '{path}' lacks the tensor '{name}' the program carries", help=foreign
        )
    for name in sorted(set(arrays) - set(expected)):
        raise error(
            f"checkpoint '{path}' holds a tensor '{name}' the program does not carry",
            help=foreign,
        )
    for name, (shape, dtype) in expected.items():
        array = arrays[name]
        if array.shape != shape or array.dtype != np.dtype(dtype):
            raise error(
                f"checkpoint '{path}': tensor '{name}' is {array.dtype} {list(array.shape)}, "
                f"but the program carries {dtype} {list(shape)}",
                help=foreign,
            )
