"""Embedding and the recurrent layers: shape rules, parameter counts (PyTorch's), FLOPs,
located shape errors with hints, and lowerings run in onnxruntime against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_layers import flops_of, infer, params_of, run

from dnnspec import api
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.layers.base import ShapeError, TensorType
from dnnspec.runtime.run import prepare


def i64(*dims: int | str) -> TensorType:
    return TensorType("int64", dims)


def f32(*dims: int | str) -> TensorType:
    return TensorType("float32", dims)


# embedding -------------------------------------------------------------------------------


def test_embedding_appends_dim_to_the_id_shape_with_a_vocab_by_dim_table() -> None:
    assert infer("embedding", i64("N", "T"), vocab=100, dim=16) == f32("N", "T", 16)
    assert infer("embedding", i64("N"), vocab=100, dim=16) == f32("N", 16)
    (table,) = params_of("embedding", i64("N", "T"), vocab=100, dim=16)
    assert (table.name, table.shape, table.init) == ("weight", (100, 16), "normal")
    assert flops_of("embedding", i64("N", "T"), vocab=100, dim=16) == 0


def test_embedding_is_one_gather_of_table_rows() -> None:
    ids = np.array([[0, 3, 3], [4, 1, 0], [2, 2, 2], [1, 0, 4], [3, 3, 1]], np.int64)
    y, _, (table,), ops = run("embedding", [i64("N", "T")], {"vocab": 5, "dim": 4}, values=[ids])
    assert ops == ["Gather"]
    np.testing.assert_array_equal(y, table[ids])


def test_embedding_on_float_input_is_an_error_pointing_at_dense() -> None:
    with pytest.raises(ShapeError, match=r"integer token ids.*f32\[N, T, 8\]") as caught:
        infer("embedding", f32("N", "T", 8), vocab=10, dim=4)
    assert "int64" in (caught.value.help or "") and "dense" in (caught.value.help or "")


TOKENS = """model tokens {{
  input x: int64[N, 6]
  embedding(vocab = 5, dim = 4) -> flatten
  dense(2)
}}
train {{
  data file(path = "{path}", validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.05)
  batch 8
  epochs {epochs}
  metrics accuracy
}}
"""


def _token_spec(tmp_path: Path, x: np.ndarray, y: np.ndarray, epochs: int = 1) -> Path:
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = tmp_path / "m.dnn"
    spec.write_text(TOKENS.format(path="d.npz", epochs=epochs))
    return spec


def test_embedding_of_token_ids_trains_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (200, 6))
    y = (x[:, 2] == 3).astype(np.int64)  # one position's token decides the class
    result = api.train(_token_spec(tmp_path, x, y, epochs=15), tmp_path / "run")
    assert result.metrics["val_accuracy"] >= 0.95


def test_token_id_outside_the_vocabulary_names_sample_position_and_layer(tmp_path: Path) -> None:
    x = np.zeros((10, 6), np.int64)
    x[7, 4] = 5
    spec = _token_spec(tmp_path, x, np.zeros(10, np.int64))
    with pytest.raises(DiagnosticError) as caught:
        prepare(load_spec(spec))
    text = caught.value.render()
    assert "token id 5 at sample 7, position (4,)" in text
    assert "embedding_1's vocabulary of 5" in text and "vocab at least 6" in text
