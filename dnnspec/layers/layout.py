"""Which axis is time: sequence tensors read channels first by the layers that need it.

Sequence layers (embedding, the recurrent layers with `return_sequences`, attention,
positional) make `[N, T, features]` tensors, and `check` marks them (`TensorType.sequence`);
layers that work per position (dense, activations, dropout, layer_norm, merges) keep the
mark. Convolutions and pools read channels first (`[N, C, L]`, ONNX's layout), so on a
sequence they would slide over the features. `over_time` wraps such a layer so that on a
sequence it works over time, as Keras' Conv1D and GlobalAveragePooling1D do: the rules see
the channels-first view `[N, features, T]`, and the lowering transposes in, runs the
layer's own nodes and transposes a rank-3 result back (a sequence again). The gradient
flows through Transpose's rule. `permute` (`layers/permute.py`) makes any other layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dnnspec.ir import Node
from dnnspec.layers.base import LayerDef, LowerCtx, ParamSpec, ShapeError, TensorType

SWAP = [0, 2, 1]
"""The permutation between [N, T, F] and [N, F, T] (its own inverse)."""


def as_sequence(t: TensorType) -> TensorType:
    """`t` marked as a sequence tensor when it has the rank of one, [N, T, F]."""
    return replace(t, sequence=len(t.dims) == 3)


def channels_first(t: TensorType) -> TensorType:
    """The channels-first view of `t`: [N, F, T] for a sequence, `t` itself otherwise."""
    if not t.sequence:
        return t
    return TensorType(t.dtype, (t.dims[0], t.dims[2], t.dims[1]))


def _back(out: TensorType, read_sequence: bool) -> TensorType:
    """A result computed on the channels-first view, in the caller's layout."""
    if not read_sequence or len(out.dims) != 3:
        return out
    return TensorType(out.dtype, (out.dims[0], out.dims[2], out.dims[1]), sequence=True)


def _views(inputs: Sequence[TensorType]) -> list[TensorType]:
    return [channels_first(inputs[0]), *inputs[1:]]


def over_time(definition: LayerDef) -> LayerDef:
    """`definition`, reading a sequence input over time (channels-first layers only)."""

    def infer(inputs: Sequence[TensorType], args: dict[str, Any]) -> TensorType:
        x = inputs[0]
        try:
            out = definition.infer(_views(inputs), args)
        except ShapeError as exc:
            if not x.sequence:
                raise
            raise ShapeError(
                f"{exc.message} (the sequence {x} read over time, as {channels_first(x)})",
                help=exc.help,
            ) from exc
        return _back(out, x.sequence)

    def params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
        return definition.params(_views(inputs), args)

    def state(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
        return definition.state(_views(inputs), args)

    def flops(inputs: Sequence[TensorType], out: TensorType, args: dict[str, Any]) -> int:
        assert definition.flops is not None
        return definition.flops(_views(inputs), channels_first(out), args)

    def lower(ctx: LowerCtx, node: Node, inputs: Sequence[str], params: dict[str, str]) -> str:
        x = ctx.types[node.inputs[0]]
        if not x.sequence:
            return definition.lower(ctx, node, inputs, params)
        types = {**ctx.types, node.inputs[0]: channels_first(x)}
        if node.name in types:
            types[node.name] = channels_first(types[node.name])
        flipped = ctx.b.op("Transpose", [inputs[0]], perm=SWAP, hint=f"{node.name}_time")
        out = definition.lower(replace(ctx, types=types), node, [flipped, *inputs[1:]], params)
        if len(infer([ctx.types[name] for name in node.inputs], node.args).dims) != 3:
            return out
        return ctx.b.op("Transpose", [out], perm=SWAP, hint=node.name)

    return replace(
        definition,
        infer=infer,
        params=params,
        state=state,
        flops=flops if definition.flops else None,
        lower=lower,
        doc=f"{definition.doc}; on a sequence [N, T, F], over time",
    )
