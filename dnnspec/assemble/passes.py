"""Every rewrite of an assembled graph, in the order it runs.

Lowering, the losses and the autodiff engine emit a graph in its simplest form; these
passes then rewrite it, each semantically the identity, for speed or portability. They are
listed here, and run from here only, so their order is read in one place: `PASSES` on the
builder of a step graph or of model.onnx before it is serialised, `LOOP_PASSES` on the
train loop once `assemble/loop.py` has wrapped the train step in it.

Export-time conversions are not passes: `dnnspec export` applies them on request to the
finished graphs of a run, at the tools tier above this one (tools/opset.py to another
opset, then tools/half.py to float16 for model.onnx), and they may refuse a graph with a
located error, where a pass may not refuse anything.

A new pass is a function (here, or in the module of what it rewrites), an entry in one
list at the place its order demands, and a case in `tests/test_passes.py`
(`test_every_pass_has_a_case`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import onnx

from dnnspec.assemble.fuse import fold_gemm_updates
from dnnspec.assemble.hoist import hoist_step_integers
from dnnspec.graph.builder import Dim, GraphBuilder
from dnnspec.graph.scans import portable_scans

GraphKind = Literal["train_step", "eval_step", "model"]


@dataclass(frozen=True)
class StepFacts:
    """What a pass reads beside the graph: the train step's learning-rate value and the
    shapes of the parameters it updates (None and empty for other graphs)."""

    lr: str | None = None
    params: Mapping[str, Sequence[Dim]] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphPass:
    """One rewrite of a builder's graph and the graphs it applies to."""

    name: str
    run: Callable[[GraphBuilder, StepFacts], None]
    graphs: frozenset[GraphKind]


@dataclass(frozen=True)
class LoopPass:
    """One rewrite of the train loop's model, in place."""

    name: str
    run: Callable[[onnx.ModelProto], None]


def _fold_sgd_updates(b: GraphBuilder, facts: StepFacts) -> None:
    if facts.lr is not None:
        fold_gemm_updates(b, facts.lr, facts.params)


def _prune(b: GraphBuilder, facts: StepFacts) -> None:
    b.prune()


def _portable_scans(b: GraphBuilder, facts: StepFacts) -> None:
    portable_scans(b)


_STEPS: frozenset[GraphKind] = frozenset({"train_step", "eval_step"})
_ALL: frozenset[GraphKind] = frozenset({"train_step", "eval_step", "model"})

PASSES: tuple[GraphPass, ...] = (
    # a plain SGD update folded into the Gemm computing the weight's gradient
    # (assemble/fuse.py); the Mul and Gemm it replaces are left unused for `prune`
    GraphPass("fold_sgd_updates", _fold_sgd_updates, frozenset({"train_step"})),
    # nodes and constants no output depends on; model.onnx keeps every parameter its
    # metadata lists, so it is not pruned
    GraphPass("prune", _prune, _STEPS),
    # Scan bodies in the form OpenVINO and tract import (graph/scans.py); last, so it
    # rewrites only the Scans that stay
    GraphPass("portable_scans", _portable_scans, _ALL),
)
"""The builder passes, in the order they run."""

LOOP_PASSES: tuple[LoopPass, ...] = (
    # the dropout key's integer arithmetic on `step` and `seed` runs once per call, before
    # the Loop (assemble/hoist.py)
    LoopPass("hoist_step_integers", hoist_step_integers),
)
"""The train loop's passes, in the order they run."""


def run_passes(b: GraphBuilder, graph: GraphKind, facts: StepFacts | None = None) -> None:
    """Apply, in order, every pass for `graph` to `b`; call once its outputs are declared."""
    for graph_pass in PASSES:
        if graph in graph_pass.graphs:
            graph_pass.run(b, facts or StepFacts())
