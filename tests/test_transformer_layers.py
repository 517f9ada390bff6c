"""layer_norm, positional and attention: shape rules, parameter counts (PyTorch's),
FLOPs, located shape errors, and the lowering run in onnxruntime against numpy (and
against torch.nn.MultiheadAttention / LayerNorm when torch is installed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec.errors import Span
from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Node
from dnnspec.layers.attention import TENSOR_ARGS
from dnnspec.layers.base import LAYERS, LowerCtx, Mode, ParamSpec, ShapeError, TensorType
from dnnspec.layers.positional import sinusoid_table

SPAN = Span(file="t.dnn", line=1, col=1, end_line=1, end_col=2)
SIZES = {"N": 3, "T": 5, "S": 4}


class SeededUniform:
    def uniform_like(self, b: GraphBuilder, like: str, rank: int, salt: int) -> str:
        return b.op("RandomUniformLike", [like], seed=float(salt + 1))


def f32(*dims: int | str) -> TensorType:
    return TensorType("float32", dims)


def i64(*dims: int | str) -> TensorType:
    return TensorType("int64", dims)


def bind(layer: str, args: dict[str, Any]) -> dict[str, Any]:
    keyword = [(k, v, SPAN) for k, v in args.items()]
    return LAYERS.get(layer).signature.bind(layer, [], keyword, SPAN)


def infer(layer: str, *types: TensorType, **args: Any) -> TensorType:
    return LAYERS.get(layer).infer(types, bind(layer, args))


def params_of(layer: str, *types: TensorType, **args: Any) -> list[ParamSpec]:
    return LAYERS.get(layer).params(types, bind(layer, args))


def count(layer: str, *types: TensorType, **args: Any) -> int:
    return sum(int(np.prod(p.shape)) for p in params_of(layer, *types, **args))


def run(
    layer: str,
    types: Sequence[TensorType],
    args: dict[str, Any],
    values: Sequence[np.ndarray],
    mode: Mode = "eval",
    weights: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Lower one node (tensor keyword args name inputs in1, in2, ...) and run it."""
    names = [f"in{i}" for i in range(len(types))]
    bound = bind(layer, args)
    definition = LAYERS.get(layer)
    node = Node(name="node", layer=layer, inputs=tuple(names), args=bound, span=SPAN)
    out = definition.infer(types, bound)
    b = GraphBuilder("t")
    for name, t in zip(names, types, strict=True):
        b.add_input(name, t.dtype, t.dims)
    specs = definition.params(types, bound)
    params = {p.name: b.add_input(f"node.{p.name}", "float32", p.shape) for p in specs}
    ctx = LowerCtx(b, mode, {**dict(zip(names, types, strict=True)), "node": out}, SeededUniform())
    result = definition.lower(ctx, node, names, params)
    b.add_output(result, out.dtype, None)
    rng = np.random.default_rng(1)
    ws = weights or {p.name: rng.normal(0, 0.3, p.shape).astype(np.float32) for p in specs}
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feeds = {**dict(zip(names, values, strict=True)), **{f"node.{k}": v for k, v in ws.items()}}
    (y,) = session.run(None, feeds)
    return y, ws, [n.op_type for n in b.nodes]


# layer_norm ----------------------------------------------------------------------------


