"""Residuals: the forward values a VJP rule asks the engine for. An optional output the
node leaves out gets a name; a Scan body's value comes out at every iteration; and the
rules change forward nodes in no other way."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_vjp_rules import CASES, Case, attach_backward

from dnnspec.autodiff.residuals import Residuals
from dnnspec.graph.builder import GraphBuilder


def test_an_optional_output_the_node_leaves_out_is_added_under_a_fresh_name() -> None:
    b = GraphBuilder("dropout")
    x = b.add_input("x", "float32", [2])
    y = b.op("Dropout", [x])
    (node,) = b.nodes
    residuals = Residuals(b)
    mask = residuals.output(node, 1, f"{y}_mask")
    assert list(node.output) == [y, mask] and mask == f"{y}_mask"
    assert residuals.output(node, 1, "other") == mask  # asked again: the same value


def test_an_output_after_a_missing_one_leaves_that_one_empty() -> None:
    b = GraphBuilder("pool")
    x = b.add_input("x", "float32", [1, 1, 4])
    y = b.op("Split", [x], num_outputs=1, axis=2)
    (node,) = b.nodes
    assert Residuals(b).output(node, 2, "third") == "third"
    assert list(node.output) == [y, "", "third"]


def _scan() -> GraphBuilder:
    """h' = tanh(h + x_t) * 2, with h' as the state and tanh(h + x_t) as the scan output."""
    b = GraphBuilder("scan")
    b.add_input("h0", "float32", [3])
    b.add_input("xs", "float32", [4, 3])
    body = b.subgraph("step")
    h = body.fresh_input("h", "float32", [3])
    x = body.fresh_input("x", "float32", [3])
    pre = body.op("Add", [h, x], hint="pre")
    act = body.op("Tanh", [pre], hint="act")
    body.add_output(body.op("Mul", [act, body.const(2.0)], hint="h_next"), "float32", [3])
    body.add_output(act, "float32", [3])
    last, acts = b.op_multi("Scan", ["h0", "xs"], 2, body=body.graph(), num_scan_inputs=1)
    b.add_output(last, "float32", [3])
    b.add_output(acts, "float32", [4, 3])
    return b


def test_a_scan_body_value_comes_out_at_every_iteration() -> None:
    b = _scan()
    (scan,) = b.nodes
    body = scan.attribute[0].g
    h, x = (v.name for v in body.input)
    pre, act = "pre", "act"
    types = {v.name: v.type for v in [*body.input, *body.output]}
    types[pre] = types[x]
    stacked = Residuals(b).per_iteration(scan, [x, act, pre, h], types)
    assert stacked[x] == "xs" and stacked[act] == scan.output[1]  # already outside
    for name in (pre, h):
        b.add_output(stacked[name], "float32", [4, 3])
    rng = np.random.default_rng(0)
    h0, xs = rng.normal(size=3).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = dict(
        zip([o.name for o in b.outputs], session.run(None, {"h0": h0, "xs": xs}), strict=True)
    )
    states, pres = [h0], []
    for step in xs:
        pres.append(states[-1] + step)
        states.append(np.tanh(pres[-1]) * 2)
    np.testing.assert_allclose(got[stacked[pre]], np.stack(pres), rtol=1e-6)
    np.testing.assert_allclose(got[stacked[h]], np.stack(states[:-1]), rtol=1e-6)


def _without_outputs(node: onnx.NodeProto) -> onnx.NodeProto:
    """`node` with its outputs, and its bodies' outputs and Identity nodes, left out."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    del copy.output[:]
    for attribute in copy.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            del attribute.g.output[:]
            kept = [n for n in attribute.g.node if n.op_type != "Identity"]
            del attribute.g.node[:]
            attribute.g.node.extend(kept)
    return copy


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rules_change_forward_nodes_only_by_adding_outputs(case: Case) -> None:
    b = GraphBuilder("vjp_case", float_dtype="float64")
    names = [
        b.add_input(f"x{i}", "int64" if spec.kind == "int" else "float64", spec.shape)
        for i, spec in enumerate(case.inputs)
    ]
    y = case.build(b, *names)
    forward = list(b.nodes)
    before = [onnx.NodeProto() for _ in forward]
    for copy, node in zip(before, forward, strict=True):
        copy.CopyFrom(node)
    attach_backward(
        b, y, names, [n for n, spec in zip(names, case.inputs, strict=True) if spec.wrt]
    )
    for old, new in zip(before, forward, strict=True):
        assert _without_outputs(new) == _without_outputs(old), old.name
        named = [(k, name) for k, name in enumerate(old.output) if name]
        assert all(new.output[k] == name for k, name in named), old.name
