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
from dnnspec.layers.base import LAYERS, LowerCtx


def lower_outputs(
    typed: TypedModel, ctx: LowerCtx, inputs: dict[str, str], params: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Emit every layer into `ctx.b`; `params[node][local]` names each parameter's value.
    Returns every output's value by output name (`""` for a model's one unnamed output,
    as `ir.Model.output_values` names it)."""
    values = dict(inputs)
    for index, info in enumerate(typed.layers):
        node = info.node
        with ctx.b.scope(node.name):
            values[node.name] = LAYERS.get(node.layer).lower(
                replace(ctx, salt=ctx.salt + index),
                node,
                [values[name] for name in node.inputs],
                params.get(node.name, {}),
            )
    return {name: values[v] for name, v in typed.spec.model.output_values().items()}