def _layer_norm(x: np.ndarray, axes: tuple[int, ...], eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def test_layer_norm_keeps_the_shape_with_scale_and_shift_over_the_normalised_dims() -> None:
    assert infer("layer_norm", f32("N", "T", 16)) == f32("N", "T", 16)
    scale, shift = params_of("layer_norm", f32("N", "T", 16))
    assert (scale.shape, scale.init, scale.decay) == ((16,), "ones", False)
    assert (shift.shape, shift.init, shift.decay) == ((16,), "zeros", False)
    assert count("layer_norm", f32("N", 4, 6), axes="all") == 2 * 24  # nn.LayerNorm([4, 6])
    with pytest.raises(ShapeError, match=r"known sizes for \[T, 6\]"):
        infer("layer_norm", f32("N", "T", 6), axes="all")
    with pytest.raises(ShapeError, match="float tensor"):
        infer("layer_norm", i64("N", 6))


@pytest.mark.parametrize(("axes", "reduced"), [("last", (-1,)), ("all", (1, 2))])
def test_layer_norm_is_one_fused_node_matching_numpy(axes: str, reduced: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).normal(2.0, 3.0, (3, 4, 6)).astype(np.float32)
    y, ws, ops = run("layer_norm", [f32("N", 4, 6)], {"axes": axes, "eps": 1e-3}, [x])
    assert ops == ["LayerNormalization"]
    expected = _layer_norm(x.astype(np.float64), reduced, 1e-3) * ws["scale"] + ws["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


# positional ----------------------------------------------------------------------------


def test_sinusoid_table_follows_attention_is_all_you_need() -> None:
    table = sinusoid_table(50, 6)
    pos, i = 7, 2
    assert table[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 6)))
    assert table[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / 6)))
    assert sinusoid_table(3, 5).shape == (3, 5)  # odd widths end with a sine


@pytest.mark.parametrize("length", [5, "T"])
def test_positional_adds_the_first_t_rows_of_its_table(length: int | str) -> None:
    x = np.random.default_rng(2).normal(size=(3, 5, 4)).astype(np.float32)
    y, _, ops = run("positional", [f32("N", length, 4)], {"max_len": 9}, [x])
    np.testing.assert_allclose(y, x + sinusoid_table(5, 4), rtol=1e-6, atol=1e-6)
    assert ops == (["Add"] if length == 5 else ["Shape", "Slice", "Add"])
    y, ws, _ = run("positional", [f32("N", length, 4)], {"max_len": 9, "kind": "learned"}, [x])
    np.testing.assert_allclose(y, x + ws["table"][:5], rtol=1e-6)


def test_positional_learned_table_is_max_len_by_width_and_errors_are_located() -> None:
    (table,) = params_of("positional", f32("N", "T", 8), kind="learned", max_len=64)
    assert (table.shape, table.init) == ((64, 8), "normal_002")
    assert params_of("positional", f32("N", "T", 8), max_len=64) == []
    with pytest.raises(ShapeError, match="cannot encode 65 positions") as e:
        infer("positional", f32("N", 65, 8), max_len=64)
    assert e.value.help == "raise max_len to at least 65"
    with pytest.raises(ShapeError, match="needs a sequence") as e:
        infer("positional", f32("N", 8), max_len=64)
    assert e.value.help is not None and "embedding" in e.value.help


# attention -----------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_attention(
    x: np.ndarray, memory: np.ndarray | None, ws: dict[str, np.ndarray], heads: int, mask: Any
) -> np.ndarray:
    """Multi-head attention in numpy, float64; `mask[n?, t, s]` is True where masked."""
    n, t, d = x.shape
    dh = d // heads
    if memory is None:
        qkv = x @ ws["in_weight"] + ws["in_bias"]
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
    else:
        q = x @ ws["q_weight"] + ws["q_bias"]
        kv = memory @ ws["kv_weight"] + ws["kv_bias"]
        k, v = kv[..., :d], kv[..., d:]

    def split(a: np.ndarray) -> np.ndarray:
        return a.reshape(n, a.shape[1], heads, dh).transpose(0, 2, 1, 3)

    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(dh)
    if mask is not None:
        scores = np.where(np.broadcast_to(mask, scores.shape), -1e9, scores)
    mixed = (_softmax(scores) @ split(v)).transpose(0, 2, 1, 3).reshape(n, t, d)
    return mixed @ ws["out_weight"] + ws["out_bias"]


