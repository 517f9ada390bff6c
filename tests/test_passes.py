"""The assembly stage's graph passes (`assemble/passes.py`): each one changes the graph it
is given and not what the graph computes, and they run in the order the list gives.

A new pass needs a case in `CASES` (`test_every_pass_has_a_case`): a function that builds
one graph twice, once without the pass and once with it, and asserts the pass's effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dnnspec.assemble.hoist import STEPS
from dnnspec.assemble.loop import build_train_loop
from dnnspec.assemble.passes import LOOP_PASSES, PASSES, StepFacts, run_passes
from dnnspec.assemble.steps import build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec_text
from dnnspec.graph.builder import GraphBuilder
from dnnspec.training.schedules import Timing

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Rewritten:
    """A graph without and with one pass, and inputs to run both on."""

    before: onnx.ModelProto
    after: onnx.ModelProto
    feeds: Feeds
    exact: bool = True
    """Whether outputs must agree to the bit (a fold into Gemm's alpha rounds once less)."""


def _builder_pass(
    name: str, build: Callable[[], tuple[GraphBuilder, StepFacts]]
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    (graph_pass,) = [p for p in PASSES if p.name == name]
    before, _ = build()
    after, facts = build()
    graph_pass.run(after, facts)
    return before.model(), after.model()


SGD_INPUTS = {"a": [4, 3], "dy": [4, 2], "w": [3, 2]}


def _sgd_update() -> tuple[GraphBuilder, StepFacts]:
    """w - Gemm(aᵀ, dy) * lr, the update of a weight by plain gradient descent."""
    b = GraphBuilder("sgd")
    a, dy, w = (
        b.add_input(n, "float32", s) for n, s in (("a", [4, 3]), ("dy", [4, 2]), ("w", [3, 2]))
    )
    grad = b.op("Gemm", [a, dy], transA=1)
    lr = b.const(0.1, hint="lr")
    b.add_output(b.op("Sub", [w, b.op("Mul", [grad, lr])], outputs=["w.next"]), "float32", [3, 2])
    return b, StepFacts(lr, {"w": (3, 2)})


def _sgd_feeds() -> Feeds:
    rng = np.random.default_rng(0)
    return {n: rng.normal(size=s).astype(np.float32) for n, s in SGD_INPUTS.items()}


def fold_case() -> Rewritten:
    before, after = _builder_pass("fold_sgd_updates", _sgd_update)
    (gemm,) = [n for n in after.graph.node if n.op_type == "Gemm" and len(n.input) == 3]
    assert list(gemm.input)[2] == "w" and "Sub" not in {n.op_type for n in after.graph.node}
    return Rewritten(before, after, _sgd_feeds(), exact=False)


def prune_case() -> Rewritten:
    def build() -> tuple[GraphBuilder, StepFacts]:
        b = GraphBuilder("dead")
        x = b.add_input("x", "float32", [2])
        b.op("Exp", [b.op("Mul", [x, b.const(3.0, hint="unused")])])  # nothing reads it
        b.add_output(b.op("Relu", [x], outputs=["y"]), "float32", [2])
        return b, StepFacts()

    before, after = _builder_pass("prune", build)
    assert [n.op_type for n in after.graph.node] == ["Relu"] and not after.graph.initializer
    return Rewritten(before, after, {"x": np.array([-1.0, 2.0], np.float32)})


def portable_scans_case() -> Rewritten:
    def build() -> tuple[GraphBuilder, StepFacts]:
        """h' = tanh(a), a = h W + x_t: W read from the outer graph, and a a per-step
        output that the body reads too."""
        b = GraphBuilder("scan")
        b.add_input("w", "float32", [3, 3])
        b.add_input("h0", "float32", ["N", 3])
        b.add_input("xs", "float32", ["T", "N", 3])
        body = b.subgraph("step")
        h = body.fresh_input("h", "float32", ["N", 3])
        x = body.fresh_input("x", "float32", ["N", 3])
        a = body.op("Add", [body.op("MatMul", [h, "w"]), x])
        body.add_output(body.op("Tanh", [a]), "float32", ["N", 3])
        body.add_output(a, "float32", ["N", 3])
        last, steps = b.op_multi("Scan", ["h0", "xs"], 2, body=body.graph(), num_scan_inputs=1)
        b.add_output(last, "float32", ["N", 3])
        b.add_output(steps, "float32", ["T", "N", 3])
        return b, StepFacts()

    before, after = _builder_pass("portable_scans", build)
    (scan,) = after.graph.node
    assert list(scan.input) == ["h0", "w", "xs"]  # w comes in as a carried state
    body = scan.attribute[0].g
    assert not {o.name for o in body.output} & {i for n in body.node for i in n.input}
    rng = np.random.default_rng(1)
    feeds = {"w": (3, 3), "h0": (2, 3), "xs": (4, 2, 3)}
    return Rewritten(
        before, after, {n: rng.normal(size=s).astype(np.float32) for n, s in feeds.items()}
    )


DROPOUT_SPEC = """model m {
  input x: float32[N, 4]
  dense(8)
  dropout(0.5)
  dense(3)
}
train {
  data spirals(samples = 64)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 4
  epochs 1
}
"""


def hoist_case() -> Rewritten:
    typed = check_spec(load_spec_text(DROPOUT_SPEC, "m.dnn"))
    assert typed.spec.train is not None
    step = build_train_step(typed, typed.spec.train, 3, Timing(16, 16)).train_step
    before, after = build_train_loop(step, passes=()), build_train_loop(step)
    assert not any(STEPS in n.input for n in before.graph.node)
    assert any(STEPS in n.input for n in after.graph.node if n.name.startswith("hoist/"))
    rng = np.random.default_rng(2)
    feeds: Feeds = {}
    for value in before.graph.input:
        dims = [d.dim_value or 6 for d in value.type.tensor_type.shape.dim]
        if value.name == "in/order":
            feeds[value.name] = rng.integers(0, 6, (3, 4))
        elif value.name == "in/target":
            feeds[value.name] = rng.integers(0, 3, dims)
        elif value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[value.name] = np.array(5 if value.name == "seed" else 7)
        else:
            feeds[value.name] = rng.normal(size=dims).astype(np.float32)
    return Rewritten(before, after, feeds)


CASES: dict[str, Callable[[], Rewritten]] = {
    "fold_sgd_updates": fold_case,
    "prune": prune_case,
    "portable_scans": portable_scans_case,
    "hoist_step_integers": hoist_case,
}


def test_every_pass_has_a_case() -> None:
    names = [p.name for p in PASSES] + [p.name for p in LOOP_PASSES]
    assert sorted(CASES) == sorted(names)


def _run(model: onnx.ModelProto, feeds: Feeds) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_pass_rewrites_the_graph_and_keeps_its_values(name: str) -> None:
    case = CASES[name]()
    assert case.before.graph.SerializeToString() != case.after.graph.SerializeToString()
    onnx.checker.check_model(case.after, full_check=True)
    expected, got = _run(case.before, case.feeds), _run(case.after, case.feeds)
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        if case.exact:
            np.testing.assert_array_equal(have, want)
        else:
            np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-7)


def test_the_fold_runs_before_prune_which_drops_what_it_replaced() -> None:
    b, facts = _sgd_update()
    run_passes(b, "train_step", facts)
    assert [n.op_type for n in b.nodes] == ["Gemm"]


def test_model_onnx_is_not_pruned_so_it_keeps_every_parameter() -> None:
    b = GraphBuilder("model")
    x = b.add_input("x", "float32", [2])
    b.add_initializer("unused.weight", np.ones(2, np.float32))
    b.add_output(b.op("Relu", [x], outputs=["output"]), "float32", [2])
    run_passes(b, "model")
    assert "unused.weight" in b.initializers
