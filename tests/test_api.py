"""The Python API trains, reloads and predicts like the CLI; devices are probed quietly."""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS

import dnnspec
from dnnspec import api
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
    assert isinstance(out, np.ndarray) and out.shape == (2, 2) and model.classes == 2
    assert model.has_probabilities("output")  # the one unnamed output is a head like any
    assert model.evaluate()["loss"] == pytest.approx(result.best["val_loss"], rel=1e-5)
    with pytest.raises(DiagnosticError, match="expects shape"):
        model.predict(np.zeros((2, 3), np.float32))


def test_check_types_a_spec_and_reads_string_overrides_as_set_text() -> None:
    typed = dnnspec.check_spec(SPECS / "spirals.dnn", width="16")
    assert typed.spec.params["width"] == 16
    assert typed.layers[0].param_count == 2 * 16 + 16
    with pytest.raises(DiagnosticError, match="holds an int, not word 'wide'"):
        dnnspec.check_spec(SPECS / "spirals.dnn", width="wide")


def test_overrides_take_numpy_scalars_as_the_numbers_they_hold() -> None:
    typed = dnnspec.check_spec(SPECS / "spirals.dnn", width=np.int64(8))
    assert typed.spec.params["width"] == 8
    with pytest.raises(TypeError, match="a param is a number, string, bool or list, got object"):
        dnnspec.check_spec(SPECS / "spirals.dnn", width=object())


def test_a_resolved_spec_serves_several_calls_but_takes_no_more_overrides() -> None:
    spec = dnnspec.load_spec(SPECS / "spirals.dnn", width=8)
    assert (
        dnnspec.check_spec(spec).param_count()
        == dnnspec.check_spec(SPECS / "spirals.dnn", width=8).param_count()
    )
    with pytest.raises(TypeError, match="already resolved"):
        dnnspec.compile(spec, width=16)


def test_save_writes_the_compiled_graphs_that_load_then_runs(tmp_path: Path) -> None:
    program = dnnspec.compile(SPECS / "spirals.dnn", width=8)
    paths = dnnspec.save(program, tmp_path / "build")
    assert list(paths) == ["train_step", "eval_step", "model", "lock"]
    assert all(path.is_file() and path.parent == tmp_path / "build" for path in paths.values())
    model = dnnspec.load(tmp_path / "build", device="cpu")
    x = np.array([[0.1, 0.2], [-0.5, 0.3]], np.float32)
    np.save(tmp_path / "x.npy", x)
    from_file = model.predict(tmp_path / "x.npy")
    again = model.predict(x)
    assert isinstance(from_file, np.ndarray) and isinstance(again, np.ndarray)
    assert from_file.shape == (2, 2) and np.array_equal(from_file, again)
    assert math.isfinite(model.evaluate()["loss"])


def test_resume_without_a_run_directory_is_a_clear_error() -> None:
    with pytest.raises(DiagnosticError, match="resume needs the run directory"):
        dnnspec.train(SPECS / "spirals.dnn", resume=True)


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


def test_every_exported_name_is_the_api_function_even_with_every_stage_imported() -> None:
    for info in pkgutil.walk_packages(dnnspec.__path__, "dnnspec."):
        if info.name != "dnnspec.__main__":
            importlib.import_module(info.name)
    shadowed = [n for n in dnnspec.__all__ if getattr(dnnspec, n) is not getattr(api, n)]
    assert shadowed == []