def test_attention_parameters_are_torch_multihead_attention_s() -> None:
    d = 64
    assert count("attention", f32("N", "T", d), heads=8) == 4 * d * d + 4 * d
    # cross-attention with a memory of the same width: the same count as PyTorch's
    assert count("attention", f32("N", "T", d), f32("N", "S", d), heads=8, memory="m") == (
        4 * d * d + 4 * d
    )
    names = [
        p.name
        for p in params_of("attention", f32("N", "T", 8), f32("N", "S", 6), heads=2, memory="m")
    ]
    assert names == ["q_weight", "q_bias", "kv_weight", "kv_bias", "out_weight", "out_bias"]
    (kv,) = [
        p
        for p in params_of("attention", f32("N", "T", 8), f32("N", "S", 6), heads=2, memory="m")
        if p.name == "kv_weight"
    ]
    assert kv.shape == (6, 16)


def test_attention_flops_count_projections_scores_and_softmax() -> None:
    definition, bound = LAYERS.get("attention"), bind("attention", {"heads": 2})
    x = f32("N", 10, 8)
    assert definition.flops is not None
    flops = definition.flops([x], x, bound)
    assert flops == 2 * 10 * 8 * 24 + 2 * 10 * 8 * 8 + 4 * 10 * 10 * 8 + 5 * 2 * 10 * 10


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [5, "T"])
def test_self_attention_matches_numpy(causal: bool, length: int | str) -> None:
    x = np.random.default_rng(3).normal(size=(3, 5, 8)).astype(np.float32)
    y, ws, ops = run("attention", [f32("N", length, 8)], {"heads": 2, "causal": causal}, [x])
    mask = np.triu(np.ones((5, 5), bool), 1) if causal else None
    expected = reference_attention(x.astype(np.float64), None, ws, 2, mask)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # one projection (its heads a Reshape and Split away), scores, weighted sum, output, and
    # the value bias through the output weight; the bias blocks are the other Split
    assert ops.count("MatMul") == 5 and ops.count("Split") == 2 and ops.count("Softmax") == 1
    if causal and length == "T":
        assert "Trilu" in ops
    if causal and length == 5:
        assert "Trilu" not in ops  # a constant triangle


def test_cross_attention_with_a_lengths_mask_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5, 8)).astype(np.float32)
    memory = rng.normal(size=(3, 4, 6)).astype(np.float32)
    lengths = np.array([4, 2, 1], np.int64)
    y, ws, _ = run(
        "attention",
        [f32("N", "T", 8), f32("N", "S", 6), i64("N")],
        {"heads": 4, "memory": "in1", "lengths": "in2"},
        [x, memory, lengths],
    )
    mask = (np.arange(4)[None, :] >= lengths[:, None])[:, None, None, :]
    expected = reference_attention(x.astype(np.float64), memory.astype(np.float64), ws, 4, mask)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_padding_token_mask_hides_padded_keys() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 5, 8)).astype(np.float32)
    tokens = np.array([[3, 4, 0, 0, 0], [1, 1, 1, 1, 1], [2, 0, 2, 0, 2]], np.int64)
    y, ws, _ = run(
        "attention",
        [f32("N", 5, 8), i64("N", 5)],
        {"heads": 2, "tokens": "in1", "pad": 0},
        [x, tokens],
    )
    mask = (tokens == 0)[:, None, None, :]
    np.testing.assert_allclose(
        y, reference_attention(x.astype(np.float64), None, ws, 2, mask), rtol=1e-4, atol=1e-5
    )
    # changing what sits at padded positions changes nothing
    x2 = x.copy()
    x2[0, 3] += 5.0
    y2, _, _ = run(
        "attention",
        [f32("N", 5, 8), i64("N", 5)],
        {"heads": 2, "tokens": "in1", "pad": 0},
        [x2, tokens],
        weights=ws,
    )
    np.testing.assert_allclose(y2[0, [0, 1, 2, 4]], y[0, [0, 1, 2, 4]], rtol=1e-5, atol=1e-6)
    assert not np.allclose(y2[0, 3], y[0, 3])


