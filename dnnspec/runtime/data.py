"""The data contract: arrays are checked against the spec's declared input and output.

Mismatches (shape, dtype, labels out of range) are reported at the spec line that
declares what was expected, before any training step runs.
"""

from __future__ import annotations

import numpy as np

from dnnspec.check.shapes import TypedModel
from dnnspec.errors import Note, error
from dnnspec.ir import Call
from dnnspec.runtime.datasets import Dataset


def _shape(dims: tuple[int | str, ...]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def conform(
    data: Dataset, typed: TypedModel, target: str, source: Call
) -> tuple[Dataset, int | None]:
    """Cast and check `data` for the model; returns it and the number of classes (if any)."""
    inputs = typed.spec.model.inputs
    where = Note(message=f"the data comes from {source.name}(...) here", span=source.span)
    if len(inputs) != 1:
        raise error(
            f"model '{typed.spec.model.name}' has {len(inputs)} inputs; datasets "
            "provide one input array",
            inputs[-1].span,
            notes=[where],
        )
    decl = inputs[0]
    x = np.asarray(data.x)
    if x.dtype.kind not in "biuf":
        raise error(
            f"input '{decl.name}' expects {decl.dtype} data, but the data has dtype {x.dtype}",
            decl.span,
            notes=[where],
        )
    if decl.dtype.startswith("int") and x.dtype.kind == "f":
        raise error(
            f"input '{decl.name}' is {decl.dtype} but the data is {x.dtype}",
            decl.span,
            notes=[where],
            help="declare the input as float32, or supply integer data",
        )
    got = (("N",) + x.shape[1:]) if x.ndim else ()
    ok = x.ndim == len(decl.dims) and all(
        isinstance(d, str) or d == s for d, s in zip(decl.dims[1:], x.shape[1:], strict=False)
    )
    if not ok:
        raise error(
            f"input '{decl.name}' is declared {_shape(decl.dims)} but the data has "
            f"shape {_shape(got)} ({x.shape[0] if x.ndim else 0} samples)",
            decl.span,
            notes=[where],
            help=f"declare `input {decl.name}: {decl.dtype}{_shape(got)}`" if x.ndim else None,
        )
    x = x.astype(decl.dtype)

    out = typed.output
    y = np.asarray(data.y)
    if target == "class":
        classes = out.dims[-1]
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise error(
                f"the loss expects integer class labels of shape [N], got {y.dtype} "
                f"{_shape(y.shape)}",
                source.span,
            )
        if len(y) and (y.min() < 0 or y.max() >= classes):
            bad = int(y.max() if y.max() >= classes else y.min())
            raise error(
                f"label {bad} is outside the model's {classes} classes (0..{classes - 1})",
                source.span,
                help=f"the model outputs {out}; make its last dense layer "
                f"as wide as the number of classes ({int(y.max()) + 1})",
            )
        return Dataset(x, y.astype(np.int64), int(classes)), int(classes)
    if y.dtype.kind not in "biuf":
        raise error(f"targets must be numbers, got dtype {y.dtype}", source.span)
    want = tuple(out.dims[1:])
    if y.ndim == 1 and want == (1,):
        y = y[:, None]
    if y.shape[1:] != want:
        raise error(
            f"the model outputs {out} but the targets have shape {_shape(('N',) + y.shape[1:])}",
            source.span,
        )
    return Dataset(x, y.astype(np.float32), None), None
