"""How `dnnspec export` checks every graph it writes: the full ONNX checker, strict shape
inference, then onnxruntime against `onnx.reference` on random inputs, the largest
difference relative to the value where it exceeds 1 within a tolerance (float16 graphs and
float16 against float32 have their own)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from dnnspec.assemble.steps import TARGET
from dnnspec.errors import DiagnosticError, error
from dnnspec.metadata import ModelMetadata
from dnnspec.runtime.session import make_session
from dnnspec.tools.reference import run_reference

TOLERANCE = 1e-4
"""onnxruntime vs onnx.reference, float32 graphs."""

HALF_TOLERANCE = 2e-2
"""onnxruntime vs onnx.reference for float16 graphs, and float16 vs float32 outputs:
float16 keeps 11 significant bits (a relative step of 4.9e-4 per rounding), and a
difference is relative to the value's magnitude where that exceeds 1."""

CHECK_BATCH = 2
"""Samples in the random batch the checks run (symbolic dims past the batch get 3)."""


@dataclass
class Check:
    """One graph compared between onnxruntime and onnx.reference (or float16 vs 32)."""

    graph: str
    against: str
    difference: float
    tolerance: float

    def text(self) -> str:
        compared = (
            f"{self.graph}: onnxruntime vs onnx.reference"
            if self.against == "onnx.reference"
            else f"{self.graph} vs {self.against}, in onnxruntime"
        )
        return f"{compared}: max difference {self.difference:.3g} (tolerance {self.tolerance:g})"


def _size(dim: onnx.TensorShapeProto.Dimension, first: bool) -> int:
    """A dim's size in the checks: the batch CHECK_BATCH, every other name 3, and a dim
    derived from names (`T+S` after a concat, `(T+S)*4`) computed from those, so that a
    target has the size of the output the graph computes."""
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    if first:
        return CHECK_BATCH
    try:
        return _derived(ast.parse(dim.dim_param, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return 3


def _derived(node: ast.expr) -> int:
    """The size of a parsed dim expression (sums and products of names and ints)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left, right = _derived(node.left), _derived(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return 3


def random_feeds(
    model: onnx.ModelProto,
    meta: ModelMetadata,
    given: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Inputs for the checks: `given` ones as they are; token ids below the recorded
    vocabulary (`meta` is the model's metadata), class targets below the output's width,
    floats standard normal."""
    vocab = {d.name: d.vocab for d in meta.inputs or []}
    labels = meta.class_labels or []
    named = {  # the class targets of named outputs, `target/<output>`
        f"{TARGET}/{o.name}": len(o.class_labels or []) for o in meta.outputs or []
    }
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for info in model.graph.input:
        if info.name in initializers:
            continue
        if info.name in given:
            feeds[info.name] = given[info.name]
            continue
        tensor = info.type.tensor_type
        shape = [_size(d, i == 0) for i, d in enumerate(tensor.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[info.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            classes = len(labels) if info.name == TARGET else named.get(info.name, 2)
            high = vocab.get(info.name) or classes or 2
            feeds[info.name] = rng.integers(0, high, shape).astype(dtype)
    return feeds


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b|, relative to |b| where that exceeds 1 (inf where one is not
    finite and the other is)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":  # class names: equal or not
        return 0.0 if a.tolist() == b.tolist() else float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not a.size:
        return 0.0
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    gap = np.where(same, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(b)))
    return float(np.nan_to_num(gap, nan=np.inf).max())


def _run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], what: str) -> dict[str, Any]:
    try:
        session = make_session(model, "cpu")
    except DiagnosticError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped
        raise error(f"onnxruntime cannot load the exported {what}: {first_line(exc)}") from None
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


def verify(
    model: onnx.ModelProto, what: str, feeds: dict[str, np.ndarray], tolerance: float
) -> tuple[Check, dict[str, Any]]:
    """Full checker, strict shape inference, then onnxruntime vs onnx.reference on `feeds`;
    any failure is a diagnostic naming `what`. Returns the check and onnxruntime's outputs."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise error(f"the exported {what} fails the ONNX checker: {first_line(exc)}") from None
    ours = _run_ort(model, feeds, what)
    reference = run_reference(model, feeds)
    worst, name = 0.0, ""
    for key, value in reference.items():
        gap = difference(ours[key], value)
        if gap >= worst:
            worst, name = gap, key
    if not worst <= tolerance:
        raise error(
            f"the exported {what} gives other numbers in onnxruntime than in onnx.reference: "
            f"output '{name}' differs by {worst:.3g} (tolerance {tolerance:g})",
            help="please report this with the spec; the graph is not safe to deploy",
        )
    return Check(what, "onnx.reference", worst, tolerance), ours
