"""Recurrent layers `rnn`, `lstm`, `gru` over sequences [N, T, features].

Parameters follow PyTorch's `nn.RNN`/`nn.LSTM`/`nn.GRU` (two bias vectors, the same gate
order) stored transposed like `dense`'s weight, so products need no Transpose:

    weight_ih [features, G * units]   weight_hh [units, G * units]   bias_ih, bias_hh [G * units]

with gate blocks in PyTorch's order: lstm (i, f, g, o), gru (r, z, n), rnn one block
(G = 4, 3, 1). A bidirectional layer has a second set named `*_reverse`.

    rnn:  h' = tanh(x Wi + bi + h Wh + bh)
    lstm: i, f, g, o = s(.), s(.), tanh(.), s(.) of x Wi + bi + h Wh + bh
          c' = f c + i g,  h' = o tanh(c')
    gru:  r, z = s(x Wi_rz + bi_rz + h Wh_rz + bh_rz)
          n = tanh(x Wi_n + bi_n + r (h Wh_n + bh_n)),  h' = (1 - z) n + z h

The input projection x Wi + b of every step is one MatMul before the loop. The loop itself
is unrolled when T is a number (up to `UNROLL_MAX` steps) and a `Scan` otherwise (the
measurement that chose this is in docs/performance.md). In evaluation and inference the
layer is ONNX's fused LSTM/GRU/RNN op (tested to agree with the training forward).

`lengths = len` (an int [N] input) masks padded steps as PyTorch's packed sequences do:
a step t >= len[n] keeps sample n's state and outputs zeros, so the final state is the
state at its last valid step, and a reversed direction starts at step len[n] - 1 from the
zero state. Each step blends `state + keep (new - state)` with keep in {0, 1}. With
lengths the inference graph uses these same steps rather than the fused op, whose
`sequence_lens` onnx.reference ignores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LayerDef, LowerCtx, ParamSpec, ShapeError, TensorType
from dnnspec.schema import ArgSpec, Signature, arg_bool, arg_int, arg_str

UNROLL_MAX = 16
"""Static sequences up to this length are unrolled; longer or symbolic ones use Scan."""

CellFn = Callable[[GraphBuilder, str, list[str] | None, "Weights", int], list[str]]


@dataclass(frozen=True)
class Weights:
    """One direction's parameter value names."""

    ih: str
    hh: str
    bias_ih: str
    bias_hh: str


@dataclass(frozen=True)
class Cell:
    gates: int
    states: int  # 2 for lstm (h, c), else 1
    step: CellFn
    onnx_op: str
    onnx_order: tuple[int, ...]  # our gate blocks in the fused op's order
    elementwise: int  # FLOPs per unit and step beyond the products and biases


def _recurrent(b: GraphBuilder, h: str | None, w: Weights, bias: bool) -> str | None:
    """h Wh (+ bh): None for the zero initial state, which contributes only the bias."""
    if h is None:
        return None
    if bias:
        return b.op("Gemm", [h, w.hh, w.bias_hh])
    return b.op("MatMul", [h, w.hh])


def _rnn_step(
    b: GraphBuilder, gx: str, state: list[str] | None, w: Weights, units: int
) -> list[str]:
    hh = _recurrent(b, state[0] if state else None, w, bias=False)
    return [b.op("Tanh", [gx if hh is None else b.op("Add", [gx, hh])])]


def _lstm_step(
    b: GraphBuilder, gx: str, state: list[str] | None, w: Weights, units: int
) -> list[str]:
    hh = _recurrent(b, state[0] if state else None, w, bias=False)
    gates = gx if hh is None else b.op("Add", [gx, hh])
    i, f, g, o = b.op_multi("Split", [gates], 4, axis=-1, num_outputs=4)
    i, f, o = (b.op("Sigmoid", [v]) for v in (i, f, o))
    ig = b.op("Mul", [i, b.op("Tanh", [g])])
    c = ig if state is None else b.op("Add", [b.op("Mul", [f, state[1]]), ig])
    return [b.op("Mul", [o, b.op("Tanh", [c])]), c]


