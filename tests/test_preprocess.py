"""Declared preprocessing: every step against its NumPy definition, fitted on the training
split only, applied to every split, and folded into model.onnx so the deployed model takes
raw features (checked against the eval graph on transformed data, with onnx's checker and
reference evaluator)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from dnnspec import api
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.runtime.prepare import prepare
from dnnspec.training.preprocess import PREPROCESS

REFERENCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "standardize": lambda x: (x - x.mean(0)) / x.std(0),
    "min_max": lambda x: (x - x.min(0)) / (x.max(0) - x.min(0)),
}
ENCODERS = {"one_hot"}
"""Steps that fit categories rather than an affine map: tests/test_one_hot.py."""
IMPUTERS = {"impute"}
"""Steps that fit the values of missing cells: tests/test_impute.py."""
TARGETS = {"scale_target"}
"""Steps that scale the targets with a scaling step: tests/test_target_scale.py."""


def test_every_preprocessing_step_has_a_case() -> None:
    assert set(PREPROCESS) <= set(REFERENCES) | ENCODERS | IMPUTERS | TARGETS
    assert all(PREPROCESS.get(name).fit is None for name in ENCODERS | IMPUTERS | TARGETS)
    assert all(PREPROCESS.get(name).fills is not None for name in IMPUTERS)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_step_matches_its_definition(name: str) -> None:
    x = np.random.default_rng(0).normal(3, 5, size=(50, 4))
    fit = PREPROCESS.get(name).fit
    assert fit is not None
    fitted = fit(x)
    assert not isinstance(fitted, str)
    shift, scale = fitted
    np.testing.assert_allclose((x - shift) * scale, REFERENCES[name](x), rtol=1e-12)


SPEC = """model m {{
  input x: float32[N, 3]
  dense(16) -> relu
  dense(2)
}}
train {{
  data file(path = "d.npz", validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 16
  epochs {epochs}
  metrics accuracy
  preprocess {steps}
}}
"""


def write_data(tmp_path: Path, constant: bool = False) -> None:
    """Badly scaled features: one in the thousands, one tiny; the class is their sum's sign."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 3))
    x = z * np.array([1000.0, 0.001, 1.0]) + np.array([5000.0, 0.0, -3.0])
    if constant:
        x[:, 2] = 7.0
    y = (z[:, 0] + z[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)


def spec(tmp_path: Path, steps: str, epochs: int = 1) -> Path:
    path = tmp_path / "m.dnn"
    path.write_text(SPEC.format(steps=steps, epochs=epochs))
    return path


def test_fitted_on_the_training_split_only(tmp_path: Path) -> None:
    write_data(tmp_path)
    prep = prepare(api.load_spec(spec(tmp_path, "standardize")))
    np.testing.assert_allclose(prep.train_data.x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(prep.train_data.x.std(0), 1, atol=1e-4)
    assert abs(prep.val_data.x.mean(0)).max() > 1e-3  # scaled by the training statistics


@pytest.mark.slow
def test_model_onnx_takes_raw_features_and_scaling_pays_off(tmp_path: Path) -> None:
    write_data(tmp_path)
    raw = api.train(spec(tmp_path, "min_max(columns = [2])", epochs=15), out=tmp_path / "raw")
    scaled = api.train(spec(tmp_path, "standardize", epochs=15), out=tmp_path / "scaled")
    assert scaled.metrics["val_accuracy"] >= 0.9 > raw.metrics["val_accuracy"]
    model = onnx.load(tmp_path / "scaled" / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["dnnspec.preprocess"])[0]["step"] == "standardize"
    x = np.load(tmp_path / "d.npz")["x"][:20]
    ours = api.load(tmp_path / "scaled").predict(x)
    assert isinstance(ours, np.ndarray)
    outs: Any = ReferenceEvaluator(model).run(None, {"x": x})
    reference = outs[0]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    # the run's eval (graphs on transformed data) agrees with model.onnx on raw data
    evaluated = api.load(tmp_path / "scaled").evaluate()
    assert evaluated["accuracy"] == pytest.approx(scaled.metrics["val_accuracy"])


def test_a_constant_column_under_standardize_is_a_located_error(tmp_path: Path) -> None:
    write_data(tmp_path, constant=True)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(spec(tmp_path, "standardize")))
    diagnostic = info.value.diagnostics[0]
    assert "feature column 2 is constant on the training split" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 13


def test_preprocessing_names_are_checked() -> None:
    with pytest.raises(DiagnosticError) as info:
        load_spec_text(SPEC.format(steps="standardise", epochs=1))
    assert "unknown preprocessing 'standardise'" in info.value.diagnostics[0].message


def test_a_scaling_step_scales_float32_rows_in_row_blocks_to_the_whole_arrays_bits() -> None:
    import tracemalloc

    from dnnspec.training.preprocess import APPLY_ROWS, Affine

    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (8 * APPLY_ROWS + 5, 64)).astype(np.float32)
    step = Affine("standardize", rng.normal(size=64), rng.uniform(0.1, 3.0, 64))
    tracemalloc.start()
    scaled = step.apply(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert scaled.dtype == np.float32 and peak < 2 * x.nbytes  # x in float64 is 2 x.nbytes
    assert np.array_equal(scaled, ((x - step.shift) * step.scale).astype(np.float32))
