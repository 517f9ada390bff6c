"""Lower a typed model's forward pass into a graph builder, for training, eval or inference.

Each layer's lowering is its `LayerDef.lower` (under `layers/`); this is the walk that
calls them in order, so it sits with the assembly that is its only caller. The caller
owns the graph interface: it adds the model inputs and parameters and passes their value
names; lowering only appends nodes and returns each output's value. Each node lowers with
its own RNG salt (the context's salt plus its index), so every dropout draws an
independent stream.
"""

from __future__ import annotations

from dataclasses import replace

from dnnspec.check.shapes import TypedModel
from dnnspec.layers.base import LAYERS, SHARED, LowerCtx


def lower_outputs(
    typed: TypedModel, ctx: LowerCtx, inputs: dict[str, str], params: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Emit every layer into `ctx.b`; `params[node][local]` names each parameter's value.
    Returns every output's value by output name (`""` for a model's one unnamed output,
    as `ir.Model.output_values` names it)."""
    values = dict(inputs)
    for index, info in enumerate(typed.layers):
        node = info.node
        layer = LAYERS.get(node.layer)
        own = params.get(node.name, {})
        shared = str(node.args.get(layer.shares, "")) if layer.shares else ""
        if shared:  # `dense(vocab, tie = embedding_1)`: the embedding's table as well
            own = {**own, **{SHARED + k: v for k, v in params.get(shared, {}).items()}}
        with ctx.b.scope(node.name):
            values[node.name] = layer.lower(
                replace(ctx, salt=ctx.salt + index),
                node,
                [values[name] for name in node.inputs],
                own,
            )
    return {name: values[v] for name, v in typed.spec.model.output_values().items()}
