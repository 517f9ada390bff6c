"""What a runtime must do to run dnnspec's graphs, and the registry of those that do.

A backend opens a graph on a device with a number of threads (`Inference.open`: the
model's predictions, a reference check, one step fed from the host) and holds a training
run's carried tensors on that device (`Backend.train`): it runs K train steps per call
of the train-loop graph, single steps of the train-step graph and evaluation, every call
reading one buffer set and writing the next. Policy stays in `runtime/trainer.py`
(epoch order, call sizes, divergence replay, statistics), so a backend is mechanism only
and the Trainer's work per call is one method call more than calling the runtime itself.

onnxruntime is the first backend (`runtime/backends/onnxruntime.py`). A new one is a
module under `runtime/backends/` that defines `BACKEND` and one `BACKENDS.add` line
below; `tests/test_backends.py` demands a case for it. A runtime that only runs graphs
(the portability table's onnx.reference, tract) implements `Inference` alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from dnnspec.errors import error
from dnnspec.registry import Registry

if TYPE_CHECKING:
    import onnx

Device = Literal["cpu", "cuda", "auto"]
DEFAULT = "onnxruntime"
"""The backend every command uses."""
SETS = 3
"""Buffer sets of carried tensors. Two would do for double buffering; the third keeps the
input of the previous call intact while the next one runs, so a non-finite loss found in a
call can be traced back to the last good parameters (`runtime/trainer.py`)."""

SMALL_STEP_FLOPS = 1e8
"""Below this many FLOPs per step a graph runs on one thread: with spinning off, the
hand-off between intra-op threads costs more than splitting kernels of that size saves
(docs/performance.md, "Design measurements")."""


def threads(flops: float | None = None) -> int:
    """Intra-op threads: $DNNSPEC_THREADS when set (at most the cores); else one for a
    step of fewer than SMALL_STEP_FLOPS (`flops`, when known); else the cores, up to 8."""
    text = os.environ.get("DNNSPEC_THREADS", "").strip()
    if not text:
        if flops is not None and flops < SMALL_STEP_FLOPS:
            return 1
        return min(os.cpu_count() or 1, 8)
    if not text.isdigit() or int(text) < 1:
        raise error(
            f"DNNSPEC_THREADS must be a positive whole number, got '{text}'",
            help="unset it to use one thread per core (up to 8)",
        )
    cores = os.cpu_count() or 1
    if int(text) > cores:
        raise error(
            f"DNNSPEC_THREADS is {text}, but this machine has {cores} "
            f"core{'s' if cores != 1 else ''}",
            help=f"use at most {cores}, or unset it",
        )
    return int(text)


class Graph(Protocol):
    """An opened graph. The call is onnxruntime's and onnx.reference's: the named outputs
    (every graph output, in order, for None) of one run on host arrays."""

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, Any], /) -> list[Any]: ...


class Inference(Protocol):
    """A runtime that runs graphs."""

    def open(
        self,
        model: onnx.ModelProto,
        device: Device = "cpu",
        threads: int | None = None,
        weights_as_inputs: bool = False,
    ) -> Graph:
        """`model` ready to run on `device` with `threads` intra-op threads (None: the
        `threads()` default). `weights_as_inputs`: a step graph, whose weights are fed
        (a backend may optimise it differently from a model with constant weights)."""
        ...


@dataclass(frozen=True)
class TrainGraphs:
    """One program as a backend trains it: the graphs and the names it binds."""

    loop: onnx.ModelProto
    """K steps per call (`assemble/loop.py`): carried tensors `in/<name>` -> `out/<name>`,
    the dataset as `data/<name>` inputs, each call's `in/order` [K, B] of sample indices."""
    step: onnx.ModelProto
    """One step on a batch fed from the host (`<name>` -> `<name>.next`)."""
    eval: onnx.ModelProto
    carried: tuple[str, ...]
    """Every tensor a step reads and writes back: parameters, optimizer and layer state."""
    weights: tuple[str, ...]
    """What evaluation reads: the parameters and the layers' non-trained state."""
    scalars: tuple[str, ...]
    """The outputs a call hands back per step: `loss` first, then each statistic's."""
    dtype: np.dtype[Any]
    seed: int
    flops: float
    """The work of one step, which picks the thread count."""