def _gru_step(
    b: GraphBuilder, gx: str, state: list[str] | None, w: Weights, units: int
) -> list[str]:
    h = state[0] if state else None
    hh = _recurrent(b, h, w, bias=True)
    x_r, x_z, x_n = b.op_multi("Split", [gx], 3, axis=-1, num_outputs=3)
    # h = 0: h Wh + bh is the bias alone
    h_r, h_z, h_n = b.op_multi(
        "Split", [w.bias_hh if hh is None else hh], 3, axis=-1, num_outputs=3
    )
    r, z = (b.op("Sigmoid", [b.op("Add", [xg, hg])]) for xg, hg in ((x_r, h_r), (x_z, h_z)))
    n = b.op("Tanh", [b.op("Add", [x_n, b.op("Mul", [r, h_n])])])
    if h is None:  # (1 - z) n
        return [b.op("Sub", [n, b.op("Mul", [z, n])])]
    return [b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n])])])]


CELLS = {
    "rnn": Cell(1, 1, _rnn_step, "RNN", (0,), 1),
    "lstm": Cell(4, 2, _lstm_step, "LSTM", (0, 3, 1, 2), 9),
    "gru": Cell(3, 1, _gru_step, "GRU", (1, 0, 2), 7),
}


def _directions(args: dict[str, Any]) -> list[str]:
    """Parameter-name suffixes, and whether each direction runs backwards in time."""
    return ["", "_reverse"] if args["bidirectional"] else [""]


def _features(kind: str, x: TensorType) -> int:
    if not x.dtype.startswith("float"):
        raise ShapeError(
            f"{kind} reads float feature vectors [N, T, features], but got the "
            f"{x.dtype} tensor {x}",
            help=f"token ids need an embedding first: embedding(vocab, dim) -> {kind}(...)"
            if x.dtype.startswith("int")
            else "declare the input float32 [N, T, features]",
        )
    if len(x.dims) == 2:
        steps = x.dims[1]
        raise ShapeError(
            f"{kind} needs a sequence [N, T, features], got {x}: is that [N, T] with one "
            "feature per step, or [N, features] without a time axis?",
            help=f"for one feature per step write reshape([{steps}, 1]) before {kind}"
            if isinstance(steps, int)
            else "declare the input [N, T, 1] for one feature per step",
        )
    if len(x.dims) != 3:
        raise ShapeError(
            f"{kind} needs a sequence [N, T, features], got {x} (rank {len(x.dims)})",
            help="merge the feature axes first, e.g. reshape([T, features])",
        )
    width = x.dims[2]
    if not isinstance(width, int):
        raise ShapeError(
            f"{kind} needs a known feature width to size its weights, got {x}",
            help="declare the last dimension as a number",
        )
    return width


def _infer(kind: str) -> Callable[[Sequence[TensorType], dict[str, Any]], TensorType]:
    def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
        x = inputs[0]
        _features(kind, x)
        if args["lengths"]:
            lengths = inputs[1]
            if lengths.dtype not in ("int64", "int32") or len(lengths.dims) != 1:
                raise ShapeError(
                    f"{kind} lengths must be one integer per sample, int64[N], got {lengths}",
                    help="declare it as an input: input lengths: int64[N]",
                )
        if args["bidirectional"] and args["reverse"]:
            raise ShapeError(
                f"{kind}(bidirectional = true) already reads the sequence both ways; "
                "reverse = true would be ignored",
                help="drop reverse = true",
            )
        width = args["units"] * len(_directions(args))
        if args["return_sequences"]:
            return TensorType(x.dtype, (x.dims[0], x.dims[1], width), sequence=True)
        return TensorType(x.dtype, (x.dims[0], width))

    return infer


def _params(kind: str) -> Callable[[Sequence[TensorType], dict[str, Any]], list[ParamSpec]]:
    cell = CELLS[kind]

    def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
        features, units = _features(kind, inputs[0]), args["units"]
        width = cell.gates * units
        specs = []
        for suffix in _directions(args):
            specs += [
                ParamSpec(
                    f"weight_ih{suffix}", (features, width), "glorot_uniform", features, width
                ),
                ParamSpec(f"weight_hh{suffix}", (units, width), "orthogonal", units, width),
                ParamSpec(f"bias_ih{suffix}", (width,), "zeros", features, width, decay=False),
                ParamSpec(f"bias_hh{suffix}", (width,), "zeros", units, width, decay=False),
            ]
        return specs

    return params