def test_attention_dropout_only_while_training() -> None:
    x = np.random.default_rng(6).normal(size=(3, 5, 8)).astype(np.float32)
    args = {"heads": 2, "dropout": 0.5}
    y_eval, ws, ops = run("attention", [f32("N", 5, 8)], args, [x])
    assert "RandomUniformLike" not in ops
    y_train, _, ops = run("attention", [f32("N", 5, 8)], args, [x], "train", ws)
    assert "RandomUniformLike" in ops and not np.allclose(y_train, y_eval)


def test_attention_shape_errors_say_what_to_change() -> None:
    with pytest.raises(ShapeError, match=r"heads = 3\) must divide the width 64") as e:
        infer("attention", f32("N", "T", 64), heads=3)
    assert e.value.help == "use heads = 4, or make the width a multiple of 3 (e.g. 66)"
    with pytest.raises(ShapeError, match=r"float sequence \[N, T, features\]") as e:
        infer("attention", i64("N", "T"), heads=2)
    assert e.value.help is not None and "embedding" in e.value.help
    with pytest.raises(ShapeError, match=r"got f32\[N, 64\]"):
        infer("attention", f32("N", 64), heads=2)
    with pytest.raises(ShapeError, match="causal masking applies to self-attention"):
        infer("attention", f32("N", "T", 8), f32("N", "S", 8), heads=2, memory="m", causal=True)
    with pytest.raises(ShapeError, match=r"lengths must be one integer per sample"):
        infer("attention", f32("N", "T", 8), f32("N", "T"), heads=2, lengths="l")
    with pytest.raises(ShapeError, match="do not match the 4 key positions"):
        infer("attention", f32("N", 4, 8), i64("N", 5), heads=2, tokens="t", pad=0)
    with pytest.raises(ShapeError, match=r"pad = 0\) needs the key token ids"):
        infer("attention", f32("N", 4, 8), heads=2, pad=0)
    assert TENSOR_ARGS == ("memory", "lengths", "tokens")


def test_attention_and_layer_norm_agree_with_pytorch() -> None:
    torch_ = pytest.importorskip("torch")
    d, heads = 8, 2
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 5, d)).astype(np.float32)
    mha = torch_.nn.MultiheadAttention(d, heads, batch_first=True)
    assert sum(p.numel() for p in mha.parameters()) == count(
        "attention", f32("N", 5, d), heads=heads
    )
    ws = {
        "in_weight": mha.in_proj_weight.detach().numpy().T.copy(),
        "in_bias": mha.in_proj_bias.detach().numpy().copy(),
        "out_weight": mha.out_proj.weight.detach().numpy().T.copy(),
        "out_bias": mha.out_proj.bias.detach().numpy().copy(),
    }
    mask = torch_.triu(torch_.ones(5, 5, dtype=torch_.bool), 1)
    expected, _ = mha(*(torch_.from_numpy(x),) * 3, attn_mask=mask, need_weights=False)
    y, _, _ = run("attention", [f32("N", 5, d)], {"heads": heads, "causal": True}, [x], weights=ws)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    norm = torch_.nn.LayerNorm(d)
    assert sum(p.numel() for p in norm.parameters()) == count("layer_norm", f32("N", 5, d))


# a whole training step -----------------------------------------------------------------

BLOCK = """
model enc {
  input x: float32[N, LEN, 8]
  h = x -> positional(KIND, max_len = 6) -> layer_norm
  h = x + attention(2, causal = true, dropout = 0.2)
  h + (h -> layer_norm(AXES) -> dense(16) -> relu -> dense(8))
}
train {
  data regression
  loss mse
  optimizer sgd(lr = 0.1)
  batch 4
  epochs 1
}
"""


