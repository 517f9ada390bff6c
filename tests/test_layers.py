"""Each built-in layer: its shape rule, parameters, FLOPs, and its lowering run through
onnxruntime on random data against a numpy reference, with the fewest nodes.

`LAYER_CASES` holds at least one case per registered layer (a completeness test fails
otherwise): the type it infers, its parameter count, and a whole train step through it
checked against finite differences.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT, assert_train_step_matches_finite_differences

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec.check.shapes import check_spec
from dnnspec.errors import Span
from dnnspec.frontend import load_spec_text
from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Node
from dnnspec.layers.base import (
    LAYERS,
    Activation,
    LowerCtx,
    Mode,
    ParamSpec,
    ShapeError,
    TensorType,
    output_values,
    relu_like,
    token_vocab,
)
from dnnspec.layers.init import INITIALISERS

SPAN = Span(file="t.dnn", line=1, col=1, end_line=1, end_col=2)
SIZES = {"N": 5, "T": 3}
rng = np.random.default_rng(0)


class SeededUniform:
    """A test RandomSource: ONNX RandomUniformLike seeded by the salt."""

    def uniform_like(self, b: GraphBuilder, like: str, rank: int, salt: int) -> str:
        return b.op("RandomUniformLike", [like], seed=float(salt + 1))


def f32(*dims: int | str) -> TensorType:
    return TensorType("float32", dims)


def bind(layer: str, args: dict[str, Any]) -> dict[str, Any]:
    keyword = [(k, v, SPAN) for k, v in args.items()]
    return LAYERS.get(layer).signature.bind(layer, [], keyword, SPAN)


def infer(layer: str, *types: TensorType, **args: Any) -> TensorType:
    return LAYERS.get(layer).infer(types, bind(layer, args))


def params_of(layer: str, *types: TensorType, **args: Any) -> list[ParamSpec]:
    return LAYERS.get(layer).params(types, bind(layer, args))


def flops_of(layer: str, *types: TensorType, **args: Any) -> int:
    definition, bound = LAYERS.get(layer), bind(layer, args)
    assert definition.flops is not None
    return definition.flops(types, definition.infer(types, bound), bound)


def concrete(t: TensorType) -> tuple[int, ...]:
    return tuple(SIZES[d] if isinstance(d, str) else d for d in t.dims)


def run(
    layer: str,
    types: Sequence[TensorType],
    args: dict[str, Any] | None = None,
    mode: Mode = "eval",
    values: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]:
    """Lower one node and run it: (output, input arrays, param arrays, emitted op types)."""
    definition, bound = LAYERS.get(layer), bind(layer, args or {})
    names = [f"in{i}" for i in range(len(types))]
    node = Node(name="node", layer=layer, inputs=tuple(names), args=bound, span=SPAN)
    out = definition.infer(types, bound)
    b = GraphBuilder("t")
    for name, t in zip(names, types, strict=True):
        b.add_input(name, t.dtype, t.dims)
    specs = definition.params(types, bound)
    params = {p.name: b.add_input(f"node.{p.name}", "float32", p.shape) for p in specs}
    ctx = LowerCtx(b, mode, {**dict(zip(names, types, strict=True)), "node": out}, SeededUniform())
    result = definition.lower(ctx, node, names, params)
    if result in names:
        result = b.op("Identity", [result])
    b.add_output(result, out.dtype, None)
    ops = [n.op_type for n in b.nodes if n.op_type != "Identity"]
    xs = (
        list(values)
        if values is not None
        else [rng.standard_normal(concrete(t)).astype(np.float32) for t in types]
    )
    ws = [rng.standard_normal(p.shape).astype(np.float32) for p in specs]
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feeds = {
        **dict(zip(names, xs, strict=True)),
        **{f"node.{p.name}": w for p, w in zip(specs, ws, strict=True)},
    }
    (y,) = session.run(None, feeds)
    assert y.shape[1:] == concrete(out)[1:]
    return y, xs, ws, ops


# the case table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCase:
    """`call` (spec text, tensor inputs left out) applied to inputs of the given types must
    infer `output` (as `check` prints it) with `params` parameters, and a train step
    through it must match finite differences. Float inputs with a known last dim pass
    through a `dense` of that width first, so the gradient into the layer is checked too;
    `sizes` are the run-time sizes of symbolic dims. With `sequence`, the first input
    then passes a `positional`, which makes it a sequence tensor [N, T, F].

    `tests/test_layer_export.py` exports each case's model at opset 17, in float16 and
    its train step, comparing onnxruntime with onnx.reference; `limits` names each of
    those checks ("opset 17", "float16", "train step") the layer cannot pass, with the
    reason its diagnostic gives (that test checks it still fails so)."""

    call: str
    inputs: tuple[str, ...]
    output: str
    params: int
    sizes: dict[str, int] = field(default_factory=lambda: {"N": 4})
    sequence: bool = False
    limits: dict[str, str] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        name = self.call.split("(", 1)[0].strip()
        return LAYERS.canonical(name) or name

    @property
    def id(self) -> str:
        return self.call.replace(" ", "")

    def spec_text(self) -> str:
        """A model that ends in the call, trained with mse (its output has any shape)."""
        lines, tensors = [], []
        for i, declared in enumerate(self.inputs, start=1):
            lines.append(f"  input x{i}: {declared}")
            last = declared.rstrip("]").rsplit(",", 1)[-1].strip()
            if declared.startswith("float") and last.isdigit():
                made = " -> positional(max_len = 16)" if self.sequence and i == 1 else ""
                lines.append(f"  h{i} = x{i} -> dense({last}){made}")
                tensors.append(f"h{i}")
            elif f"= x{i}" not in self.call:  # else the call names it by keyword
                tensors.append(f"x{i}")
        name, _, rest = self.call.partition("(")
        args = rest.rstrip().removesuffix(")")
        lines.append(f"  {name.strip()}({', '.join([*tensors, *([args] if args else [])])})")
        body = "\n".join(lines)
        return (
            f"model case {{\n{body}\n}}\n"
            "train {\n  data regression\n  loss mse\n  optimizer sgd\n  batch 4\n  epochs 1\n}\n"
        )


GELU_NEEDS_OPSET_20 = {"opset 17": "Gelu arrived in opset 20"}
"""ONNX has the Gelu op from opset 20 on; export refuses older opsets at the layer."""

MASKED_SCAN_STAYS_FLOAT32 = {
    "float16": "graphs with loops (Scan, Loop, If) are not converted to float16"
}
"""A recurrent layer with lengths over a symbolic T infers through its Scan (the fused op's
sequence_lens is ignored by onnx.reference), which float16 export leaves out."""

LAYER_CASES: list[LayerCase] = [
    # dense
    LayerCase("dense(3)", ("float32[N, 4]",), "f32[N, 3]", 15),
    LayerCase("linear(3, bias = false)", ("float32[N, 2, 4]",), "f32[N, 2, 3]", 12),
    LayerCase("dense(2)", ("float32[N, T, 3]",), "f32[N, T, 2]", 8, {"N": 3, "T": 2}),
    # activations
    LayerCase("relu", ("float32[N, 4]",), "f32[N, 4]", 0),
    LayerCase("sigmoid", ("float32[N, 4]",), "f32[N, 4]", 0),
    LayerCase("tanh", ("float32[N, 4]",), "f32[N, 4]", 0),
    LayerCase("leaky_relu(alpha = 0.2)", ("float32[N, 4]",), "f32[N, 4]", 0),
    LayerCase("elu(alpha = 0.5)", ("float32[N, 4]",), "f32[N, 4]", 0),
    LayerCase("gelu", ("float32[N, 4]",), "f32[N, 4]", 0, limits=GELU_NEEDS_OPSET_20),
    LayerCase(
        "gelu(approximate = tanh)",
        ("float32[N, 4]",),
        "f32[N, 4]",
        0,
        limits=GELU_NEEDS_OPSET_20,
    ),
    LayerCase("swish", ("float32[N, 4]",), "f32[N, 4]", 0),
    LayerCase("softplus", ("float32[N, 4]",), "f32[N, 4]", 0),
    LayerCase("softmax", ("float32[N, 5]",), "f32[N, 5]", 0),
    LayerCase("softmax(axis = 1)", ("float32[N, 3, 4]",), "f32[N, 3, 4]", 0),
    LayerCase("log_softmax", ("float32[N, 5]",), "f32[N, 5]", 0),
    # dropout
    LayerCase("dropout(p = 0.3)", ("float32[N, 6]",), "f32[N, 6]", 0, {"N": 8}),
    # merges
    LayerCase("add", ("float32[N, 4]", "float32[N, 4]"), "f32[N, 4]", 0),
    LayerCase(
        "add", ("float32[N, 3, 4]", "float32[N, 1, 4]", "float32[N, 3, 1]"), "f32[N, 3, 4]", 0
    ),
    LayerCase("mul", ("float32[N, 4]", "float32[N, 1]"), "f32[N, 4]", 0),
    LayerCase("concat(axis = 1)", ("float32[N, 2]", "float32[N, 3]"), "f32[N, 5]", 0),
    LayerCase(
        "concat(axis = 1)",
        ("float32[N, T, 2]", "float32[N, S, 2]"),
        "f32[N, T+S, 2]",
        0,
        {"N": 2, "T": 2, "S": 3},
    ),
    # shape
    LayerCase("flatten", ("float32[N, 2, 3]",), "f32[N, 6]", 0),
    LayerCase("reshape(shape = [3, -1])", ("float32[N, 6]",), "f32[N, 3, 2]", 0),
    LayerCase("permute([2, 1])", ("float32[N, 3, 4]",), "f32[N, 4, 3]", 0),
    LayerCase("transpose(axes = [3, 1, 2])", ("float32[N, 2, 3, 4]",), "f32[N, 4, 2, 3]", 0),
    # convolution and pooling (channels first)
    LayerCase("conv2d(3, 3, padding = same)", ("float32[N, 2, 5, 5]",), "f32[N, 3, 5, 5]", 57),
    LayerCase(
        "conv2d(4, [2, 3], stride = 2, padding = 1, dilation = [1, 2], groups = 2, bias = false)",
        ("float32[N, 2, 6, 6]",),
        "f32[N, 4, 4, 2]",
        24,
    ),
    LayerCase("conv1d(2, 3, stride = 2)", ("float32[N, 3, 7]",), "f32[N, 2, 3]", 20),
    LayerCase("max_pool2d(2)", ("float32[N, 2, 4, 4]",), "f32[N, 2, 2, 2]", 0),
    LayerCase("max_pool1d(3, stride = 2, padding = 1)", ("float32[N, 2, 7]",), "f32[N, 2, 4]", 0),
    LayerCase("avg_pool2d(2, padding = same)", ("float32[N, 2, 3, 3]",), "f32[N, 2, 2, 2]", 0),
    LayerCase("avg_pool1d(2)", ("float32[N, 3, 6]",), "f32[N, 3, 3]", 0),
    LayerCase("global_avg_pool", ("float32[N, 3, 4, 4]",), "f32[N, 3]", 0),
    LayerCase("global_max_pool", ("float32[N, 3, 5]",), "f32[N, 3]", 0),
    LayerCase("upsample2d(2)", ("float32[N, 2, 2, 3]",), "f32[N, 2, 4, 6]", 0),
    # on a sequence [N, T, F] the 1-D and global layers work over time, as Keras' do:
    # conv1d's weight is torch's Conv1d(F, filters, kernel)
    LayerCase("conv1d(2, 3)", ("float32[N, 6, 4]",), "f32[N, 4, 2]", 26, sequence=True),
    LayerCase("max_pool1d(2)", ("float32[N, 6, 3]",), "f32[N, 3, 3]", 0, sequence=True),
    LayerCase("avg_pool1d(3, stride = 1)", ("float32[N, 5, 2]",), "f32[N, 3, 2]", 0, sequence=True),
    LayerCase(
        "global_avg_pool", ("float32[N, T, 3]",), "f32[N, 3]", 0, {"N": 2, "T": 4}, sequence=True
    ),
    LayerCase("global_max_pool", ("float32[N, 5, 3]",), "f32[N, 3]", 0, sequence=True),
    LayerCase("batchnorm", ("float32[N, 5, 3]",), "f32[N, 5, 3]", 6, sequence=True),
    # batch normalisation: scale and shift count, the running statistics do not
    LayerCase("batchnorm", ("float32[N, 3, 4, 4]",), "f32[N, 3, 4, 4]", 6),
    LayerCase("batchnorm(momentum = 0.3)", ("float32[N, 3, 6]",), "f32[N, 3, 6]", 6),
    LayerCase("batchnorm(eps = 1e-3)", ("float32[N, 5]",), "f32[N, 5]", 10, {"N": 6}),
    # embedding (ids are drawn in [0, 3))
    LayerCase("embedding(5, 3)", ("int64[N, T]",), "f32[N, T, 3]", 15, {"N": 2, "T": 4}),
    # recurrent: a number of steps unrolls the loop, a symbolic T makes it a Scan
    LayerCase("rnn(3)", ("float32[N, 4, 2]",), "f32[N, 3]", 21),
    LayerCase(
        "rnn(3, bidirectional = true, return_sequences = true)",
        ("float32[N, T, 2]",),
        "f32[N, T, 6]",
        42,
        {"N": 2, "T": 3},
    ),
    LayerCase("lstm(3)", ("float32[N, T, 2]",), "f32[N, 3]", 84, {"N": 2, "T": 3}),
    LayerCase("lstm(3, return_sequences = true)", ("float32[N, 4, 2]",), "f32[N, 4, 3]", 84),
    LayerCase("lstm(2, reverse = true)", ("float32[N, T, 2]",), "f32[N, 2]", 48, {"N": 2, "T": 3}),
    LayerCase(
        "gru(3, bidirectional = true)", ("float32[N, T, 2]",), "f32[N, 6]", 126, {"N": 2, "T": 3}
    ),
    LayerCase(
        "gru(3, reverse = true, return_sequences = true)", ("float32[N, 3, 2]",), "f32[N, 3, 3]", 63
    ),
    # lengths (ids drawn in [0, 3)) mask padded steps, a sample of length 0 included
    LayerCase(
        "lstm(3, return_sequences = true, lengths = x2)",
        ("float32[N, 3, 2]", "int64[N]"),
        "f32[N, 3, 3]",
        84,
    ),
    LayerCase(
        "gru(2, bidirectional = true, lengths = x2)",
        ("float32[N, T, 2]", "int64[N]"),
        "f32[N, 4]",
        72,
        {"N": 4, "T": 3},
        limits=MASKED_SCAN_STAYS_FLOAT32,
    ),
    LayerCase(
        "rnn(3, reverse = true, lengths = x2)",
        ("float32[N, T, 2]", "int64[N]"),
        "f32[N, 3]",
        21,
        {"N": 4, "T": 3},
        limits=MASKED_SCAN_STAYS_FLOAT32,
    ),
    # transformer layers (the memory case attends from h1 to itself through the cross path)
    LayerCase("layer_norm", ("float32[N, T, 4]",), "f32[N, T, 4]", 8, {"N": 2, "T": 3}),
    LayerCase("layer_norm(eps = 1e-3, axes = all)", ("float32[N, 2, 3]",), "f32[N, 2, 3]", 12),
    LayerCase("positional(learned, max_len = 5)", ("float32[N, 3, 4]",), "f32[N, 3, 4]", 20),
    LayerCase(
        "positional(max_len = 8)", ("float32[N, T, 4]",), "f32[N, T, 4]", 0, {"N": 2, "T": 3}
    ),
    LayerCase(
        "attention(2, causal = true, dropout = 0.2)",
        ("float32[N, T, 4]",),
        "f32[N, T, 4]",
        4 * 4 * 4 + 4 * 4,
        {"N": 2, "T": 3},
    ),
    LayerCase("attention(2, memory = h1)", ("float32[N, 3, 4]",), "f32[N, 3, 4]", 80),
    # audio front end: 1 + (20 - 8) // 4 frames of 3 mel bands
    LayerCase(
        "log_mel(n_fft = 8, hop = 4, mels = 3, sample_rate = 800)",
        ("float32[N, 20]",),
        "f32[N, 4, 3]",
        0,
    ),
]


def test_every_layer_has_a_case() -> None:
    assert set(LAYERS) <= {case.layer for case in LAYER_CASES}


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.id)
def test_layer_case_infers_its_type_and_parameter_count(case: LayerCase) -> None:
    typed = check_spec(load_spec_text(case.spec_text(), "case.dnn"))
    info = typed.layers[-1]
    assert info.node.layer == case.layer
    assert (str(info.out), info.param_count) == (case.output, case.params)
    # check settles `auto`: every parameter names an initialiser the trainer can draw
    assert all(p.init in INITIALISERS for p in info.params)


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.id)
def test_layer_case_train_step_matches_finite_differences(case: LayerCase) -> None:
    spec = load_spec_text(case.spec_text(), "case.dnn")
    assert_train_step_matches_finite_differences(spec, case.sizes)


# dense -------------------------------------------------------------------------------------


def test_dense_maps_the_last_axis_to_units_with_weight_in_by_out_and_undecayed_bias() -> None:
    assert infer("dense", f32("N", 64), units=128) == f32("N", 128)
    assert infer("linear", f32("N", "T", 8), units=4) == f32("N", "T", 4)
    weight, bias = params_of("dense", f32("N", 64), units=128)
    assert (weight.shape, weight.init, weight.fan_in, weight.fan_out) == (
        (64, 128),
        "auto",
        64,
        128,
    )
    assert (bias.shape, bias.init, bias.decay) == ((128,), "zeros", False)
    assert [p.name for p in params_of("dense", f32("N", 4), units=2, bias=False)] == ["weight"]
    assert params_of("dense", f32("N", 4), units=2, init="he_normal")[0].init == "he_normal"


def test_dense_flops_count_multiply_adds_and_bias_per_position() -> None:
    assert flops_of("dense", f32("N", 64), units=128) == 2 * 64 * 128 + 128
    assert flops_of("dense", f32("N", 64), units=128, bias=False) == 2 * 64 * 128
    assert flops_of("dense", f32("N", 6, 8), units=4) == 6 * (2 * 8 * 4 + 4)


def test_dense_on_a_matrix_is_one_gemm_matching_numpy() -> None:
    y, (x,), (w, bias), ops = run("dense", [f32("N", 6)], {"units": 3})
    assert ops == ["Gemm"]
    np.testing.assert_allclose(y, x @ w + bias, rtol=1e-5, atol=1e-5)


def test_dense_on_a_sequence_is_matmul_plus_add_and_without_bias_one_matmul() -> None:
    y, (x,), (w, bias), ops = run("dense", [f32("N", "T", 6)], {"units": 3})
    assert ops == ["MatMul", "Add"]
    np.testing.assert_allclose(y, x @ w + bias, rtol=1e-5, atol=1e-5)
    y, (x,), (w,), ops = run("dense", [f32("N", 6)], {"units": 3, "bias": False})
    assert ops == ["MatMul"]
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)


def test_dense_rejects_integer_ids_symbolic_widths_and_vectors() -> None:
    with pytest.raises(ShapeError, match=r"dense needs a float tensor, got i64\[N, 8\]") as caught:
        infer("dense", TensorType("int64", ("N", 8)), units=4)
    # There is no embedding layer to suggest: the fix is a float input.
    assert caught.value.help is not None and "declare the input float32" in caught.value.help
    assert "embedding" not in caught.value.help
    with pytest.raises(ShapeError, match=r"known last dimension.*f32\[N, T\]"):
        infer("dense", f32("N", "T"), units=4)
    with pytest.raises(ShapeError, match="rank 2 or more"):
        infer("dense", f32("N"), units=4)


# activations -------------------------------------------------------------------------------

_erf = np.vectorize(math.erf)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


ACTIVATIONS: list[tuple[str, dict[str, Any], Any]] = [
    ("relu", {}, lambda x: np.maximum(x, 0)),
    ("sigmoid", {}, lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", {}, np.tanh),
    ("leaky_relu", {}, lambda x: np.where(x > 0, x, 0.01 * x)),
    ("leaky_relu", {"alpha": 0.2}, lambda x: np.where(x > 0, x, 0.2 * x)),
    ("elu", {}, lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    ("elu", {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    ("gelu", {}, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    (
        "gelu",
        {"approximate": "tanh"},
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    ),
    ("silu", {}, lambda x: x / (1 + np.exp(-x))),
    ("swish", {}, lambda x: x / (1 + np.exp(-x))),
    ("softplus", {}, lambda x: np.log1p(np.exp(x))),
    ("softmax", {}, lambda x: _softmax(x, -1)),
    ("softmax", {"axis": 1}, lambda x: _softmax(x, 1)),
    ("log_softmax", {}, lambda x: np.log(_softmax(x, -1))),
]


@pytest.mark.parametrize(
    ("layer", "args", "reference"),
    ACTIVATIONS,
    ids=[f"{name}{args or ''}" for name, args, _ in ACTIVATIONS],
)
def test_activation_matches_numpy_in_one_node(
    layer: str, args: dict[str, Any], reference: Any
) -> None:
    t = f32("N", "T", 4)
    assert infer(layer, t, **args) == t
    assert params_of(layer, t, **args) == []
    assert flops_of(layer, t, **args) == 4  # per sample and per position along T
    y, (x,), _, ops = run(layer, [t], args)
    assert len(ops) == (2 if LAYERS.canonical(layer) == "silu" else 1)
    np.testing.assert_allclose(y, reference(x.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_activations_reject_integer_inputs_and_bad_axes() -> None:
    with pytest.raises(ShapeError, match=r"relu needs a float tensor, got i64\[N, 3\]"):
        infer("relu", TensorType("int64", ("N", 3)))
    with pytest.raises(ShapeError, match=r"softmax axis 2 is out of range for f32\[N, 3\]"):
        infer("softmax", f32("N", 3), axis=2)


@pytest.mark.parametrize("layer", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, -2])
def test_normalising_over_the_batch_axis_is_refused(layer: str, axis: int) -> None:
    # Normalising across the batch makes each prediction depend on the rest of the batch.
    with pytest.raises(ShapeError, match=f"{layer} cannot work along axis {axis}, the batch") as e:
        infer(layer, f32("N", 3), axis=axis)
    assert e.value.help == "use axis 1 (or -1)"


# dropout -----------------------------------------------------------------------------------


def test_dropout_is_the_identity_without_nodes_outside_training_and_at_p_zero() -> None:
    t = f32("N", 64)
    assert infer("dropout", t, p=0.3) == t
    cases: tuple[tuple[Mode, float], ...] = (("eval", 0.3), ("train", 0.0))
    for mode, p in cases:
        y, (x,), _, ops = run("dropout", [t], {"p": p}, mode)
        assert ops == []
        np.testing.assert_array_equal(y, x)


def test_dropout_in_training_zeroes_about_p_and_scales_the_rest() -> None:
    x = np.ones((200, 50), np.float32)
    y, _, _, ops = run("dropout", [f32("N", 50)], {"p": 0.25}, "train", [x])
    # the mask is a Cast of the comparison times 1 / (1 - p), not a Where (tract never loads that)
    assert ops[-4:] == ["GreaterOrEqual", "Cast", "Mul", "Mul"]
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02


def test_dropout_rejects_p_of_one_and_needs_float() -> None:
    with pytest.raises(ShapeError, match="would drop every element"):
        infer("dropout", f32("N", 4), p=1.0)
    with pytest.raises(ShapeError, match="float"):
        infer("dropout", TensorType("int64", ("N", 4)), p=0.5)


# flatten and reshape -----------------------------------------------------------------------


def test_flatten_keeps_the_batch_and_multiplies_the_rest() -> None:
    assert infer("flatten", f32("N", 2, 3, 4)) == f32("N", 24)
    assert infer("flatten", f32("N", "T", 4)) == f32("N", "T*4")
    y, (x,), _, ops = run("flatten", [f32("N", 2, 3, 4)])
    assert ops == ["Flatten"]
    np.testing.assert_array_equal(y, x.reshape(len(x), -1))
    assert run("flatten", [f32("N", 7)])[3] == []


def test_reshape_solves_one_minus_one_and_checks_the_element_count() -> None:
    assert infer("reshape", f32("N", 12), shape=[3, -1]) == f32("N", 3, 4)
    assert infer("reshape", f32("N", 2, 6), shape=[12]) == f32("N", 12)
    y, (x,), _, ops = run("reshape", [f32("N", 2, 6)], {"shape": [3, -1]})
    assert ops == ["Reshape"]
    np.testing.assert_array_equal(y, x.reshape(len(x), 3, 4))
    with pytest.raises(
        ShapeError, match=r"cannot reshape f32\[N, 12\] \(12 per sample\) to \[N, 5\]"
    ):
        infer("reshape", f32("N", 12), shape=[5])
    with pytest.raises(ShapeError, match="12 is not a multiple of 5"):
        infer("reshape", f32("N", 12), shape=[5, -1])
    with pytest.raises(ShapeError, match="at most one -1"):
        infer("reshape", f32("N", 12), shape=[-1, -1])
    with pytest.raises(ShapeError, match="known non-batch dimensions"):
        infer("reshape", f32("N", "T", 4), shape=[-1])


def test_permute_reorders_the_non_batch_axes_with_one_transpose() -> None:
    y, (x,), _, ops = run("permute", [f32("N", 2, 3, 4)], {"axes": [3, 1, 2]})
    assert ops == ["Transpose"]
    np.testing.assert_array_equal(y, x.transpose(0, 3, 1, 2))
    assert run("permute", [f32("N", 2, 3)], {"axes": [1, 2]})[3] == []
    with pytest.raises(ShapeError, match="list the batch axis") as caught:
        infer("permute", f32("N", 2, 3), axes=[0, 2, 1])
    assert caught.value.help == "list the other axes only: permute([2, 1])"
    with pytest.raises(ShapeError, match=r"not an order of the non-batch axes \[1, 2\]"):
        infer("permute", f32("N", 2, 3), axes=[1, 1])


# sequences: the 1-D and global layers work over time --------------------------------------


def seq(*dims: int | str) -> TensorType:
    return TensorType("float32", dims, sequence=True)


def test_conv1d_on_a_sequence_convolves_over_time_like_torch_conv1d() -> None:
    # torch.nn.Conv1d(4, 2, 3) on x.transpose(1, 2), transposed back: [N, T - 2, 2]
    out = infer("conv1d", seq("N", 6, 4), filters=2, kernel=3)
    assert (out, out.sequence) == (f32("N", 4, 2), True)
    assert [p.shape for p in params_of("conv1d", seq("N", 6, 4), filters=2, kernel=3)] == [
        (2, 4, 3),
        (2,),
    ]
    y, (x,), (w, bias), ops = run("conv1d", [seq("N", 6, 4)], {"filters": 2, "kernel": 3})
    assert ops == ["Transpose", "Conv", "Transpose"]
    windows = np.stack([x[:, t : t + 3, :] for t in range(4)], axis=1)  # [N, T', 3, F]
    expected = np.einsum("ntkc,fck->ntf", windows, w) + bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_global_pools_on_a_sequence_reduce_the_positions_not_the_features() -> None:
    assert infer("global_avg_pool", seq("N", 50, 64)) == f32("N", 64)
    y, (x,), _, _ = run("global_avg_pool", [seq("N", 5, 3)])
    np.testing.assert_allclose(y, x.mean(axis=1), rtol=1e-6)
    y, (x,), _, _ = run("max_pool1d", [seq("N", 6, 3)], {"kernel": 2})
    np.testing.assert_array_equal(y, x.reshape(len(x), 3, 2, 3).max(axis=2))


def test_sequence_layers_mark_their_output_and_per_position_layers_keep_the_mark() -> None:
    spec = load_spec_text(
        "model m {\n  input ids: int64[N, 20]\n"
        "  ids -> embedding(50, 8) -> dense(8) -> relu -> dropout(p = 0.1) -> layer_norm"
        " -> permute([2, 1]) -> conv1d(4, 3)\n}\n",
        "m.dnn",
    )
    typed = check_spec(spec)
    marks = {info.node.layer: info.out.sequence for info in typed.layers}
    assert marks == {
        "embedding": True,
        "dense": True,
        "relu": True,
        "dropout": True,
        "layer_norm": True,
        "permute": False,
        "conv1d": False,
    }
    # channels first after permute: 8 channels, 20 positions
    assert str(typed.layers[-1].out) == "f32[N, 4, 18]"


def test_kim_text_cnn_has_torch_parameter_count() -> None:
    spec = load_spec_text(
        "model kim {\n  input ids: int64[N, 100]\n"
        "  ids -> embedding(10000, 128) -> conv1d(100, 5) -> relu -> global_max_pool"
        " -> dense(2)\n}\n",
        "kim.dnn",
    )
    conv = check_spec(spec).layers[1]
    assert (str(conv.out), conv.param_count) == ("f32[N, 96, 100]", 128 * 100 * 5 + 100)


def test_shape_errors_on_a_sequence_show_the_view_read_over_time() -> None:
    with pytest.raises(ShapeError, match=r"read over time, as f32\[N, 4, 2\]"):
        infer("conv1d", seq("N", 2, 4), filters=2, kernel=3)


# merges ------------------------------------------------------------------------------------


def test_add_and_mul_broadcast_from_the_right_on_symbolic_dims() -> None:
    assert infer("add", f32("N", 1, 4), f32("N", 3, 1)) == f32("N", 3, 4)
    assert infer("mul", f32("N", "T", 4), f32(4)) == f32("N", "T", 4)
    assert infer("add", f32("N", 4), f32("N", 4), f32(1, 4)) == f32("N", 4)
    with pytest.raises(ShapeError, match=r"^cannot add f32\[N, 64\] and f32\[N, 32\]$"):
        infer("add", f32("N", 64), f32("N", 32))
    with pytest.raises(ShapeError, match=r"cannot multiply f32\[N, T\] and f32\[N, S\]"):
        infer("mul", f32("N", "T"), f32("N", "S"))
    with pytest.raises(ShapeError, match="dtypes differ"):
        infer("add", f32("N", 4), TensorType("int64", ("N", 4)))
    assert LAYERS.get("add").arity is None and LAYERS.get("concat").arity is None


def test_merges_match_numpy_with_one_node_per_extra_input() -> None:
    y, (a, b, c), _, ops = run("add", [f32("N", 4), f32("N", 4), f32(1, 4)])
    assert ops == ["Add", "Add"]
    np.testing.assert_allclose(y, a + b + c, rtol=1e-6)
    y, (a, b), _, ops = run("mul", [f32("N", 3, 1), f32("N", 1, 4)])
    assert ops == ["Mul"]
    np.testing.assert_allclose(y, a * b, rtol=1e-6)
    assert flops_of("add", f32("N", 4), f32("N", 4), f32("N", 4)) == 2 * 4


def test_concat_sums_the_axis_and_requires_the_other_dims_equal() -> None:
    assert infer("concat", f32("N", 3), f32("N", 5)) == f32("N", 8)
    assert infer("concat", f32("N", "T", 2), f32("N", "S", 2), axis=1) == f32("N", "T+S", 2)
    y, (a, b), _, ops = run("concat", [f32("N", 3), f32("N", 5)])
    assert ops == ["Concat"]
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=-1))
    with pytest.raises(ShapeError, match="along axis 1: dimension 2 differs"):
        infer("concat", f32("N", 3, 2), f32("N", 5, 3), axis=1)
    # Joining along the batch axis would give a batch of N+N outputs for N targets.
    with pytest.raises(ShapeError, match="concat cannot work along axis 0, the batch axis"):
        infer("concat", f32("N", 3), f32("N", 3), axis=0)
    with pytest.raises(ShapeError, match="ranks differ"):
        infer("concat", f32("N", 3), f32("N", 3, 1))
    with pytest.raises(ShapeError, match="out of range"):
        infer("concat", f32("N", 3), f32("N", 3), axis=2)


# layer facts -------------------------------------------------------------------------------


def test_activations_say_what_they_are_so_no_stage_lists_their_names() -> None:
    activations = {name for name in LAYERS if LAYERS.get(name).activation is not None}
    assert activations == {
        *("relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "silu", "softplus"),
        *("softmax", "log_softmax"),
    }
    assert {name for name in LAYERS if relu_like(name)} == {
        *("relu", "leaky_relu", "elu", "gelu", "silu"),
    }
    assert {name: output_values(name) for name in LAYERS if output_values(name) != "values"} == {
        "sigmoid": "probabilities",
        "softmax": "probabilities",
        "log_softmax": "log_probabilities",
    }


def test_the_language_docs_name_exactly_the_relu_like_activations() -> None:
    text = (ROOT / "docs" / "language.md").read_text()
    listed = re.search(r"ReLU-like activations \(([^)]*)\)", text)
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == {n for n in LAYERS if relu_like(n)}


def _init_before(activation: str) -> str:
    text = (
        f"model m {{\n  input x: float32[N, 4]\n  dense(3) -> {activation}\n}}\n"
        "train {\n  data regression\n  loss mse\n  optimizer sgd\n  batch 4\n  epochs 1\n}\n"
    )
    return check_spec(load_spec_text(text, "m.dnn")).layers[0].params[0].init


def test_check_settles_auto_init_from_the_activation_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (_init_before("relu"), _init_before("tanh")) == ("he_normal", "glorot_uniform")
    tanh = LAYERS.get("tanh")
    facts = Activation(relu_like=True)
    monkeypatch.setitem(LAYERS._items, "tanh", replace(tanh, activation=facts))
    assert _init_before("tanh") == "he_normal"


def test_a_layer_reading_token_ids_names_the_int_argument_that_bounds_them() -> None:
    readers = {name: LAYERS.get(name).token_ids for name in LAYERS}
    assert {name: arg for name, arg in readers.items() if arg is not None} == {"embedding": "vocab"}
    for name, arg in readers.items():
        if arg is not None:
            (spec,) = [a for a in LAYERS.get(name).signature.args if a.name == arg]
            assert spec.type == "int" and spec.min == 1
    node = Node(
        name="e", layer="embedding", inputs=("ids",), args={"vocab": 7, "dim": 2}, span=SPAN
    )
    assert (token_vocab(node, "ids"), token_vocab(node, "other")) == (7, None)
    dense = Node(name="d", layer="dense", inputs=("ids",), args={"units": 2}, span=SPAN)
    assert token_vocab(dense, "ids") is None


def test_every_layer_has_a_doc_and_the_aliases_resolve() -> None:
    assert all(LAYERS.get(name).doc for name in LAYERS)
    assert LAYERS.canonical("linear") == "dense" and LAYERS.canonical("swish") == "silu"
