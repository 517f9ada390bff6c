"""Locating the data files a spec names: next to the spec first, then in the working
directory, with a located error that says where it looked."""

from __future__ import annotations

import os
from pathlib import Path

from dnnspec.errors import Note, Span, error


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:  # e.g. a name too long to look up: opening it reports why
        return False


def find(path: Path, span: Span | None) -> Path:
    """A relative path is looked up next to the spec first, then in the working directory."""
    if path.is_absolute():
        candidates = [path]
    else:
        spec_dir = Path(span.file).parent if span is not None else None
        candidates = [spec_dir / path] if spec_dir is not None else []
        candidates.append(path)
    for candidate in candidates:
        if _exists(candidate):
            return candidate
    if any(len(str(c)) > 1024 or len(c.name) > 255 for c in candidates):
        raise error(f"data file path '{str(path)[:80]}...' is too long", span)
    looked = " and ".join(f"'{c}'" for c in dict.fromkeys(candidates))
    raise error(
        f"data file '{path}' does not exist",
        span,
        notes=[Note(message=f"looked for {looked}")],
        help="a relative path is read from the spec's folder, then the current directory",
    )


def locate_file(text: str, span: Span | None) -> Path:
    """The absolute path of a data file named in a spec, as the run will read it."""
    if not text:
        raise error("the data file path is empty", span)
    return Path(os.path.abspath(find(Path(text), span)))
