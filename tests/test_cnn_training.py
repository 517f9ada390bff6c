"""The convolutional example specs train to their thresholds; batchnorm's running
statistics travel through the train step, the checkpoint and model.onnx; the exported
CNNs are valid ONNX that agree between onnxruntime and onnx.reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import reference_runner
from onnx import numpy_helper
from test_end_to_end import InterruptAt

from dnnspec.assemble.steps import buffer_slots, build_inference, parameter_slots
from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.metadata import ModelMetadata
from dnnspec.runtime.run import Interrupted, RunResult, run_training

SPECS = Path(__file__).resolve().parent.parent / "specs"


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_training(load_spec(SPECS / "digits_cnn.dnn"), tmp_path_factory.mktemp("cnn"), "cpu")


def weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


@pytest.mark.slow
def test_digits_cnn_reaches_97_percent_validation_accuracy(cnn_run: RunResult) -> None:
    # an MLP-free CNN: a broken conv, pooling or batchnorm gradient stays far below this
    assert cnn_run.best["val_accuracy"] >= 0.97


@pytest.mark.slow
def test_model_onnx_holds_the_trained_running_statistics_and_fused_batchnorm(
    cnn_run: RunResult,
) -> None:
    path = cnn_run.run_dir / "model.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 2 and "ReduceMean" not in ops
    values = weights(path)
    mean, var = values["batchnorm_1.running_mean"], values["batchnorm_1.running_var"]
    assert mean.shape == var.shape == (16,)
    assert np.abs(mean).max() > 1e-3 and np.abs(var - 1).max() > 1e-3  # moved from 0 and 1
    assert (var > 0).all()


@pytest.mark.slow
def test_exported_cnn_agrees_between_onnxruntime_and_reference(cnn_run: RunResult) -> None:
    model = onnx.load(cnn_run.run_dir / "model.onnx")
    x = np.random.default_rng(0).uniform(0, 16, (16, 64)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"x": x})[0]
    reference = reference_runner(model)({"x": x})["output"]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_resnet_small_with_repeated_residual_conv_blocks_trains(tmp_path: Path) -> None:
    result = run_training(load_spec(SPECS / "resnet_small.dnn"), tmp_path, "cpu")
    assert result.best["val_accuracy"] >= 0.95
    model = onnx.load(tmp_path / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Conv") == 5
    x = np.random.default_rng(1).uniform(0, 16, (8, 64)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(None, {"x": x})[0],
        reference_runner(model)({"x": x})["output"],
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.slow
def test_running_statistics_are_checkpointed_and_resume_bit_identically(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "digits_cnn.dnn", {"width": "4"})
    whole = run_training(spec, tmp_path / "whole", "cpu", epochs=3)
    with pytest.raises(Interrupted):
        run_training(spec, tmp_path / "cut", "cpu", epochs=3, reporter=InterruptAt(1))
    with np.load(tmp_path / "cut" / "checkpoint" / "last.npz") as saved:
        assert "batchnorm_2.running_var" in saved.files
        assert not np.allclose(saved["batchnorm_2.running_var"], 1.0)
    resumed = run_training(spec, tmp_path / "cut", "cpu", epochs=3, resume=True)
    assert resumed.steps == whole.steps
    a, b = weights(tmp_path / "whole" / "model.onnx"), weights(tmp_path / "cut" / "model.onnx")
    assert a.keys() == b.keys() and "batchnorm_1.running_mean" in a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


EVERY_LAYER = """
model every {
  input x: float32[N, 2, 8, 8]
  h = x -> conv2d(4, [3, 2], stride = [1, 2], padding = same, dilation = [2, 1]) -> batchnorm
  h = h -> avg_pool2d(2, padding = 1) -> upsample2d([2, 1]) -> max_pool2d(3, stride = 2)
  g = x -> conv2d(4, 3, groups = 2, bias = false) -> global_max_pool
  s = h -> reshape([4, -1]) -> conv1d(3, 2) -> batchnorm -> max_pool1d(2) -> avg_pool1d(1)
  concat(h -> global_avg_pool, g, s -> flatten, axis = 1)
}
"""


def test_every_conv_layer_exports_valid_onnx_that_agrees_with_the_reference() -> None:
    spec = load_spec_text(EVERY_LAYER, "every.dnn")
    typed = check_spec(spec)
    program = parameter_slots(typed) + buffer_slots(typed)
    rng = np.random.default_rng(0)
    values = {s.name: rng.normal(size=s.spec.shape).astype(np.float32) for s in program}
    values |= {
        s.name: rng.uniform(0.5, 2, s.spec.shape).astype(np.float32)
        for s in program
        if s.name.endswith("running_var")
    }
    model = build_inference(typed, program, values, ModelMetadata())
    onnx.checker.check_model(model, full_check=True)
    x = rng.normal(size=(3, 2, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(None, {"x": x})[0],
        reference_runner(model)({"x": x})["output"],
        rtol=1e-4,
        atol=1e-4,
    )