@pytest.mark.parametrize(
    ("length", "kind", "axes"), [("5", "learned", "axes = all"), ("T", "sinusoidal", "")]
)
def test_train_step_through_attention_and_layer_norm_matches_finite_differences(
    length: str, kind: str, axes: str
) -> None:
    """Every parameter's gradient from the float64 train step (dropout on, static or
    symbolic T) against central differences of the step's loss."""
    from dnnspec.assemble.steps import LOSS, SEED, STEP, TARGET, build_train_step
    from dnnspec.check.shapes import check_spec
    from dnnspec.frontend import load_spec_text
    from dnnspec.layers.init import initial_value
    from dnnspec.training.schedules import Timing

    text = BLOCK.replace("LEN", length).replace("KIND", kind).replace("AXES", axes)
    spec = load_spec_text(text, "<block>")
    assert spec.train is not None
    program = build_train_step(
        check_spec(spec), spec.train, None, Timing(10, 100), "float64", emit_grads=True
    )
    ops = {n.op_type for n in program.train_step.graph.node}
    assert {"LayerNormalization", "Softmax", "Split"} <= ops
    session = ort.InferenceSession(
        program.train_step.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {
        "x": rng.normal(size=(4, 5, 8)),
        TARGET: rng.normal(size=(4, 5, 8)),
        STEP: np.array(3, np.int64),
        SEED: np.array(5, np.int64),
    }
    for slot in program.slots:
        feeds[slot.name] = initial_value(slot.spec, rng, np.dtype("float64")) + rng.normal(
            0, 0.1, slot.spec.shape
        )
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(None, feeds), strict=True))

    def loss_at(name: str, index: tuple[int, ...], delta: float) -> float:
        moved = feeds[name].copy()
        moved[index] += delta
        return float(session.run([LOSS], {**feeds, name: moved})[0])

    for slot in program.slots:
        grad = outs[f"grad.{slot.name}"]
        for _ in range(3):
            index = tuple(int(rng.integers(0, d)) for d in slot.spec.shape)
            fd = (loss_at(slot.name, index, 1e-6) - loss_at(slot.name, index, -1e-6)) / 2e-6
            assert grad[index] == pytest.approx(fd, rel=1e-4, abs=1e-7), (slot.name, index)


# tensors passed by keyword -------------------------------------------------------------


def _diagnostics(text: str) -> list[str]:
    from dnnspec.errors import DiagnosticError
    from dnnspec.frontend import load_spec_text

    with pytest.raises(DiagnosticError) as caught:
        load_spec_text(text, "t.dnn")
    return [
        f"{d.span.line}:{d.span.col} {d.message} | {d.help}"
        for d in caught.value.diagnostics
        if d.span is not None
    ]


def test_memory_keyword_adds_the_tensor_as_an_input_of_the_node() -> None:
    from dnnspec.frontend import load_spec_text

    spec = load_spec_text(
        "model m {\n  input src: float32[N, S, 6]\n  input x: float32[N, T, 8]\n"
        "  enc = src -> dense(6)\n  x -> attention(2, memory = enc)\n}\n",
        "t.dnn",
    )
    node = spec.model.nodes[-1]
    assert node.inputs == ("x", "dense_1") and node.args["memory"] == "dense_1"
    assert node.args["lengths"] == "" and node.args["tokens"] == ""


def test_a_tensor_keyword_given_a_word_or_number_is_located() -> None:
    base = (
        "model m {\n  input x: float32[N, T, 8]\n  enc = x -> dense(8)\n"
        "  x -> attention(2, ARG)\n}\n"
    )
    (problem,) = _diagnostics(base.replace("ARG", "memory = emc"))
    assert problem.startswith("4:30 argument 'memory' of attention must be a tensor, got")
    assert "did you mean 'enc'?" in problem
    (problem,) = _diagnostics(base.replace("ARG", "lengths = 3"))
    assert "argument 'lengths' of attention must be a tensor" in problem
