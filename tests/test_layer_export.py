"""Every layer through `dnnspec export`, driven by `LAYER_CASES` rather than the example
specs (most layers appear in none): each case's small model written at opset 17 passes
the full ONNX checker and gives the same outputs in onnxruntime and onnx.reference; its
float16 model stays within tolerance of the float32 one; its train and eval steps give
the same loss, metrics and updates in both runtimes (the checks run a batch of 2).

A case that cannot pass a check names it in `LayerCase.limits` with the reason, and the
check must still fail with that reason, so a limit that no longer holds is noticed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from test_layers import LAYER_CASES, LayerCase

from dnnspec.errors import DiagnosticError
from dnnspec.tools.checks import HALF_TOLERANCE, TOLERANCE
from dnnspec.tools.export import Exported, export

OPSET = 17
"""The oldest opset export writes, where most rewrites of changed operators happen."""


def _spec(case: LayerCase, tmp_path: Path) -> Path:
    path = tmp_path / "case.dnn"
    path.write_text(case.spec_text())
    return path


def _opset(case: LayerCase) -> int | None:
    """Opset 17, or the newest where the layer cannot be written at 17."""
    return None if "opset 17" in case.limits else OPSET


def export_at_opset_17(case: LayerCase, tmp_path: Path) -> Exported:
    return export(_spec(case, tmp_path), tmp_path / "model.onnx", opset=OPSET)


def export_in_float16(case: LayerCase, tmp_path: Path) -> Exported:
    return export(_spec(case, tmp_path), tmp_path / "half.onnx", opset=_opset(case), fp16=True)


def export_train_step(case: LayerCase, tmp_path: Path) -> Exported:
    return export(_spec(case, tmp_path), tmp_path / "steps", opset=_opset(case), train=True)


CHECKS: dict[str, Callable[[LayerCase, Path], Exported]] = {
    "opset 17": export_at_opset_17,
    "float16": export_in_float16,
    "train step": export_train_step,
}


def _passing(check: str) -> list[LayerCase]:
    return [case for case in LAYER_CASES if check not in case.limits]


def _id(case: LayerCase) -> str:
    return case.id


@pytest.mark.parametrize("case", _passing("opset 17"), ids=_id)
def test_each_layer_exports_at_opset_17_through_the_full_checker_and_onnx_reference(
    case: LayerCase, tmp_path: Path
) -> None:
    result = export_at_opset_17(case, tmp_path)
    model = onnx.load(result.files["model"])
    assert [o.version for o in model.opset_import] == [OPSET]
    onnx.checker.check_model(model, full_check=True)
    (check,) = result.checks
    assert check.against == "onnx.reference" and check.difference <= TOLERANCE


@pytest.mark.parametrize("case", _passing("float16"), ids=_id)
def test_each_layer_exports_in_float16_within_tolerance_of_float32(
    case: LayerCase, tmp_path: Path
) -> None:
    result = export_in_float16(case, tmp_path)
    assert result.precision == "float16"
    against = {c.against: c.difference for c in result.checks if c.graph == "float16 model"}
    assert against["float32 model"] <= HALF_TOLERANCE
    assert against["onnx.reference"] <= HALF_TOLERANCE
    model = onnx.load(result.files["model"])  # float32 outside, float16 weights inside
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {TensorProto.FLOAT}
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


@pytest.mark.parametrize("case", _passing("train step"), ids=_id)
def test_each_layer_s_train_and_eval_steps_agree_between_onnxruntime_and_onnx_reference(
    case: LayerCase, tmp_path: Path
) -> None:
    result = export_train_step(case, tmp_path)
    assert {c.graph: c.against for c in result.checks} == {
        "train step": "onnx.reference",
        "eval step": "onnx.reference",
    }
    assert all(c.difference <= TOLERANCE for c in result.checks)


LIMITS = [(case, check, why) for case in LAYER_CASES for check, why in case.limits.items()]


def test_every_limit_names_a_check() -> None:
    assert {check for _, check, _ in LIMITS} <= set(CHECKS)


@pytest.mark.parametrize(
    ("case", "check", "why"), LIMITS, ids=[f"{c.id}-{check}" for c, check, _ in LIMITS]
)
def test_each_limit_still_holds_with_its_reason(
    case: LayerCase, check: str, why: str, tmp_path: Path
) -> None:
    with pytest.raises(DiagnosticError) as caught:
        CHECKS[check](case, tmp_path)
    assert why in caught.value.diagnostics[0].message


def test_a_mask_constant_beyond_float16_saturates_and_is_reported(tmp_path: Path) -> None:
    (case,) = [c for c in LAYER_CASES if c.call.startswith("attention(2, causal")]
    result = export_in_float16(case, tmp_path)
    assert any(note.startswith("constants saturated to float16's range") for note in result.notes)
    model = onnx.load(result.files["model"])
    constants = [
        numpy_helper.to_array(a.t)
        for node in model.graph.node
        for a in node.attribute
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16
    ]
    assert constants and all(np.isfinite(c).all() for c in constants)
