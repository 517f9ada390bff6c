"""Scan bodies in the form every runtime imports: outer values carried, scan outputs apart.

Two rewrites, each semantically the identity, so the layers and autodiff rules keep
building the simpler form and each assembled graph is rewritten once, as the last of the
assembly stage's passes (`assemble/passes.py`):

- ONNX lets a Scan body read any value of the enclosing graph by name (the recurrent
  layers' `weight_hh` in every step, forward and backward). OpenVINO's Scan importer
  counts body inputs against the node's inputs and refuses such a body; it runs one whose
  every outer value comes in as a loop-carried state passed through unchanged.
- A per-step (scan) output that the body also reads (the backward pass saves the gates
  that the step goes on to use): tract reshapes a scan output in place, which changes the
  shape its other readers see, and fails to analyse the body. Such an output is given its
  own Identity.
"""

from __future__ import annotations

import onnx
from onnx import helper

from dnnspec.graph.builder import GraphBuilder


def _referenced(graph: onnx.GraphProto) -> set[str]:
    """Every value name the graph's nodes (and nested bodies) read."""
    names: set[str] = set()
    for node in graph.node:
        names.update(i for i in node.input if i)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= _referenced(attr.g)
    return names


def _defined(graph: onnx.GraphProto) -> set[str]:
    return (
        {i.name for i in graph.input}
        | {t.name for t in graph.initializer}
        | {o for node in graph.node for o in node.output}
    )


def _rename_reads(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_reads(attr.g, renames)


def _types(b: GraphBuilder) -> dict[str, onnx.TypeProto]:
    """Types of the top graph's values (from shape inference where not declared)."""
    graph = onnx.shape_inference.infer_shapes(b.model()).graph
    types = {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}
    for tensor in graph.initializer:
        info = helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
        types[tensor.name] = info.type
    return types


def _separate_scan_outputs(body: onnx.GraphProto, states: int) -> None:
    """An Identity for each scan output (after the `states`) that the body also reads."""
    read = _referenced(body) | {o.name for o in body.output[:states]}
    for output in body.output[states:]:
        if output.name in read:
            inner = output.name
            output.name = f"{inner}/step"
            body.node.append(helper.make_node("Identity", [inner], [output.name]))


def portable_scans(b: GraphBuilder) -> None:
    """Rewrite, in place, every top-level Scan of `b` into the portable form (module doc)."""
    types: dict[str, onnx.TypeProto] | None = None
    for node in (n for n in b.nodes if n.op_type == "Scan"):
        (body,) = (a.g for a in node.attribute if a.name == "body")
        scan_inputs = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
        states = len(node.input) - scan_inputs
        _separate_scan_outputs(body, states)
        captured = sorted(_referenced(body) - _defined(body))
        if not captured:
            continue
        if types is None:
            types = _types(b)
        renames = {name: f"{node.output[0]}/capture/{name}" for name in captured}
        _rename_reads(body, renames)
        new_inputs, new_outputs, identities = [], [], []
        for name in captured:
            inner = renames[name]
            value = onnx.ValueInfoProto(name=inner)
            value.type.CopyFrom(types[name])
            new_inputs.append(value)
            out = onnx.ValueInfoProto(name=f"{inner}/out")
            out.type.CopyFrom(types[name])
            new_outputs.append(out)
            identities.append(helper.make_node("Identity", [inner], [out.name]))
        inputs = list(body.input)
        outputs = list(body.output)
        del body.input[:], body.output[:]
        body.input.extend([*inputs[:states], *new_inputs, *inputs[states:]])
        body.output.extend([*outputs[:states], *new_outputs, *outputs[states:]])
        body.node.extend(identities)
        node_inputs, node_outputs = list(node.input), list(node.output)
        del node.input[:], node.output[:]
        node.input.extend([*node_inputs[:states], *captured, *node_inputs[states:]])
        node.output.extend(
            [*node_outputs[:states], *(f"{renames[n]}/last" for n in captured)]
            + node_outputs[states:]
        )
