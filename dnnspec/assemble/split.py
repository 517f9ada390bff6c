"""The train step split in two for data-parallel training (`--workers N`): a gradient
graph each worker runs on its rows, and an update graph every worker applies to the
all-reduced sums (docs/training-graph.md, "Data-parallel graphs").

Both are cut out of the one train step (built with `emit_grads`), so they are its very
nodes: the forward and backward pass on one side, clipping, penalties, schedule and
optimizer on the other. As under `accumulate`, the gradient graph outputs each gradient
times its rows (`grad_sum.<param>`) and the rows (`rows`); sums of both over the workers
make the update's gradient `grad_sum / rows`, the gradient of the mean loss over the
global batch whatever the shards' sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from dnnspec.assemble.steps import LOSS, STEP, Program, next_name

ROWS = "rows"
"""The gradient graph's sample count (float) and the update graph's summed one."""


def grad_sum_name(param: str) -> str:
    """A gradient graph output: the parameter's mean-loss gradient times the rows."""
    return f"grad_sum.{param}"


@dataclass(frozen=True)
class SplitStep:
    """The two graphs and what the runtime exchanges between them: `summed` the
    gradient-graph outputs that are all-reduced (gradient sums, then buffer updates and
    statistics times rows where `weighted`), `carried` the update graph's carried inputs."""

    gradient: onnx.ModelProto
    update: onnx.ModelProto
    grads: tuple[str, ...]
    buffers: tuple[str, ...]
    scalars: tuple[str, ...]
    """`loss`, then each per-batch statistic's output (as `Program.scalar_outputs`)."""
    means: frozenset[str]
    """Outputs among `buffers` and `scalars` that are batch means (summed times rows)."""


def split_step(program: Program) -> SplitStep:
    """Cut `program.train_step` (built with `emit_grads`) into the two graphs."""
    graph = program.train_step.graph
    produced = {out: node for node in graph.node for out in node.output}
    slots = [s.name for s in program.slots]
    cuts = {}
    for name in slots:
        node = produced[f"grad.{name}"]
        cuts[name] = node.input[0] if node.op_type == "Identity" else node.output[0]
    scalars = (LOSS, *program.scalar_outputs().values())
    buffers = tuple(next_name(b.name) for b in program.buffers)
    means = frozenset([*buffers, *(s for s in scalars if not s.startswith("metric."))])
    gradient = _extract(
        program.train_step,
        "gradient_step",
        [*scalars, *(f"grad.{n}" for n in slots), *buffers],
        stop=(),
    )
    first = program.typed.spec.model.inputs[0].name
    _append_sums(gradient, first, slots)

    carried = [n for s in program.slots for n in s.names()] + list(program.controls)
    update = _extract(
        program.train_step,
        "update_step",
        [next_name(n) for n in carried],
        stop=set(cuts.values()),
    )
    _prepend_means(update, cuts)
    allowed = {*carried, STEP, ROWS, *(grad_sum_name(n) for n in slots)}
    stray = [i.name for i in update.graph.input if i.name not in allowed]
    if stray:  # a pass shared a batch-dependent value with the update: a compiler bug
        raise AssertionError(f"the update graph reads {stray}")
    return SplitStep(gradient, update, tuple(slots), buffers, scalars, means)


def _used_names(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    """Every name the nodes read, inside their subgraphs (Loop, Scan, If bodies) too."""
    found: set[str] = set()
    for node in nodes:
        found.update(node.input)
        for attr in node.attribute:
            bodies = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for body in bodies:
                found |= _used_names(body.node)
    return found


def _extract(
    model: onnx.ModelProto, name: str, outputs: list[str], stop: set[str] | tuple[()]
) -> onnx.ModelProto:
    """The nodes `outputs` depend on, in their order, not looking past the names in
    `stop` (which become inputs, typed later by the caller)."""
    graph = model.graph
    produced = {out: i for i, node in enumerate(graph.node) for out in node.output}
    keep: set[int] = set()
    todo = [o for o in outputs if o not in stop]
    seen = set(todo)
    while todo:
        index = produced.get(todo.pop())
        if index is None or index in keep:
            continue
        keep.add(index)
        for name_used in _used_names([graph.node[index]]):
            if name_used and name_used not in seen and name_used not in stop:
                seen.add(name_used)
                todo.append(name_used)
    nodes = [node for i, node in enumerate(graph.node) if i in keep]
    used = _used_names(nodes) | set(outputs)
    inputs = [i for i in graph.input if i.name in used]
    inits = [t for t in graph.initializer if t.name in used]
    infos = {v.name: v for v in graph.output}
    body = helper.make_graph(nodes, name, inputs, [infos[o] for o in outputs], inits)
    out = helper.make_model(body, opset_imports=model.opset_import, ir_version=model.ir_version)
    for prop in model.metadata_props:
        out.metadata_props.append(prop)
    return out


def _scalar(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [])


def _append_sums(model: onnx.ModelProto, first_input: str, slots: list[str]) -> None:
    """grad.<p> -> grad_sum.<p> = grad.<p> x rows, and `rows` (the first input's batch
    axis) as an output; the other outputs stay."""
    graph = model.graph
    shape = helper.make_node("Shape", [first_input], ["rows/shape"], start=0, end=1)
    squeeze = helper.make_node("Squeeze", ["rows/shape"], ["rows/int"])
    cast = helper.make_node("Cast", ["rows/int"], [ROWS], to=TensorProto.FLOAT)
    graph.node.extend([shape, squeeze, cast])
    for output in graph.output:
        if output.name.startswith("grad.") and output.name[5:] in slots:
            param = output.name[5:]
            graph.node.append(helper.make_node("Mul", [output.name, ROWS], [grad_sum_name(param)]))
            output.name = grad_sum_name(param)
    graph.output.append(_scalar(ROWS))


def _prepend_means(model: onnx.ModelProto, cuts: dict[str, str]) -> None:
    """The update reads grad_sum.<p> / rows where the step read the gradient."""
    graph = model.graph
    shapes = {i.name: i.type for i in graph.input}
    divisions = []
    for param, cut in cuts.items():
        divisions.append(helper.make_node("Div", [grad_sum_name(param), ROWS], [cut]))
        info = onnx.ValueInfoProto(name=grad_sum_name(param))
        info.type.CopyFrom(shapes[param])  # the parameter's type: the optimizer reads it
        graph.input.append(info)
    graph.input.append(_scalar(ROWS))
    nodes = [*divisions, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
