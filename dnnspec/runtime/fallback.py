"""A chosen backend opened, or onnxruntime in its place where it cannot compile a graph.

A runtime that lacks an operator (or fails to compile a graph for another reason) raises
`CannotCompile` naming the node; the run goes on in onnxruntime, which runs every graph
dnnspec writes, with a warning that names the node, never with a wrong result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from dnnspec.errors import Diagnostic
from dnnspec.runtime.backend import (
    DEFAULT,
    CannotCompile,
    Device,
    Graph,
    TrainGraphs,
    TrainState,
    load_backend,
)

if TYPE_CHECKING:
    import onnx


def _warning(exc: CannotCompile) -> Diagnostic:
    return Diagnostic(
        message=f"{exc.backend} cannot compile the graph '{exc.graph}' ({exc.node}); "
        f"running it in {DEFAULT} instead",
        severity="warning",
        help=f"choose --runtime {DEFAULT} to skip the attempt",
    )


def train_state(
    name: str, graphs: TrainGraphs, device: Device, values: Mapping[str, np.ndarray]
) -> tuple[TrainState, str, list[Diagnostic]]:
    """The run's carried tensors in backend `name`, or in onnxruntime when `name` cannot
    compile its graphs: the state, the backend that holds it and the warnings to show."""
    try:
        return load_backend(name).train(graphs, device, values), name, []
    except CannotCompile as exc:
        return load_backend(DEFAULT).train(graphs, device, values), DEFAULT, [_warning(exc)]


class Opened(NamedTuple):
    """A graph opened for prediction, and the warnings to show (a fallback's)."""

    graph: Graph
    warnings: list[Diagnostic]


def open_graph(
    name: str, model: onnx.ModelProto, device: Device, threads: int | None = None
) -> Opened:
    """`model` opened in backend `name`, or in onnxruntime when `name` cannot compile it."""
    try:
        return Opened(load_backend(name).open(model, device, threads), [])
    except CannotCompile as exc:
        return Opened(load_backend(DEFAULT).open(model, device, threads), [_warning(exc)])