Evaluator = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
"""One evaluation batch (model inputs and targets by name) -> every eval output by name."""


class TrainState(Protocol):
    """A run's carried tensors, held by a backend on its device in SETS buffer sets, and the
    calls over them. A call reading set `source` writes set `(source + 1) % SETS` and
    leaves `source` as it was; which set is current is the Trainer's business."""

    device: str
    """Where the tensors live: "cpu" or "cuda" (`auto` resolved)."""

    def read(self, source: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Host copies of the named tensors of set `source`."""
        ...

    def write(self, values: Mapping[str, np.ndarray]) -> None:
        """The given tensors replaced in every set (resume, the best epoch, a control)."""
        ...

    def bind_data(self, arrays: Mapping[str, np.ndarray]) -> None:
        """The whole dataset (model input and targets by name), for the loop to gather its
        batches from until the next call of this."""
        ...

    def loop(
        self,
        source: int,
        step: int,
        order: np.ndarray,
        block: Mapping[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """The K steps whose batches are the rows of `order` [K, B] (indices into the bound
        dataset, or into `block`, the call's own gathered samples), the first numbered
        `step`: each of `TrainGraphs.scalars` per step, [K, ...]."""
        ...

    def step(self, source: int, step: int, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One step of the train-step graph on a batch fed from the host: host copies of
        `TrainGraphs.scalars`."""
        ...

    def evaluator(self, source: int, weights: Mapping[str, np.ndarray] | None = None) -> Evaluator:
        """Evaluation with the weights of set `source`, or with `weights` given on the host."""
        ...


class CannotCompile(Exception):
    """A backend cannot compile a graph: `node` names where it stopped (from the runtime's
    own message). The run falls back to onnxruntime with a warning (`runtime/fallback.py`)."""

    def __init__(self, backend: str, graph: str, node: str) -> None:
        super().__init__(f"{backend} cannot compile the graph '{graph}': {node}")
        self.backend, self.graph, self.node = backend, graph, node


class Backend(Inference, Protocol):
    """A runtime that also trains."""

    def train(
        self, graphs: TrainGraphs, device: Device, values: Mapping[str, np.ndarray]
    ) -> TrainState:
        """A run on `device`, every set holding `values` (by carried name)."""
        ...


@dataclass(frozen=True)
class BackendDef:
    """A registered backend: the module that defines its `BACKEND`, imported on first use
    so that only a command that runs a graph loads a runtime, and an uninstalled one fails
    only when chosen."""

    module: str
    requires: str
    """The runtime's own Python package."""
    attribute: str = "BACKEND"
    """The module's backend object (one module may define several, e.g. precisions)."""

    def installed(self) -> bool:
        return importlib.util.find_spec(self.requires) is not None

    def load(self) -> Backend:
        backend: Backend = getattr(importlib.import_module(self.module), self.attribute)
        return backend


BACKENDS: Registry[BackendDef] = Registry("backend")
BACKENDS.add("onnxruntime", BackendDef("dnnspec.runtime.backends.onnxruntime", "onnxruntime"))
BACKENDS.add("openvino", BackendDef("dnnspec.runtime.backends.openvino", "openvino"))
BACKENDS.add("openvino_bf16", BackendDef("dnnspec.runtime.backends.openvino", "openvino", "BF16"))


def load_backend(name: str = DEFAULT) -> Backend:
    """The backend registered as `name`; an unknown name (did you mean) or an uninstalled
    runtime is a diagnostic."""
    found = BACKENDS.get(name)
    if not found.installed():
        raise error(
            f"the {name} backend needs the Python package '{found.requires}', "
            "which is not installed",
            help=f"install it (pip install {found.requires}) or use another backend",
        )
    return found.load()
