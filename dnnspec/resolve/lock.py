"""`spec.lock.json`: the resolved spec written to disk and read back."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from dnnspec import ir
from dnnspec.errors import error


def write_lock(spec: ir.Spec, path: str | Path) -> None:
    """Write `spec.lock.json` atomically: every default visible, spans included."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(spec.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_lock(path: str | Path) -> ir.Spec:
    """The resolved spec stored in a lock file; a missing or invalid file is a diagnostic."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(
            f"cannot read lock file '{path}': {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        return ir.Spec.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise error(
            f"'{path}' is not a valid spec.lock.json: {where}: {first['msg']}",
            help="regenerate it from the spec",
        ) from None
