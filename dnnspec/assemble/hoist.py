"""The train loop's pass: integer arithmetic on `step` and `seed` runs before the Loop.

The dropout key is about 40 scalar integer nodes, plus 14 per dropout layer, computed
from `step` and `seed` alone. Inside the Loop that is 40 kernel launches per step; outside
it the same nodes run once per call on the vector of the call's K steps (`hoist/step`,
which the loop computes with a Range), and each iteration gathers its own values. Integer
ops give the same values elementwise on a vector as on a scalar, so the losses stay
exactly those of single steps (float scalars such as a schedule's Cos do not, and stay in
the body).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from dnnspec.ir import GRAPH_NAMES

STEP, SEED = GRAPH_NAMES[0], GRAPH_NAMES[1]
HOIST = "hoist/"
STEPS = HOIST + STEP
"""The outer [K] vector of the call's steps that hoisted nodes read in place of `step`."""

_INTEGER_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Mod"})


def _outer_name(name: str) -> str:
    return STEPS if name == STEP else name if name == SEED else HOIST + name


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    """`node` under outer names, for the outer graph."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = HOIST + node.name
    copy.input[:] = [_outer_name(i) for i in node.input]
    copy.output[:] = [_outer_name(o) for o in node.output]
    return copy


def _reads_outer_input(node: onnx.NodeProto) -> bool:
    """A batch Gather of the loop: it reads an outer `in/` value, which no step node can."""
    return any(name.startswith("in/") for name in node.input)


def hoist_step_integers(loop: onnx.ModelProto) -> None:
    """Move, in place, the Loop body's integer nodes on `step`, `seed` and integer scalar
    constants alone to the outer graph, before the Loop; a node whose output the body
    returns (the step's own increment) stays. The body then reads each value it still
    needs by a Gather of its iteration's entry (an Identity for values of `seed` alone),
    placed after the batch Gathers."""
    g = loop.graph
    (index,) = (k for k, node in enumerate(g.node) if node.op_type == "Loop")
    (body,) = (a.g for a in g.node[index].attribute if a.name == "body")
    iteration = body.input[0].name
    constants = {
        i.name: i for i in body.initializer if i.data_type == TensorProto.INT64 and not i.dims
    }
    returned = {o.name for o in body.output}
    varying, fixed = {STEP}, {SEED, *constants}  # per step ([K] outside) / the same for all
    hoisted: list[onnx.NodeProto] = []
    for node in body.node:
        if (
            node.op_type in _INTEGER_OPS
            and all(i in varying or i in fixed for i in node.input)
            and not returned.intersection(node.output)
        ):
            hoisted.append(node)
            (varying if varying.intersection(node.input) else fixed).update(node.output)
    if not hoisted:
        return
    made = {o for node in hoisted for o in node.output}
    rest = [node for node in body.node if not made.intersection(node.output)]
    read = {i for node in rest for i in node.input} | returned
    used = {i for node in hoisted for i in node.input}
    initializers = []
    for name in sorted(used & set(constants)):
        copy = onnx.TensorProto()
        copy.CopyFrom(constants[name])
        copy.name = _outer_name(name)
        initializers.append(copy)
    reads = [
        helper.make_node("Gather", [_outer_name(n), iteration], [n], name=f"loop/gather_{n}")
        if n in varying
        else helper.make_node("Identity", [_outer_name(n)], [n], name=f"loop/read_{n}")
        for n in sorted(made & read)
    ]
    gathers = next(k for k, node in enumerate(rest) if not _reads_outer_input(node))
    body_nodes = [*rest[:gathers], *reads, *rest[gathers:]]
    del body.node[:]
    body.node.extend(body_nodes)
    outer = [*g.node[:index], *(_copy_node(n) for n in hoisted), *g.node[index:]]
    del g.node[:]
    g.node.extend(outer)
    initializers += g.initializer
    del g.initializer[:]
    g.initializer.extend(initializers)
