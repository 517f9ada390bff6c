"""Embedding and the recurrent layers: shape rules, parameter counts (PyTorch's), FLOPs,
located shape errors with hints, and lowerings run in onnxruntime against numpy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from test_layers import SPAN, bind, flops_of, infer, params_of, rng, run

from dnnspec import api
from dnnspec.check.shapes import check_spec
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LowerCtx, Mode, ShapeError, TensorType
from dnnspec.runtime.prepare import prepare


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
        outs: list[np.ndarray] = [h] * x.shape[1]
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
@pytest.mark.parametrize("steps", [3, 1, "T"], ids=["unrolled", "one_step", "scan"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_recurrent_forward_matches_the_documented_equations(
    kind: str, variant: dict[str, bool], steps: int | str, mode: Mode
) -> None:
    length = steps if isinstance(steps, int) else 3  # T = 3 (SIZES)
    x = rng.standard_normal((5, length, 3)).astype(np.float32)
    y, _, ws, ops = run(kind, [f32("N", steps, 3)], {"units": 6, **variant}, mode=mode, values=[x])
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


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_shapes_follow_keras_return_sequences(kind: str) -> None:
    assert infer(kind, f32("N", "T", 8), units=16) == f32("N", 16)
    assert infer(kind, f32("N", 12, 8), units=16, return_sequences=True) == f32("N", 12, 16)
    assert infer(kind, f32("N", "T", 8), units=16, bidirectional=True) == f32("N", 32)
    names = [p.name for p in params_of(kind, f32("N", "T", 8), units=16, bidirectional=True)]
    assert names == [
        f"{w}{suffix}"
        for suffix in ("", "_reverse")
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]


def test_recurrent_flops_count_both_products_biases_and_cell_work_per_step() -> None:
    per_step = 2 * 4 * 16 * (8 + 16) + 2 * 4 * 16 + 9 * 16
    assert flops_of("lstm", f32("N", 12, 8), units=16) == 12 * per_step
    assert flops_of("lstm", f32("N", "T", 8), units=16) == per_step
    assert flops_of("lstm", f32("N", 12, 8), units=16, bidirectional=True) == 24 * per_step


def test_recurrent_layer_on_token_ids_asks_for_an_embedding() -> None:
    with pytest.raises(ShapeError, match=r"lstm reads float feature vectors.*i64\[N, T\]") as e:
        infer("lstm", i64("N", "T"), units=4)
    assert e.value.help == "token ids need an embedding first: embedding(vocab, dim) -> lstm(...)"


def test_recurrent_layer_on_a_matrix_explains_n_t_versus_n_t_f() -> None:
    with pytest.raises(
        ShapeError, match=r"needs a sequence \[N, T, features\], got f32\[N, 20\]"
    ) as e:
        infer("gru", f32("N", 20), units=4)
    assert "is that [N, T] with one feature per step" in e.value.message
    assert e.value.help == "for one feature per step write reshape([20, 1]) before gru"
    with pytest.raises(ShapeError, match=r"rank 4"):
        infer("rnn", f32("N", 5, 4, 3), units=4)
    with pytest.raises(ShapeError, match="known feature width"):
        infer("rnn", f32("N", "T", "F"), units=4)
    with pytest.raises(ShapeError, match="already reads the sequence both ways"):
        infer("lstm", f32("N", "T", 3), units=4, bidirectional=True, reverse=True)


def test_a_recurrent_shape_error_is_located_at_the_layer_with_the_operand() -> None:
    text = "model m {\n  input tokens: int64[N, T]\n  lstm(8)\n  dense(2)\n}\n"
    with pytest.raises(DiagnosticError) as caught:
        check_spec(load_spec_text(text, "m.dnn"))
    rendered = caught.value.render()
    assert "m.dnn:3:3: error: lstm reads float feature vectors" in rendered
    assert "i64[N, T] is input 'tokens' declared here" in rendered
    assert "help: token ids need an embedding first" in rendered


def lowered(kind: str, steps: int | str, args: dict[str, Any], mode: Mode) -> ort.InferenceSession:
    """One recurrent node on x [N, steps, 3], parameters as inputs `node.<name>`."""
    bound = bind(kind, args)
    x_type = f32("N", steps, 3)
    node = Node(name="node", layer=kind, inputs=("x",), args=bound, span=SPAN)
    definition = LAYERS.get(kind)
    b = GraphBuilder("t")
    b.add_input("x", "float32", x_type.dims)
    params = {
        p.name: b.add_input(f"node.{p.name}", "float32", p.shape)
        for p in definition.params([x_type], bound)
    }
    types = {"x": x_type, "node": definition.infer([x_type], bound)}
    b.add_output(definition.lower(LowerCtx(b, mode, types), node, ["x"], params), "float32", None)
    return ort.InferenceSession(b.model().SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("steps", [7, "T"], ids=["unrolled", "scan"])
def test_fused_inference_agrees_with_the_training_forward_within_1e_5(
    kind: str, steps: int | str
) -> None:
    args = {"units": 16, "return_sequences": True, "bidirectional": True}
    train, infer_ = (lowered(kind, steps, args, mode) for mode in ("train", "eval"))
    feeds = {"x": rng.standard_normal((4, 7, 3)).astype(np.float32)}
    for p in params_of(kind, f32("N", 7, 3), **args):
        feeds[f"node.{p.name}"] = (rng.standard_normal(p.shape) * 0.5).astype(np.float32)
    np.testing.assert_allclose(
        train.run(None, feeds)[0], infer_.run(None, feeds)[0], rtol=0, atol=1e-5
    )


def packed_reference(
    kind: str, x: np.ndarray, lengths: np.ndarray, ws: list[np.ndarray], units: int, **args: bool
) -> np.ndarray:
    """PyTorch's packed sequences: each sample run on its valid prefix alone, its step
    outputs zero-padded to T."""
    rows = []
    for n, length in enumerate(lengths):
        y = reference(kind, x[n : n + 1, :length], ws, units, **args)[0]
        if args.get("return_sequences"):
            y = np.concatenate([y, np.zeros((x.shape[1] - length, y.shape[-1]))])
        rows.append(y)
    return np.stack(rows)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(v) or "last")
@pytest.mark.parametrize("steps", [3, "T"], ids=["unrolled", "scan"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_lengths_mask_padded_steps_as_packed_sequences_do(
    kind: str, variant: dict[str, bool], steps: int | str, mode: Mode
) -> None:
    x = rng.standard_normal((3, 3, 2)).astype(np.float32)  # T = 3 (SIZES)
    lengths = np.array([3, 2, 1], np.int64)
    y, _, ws, _ = run(
        kind,
        [f32("N", steps, 2), i64("N")],
        {"units": 3, "lengths": "in1", **variant},
        mode=mode,
        values=[x, lengths],
    )
    want = packed_reference(
        kind, x.astype(np.float64), lengths, [w.astype(np.float64) for w in ws], 3, **variant
    )
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    if variant.get("return_sequences"):  # past each length exactly zero
        assert not y[1, 2:].any() and not y[2, 1:].any()


def test_recurrent_lengths_that_are_not_one_integer_per_sample_are_refused() -> None:
    with pytest.raises(ShapeError, match=r"lstm lengths must be one integer per sample"):
        infer("lstm", f32("N", "T", 3), f32("N"), units=4, lengths="l")
