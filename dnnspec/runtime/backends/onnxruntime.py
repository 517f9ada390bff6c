"""The onnxruntime backend: carried tensors as OrtValues in rotating IOBinding buffer sets.

Parameters and optimizer state (every carried tensor) live as onnxruntime-owned
OrtValues on the device, in SETS buffer sets bound once: loop binding i reads set i and
writes set i+1 (mod SETS). The dataset is bound once too, so a call binds only the K x B
sample indices of its batches (`assemble/loop.py` gathers them in the graph) and the step
counter, which is a host scalar aliased by its OrtValue: writing it in place is all a
call does for it. Nothing carried is copied to the host during training.
(`OrtValue.ortvalue_from_numpy` aliases the numpy array and `OrtValue.numpy()` is a view:
carried tensors are allocated with `ortvalue_from_shape_and_type`, and read as copies.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property

import numpy as np
import onnx
import onnxruntime as ort

from dnnspec.assemble.loop import IN, ORDER, OUT, data_name
from dnnspec.assemble.steps import SEED, STEP, next_name
from dnnspec.runtime.backend import (
    SETS,
    Backend,
    Device,
    Evaluator,
    Graph,
    TrainGraphs,
    TrainState,
    threads,
)
from dnnspec.runtime.session import CUDA, make_session


class OnnxRuntime:
    """Sessions from `runtime/session.py`: no spinning, one thread for small steps."""

    def open(
        self,
        model: onnx.ModelProto,
        device: Device = "cpu",
        threads: int | None = None,
        weights_as_inputs: bool = False,
    ) -> Graph:
        session: Graph = make_session(model, device, weights_as_inputs, threads)
        return session

    def train(
        self, graphs: TrainGraphs, device: Device, values: Mapping[str, np.ndarray]
    ) -> TrainState:
        return OrtTrainState(graphs, device, values)


class OrtTrainState:
    """The loop and eval sessions (the step session when first used) and the buffer sets."""

    def __init__(self, graphs: TrainGraphs, device: Device, values: Mapping[str, np.ndarray]):
        self.graphs = graphs
        self._device_choice = device
        self._threads = threads(graphs.flops)
        self.loop_session = make_session(graphs.loop, device, True, self._threads)
        self.eval_session = make_session(graphs.eval, device, True, self._threads)
        self.device = "cuda" if CUDA in self.loop_session.get_providers() else "cpu"
        self._sets = [self._fresh(values) for _ in range(SETS)]
        self._step_host = np.zeros((), np.int64)
        self._step_value = ort.OrtValue.ortvalue_from_numpy(self._step_host)
        self._seed_value = ort.OrtValue.ortvalue_from_numpy(np.array(graphs.seed, np.int64))
        self._loop = [self._loop_binding(i, (i + 1) % SETS) for i in range(SETS)]
        self._resident: list[ort.OrtValue] = []

    def _fresh(self, values: Mapping[str, np.ndarray]) -> dict[str, ort.OrtValue]:
        """onnxruntime-owned tensors holding `values` (`ortvalue_from_numpy` would alias)."""
        out = {}
        for name in self.graphs.carried:
            value = np.ascontiguousarray(values[name], self.graphs.dtype)
            out[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                value.shape, self.graphs.dtype, self.device, 0
            )
            out[name].update_inplace(value)
        return out

    def _loop_binding(self, src: int, dst: int) -> ort.IOBinding:
        io = self.loop_session.io_binding()
        for name in self.graphs.carried:
            io.bind_ortvalue_input(IN + name, self._sets[src][name])
            io.bind_ortvalue_output(OUT + name, self._sets[dst][name])
        io.bind_ortvalue_input(IN + STEP, self._step_value)
        io.bind_ortvalue_input(SEED, self._seed_value)
        return io

    def read(self, source: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        tensors = self._sets[source]
        return {name: tensors[name].numpy().copy() for name in names}

    def write(self, values: Mapping[str, np.ndarray]) -> None:
        for tensors in self._sets:
            for name, value in values.items():
                tensors[name].update_inplace(np.ascontiguousarray(value, self.graphs.dtype))

    def bind_data(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._resident = []
        for name, array in arrays.items():
            # on the CPU this aliases the array (no copy), so the OrtValue is kept alive
            # here as long as it is bound; on CUDA it is one upload
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)
            self._resident.append(value)
            for io in self._loop:
                io.bind_ortvalue_input(data_name(name), value)

    def loop(
        self,
        source: int,
        step: int,
        order: np.ndarray,
        block: Mapping[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        io = self._loop[source]
        if block is not None:
            for name, array in block.items():
                io.bind_cpu_input(data_name(name), array)
        io.bind_cpu_input(ORDER, order)
        scalars = self.graphs.scalars
        for name in scalars:
            io.bind_output(OUT + name, "cpu")
        self._step_host[...] = step
        self.loop_session.run_with_iobinding(io)
        return [o.numpy() for o in io.get_outputs()[-len(scalars) :]]

    @cached_property
    def step_session(self) -> ort.InferenceSession:
        """The single-step graph, for steps on batches fed from the host."""
        return make_session(self.graphs.step, self._device_choice, True, self._threads)

    @cached_property
    def _results(self) -> list[ort.OrtValue]:
        shapes = {
            o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in self.graphs.step.graph.output
        }
        dtype = self.graphs.dtype
        return [
            ort.OrtValue.ortvalue_from_shape_and_type(shapes[name], dtype, "cpu", 0)
            for name in self.graphs.scalars
        ]

    @cached_property
    def _step_bindings(self) -> list[ort.IOBinding]:
        bindings = []
        for src in range(SETS):
            io = self.step_session.io_binding()
            for name in self.graphs.carried:
                io.bind_ortvalue_input(name, self._sets[src][name])
                io.bind_ortvalue_output(next_name(name), self._sets[(src + 1) % SETS][name])
            io.bind_ortvalue_input(STEP, self._step_value)
            io.bind_ortvalue_input(SEED, self._seed_value)
            for name, value in zip(self.graphs.scalars, self._results, strict=True):
                io.bind_ortvalue_output(name, value)
            bindings.append(io)
        return bindings

    def step(self, source: int, step: int, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        io = self._step_bindings[source]
        for name, value in feeds.items():
            io.bind_cpu_input(name, value)
        self._step_host[...] = step
        self.step_session.run_with_iobinding(io)
        return [v.numpy().copy() for v in self._results]

    def evaluator(self, source: int, weights: Mapping[str, np.ndarray] | None = None) -> Evaluator:
        session = self.eval_session
        io = session.io_binding()
        for name in self.graphs.weights:
            if weights is None:
                io.bind_ortvalue_input(name, self._sets[source][name])
            else:
                io.bind_cpu_input(name, np.ascontiguousarray(weights[name], self.graphs.dtype))
        outputs = [o.name for o in session.get_outputs()]
        for out in outputs:
            io.bind_output(out, "cpu")

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            for name, value in feeds.items():
                io.bind_cpu_input(name, value)
            session.run_with_iobinding(io)
            return dict(zip(outputs, (o.numpy() for o in io.get_outputs()), strict=True))

        return run


BACKEND: Backend = OnnxRuntime()
