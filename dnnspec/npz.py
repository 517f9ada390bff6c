"""`.npy` and `.npz` reading that believes nothing a file declares until it is checked.

numpy's own loader trusts the header: a 300-byte file declaring a 10^12-element array
makes it allocate terabytes, and a small archive can inflate to gigabytes. Here each
array's header is read first; its dtype must be plain numbers (never pickled objects),
its declared size must fit the caller's limit and agree byte for byte with what the file
(or archive member) really holds, and only then is the data read, exactly that much.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from typing import Protocol, cast

import numpy as np

from dnnspec.errors import Span, error
from dnnspec.files import size_text


class Stream(Protocol):
    """A binary file or archive member, read sequentially."""

    def read(self, n: int = -1, /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int | None: ...
    def tell(self) -> int: ...


MAX_MEMBERS = 4096
"""Arrays one archive may hold; far beyond any dataset or checkpoint we write."""
MAX_INFLATION = 100
"""How many times its size an archive's arrays may inflate to, beyond INFLATION_FLOOR:
deflate reaches 1000x on a constant array (a zip bomb), 141x on one percent of ones, 36x
on a 10-class one-hot table and near 1x on measured values."""
INFLATION_FLOOR = 64 << 20
"""Inflated sizes up to this are read whatever the ratio (a 1000-class one-hot table
compresses 600x)."""
CHUNK = 16 << 20
"""Bytes read from a stream at once: a zip member's reader builds each read as a bytes
object before copying it, so one read of everything would hold the data twice."""


def _header(f: Stream, where: str, span: Span | None) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise error(f"{where} is not a valid .npy file: {exc}", span) from None
    if dtype.hasobject or dtype.kind not in "biufcUS":
        raise error(
            f"{where} holds {'Python objects' if dtype.hasobject else f'{dtype} values'}, "
            "not numbers",
            span,
        )
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _read(
    f: Stream, available: int, where: str, limit: int, span: Span | None
) -> tuple[np.ndarray, int]:
    """One array from `f` whose header starts here and which has `available` bytes."""
    start = f.tell()
    shape, fortran, dtype = _header(f, where, span)
    declared = math.prod(shape) * dtype.itemsize
    if declared > limit:
        raise error(
            f"{where} declares a {dtype} array of shape {list(shape)} ({size_text(declared)}), "
            f"over the limit of {size_text(limit)}",
            span,
        )
    holds = available - (f.tell() - start)
    if holds != declared:
        raise error(
            f"{where} declares shape {list(shape)} ({size_text(declared)} of {dtype}) but "
            f"holds {size_text(max(holds, 0))} of data",
            span,
        )
    flat = np.empty(math.prod(shape), dtype=dtype)
    view, got = flat.data.cast("B"), 0
    while got < declared:
        n = f.readinto(view[got : got + CHUNK])
        if not n:
            raise error(f"{where} is truncated", span)
        got += n
    if f.read(1):  # reaches the end, so a zip member's CRC is checked
        raise error(f"{where} holds more data than it declares", span)
    return flat.reshape(shape, order="F" if fortran else "C"), declared


def read_npy(f: Stream, size: int, where: str, limit: int, span: Span | None = None) -> np.ndarray:
    """The array of an `.npy` file of `size` bytes opened as `f`."""
    return _read(f, size, where, limit, span)[0]


def _check_inflation(
    members: list[zipfile.ZipInfo], size: int, where: str, span: Span | None
) -> None:
    """Refuse, before anything is inflated, an archive of `size` bytes whose members
    declare more than MAX_INFLATION times that beyond INFLATION_FLOOR (members that share
    their compressed bytes count the file once)."""
    inflated = sum(info.file_size for info in members)
    compressed = min(sum(info.compress_size for info in members), size)
    if inflated > INFLATION_FLOOR and inflated > MAX_INFLATION * max(compressed, 1):
        raise error(
            f"{where} would inflate from {size_text(compressed)} to {size_text(inflated)} "
            f"({inflated // max(compressed, 1):,}x); an archive may inflate at most "
            f"{MAX_INFLATION}x beyond {size_text(INFLATION_FLOOR)}",
            span,
            help="save the arrays uncompressed (np.savez, or .npy files)",
        )


def read_npz(
    f: io.BufferedReader, where: str, limit: int, span: Span | None = None
) -> dict[str, np.ndarray]:
    """Every array of an `.npz` archive, together at most `limit` bytes and, compressed,
    at most MAX_INFLATION times the file's size (beyond INFLATION_FLOOR)."""
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise error(f"{where} is not a valid .npz file (not a zip archive)", span) from None
    arrays: dict[str, np.ndarray] = {}
    left = limit
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise error(f"{where} holds {len(members)} arrays, over the limit of {MAX_MEMBERS}")
        _check_inflation(members, os.fstat(f.fileno()).st_size, where, span)
        for info in members:
            name = info.filename.removesuffix(".npy")
            if info.is_dir() or name == info.filename or name in arrays:
                raise error(f"{where} is not a valid .npz file: member '{info.filename}'", span)
            member = f"array '{name}' of {where}"
            try:
                with archive.open(info) as stream:
                    arrays[name], used = _read(
                        cast(Stream, stream), info.file_size, member, left, span
                    )
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
                raise error(f"{member} is damaged: {exc}", span) from None
            left -= used
    return arrays


def map_npy(path: str, where: str, span: Span | None = None) -> np.ndarray:
    """A read-only memory map of an `.npy` file (never a pickle), after its header is
    checked as `read_npy` checks it: a header that declares more (or fewer) rows than the
    file holds is refused here rather than failing, or reading past the end, later."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        shape, fortran, dtype = _header(f, where, span)
        offset = f.tell()
    declared = math.prod(shape) * dtype.itemsize
    if size - offset != declared:
        raise error(
            f"{where} declares shape {list(shape)} ({size_text(declared)} of {dtype}) but "
            f"holds {size_text(max(size - offset, 0))} of data",
            span,
        )
    if declared == 0:
        return np.empty(shape, dtype)
    mapped: np.ndarray = np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )
    return mapped
