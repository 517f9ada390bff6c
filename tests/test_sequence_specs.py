"""The sequence example specs train far above chance on the built-in memory task, and
their exported model.onnx (fused LSTM/GRU ops) is valid and agrees between onnxruntime
and onnx.reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from dnnspec import api
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.run import RunResult, run_training

SPECS = Path(__file__).resolve().parent.parent / "specs"

# task `query`: is the last of 8 tokens among the 7 before it? Balanced labels, so always
# answering one class (or ignoring the history) scores 0.5.
CHANCE = 0.5


@pytest.fixture(scope="module", params=["sequence_lstm", "sequence_gru"])
def sequence_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, RunResult]:
    spec = load_spec(SPECS / f"{request.param}.dnn")
    return request.param, run_training(spec, tmp_path_factory.mktemp(request.param), "cpu")


@pytest.mark.slow
def test_sequence_specs_learn_the_memory_task_far_above_chance(
    sequence_run: tuple[str, RunResult],
) -> None:
    # measured: lstm 0.86, gru 0.98 validation accuracy; chance 0.5
    name, result = sequence_run
    threshold = {"sequence_lstm": 0.8, "sequence_gru": 0.95}[name]
    assert result.best["val_accuracy"] >= threshold > CHANCE + 0.25


def test_sequence_model_onnx_is_fused_valid_and_agrees_with_reference(
    sequence_run: tuple[str, RunResult],
) -> None:
    model = onnx.load(sequence_run[1].run_dir / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"LSTM", "GRU"} and "Scan" not in ops
    args = {"task": "query", "samples": 64, "length": 8, "symbols": 8, "validation": 0.0}
    x = DATASETS.get("sequences").load(args, 3, None).x
    name = model.graph.input[0].name
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {name: x})[0]
    reference = ReferenceEvaluator(model).run(None, {name: x})
    assert isinstance(reference, list)
    np.testing.assert_allclose(ours, reference[0], rtol=1e-5, atol=1e-5)


def test_predicting_a_token_id_outside_the_vocabulary_is_a_diagnostic(
    sequence_run: tuple[str, RunResult],
) -> None:
    model = api.load(sequence_run[1].run_dir, device="cpu")
    ids = np.zeros((2, 8), np.int64)
    predicted = model.predict(ids)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (2, 2)
    ids[1, 5] = 8
    with pytest.raises(DiagnosticError, match=r"token id 8 at sample 1, position \(5,\), outside"):
        model.predict(ids)
