"""Lowering a typed model: the forward graph for each mode, run through onnxruntime
against numpy, with one node per simple layer and an RNG stream per dropout."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from conftest import SPECS

from dnnspec.assemble.lower import lower_outputs
from dnnspec.check.shapes import TypedModel, check_spec, param_name
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.graph.builder import GraphBuilder
from dnnspec.layers.base import LowerCtx, Mode


class RecordingUniform:
    """A test RandomSource: ONNX RandomUniformLike seeded by the salt; remembers the salts."""

    def __init__(self) -> None:
        self.salts: list[int] = []

    def uniform_like(self, b: GraphBuilder, like: str, rank: int, salt: int) -> str:
        self.salts.append(salt)
        return b.op("RandomUniformLike", [like], seed=float(salt + 1))


def lower(typed: TypedModel, mode: Mode, rng: RecordingUniform | None = None) -> GraphBuilder:
    """The forward graph with inputs and parameters as graph inputs and `y` as output."""
    b = GraphBuilder("forward")
    inputs = {d.name: b.add_input(d.name, d.dtype, d.dims) for d in typed.spec.model.inputs}
    params = {
        info.node.name: {
            p.name: b.add_input(param_name(info.node.name, p.name), "float32", p.shape)
            for p in info.params
        }
        for info in typed.layers
    }
    out = lower_outputs(typed, LowerCtx(b, mode, typed.types, rng=rng), inputs, params)[""]
    b.add_output(b.rename(out, "y"), "float32", typed.output.dims)
    return b


def run(
    b: GraphBuilder, typed: TypedModel, x: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    weights = {
        param_name(info.node.name, p.name): rng.standard_normal(p.shape).astype(np.float32) * 0.3
        for info in typed.layers
        for p in info.params
    }
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x, **weights})[0], weights


def test_digits_mlp_lowers_to_one_node_per_layer_and_matches_numpy() -> None:
    typed = check_spec(load_spec(SPECS / "digits_mlp.dnn"))
    b = lower(typed, "eval")
    assert [n.op_type for n in b.nodes] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    x = np.random.default_rng(0).uniform(0, 1, (7, 64)).astype(np.float32)
    y, w = run(b, typed, x)
    h = np.maximum(x @ w["dense_1.weight"] + w["dense_1.bias"], 0)
    h = np.maximum(h @ w["dense_2.weight"] + w["dense_2.bias"], 0)
    np.testing.assert_allclose(y, h @ w["dense_3.weight"] + w["dense_3.bias"], rtol=1e-4, atol=1e-4)


def test_residual_blocks_lower_their_skip_connections() -> None:
    typed = check_spec(load_spec(SPECS / "residual_mlp.dnn"))
    x = np.random.default_rng(0).uniform(0, 1, (3, 64)).astype(np.float32)
    y, w = run(lower(typed, "eval"), typed, x)

    def dense(h: np.ndarray, name: str) -> np.ndarray:
        return h @ w[f"{name}.weight"] + w[f"{name}.bias"]

    h = np.maximum(dense(x, "dense_1"), 0)
    for k in (1, 2, 3):
        inner = dense(np.maximum(dense(h, f"residual_{k}.dense_1"), 0), f"residual_{k}.dense_2")
        h = np.maximum(inner + h, 0)
    np.testing.assert_allclose(y, dense(h, "dense_2"), rtol=1e-3, atol=1e-3)


def test_each_dropout_draws_its_own_stream_in_training_only() -> None:
    typed = check_spec(
        load_spec_text(
            "model m {\n  input x: float32[N, 256]\n  dropout(0.5) -> dropout(0.5)\n}\n", "t.dnn"
        )
    )
    rng = RecordingUniform()
    b = lower(typed, "train", rng)
    assert len(set(rng.salts)) == 2
    x = np.ones((4, 256), np.float32)
    y, _ = run(b, typed, x)
    assert set(np.unique(y)) <= {0.0, 4.0} and 0.1 < (y == 4.0).mean() < 0.4
    assert [n.op_type for n in lower(typed, "eval").nodes] == ["Identity"]
