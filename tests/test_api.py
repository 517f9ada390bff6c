"""The Python API trains, reloads and predicts like the CLI; devices are probed quietly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS

import dnnspec
from dnnspec.errors import DiagnosticError
from dnnspec.runtime.session import cuda_available, providers_for


def test_compile_assembles_graphs_with_param_overrides() -> None:
    program = dnnspec.compile(SPECS / "spirals.dnn", width=16)
    shapes = {s.name: s.spec.shape for s in program.slots}
    assert shapes["dense_1.weight"] == (2, 16)
    assert {i.name for i in program.train_step.graph.input} >= {"p", "target", "step", "seed"}


@pytest.mark.slow
def test_train_load_predict_round_trip(tmp_path: Path) -> None:
    result = dnnspec.train(SPECS / "spirals.dnn", out=tmp_path, device="cpu", epochs=3, width=16)
    assert result.epochs == 3 and result.paths["model"].exists()
    model = dnnspec.load(tmp_path, device="cpu")
    x = np.array([[0.1, 0.2], [-0.5, 0.3]], np.float32)
    out = model.predict(x)
    assert out.shape == (2, 2) and model.classes == 2
    assert model.evaluate()["loss"] == pytest.approx(result.best["val_loss"], rel=1e-5)
    with pytest.raises(DiagnosticError, match="expects shape"):
        model.predict(np.zeros((2, 3), np.float32))


def test_load_of_a_directory_without_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="no model.onnx"):
        dnnspec.load(tmp_path)


def test_auto_device_falls_back_to_cpu_without_usable_cuda() -> None:
    providers = providers_for("auto")
    assert providers[-1] == "CPUExecutionProvider"
    if not cuda_available():
        assert providers == ["CPUExecutionProvider"]
        with pytest.raises(DiagnosticError, match="CUDA does not load"):
            providers_for("cuda")
