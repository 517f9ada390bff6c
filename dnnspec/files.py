"""Reading and writing the files a user hands us, as carefully as git treats its own.

Every path is input: it may be empty, too long, a FIFO, a device, a directory or a
symlink planted where a temporary file will go. Reads open the path without blocking,
insist on a regular file and a documented size limit, and report anything else as a
diagnostic. Writes go to an exclusively created temporary file in the target's directory
(never opened by a predictable name, so a planted symlink is never followed), are
fsynced and renamed over the target, so a reader sees the old file or the new one and a
full disk or a kill leaves no torn file behind.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from dnnspec.errors import Span, error

MiB = 1 << 20
GiB = 1 << 30


def size_text(n: int) -> str:
    """`1 MiB`, `2 GiB`, `300 bytes`: a byte count for messages and docs."""
    for unit, size in (
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", GiB),
        ("MiB", MiB),
        ("KiB", 1 << 10),
    ):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def os_reason(exc: OSError) -> str:
    """What went wrong, in words a user can act on."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    return exc.strerror or str(exc)


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is: `a directory`, `a FIFO (named pipe)`..."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


@contextmanager
def open_regular(
    path: Path | str, what: str, limit: int, span: Span | None = None
) -> Iterator[io.BufferedReader]:
    """`path` opened for reading, once it is known to be a regular file within `limit`.

    Opened non-blocking so that a FIFO cannot stall us before fstat says what it is.
    """
    text = str(path)
    if not text:
        raise error(f"the {what} path is empty", span)
    try:
        fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} '{text}' does not exist", span) from None
    except OSError as exc:
        raise error(f"cannot read {what} '{text}': {os_reason(exc)}", span) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} '{text}' is {kind_of(info.st_mode)}, not a file", span)
        if info.st_size > limit:
            raise error(
                f"{what} '{text}' is {size_text(info.st_size)}, over the limit of "
                f"{size_text(limit)}",
                span,
            )
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        try:
            yield f
        except OSError as exc:
            raise error(f"cannot read {what} '{text}': {os_reason(exc)}", span) from None


def read_bytes(path: Path | str, what: str, limit: int, span: Span | None = None) -> bytes:
    """The whole of a regular file of at most `limit` bytes."""
    with open_regular(path, what, limit, span) as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew after fstat
        raise error(f"{what} '{path}' is over the limit of {size_text(limit)}", span)
    return data


def is_regular(path: Path) -> bool:
    """Whether `path` is a regular file (not following a final symlink)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_with(path: Path, write: Callable[[BinaryIO], object], what: str | None = None) -> None:
    """Write `path` atomically through `write(file)`: an exclusive temporary file in the same
    directory, fsynced, given the permissions a plain `open` would, then renamed over it."""
    what = what or f"'{path}'"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"cannot write {what}: {os_reason(exc)}", help=_help(exc)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            if exc.errno == errno.EISDIR or path.is_dir():
                raise error(f"cannot write {what}: a directory is in the way") from None
            raise error(f"cannot write {what}: {os_reason(exc)}", help=_help(exc)) from None
        raise
    _sync_directory(path.parent)


def sweep_temporary(folder: Path) -> None:
    """Remove the temporary files killed writes left in `folder` (`.name.XXXX.tmp`, never
    followed if they are links). Only for a folder the caller holds the lock of."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            try:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
            except OSError:
                pass


def write_bytes(path: Path, data: bytes, what: str | None = None) -> None:
    write_with(path, lambda f: f.write(data), what)


def write_text(path: Path, text: str, what: str | None = None) -> None:
    write_bytes(path, text.encode("utf-8"), what)


def _sync_directory(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _help(exc: OSError) -> str | None:
    if exc.errno == errno.ENOSPC:
        return "free some space and run the command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a directory you can write to"
    return None


def make_directory(path: Path, what: str) -> None:
    """`mkdir -p`, with the reason in words when it cannot be done."""
    if not str(path):
        raise error(f"the {what} path is empty")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise error(f"{what} '{path}' is a file, not a directory") from None
    except OSError as exc:
        raise error(f"cannot create {what} '{path}': {os_reason(exc)}", help=_help(exc)) from None
    if not path.is_dir():
        raise error(f"{what} '{path}' is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise error(f"{what} '{path}' is not writable", help="choose a directory you can write to")


def finite_json(value: Any) -> Any:
    """`value` with NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    """One line of a JSON-lines file (valid JSON: non-finite numbers become null)."""
    return json.dumps(finite_json(record), allow_nan=False) + "\n"


LOCK_NAME = ".lock"


class DirectoryLock:
    """An exclusive lock on a run directory for as long as one command writes it.

    Two `train --overwrite` into one `--out` used to interleave their files; the second
    now stops at once. The lock is an flock on `.lock` in the directory (released by the
    kernel if the process dies, so a kill never leaves a stale lock behind).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        path = self.folder / LOCK_NAME
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as exc:
            raise error(f"cannot lock '{self.folder}': {os_reason(exc)}", help=_help(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise error(
                f"'{self.folder}' is in use by another dnnspec command",
                help="wait for it to finish, or choose another --out",
            ) from None
        self.fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None
