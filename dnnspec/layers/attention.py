"""Multi-head attention: `attention(heads, causal, dropout)` over a [N, T, d] sequence.

Self-attention projects x to queries, keys and values with one fused [d, 3d] weight (one
MatMul instead of three; torch.nn.MultiheadAttention's in_proj), splits the heads, and
computes softmax(q k^T / sqrt(d / heads) + mask) v per head, then the output projection
[d, d]: 4 d^2 + 4 d parameters, as in PyTorch. With `memory = enc` the keys and values
come from another sequence [N, S, d_m] (cross-attention in an encoder-decoder): a [d, d]
query weight and a [d_m, 2 d] key/value weight. Masks are added to the scores as -1e9
(finite, so a fully masked row is uniform rather than NaN):
- `causal = true`: query i sees keys j <= i (a constant triangle for a static T, Trilu
  of the run-time [T, T] otherwise);
- `lengths = len` (an int64 [N] input): keys at positions >= len[n] are padding;
- `tokens = ids, pad = 0`: keys whose token id (an int [N, S] tensor) equals `pad`.
`dropout` drops attention weights while training. opset 21 has no fused Attention op,
so the inference graph uses the same nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from onnx import TensorProto, numpy_helper

from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ParamSpec, ShapeError, TensorType
from dnnspec.layers.dropout import drop
from dnnspec.layers.layout import as_sequence
from dnnspec.schema import ArgSpec, Signature, arg_bool, arg_float, arg_int

MASKED = -1e9
TENSOR_ARGS = ("memory", "lengths", "tokens")
V = TypeVar("V")


def operands(inputs: Sequence[V], args: Mapping[str, object]) -> tuple[V, dict[str, V]]:
    """The query sequence and the keyword tensors present, by name (they follow it in
    `inputs`, in TENSOR_ARGS order)."""
    named = [a for a in TENSOR_ARGS if args.get(a)]
    return inputs[0], dict(zip(named, inputs[1:], strict=True))


def _sequence(t: TensorType, what: str) -> int:
    if len(t.dims) != 3 or not t.dtype.startswith("float"):
        help = (
            "embed token ids first: embedding(vocab, dim)"
            if t.dtype.startswith("int")
            else "attention works on sequences [N, T, features]; reshape to that first"
        )
        raise ShapeError(
            f"attention needs a float sequence [N, T, features] as {what}, got {t}", help
        )
    width = t.dims[2]
    if not isinstance(width, int):
        raise ShapeError(
            f"attention needs a known feature width for {what}, got {t}",
            help="declare the last dimension as a number",
        )
    return width


def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
    x, named = operands(inputs, args)
    width, heads = _sequence(x, "its input"), args["heads"]
    if width % heads:
        divisors = [h for h in range(1, width + 1) if width % h == 0]
        near = min(divisors, key=lambda h: (abs(h - heads), -h))
        raise ShapeError(
            f"attention(heads = {heads}) must divide the width {width} of {x} into equal heads",
            help=f"use heads = {near}, or make the width a multiple of {heads} "
            f"(e.g. {width + heads - width % heads})",
        )
    keys = x
    if "memory" in named:
        keys = named["memory"]
        _sequence(keys, "memory")
        if keys.dims[0] != x.dims[0]:
            raise ShapeError(f"attention memory {keys} has another batch than its input {x}")
        if args["causal"]:
            raise ShapeError(
                "causal masking applies to self-attention; attention with memory sees all of it",
                help="drop causal = true here, or mask the decoder's own self-attention",
            )
    length = keys.dims[1]
    if "lengths" in named:
        lengths = named["lengths"]
        if lengths.dtype not in ("int64", "int32") or len(lengths.dims) != 1:
            raise ShapeError(
                f"attention lengths must be one integer per sample, int64[N], got {lengths}",
                help="declare it as an input: input lengths: int64[N]",
            )
    if "tokens" in named:
        tokens = named["tokens"]
        if not tokens.dtype.startswith("int") or len(tokens.dims) != 2:
            raise ShapeError(
                f"attention tokens must be the keys' token ids [N, S], got {tokens}",
                help="pass the int64 input that the key sequence was embedded from",
            )
        if tokens.dims[1] != length:
            raise ShapeError(
                f"attention tokens {tokens} do not match the {length} key positions of {keys}",
                help="pass the token ids of the sequence the keys come from"
                + (" (its memory)" if "memory" in named else ""),
            )
    if args["pad"] >= 0 and "tokens" not in named:
        raise ShapeError(
            f"attention(pad = {args['pad']}) needs the key token ids to find padding",
            help="pass them as tokens = <the int64 input>",
        )
    if "tokens" in named and args["pad"] < 0:
        raise ShapeError(
            "attention with tokens needs the padding token id",
            help="write pad = <id>, e.g. pad = 0",
        )
    if len({a for a in ("lengths", "tokens") if a in named}) > 1:
        raise ShapeError("attention takes either lengths or tokens as its padding mask, not both")
    return as_sequence(x)


def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    x, named = operands(inputs, args)
    d = _sequence(x, "its input")
    out = [
        ParamSpec("out_weight", (d, d), "glorot_uniform", d, d),
        ParamSpec("out_bias", (d,), "zeros", d, d, decay=False),
    ]
    if "memory" not in named:
        return [
            ParamSpec("in_weight", (d, 3 * d), "glorot_uniform", d, d),
            ParamSpec("in_bias", (3 * d,), "zeros", d, d, decay=False),
            *out,
        ]
    dm = _sequence(named["memory"], "memory")
    return [
        ParamSpec("q_weight", (d, d), "glorot_uniform", d, d),
        ParamSpec("q_bias", (d,), "zeros", d, d, decay=False),
        ParamSpec("kv_weight", (dm, 2 * d), "glorot_uniform", dm, d),
        ParamSpec("kv_bias", (2 * d,), "zeros", dm, d, decay=False),
        *out,
    ]


def _positions(dim: Any) -> int:
    """Positions counted in FLOPs: a symbolic length counts once (FLOPs per position)."""
    return dim if isinstance(dim, int) else 1


def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
    """Projections 2 T d (3 d) + 2 T d d (cross: 2 T d d + 2 S d_m 2 d), scores and
    weighted sum 2 T S d each, softmax about 5 T S per head."""
    x, named = operands(inputs, args)
    d, t = _sequence(x, "its input"), _positions(x.dims[1])
    keys = named.get("memory", x)
    s, dm = _positions(keys.dims[1]), _sequence(keys, "memory")
    proj = 2 * t * d * 3 * d if "memory" not in named else 2 * t * d * d + 2 * s * dm * 2 * d
    return proj + 2 * t * d * d + 4 * t * s * d + 5 * int(args["heads"]) * t * s


def _heads(b: GraphBuilder, x: str, weight: str, parts: int, heads: int, dh: int) -> list[str]:
    """x [N, T, d_in] projected by weight [d_in, parts * d] as W^T x^T, [N, parts * d, T],
    so each of the `parts` [N, heads, dh, T] is a Reshape and a Split away: no Transpose of
    the activations (onnxruntime folds both Transposes into the MatMul), and the scores
    and the weighted sum read the heads through transposed MatMul operands."""
    xt = b.op("Transpose", [x], perm=[0, 2, 1])
    projected = b.op("MatMul", [b.op("Transpose", [weight], perm=[1, 0]), xt])
    split = b.op("Reshape", [projected, b.const([0, parts * heads, dh, -1], "int64")])
    if parts == 1:
        return [split]
    return b.op_multi("Split", [split], parts, axis=1, num_outputs=parts)


def _per_head(b: GraphBuilder, bias: str, heads: int, dh: int) -> str:
    """A [d] bias as [heads, dh, 1], to add to heads laid out [N, heads, dh, T]."""
    return b.op("Reshape", [bias, b.const([heads, dh, 1], "int64")])


def _length(ctx: LowerCtx, value: str, dim: Any) -> str:
    """A sequence length as a 1-D int64 [1]: constant when static."""
    if isinstance(dim, int):
        return ctx.b.const([dim], "int64")
    return ctx.b.op("Shape", [value], start=1, end=2)


def _causal(ctx: LowerCtx, x: str, length: Any) -> str:
    """[T, T] with MASKED above the diagonal."""
    b = ctx.b
    if isinstance(length, int):
        return b.const(np.triu(np.full((length, length), MASKED), 1), hint="causal_mask")
    t = _length(ctx, x, length)
    square = b.op("Concat", [t, t], axis=0)
    fill = numpy_helper.from_array(np.full(1, MASKED, b.float_dtype))
    full = b.op("ConstantOfShape", [square], value=fill)
    return b.op("Trilu", [full, b.const(1, "int64")], hint="causal_mask", upper=1)


def _padding(ctx: LowerCtx, node: Node, named: dict[str, str], keys: str, length: Any) -> str:
    """[N, 1, 1, S] with MASKED at padded key positions."""
    b = ctx.b
    types = {k: ctx.types[v] for k, v in operands(node.inputs, node.args)[1].items()}
    if "lengths" in named:
        lengths = named["lengths"]
        if types["lengths"].dtype != "int64":
            lengths = b.op("Cast", [lengths], to=TensorProto.INT64)
        s = b.op("Squeeze", [_length(ctx, keys, length), b.const([0], "int64")])
        positions = b.op("Range", [b.const(0, "int64"), s, b.const(1, "int64")])
        column = b.op("Unsqueeze", [lengths, b.const([1], "int64")])
        padded = b.op("GreaterOrEqual", [positions, column])
    else:
        pad = b.const(arg_int(node.args, "pad"), types["tokens"].dtype)
        padded = b.op("Equal", [named["tokens"], pad])
    mask = b.op("Where", [padded, b.const(MASKED), b.const(0.0)])
    return b.op("Unsqueeze", [mask, b.const([1, 2], "int64")], hint="padding_mask")


def _bias_blocks(b: GraphBuilder, bias: str, blocks: int) -> list[str]:
    """The blocks of a packed bias ([q, k, v] or [k, v]), of which lowering leaves the
    key's out. A key bias adds q . b_k to every score of a query, which the softmax
    cancels: it changes no output, and its exact gradient is 0. Computed, that gradient is
    rounding noise, which Adam's normalisation turns into steps sized by the learning rate,
    not the gradient, and different in every runtime (chained transformer steps disagreed
    there first, by 1.5e-5 a step). Left out, its gradient is exactly 0, so it keeps its
    initial value (zeros) as in exact arithmetic; the parameter stays for PyTorch's layout
    (`in_proj_bias`)."""
    return b.op_multi("Split", [bias], blocks, axis=0, num_outputs=blocks)


def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    """softmax(q k^T / sqrt(dh) + mask) v per head, the heads laid out [N, heads, dh, T]
    (`_heads`). 1 / sqrt(dh) scales the query weight and bias (a [d, d] product, not one
    over every query). The value bias is added to the output bias through the output
    weight (b_v W_out + b_out), since each row of the attention weights sums to 1, unless
    dropout rescales those rows. Each form was the faster measured (docs/performance.md)."""
    b = ctx.b
    x, named = operands(inputs, node.args)
    x_type = ctx.types[node.inputs[0]]
    d, heads = int(x_type.dims[2]), arg_int(node.args, "heads")
    dh = d // heads
    scale = 1.0 / math.sqrt(dh)
    if "memory" in named:
        keys, key_len = named["memory"], ctx.types[node.inputs[1]].dims[1]
        q_weight = b.op("Mul", [params["q_weight"], b.const(scale)])
        (qt,) = _heads(b, x, q_weight, 1, heads, dh)
        kt, vt = _heads(b, keys, params["kv_weight"], 2, heads, dh)
        q_bias = params["q_bias"]
        _, v_bias = _bias_blocks(b, params["kv_bias"], 2)
    else:
        keys, key_len = x, x_type.dims[1]
        columns = np.ones(3 * d, b.float_dtype)
        columns[:d] = scale
        in_weight = b.op("Mul", [params["in_weight"], b.const(columns)])
        qt, kt, vt = _heads(b, x, in_weight, 3, heads, dh)
        q_bias, _, v_bias = _bias_blocks(b, params["in_bias"], 3)
    q_bias = b.op("Mul", [q_bias, b.const(scale)])
    qt = b.op("Add", [qt, _per_head(b, q_bias, heads, dh)])
    q = b.op("Transpose", [qt], perm=[0, 1, 3, 2])
    scores = b.op("MatMul", [q, kt], hint="scores")
    if arg_bool(node.args, "causal"):
        scores = b.op("Add", [scores, _causal(ctx, x, x_type.dims[1])])
    if "lengths" in named or "tokens" in named:
        scores = b.op("Add", [scores, _padding(ctx, node, named, keys, key_len)])
    weights = b.op("Softmax", [scores], hint="attention_weights", axis=-1)
    dropped = drop(ctx, weights, 4, arg_float(node.args, "dropout"))
    out_bias = params["out_bias"]
    if dropped == weights:
        out_bias = b.op("Add", [b.op("MatMul", [v_bias, params["out_weight"]]), out_bias])
    else:
        vt = b.op("Add", [vt, _per_head(b, v_bias, heads, dh)])
    v = b.op("Transpose", [vt], perm=[0, 1, 3, 2])
    mixed = b.op("Transpose", [b.op("MatMul", [dropped, v])], perm=[0, 2, 1, 3])
    merged = b.op("Reshape", [mixed, b.const([0, 0, d], "int64")])
    out = b.op("MatMul", [merged, params["out_weight"]])
    return b.op("Add", [out, out_bias], hint=node.name)


LAYERS.add(
    "attention",
    LayerDef(
        signature=Signature(
            args=(
                ArgSpec(name="heads", type="int", min=1, doc="number of heads; divides the width"),
                ArgSpec(name="causal", type="bool", default=False, doc="query i sees keys <= i"),
                ArgSpec(
                    name="dropout",
                    type="float",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    max_exclusive=True,
                    doc="drop probability of the attention weights while training",
                ),
                ArgSpec(
                    name="memory",
                    type="tensor",
                    default="",
                    doc="keys and values from this [N, S, d_m] sequence (cross-attention)",
                ),
                ArgSpec(
                    name="lengths",
                    type="tensor",
                    default="",
                    doc="int64 [N]: keys at positions >= lengths[n] are padding",
                ),
                ArgSpec(
                    name="tokens",
                    type="tensor",
                    default="",
                    doc="int [N, S] token ids of the keys; those equal to pad are padding",
                ),
                ArgSpec(
                    name="pad",
                    type="int",
                    default=-1,
                    min=-1,
                    doc="the padding token id (with tokens); -1: none",
                ),
            )
        ),
        infer=infer,
        lower=lower,
        params=params,
        flops=flops,
        doc="multi-head scaled dot-product attention with input and output projections "
        "(4 d^2 + 4 d parameters for self-attention, as torch.nn.MultiheadAttention)",
    ),
)