def _flops(kind: str) -> Callable[[Sequence[TensorType], TensorType, dict[str, Any]], int]:
    cell = CELLS[kind]

    def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
        """Per step and direction: both products (2 G H (F + H)), both biases (2 G H) and
        the cell's elementwise work; T steps when T is a number, else per step."""
        x, units = inputs[0], args["units"]
        features, width = _features(kind, x), cell.gates * units
        steps = x.dims[1] if isinstance(x.dims[1], int) else 1
        per_step = 2 * width * (features + units) + 2 * width + cell.elementwise * units
        return int(steps * per_step * len(_directions(args)))

    return flops


def _weights(params: dict[str, str], suffix: str) -> Weights:
    return Weights(
        params[f"weight_ih{suffix}"],
        params[f"weight_hh{suffix}"],
        params[f"bias_ih{suffix}"],
        params[f"bias_hh{suffix}"],
    )


def _input_projection(b: GraphBuilder, kind: str, x: str, w: Weights) -> str:
    """x Wi + bi for every step at once; rnn and lstm fold bh in (gru keeps it in the
    step, where r multiplies the candidate's part of it)."""
    bias = w.bias_ih if kind == "gru" else b.op("Add", [w.bias_ih, w.bias_hh])
    return b.op("Add", [b.op("MatMul", [x, w.ih]), bias])


def _keep(b: GraphBuilder, lengths: str, positions: str) -> str:
    """[N, T] of 1 where step t < lengths[n], else 0 (`positions` [T] int64)."""
    column = b.op(
        "Unsqueeze", [b.op("Cast", [lengths], to=TensorProto.INT64), b.const([1], "int64")]
    )
    valid = b.op("Less", [b.op("Unsqueeze", [positions, b.const([0], "int64")]), column])
    return b.op("Cast", [valid], to=b.float_elem, hint="valid_steps")


def _masked_step(
    b: GraphBuilder,
    cell: Cell,
    gx: str,
    state: list[str] | None,
    w: Weights,
    units: int,
    keep: str | None,
) -> tuple[list[str], str]:
    """One step's state and output; with `keep` [N, 1] a padded step (keep 0) keeps the
    state and outputs zeros."""
    new = cell.step(b, gx, state, w, units)
    if keep is None:
        return new, new[0]
    if state is None:
        kept = [b.op("Mul", [keep, v]) for v in new]
    else:
        kept = [
            b.op("Add", [old, b.op("Mul", [keep, b.op("Sub", [v, old])])])
            for v, old in zip(new, state, strict=True)
        ]
    return kept, b.op("Mul", [keep, new[0]])


def _unrolled(
    b: GraphBuilder,
    kind: str,
    x: str,
    steps: int,
    w: Weights,
    units: int,
    backwards: bool,
    keep: str | None,
) -> tuple[list[str], str]:
    """Per-step outputs in position order and the last processed step's output."""
    cell = CELLS[kind]
    gx = _input_projection(b, kind, x, w)
    parts = b.op_multi("Split", [gx], steps, axis=1, num_outputs=steps) if steps > 1 else [gx]
    masks: list[str | None] = [None] * steps
    if keep is not None:
        masks = list(
            b.op_multi("Split", [keep], steps, axis=1, num_outputs=steps) if steps > 1 else [keep]
        )
    one = b.const([1], "int64")
    outputs: list[str | None] = [None] * steps
    state: list[str] | None = None
    for t in reversed(range(steps)) if backwards else range(steps):
        gx_t = b.op("Squeeze", [parts[t], one])
        state, outputs[t] = _masked_step(b, cell, gx_t, state, w, units, masks[t])
    assert state is not None
    return [o for o in outputs if o is not None], state[0]


def _time_reversed(b: GraphBuilder, x: str, time_major: str) -> str:
    """`x` [T, N, ...] reversed along time for every sample (lengths all T)."""
    shape = b.op("Shape", [time_major])
    lengths = b.op(
        "Expand",
        [
            b.op("Slice", [shape, b.const([0], "int64"), b.const([1], "int64")]),
            b.op("Slice", [shape, b.const([1], "int64"), b.const([2], "int64")]),
        ],
    )
    return b.op("ReverseSequence", [x, lengths], time_axis=0, batch_axis=1)


