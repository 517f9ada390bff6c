"""Forward values a VJP rule asks for, made available by the engine (JAX's residuals).

A rule reads what the forward pass computed: mostly the inputs and outputs of the node it
differentiates. Two kinds of forward value are not there yet:

- an optional output the node computes anyway but that nobody named (Dropout's mask);
- a value inside a Scan body at every iteration (each step's gates), which the outer graph
  never sees: autograd keeps it, so the backward pass recomputes nothing.

A rule names what it needs and gets back an outer value name; only this class changes a
forward node, so rules emit backward nodes and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import helper

from dnnspec.graph.builder import GraphBuilder


class Residuals:
    """Adds to forward nodes the outputs that rules ask for, named in the builder `b`."""

    def __init__(self, b: GraphBuilder) -> None:
        self._b = b

    def output(self, node: onnx.NodeProto, index: int, hint: str) -> str:
        """Output `index` of `node`, added under a fresh name derived from `hint` when the
        node leaves it out (every output before it must exist or be left empty)."""
        if index < len(node.output) and node.output[index]:
            existing: str = node.output[index]
            return existing
        name = self._b.fresh(hint)
        if index < len(node.output):
            node.output[index] = name
        else:
            while len(node.output) < index:
                node.output.append("")
            node.output.append(name)
        return name

    def per_iteration(
        self, scan: onnx.NodeProto, values: Sequence[str], types: Mapping[str, onnx.TypeProto]
    ) -> dict[str, str]:
        """Each body value in `values` at every iteration of `scan`, as an outer tensor
        stacked along axis 0: a scan input's own outer input, a named scan output's outer
        output, otherwise a new scan output of the body (through an Identity where the
        value is a state or already an output, which a scan output may not share).
        `types` gives the body values' types."""
        body = next(a.g for a in scan.attribute if a.name == "body")
        scan_inputs = next(a.i for a in scan.attribute if a.name == "num_scan_inputs")
        states = len(scan.input) - scan_inputs
        state_in = [v.name for v in body.input[:states]]
        scan_in = [v.name for v in body.input[states:]]
        state_out = [v.name for v in body.output[:states]]
        scan_out = [v.name for v in body.output[states:]]
        while len(scan.output) < len(body.output):
            scan.output.append("")
        stacked: dict[str, str] = {}
        for name in values:
            if name in scan_in:
                stacked[name] = scan.input[states + scan_in.index(name)]
                continue
            if name in scan_out and scan.output[states + scan_out.index(name)]:
                stacked[name] = scan.output[states + scan_out.index(name)]
                continue
            source = name
            if name in state_in or name in state_out or name in scan_out:
                source = self._b.fresh(f"{name}_kept")
                body.node.append(helper.make_node("Identity", [name], [source]))
            body.output.append(helper.make_value_info(source, types[name]))
            outer = self._b.fresh(f"{name}_steps")
            scan.output.append(outer)
            stacked[name] = outer
        return stacked
