"""Embedding and the recurrent layers: shape rules, parameter counts (PyTorch's), FLOPs,
located shape errors with hints, and lowerings run in onnxruntime against numpy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_layers import flops_of, infer, params_of, rng, run

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


# recurrent layers --------------------------------------------------------------------------


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def reference(
    kind: str, x: np.ndarray, ws: list[np.ndarray], units: int, **args: bool
) -> np.ndarray:
    """The documented equations in numpy, parameters in the layer's order and layout."""
    sets = [ws[i : i + 4] for i in range(0, len(ws), 4)]
    results = []
    for index, (wi, wh, bi, bh) in enumerate(sets):
        backwards = args.get("reverse", False) or index == 1
        h = np.zeros((x.shape[0], units), np.float64)
        c = np.zeros_like(h)
        outs = [None] * x.shape[1]
        order = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
        for t in order:
            gx, gh = x[:, t] @ wi + bi, h @ wh + bh
            if kind == "rnn":
                h = np.tanh(gx + gh)
            elif kind == "lstm":
                i, f, g, o = np.split(gx + gh, 4, axis=-1)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
            else:
                xr, xz, xn = np.split(gx, 3, axis=-1)
                hr, hz, hn = np.split(gh, 3, axis=-1)
                r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
                n = np.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
            outs[t] = h
        results.append(np.stack(outs, axis=1) if args.get("return_sequences") else h)
    return np.concatenate(results, axis=-1)


VARIANTS = [
    {},
    {"return_sequences": True},
    {"reverse": True},
    {"reverse": True, "return_sequences": True},
    {"bidirectional": True},
    {"bidirectional": True, "return_sequences": True},
]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(v) or "last")
@pytest.mark.parametrize("steps", [3, "T"], ids=["unrolled", "scan"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_recurrent_forward_matches_the_documented_equations(
    kind: str, variant: dict[str, bool], steps: int | str, mode: str
) -> None:
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)  # T = 3 (SIZES)
    y, _, ws, ops = run(kind, [f32("N", steps, 3)], {"units": 6, **variant}, mode=mode, values=[x])  # type: ignore[arg-type]
    want = reference(kind, x.astype(np.float64), [w.astype(np.float64) for w in ws], 6, **variant)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    fused = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]
    if mode == "eval":
        assert ops.count(fused) == 1
    else:
        assert fused not in ops
        assert ("Scan" in ops) == (steps == "T")


def _torch_module(kind: str, features: int, units: int, bidirectional: bool) -> Any:
    torch = pytest.importorskip("torch")
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    return module(features, units, batch_first=True, bidirectional=bidirectional)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameter_count_is_pytorchs(kind: str, bidirectional: bool) -> None:
    ours = sum(
        math.prod(p.shape)
        for p in params_of(kind, f32("N", "T", 64), units=128, bidirectional=bidirectional)
    )
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    assert ours == (1 + bidirectional) * gates * (128 * (64 + 128) + 2 * 128)
    if kind == "lstm" and not bidirectional:
        assert ours == 99_328
    torch_count = sum(p.numel() for p in _torch_module(kind, 64, 128, bidirectional).parameters())
    assert ours == torch_count


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_pytorch_weights_transposed_give_pytorchs_outputs(kind: str) -> None:
    torch = pytest.importorskip("torch")
    module = _torch_module(kind, 3, 6, bidirectional=True)
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    # ours: weight [in, G units] = PyTorch's weight.T, same gate order; biases as they are
    ws = [
        p.detach().numpy().T.copy() if p.ndim == 2 else p.detach().numpy()
        for p in module.parameters()
    ]
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    got = reference(
        kind,
        x.astype(np.float64),
        [w.astype(np.float64) for w in ws],
        6,
        return_sequences=True,
        bidirectional=True,
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