def _scanned(
    b: GraphBuilder,
    kind: str,
    x_time_major: str,
    w: Weights,
    units: int,
    backwards: bool,
    sequences: bool,
    keep: str | None,
) -> tuple[str | None, str]:
    """A Scan over time: the per-step outputs [T, N, units] in position order (when
    `sequences`) and the last processed step's output [N, units]. `keep`: [T, N, 1]."""
    cell = CELLS[kind]
    gx = _input_projection(b, kind, x_time_major, w)
    if backwards:
        gx = _time_reversed(b, gx, x_time_major)
        keep = None if keep is None else _time_reversed(b, keep, x_time_major)
    batch = b.op("Shape", [x_time_major], start=1, end=2)
    zeros_shape = b.op("Concat", [batch, b.const([units], "int64")], axis=0)
    initial = [b.op("ConstantOfShape", [zeros_shape], value=_zero(b)) for _ in range(cell.states)]
    body = b.subgraph(f"{kind}_step")
    state = [body.fresh_input(f"{kind}_state", b.float_dtype, ["N", units]) for _ in initial]
    step_in = body.fresh_input(f"{kind}_gates_x", b.float_dtype, ["N", cell.gates * units])
    step_keep = None if keep is None else body.fresh_input(f"{kind}_keep", b.float_dtype, ["N", 1])
    new_state, output = _masked_step(body, cell, step_in, state, w, units, step_keep)
    for name in new_state:
        body.add_output(name, b.float_dtype, ["N", units])
    if sequences:
        body.add_output(body.op("Identity", [output]), b.float_dtype, ["N", units])
    scanned = [gx] if keep is None else [gx, keep]
    outs = b.op_multi(
        "Scan",
        [*initial, *scanned],
        cell.states + int(sequences),
        hint=f"{kind}_scan",
        body=body.graph(),
        num_scan_inputs=len(scanned),
    )
    steps = outs[-1] if sequences else None
    if steps is not None and backwards:
        steps = _time_reversed(b, steps, x_time_major)
    return steps, outs[0]


def _zero(b: GraphBuilder) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(1, b.float_dtype))


def _lower_train(
    ctx: LowerCtx, node: Node, x: str, lengths: str | None, params: dict[str, str]
) -> str:
    """The training forward in standard ops our autodiff differentiates."""
    b, kind, args = ctx.b, node.layer, node.args
    units, sequences = arg_int(args, "units"), arg_bool(args, "return_sequences")
    steps = ctx.types[node.inputs[0]].dims[1]
    directions = [
        (_weights(params, suffix), arg_bool(args, "reverse") or suffix == "_reverse")
        for suffix in _directions(args)
    ]
    if isinstance(steps, int) and steps <= UNROLL_MAX:
        keep = None if lengths is None else _keep(b, lengths, b.const(np.arange(steps), "int64"))
        seqs, lasts = [], []
        for w, backwards in directions:
            outputs, last = _unrolled(b, kind, x, steps, w, units, backwards, keep)
            seqs.append(outputs)
            lasts.append(last)
        if not sequences:
            return lasts[0] if len(lasts) == 1 else b.op("Concat", lasts, axis=-1, hint=node.name)
        one = b.const([1], "int64")
        per_step = [
            parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=-1)
            for parts in zip(*seqs, strict=True)
        ]
        stacked = [b.op("Unsqueeze", [h, one]) for h in per_step]
        return b.op("Concat", stacked, axis=1, hint=node.name) if len(stacked) > 1 else stacked[0]
    time_major = b.op("Transpose", [x], perm=[1, 0, 2])
    keep_tm = None
    if lengths is not None:
        t = b.op("Squeeze", [b.op("Shape", [x], start=1, end=2), b.const([0], "int64")])
        positions = b.op("Range", [b.const(0, "int64"), t, b.const(1, "int64")])
        keep_tm = b.op(
            "Unsqueeze",
            [b.op("Transpose", [_keep(b, lengths, positions)], perm=[1, 0]), b.const([2], "int64")],
        )
    results = [
        _scanned(b, kind, time_major, w, units, backwards, sequences, keep_tm)
        for w, backwards in directions
    ]
    if not sequences:
        lasts = [last for _, last in results]
        return lasts[0] if len(lasts) == 1 else b.op("Concat", lasts, axis=-1, hint=node.name)
    seq_values = [s for s, _ in results if s is not None]
    joined = seq_values[0] if len(seq_values) == 1 else b.op("Concat", seq_values, axis=-1)
    return b.op("Transpose", [joined], perm=[1, 0, 2], hint=node.name)


