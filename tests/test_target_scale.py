"""Regression targets scaled for training: `preprocess scale_target(method)` fits
scikit-learn's StandardScaler (or MinMaxScaler) on the training targets (checked against
it when it is installed, else against NumPy's statement of its definition); the loss reads
scaled targets, the metrics are reported in the targets' units (equal to NumPy's on
model.onnx's predictions) and model.onnx predicts in those units."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import SPECS
from onnx.reference import ReferenceEvaluator

from dnnspec import api
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.runtime.prepare import prepare

SPEC = """model m {{
  input x: float32[N, 3]
  dense(16) -> relu
  dense({units})
}}
train {{
  data file(path = "d.npz", validation = 0.25)
  loss {loss}
  optimizer adam(lr = 0.01)
  batch 16
  epochs {epochs}
  metrics {metrics}
  preprocess {steps}
}}
"""


def write(
    tmp_path: Path,
    steps: str = "standardize, scale_target",
    epochs: int = 1,
    units: int = 2,
    loss: str = "mse",
    metrics: str = "mae, rmse, r2",
) -> Path:
    """Targets in the thousands (two units of different scales), features near 1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3))
    y = np.stack([x[:, 0] + 0.5 * x[:, 1] ** 2, x[:, 2] - x[:, 0]], axis=1)
    y = y * np.array([200.0, 3.0]) + np.array([1000.0, -50.0])
    y += rng.normal(0, 0.05, y.shape)
    if loss == "cross_entropy":
        np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=(x[:, 0] > 0).astype(np.int64))
    else:
        np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y[:, :units].astype(np.float32))
    spec = tmp_path / "m.dnn"
    spec.write_text(
        SPEC.format(units=units, loss=loss, epochs=epochs, metrics=metrics, steps=steps)
    )
    return spec


def scaler(method: str, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of scikit-learn's StandardScaler or MinMaxScaler fitted on `train`;
    without scikit-learn, their definitions (the population std; the training range)."""
    try:
        from sklearn.preprocessing import MinMaxScaler, StandardScaler
    except ImportError:
        if method == "standardize":
            return train.mean(0), 1.0 / train.std(0)
        return train.min(0), 1.0 / (train.max(0) - train.min(0))
    if method == "standardize":
        fitted = StandardScaler().fit(train)
        return fitted.mean_, 1.0 / fitted.scale_
    ranged = MinMaxScaler().fit(train)
    return ranged.data_min_, ranged.scale_


@pytest.mark.parametrize("method", ["standardize", "min_max"])
def test_scale_target_is_fitted_on_the_training_targets_as_sklearn(
    tmp_path: Path, method: str
) -> None:
    prepared = prepare(api.load_spec(write(tmp_path, f"scale_target({method})")))
    preprocessing = prepared.program.preprocess
    assert preprocessing is not None and not preprocessing.transforms_columns()
    fitted = preprocessing.targets[""]
    y = np.load(tmp_path / "d.npz")["y"].astype(np.float64)
    shift, scale = scaler(method, y[prepared.train_index])
    np.testing.assert_allclose(fitted.shift, shift, rtol=1e-12)
    np.testing.assert_allclose(fitted.scale, scale, rtol=1e-12)
    # the data keeps the targets in their units: the graphs scale them
    np.testing.assert_array_equal(prepared.val_data.y, y[prepared.val_index].astype(np.float32))


def test_metrics_and_model_onnx_are_in_the_targets_units(tmp_path: Path) -> None:
    result = api.train(write(tmp_path, epochs=40), out=tmp_path / "run")
    model = onnx.load(tmp_path / "run" / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    step = json.loads(meta["dnnspec.preprocess"])[-1]
    assert step["step"] == "scale_target" and step["method"] == "standardize"
    data = np.load(tmp_path / "d.npz")
    held = np.load(tmp_path / "run" / "split.npz")["validation"]
    x, y = data["x"][held], data["y"][held].astype(np.float64)
    predicted = api.load(tmp_path / "run").predict(x)
    assert isinstance(predicted, np.ndarray)
    reference: Any = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(reference[0], predicted, rtol=1e-4, atol=1e-3)
    error = predicted.astype(np.float64) - y
    mae = np.abs(error).mean()
    rmse = np.sqrt((error**2).mean())
    r2 = np.mean(1 - (error**2).sum(0) / ((y - y.mean(0)) ** 2).sum(0))  # per unit, averaged
    assert result.metrics["val_mae"] == pytest.approx(mae, rel=1e-5)
    assert result.metrics["val_rmse"] == pytest.approx(rmse, rel=1e-5)
    assert result.metrics["val_r2"] == pytest.approx(r2, rel=1e-5)
    assert mae > 1  # in the targets' units (the scaled error would be well below 1)
    assert result.metrics["val_r2"] > 0.9


def test_scaling_the_target_pays_off(tmp_path: Path) -> None:
    """Adam's steps are about lr in size: unscaled targets in the thousands are out of reach."""
    plain = api.train(write(tmp_path, "standardize", epochs=10), out=tmp_path / "plain")
    scaled = api.train(write(tmp_path, epochs=10), out=tmp_path / "scaled")
    assert scaled.metrics["val_r2"] > 0.8 > plain.metrics["val_r2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"loss": "cross_entropy", "metrics": "accuracy"},
            "scale_target scales the targets of outputs trained on values",
        ),
        ({"steps": "scale_target(method = robust)"}, "robust"),
    ],
)
def test_bad_target_scaling_is_a_located_error(
    tmp_path: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(write(tmp_path, **kwargs)))  # type: ignore[arg-type]
    diagnostic = info.value.diagnostics[0]
    assert message in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 13


def test_a_constant_target_unit_is_named(tmp_path: Path) -> None:
    spec = write(tmp_path, "scale_target")
    data = dict(np.load(tmp_path / "d.npz"))
    data["y"][:, 1] = 4.0
    np.savez(tmp_path / "d.npz", **data)
    with pytest.raises(DiagnosticError) as info:
        prepare(api.load_spec(spec))
    assert "unit 1 of the target is constant" in info.value.diagnostics[0].message


def test_named_outputs_scale_only_their_value_targets() -> None:
    path = SPECS / "digits_two_heads.dnn"
    text = path.read_text().replace("  seed 0", "  seed 0\n  preprocess scale_target")
    prepared = prepare(load_spec_text(text, str(path)))
    assert prepared.program.preprocess is not None
    assert set(prepared.program.preprocess.targets) == {"ink"}
    assert [o.scale is not None for o in prepared.program.outputs] == [False, True]
