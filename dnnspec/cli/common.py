"""What the commands share: exit codes, the spec a command names, and output helpers."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from dnnspec.api import Spec
    from dnnspec.errors import Diagnostic

OK, CHANGES_NEEDED, SPEC_ERROR, INTERRUPTED, OUTPUT_CLOSED = 0, 1, 2, 130, 141


def overrides(pairs: list[str]) -> dict[str, str]:
    from dnnspec.errors import error

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise error(f"--set expects name=value, got '{pair}'", help="e.g. --set hidden=64")
        out[name.strip()] = value.strip()
    return out


def spec_of(args: argparse.Namespace) -> Spec:
    from dnnspec.api import load_spec

    # --set text is passed as text: the API reads a string override as the command line does.
    return load_spec(args.spec, **overrides(getattr(args, "set", None) or []))


def show_warnings(warnings: Sequence[Diagnostic]) -> None:
    """Rendered like errors, on stderr, before the command's own output."""
    for warning in warnings:
        print(warning.render() + "\n", file=sys.stderr)


def metrics_text(record: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """`loss 0.1234  accuracy 0.9500`: the numbers of a record; per-class lists are shown
    by --json and logged in metrics.jsonl."""
    return "  ".join(
        f"{k} {v:.4f}"
        for k, v in record.items()
        if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
    )


def dumps(value: Any) -> str:
    """Valid JSON whatever the numbers: NaN and infinities (a diverged metric) are null."""
    return json.dumps(_finite(value), indent=2, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def jsonable(values: np.ndarray) -> list[Any]:
    """Nested lists with NaN/inf as null: JSON has no NaN."""
    import numpy as np

    cells = values.astype(object)
    cells[~np.isfinite(values)] = None
    nested: list[Any] = cells.tolist()
    return nested