def _fused_weights(b: GraphBuilder, cell: Cell, w: Weights, units: int) -> tuple[str, str, str]:
    """Our [in, G units] blocks as the fused op's [G units, in] in its gate order."""
    rows = np.concatenate([np.arange(units) + g * units for g in cell.onnx_order])
    order = b.const(rows, "int64", hint="gate_order")
    zero = b.const([0], "int64")

    def rows_of(weight: str) -> str:
        return b.op("Gather", [b.op("Transpose", [weight], perm=[1, 0]), order], axis=0)

    def gates_of(bias: str) -> str:
        return b.op("Gather", [bias, order], axis=0)

    bias = b.op("Concat", [gates_of(w.bias_ih), gates_of(w.bias_hh)], axis=0)
    return (
        b.op("Unsqueeze", [rows_of(w.ih), zero]),
        b.op("Unsqueeze", [rows_of(w.hh), zero]),
        b.op("Unsqueeze", [bias, zero]),
    )


def _lower_fused(ctx: LowerCtx, node: Node, x: str, params: dict[str, str]) -> str:
    """ONNX's LSTM/GRU/RNN op (time-major: onnxruntime's CPU kernels refuse layout = 1)."""
    b, kind, args = ctx.b, node.layer, node.args
    cell, units = CELLS[kind], arg_int(args, "units")
    suffixes = _directions(args)
    packed = [_fused_weights(b, cell, _weights(params, s), units) for s in suffixes]
    w, r, bias = (
        parts[0] if len(parts) == 1 else b.op("Concat", list(parts), axis=0)
        for parts in zip(*packed, strict=True)
    )
    direction = (
        "bidirectional" if args["bidirectional"] else "reverse" if args["reverse"] else "forward"
    )
    attrs: dict[str, Any] = {"hidden_size": units, "direction": direction}
    if kind == "gru":
        attrs["linear_before_reset"] = 1
    time_major = b.op("Transpose", [x], perm=[1, 0, 2])
    # explicit zero initial states: tract cannot build its own for a symbolic batch
    batch = b.op("Shape", [time_major], start=1, end=2)
    state_shape = b.op(
        "Concat", [b.const([len(suffixes)], "int64"), batch, b.const([units], "int64")], axis=0
    )
    zeros = b.op("ConstantOfShape", [state_shape], value=_zero(b), hint=f"{kind}_initial")
    initial = [zeros] * cell.states
    outs = b.op_multi(
        cell.onnx_op, [time_major, w, r, bias, "", *initial], 2, hint=f"{kind}_fused", **attrs
    )
    width = units * len(suffixes)
    if args["return_sequences"]:  # Y [T, D, N, H] -> [N, T, D * H]
        y = b.op("Transpose", [outs[0]], perm=[2, 0, 1, 3])
        return b.op("Reshape", [y, b.const([0, 0, width], "int64")], hint=node.name)
    y_h = b.op("Transpose", [outs[1]], perm=[1, 0, 2])  # [D, N, H] -> [N, D, H]
    return b.op("Reshape", [y_h, b.const([0, width], "int64")], hint=node.name)


def _lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
    lengths = inputs[1] if arg_str(node.args, "lengths") else None
    if ctx.training or lengths is not None:
        return _lower_train(ctx, node, inputs[0], lengths, params)
    return _lower_fused(ctx, node, inputs[0], params)


ARGS = (
    ArgSpec(name="units", type="int", min=1, doc="state width"),
    ArgSpec(
        name="return_sequences",
        type="bool",
        default=False,
        doc="true: every step's output [N, T, units]; false: the last step's [N, units]",
    ),
    ArgSpec(name="bidirectional", type="bool", default=False, doc="also read backwards; concat"),
    ArgSpec(name="reverse", type="bool", default=False, doc="read the sequence from the end"),
    ArgSpec(
        name="lengths",
        type="tensor",
        default="",
        doc="int64 [N]: steps at positions >= lengths[n] are padding (as packed sequences)",
    ),
)

DOCS = {
    "rnn": "Elman RNN, h' = tanh(x Wi + bi + h Wh + bh), over [N, T, features]",
    "lstm": "LSTM (gates i, f, g, o as in PyTorch) over [N, T, features]",
    "gru": "GRU (gates r, z, n as in PyTorch) over [N, T, features]",
}

for _kind in CELLS:
    LAYERS.add(
        _kind,
        LayerDef(
            signature=Signature(args=ARGS),
            infer=_infer(_kind),
            lower=_lower,
            params=_params(_kind),
            flops=_flops(_kind),
            doc=DOCS[_kind],
            recent=("lengths",),
        ),
    )
