"""graph/scans.py rewrites every Scan into the form OpenVINO and tract import, without
changing what it computes: outer values the body reads become carried states, and a scan
output the body also reads gets its own Identity."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.scans import portable_scans


def _cumulative_scan() -> GraphBuilder:
    """h' = tanh(h W + x_t); the body reads W from the outer graph and outputs h' both as
    the state and (read again inside the body) as the per-step output."""
    b = GraphBuilder("scan")
    b.add_input("w", "float32", [3, 3])
    b.add_input("h0", "float32", ["N", 3])
    b.add_input("xs", "float32", ["T", "N", 3])
    body = b.subgraph("step")
    h = body.fresh_input("h", "float32", ["N", 3])
    x = body.fresh_input("x", "float32", ["N", 3])
    new = body.op("Tanh", [body.op("Add", [body.op("MatMul", [h, "w"]), x])])
    body.add_output(new, "float32", ["N", 3])
    body.add_output(body.op("Mul", [new, new]), "float32", ["N", 3])
    body.add_output(new, "float32", ["N", 3])
    last, squares, steps = b.op_multi("Scan", ["h0", "xs"], 3, body=body.graph(), num_scan_inputs=1)
    for name in (last, squares, steps):
        b.add_output(name, "float32", None)
    return b


def test_scan_bodies_read_no_outer_value_and_compute_the_same() -> None:
    b = _cumulative_scan()
    portable_scans(b)
    model = b.model()
    (scan,) = (n for n in model.graph.node if n.op_type == "Scan")
    body = scan.attribute[0].g
    defined = {i.name for i in body.input} | {o for n in body.node for o in n.output}
    assert {i for n in body.node for i in n.input} <= defined  # w comes in as a state
    assert list(scan.input)[:2] == ["h0", "w"]
    read = {i for n in body.node for i in n.input}
    assert not read & {o.name for o in body.output[2:]}  # scan outputs read by nothing
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3)).astype(np.float32)
    h0 = rng.normal(size=(2, 3)).astype(np.float32)
    xs = rng.normal(size=(4, 2, 3)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    got = dict(zip(names, session.run(None, {"w": w, "h0": h0, "xs": xs}), strict=True))
    h, steps = h0, []
    for x in xs:
        h = np.tanh(h @ w + x)
        steps.append(h)
    np.testing.assert_allclose(got[names[0]], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[names[1]], np.stack(steps) ** 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[names[2]], np.stack(steps), rtol=1e-5, atol=1e-6)
