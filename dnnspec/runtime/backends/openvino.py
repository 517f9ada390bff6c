"""The OpenVINO backend: carried tensors as OpenVINO tensors, handed to compiled graphs.

Every graph is compiled for the CPU with `INFERENCE_PRECISION_HINT` f32: without it
OpenVINO computes float32 graphs in bf16 on CPUs that have it, which moved the digits
model's outputs by up to 0.65 here. `openvino_bf16` (`BF16`) asks for bf16 explicitly.

The carried tensors live in SETS buffer sets of `ov.Tensor`s. One infer request per
pair of sets has the tensors of the set it reads bound as inputs and those of the set it
writes as outputs, once, so OpenVINO writes the update in place and nothing carried
passes through the host; a call binds only its sample indices and the step counter.

Every step runs through the train-loop graph (the ONNX `Loop` of `assemble/loop.py`),
a single step as a call of one batch: OpenVINO's Loop body rounds the update 1 ulp apart
from the same step compiled alone, so mixing the two graphs would break the bit-identity
of K-step calls and single steps that resume and divergence replay rely on. The Loop is
also the faster: digits MLP, one thread, same process alternating on a loaded machine,
307-491 us per step (10th percentiles) against 483-715 as single steps (onnxruntime's
Loop: 237-246). Graphs with convolutions are the exception (`STEPPED_OPS`): OpenVINO
runs them slower inside the Loop's body than in a graph of their own (digits CNN 2.9
against 1.8 ms per step, resnet_small 15 against 12), so their calls run their steps one
by one through the single-step graph, as they also do where OpenVINO cannot compile the
Loop. A graph that does not compile at all raises
`CannotCompile` naming its node, and `runtime/fallback.py` runs the run in onnxruntime.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from functools import cached_property
from typing import Any

import numpy as np
import onnx
import openvino as ov

from dnnspec.assemble.loop import IN, ORDER, OUT, data_name
from dnnspec.assemble.steps import SEED, STEP, next_name
from dnnspec.errors import error
from dnnspec.runtime.backend import (
    SETS,
    Backend,
    CannotCompile,
    Device,
    Evaluator,
    Graph,
    TrainGraphs,
    TrainState,
    threads,
)

_CORE: ov.Core | None = None


def _core() -> ov.Core:
    """One OpenVINO core per process (creating one loads its plugins)."""
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def _unsupported(model: onnx.ModelProto, text: str) -> str:
    """The node OpenVINO stopped at, from its exception text: the op types it names
    (`No conversion rule found for operations: Foo-21`, `<Node(Foo): name>`) matched to
    the graph's nodes; else the text's last line."""
    named = re.search(r"Node\((\w+)\):\s*([^>]+)>", text)
    if named:
        return f"node '{named.group(2).strip()}' ({named.group(1)})"
    listed = re.search(r"operations?:\s*([^\n]+)", text)
    if listed:
        types = {re.sub(r"-\d+$", "", t.strip()).split(".")[-1] for t in listed.group(1).split(",")}
        nodes = [n for n in _nodes(model.graph) if n.op_type in types]
        if nodes:
            return f"node '{nodes[0].name or nodes[0].output[0]}' ({nodes[0].op_type})"
        return f"operation {listed.group(1).strip()}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "an unknown node"


def _nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node, those of subgraphs (a Loop's body) included."""
    found = []
    for node in graph.node:
        found.append(node)
        for attr in node.attribute:
            if attr.HasField("g"):
                found += _nodes(attr.g)
    return found


class Compiled:
    """A graph compiled for the CPU: one infer request, ports by every tensor name."""

    def __init__(self, model: onnx.ModelProto, precision: str, threads: int) -> None:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
        }
        try:
            read = _core().read_model(model.SerializeToString(), b"")
            self.model = _core().compile_model(read, "CPU", config)
        except RuntimeError as exc:
            node = _unsupported(model, str(exc))
            raise CannotCompile("openvino", model.graph.name, node) from None
        self.request = self.model.create_infer_request()
        self.inputs = {n: p for p in self.model.inputs for n in p.get_names()}
        self.outputs = {n: p for p in self.model.outputs for n in p.get_names()}
        self.output_names = [o.name for o in model.graph.output]

    def set_input(self, name: str, tensor: ov.Tensor) -> None:
        self.request.set_tensor(self.inputs[name], tensor)

    def output(self, name: str) -> np.ndarray:
        """A copy: the request reuses its output buffers on the next call."""
        return np.array(self.request.get_tensor(self.outputs[name]).data)


def _contiguous(array: Any, dtype: np.dtype[Any] | None = None) -> np.ndarray:
    """`array` in C order, a scalar kept 0-d (`np.ascontiguousarray` makes it [1])."""
    return np.require(array, dtype, "C")


def _host(array: np.ndarray) -> ov.Tensor:
    """A tensor sharing `array`'s memory (the caller keeps the array alive)."""
    return ov.Tensor(_contiguous(array), shared_memory=True)


class _Opened:
    """A graph opened for `run`, onnxruntime's call: the named outputs of one run. A feed
    the graph does not take (a `seed` pruned from a step without dropout) is left out, as
    onnx.reference leaves it."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, Any], /) -> list[Any]:
        compiled = self.compiled
        held = {n: _contiguous(value) for n, value in feeds.items() if n in compiled.inputs}
        for name, value in held.items():
            compiled.set_input(name, _host(value))
        compiled.request.infer()
        return [compiled.output(n) for n in output_names or compiled.output_names]


class OpenVino:
    """OpenVINO on the CPU at one inference precision."""

    def __init__(self, precision: str) -> None:
        self.precision = precision

    def open(
        self,
        model: onnx.ModelProto,
        device: Device = "cpu",
        threads: int | None = None,
        weights_as_inputs: bool = False,
    ) -> Graph:
        _on_the_cpu(device)
        return _Opened(Compiled(model, self.precision, threads or _default_threads()))

    def train(
        self, graphs: TrainGraphs, device: Device, values: Mapping[str, np.ndarray]
    ) -> TrainState:
        _on_the_cpu(device)
        if graphs.dtype != np.float32:
            why = f"{graphs.dtype}, which OpenVINO computes in float32"
            raise CannotCompile("openvino", graphs.step.graph.name, why)
        return OvTrainState(graphs, self.precision, values)


def _default_threads() -> int:
    """`threads()`, which `open`'s parameter of that name hides."""
    return threads()


def _on_the_cpu(device: Device) -> None:
    """This backend runs on the CPU; asking it for CUDA is a mistake, not a fallback."""
    if device == "cuda":
        raise error(
            "the openvino runtime runs on the CPU, not CUDA",
            help="use --device cpu (or auto), or --runtime onnxruntime to train on CUDA",
        )


STEPPED_OPS = frozenset({"Conv", "ConvTranspose"})
"""Ops whose train steps OpenVINO runs faster one by one than in the K-step Loop
(docs/performance.md); transformer and LSTM steps take the same time either way, MLP
steps are faster in the Loop."""


def _loops_well(step: onnx.ModelProto) -> bool:
    return not any(node.op_type in STEPPED_OPS for node in _nodes(step.graph))


class OvTrainState:
    """The buffer sets, the eval graph and the train-loop graph (the single-step graph
    for a model with convolutions, or where OpenVINO cannot compile the Loop), with one
    infer request per pair of sets."""

    device = "cpu"

    def __init__(self, graphs: TrainGraphs, precision: str, values: Mapping[str, np.ndarray]):
        self.graphs = graphs
        count = threads(graphs.flops)
        self.eval_graph = Compiled(graphs.eval, precision, count)
        self.loop_graph: Compiled | None = None
        if _loops_well(graphs.step):
            with suppress(CannotCompile):  # else its steps one by one
                self.loop_graph = Compiled(graphs.loop, precision, count)
        self.train_graph = self.loop_graph or Compiled(graphs.step, precision, count)
        self._sets = [
            {
                name: ov.Tensor(np.array(values[name], graphs.dtype, order="C", copy=True))
                for name in graphs.carried
            }
            for _ in range(SETS)
        ]
        self._step_host = np.zeros((), np.int64)
        self._step = _host(self._step_host)
        self._seed = _host(np.array(graphs.seed, np.int64))
        self._data: dict[str, np.ndarray] = {}
        self._requests: dict[tuple[int, int], Any] = {}

    def read(self, source: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        tensors = self._sets[source]
        return {name: np.array(tensors[name].data) for name in names}

    def write(self, values: Mapping[str, np.ndarray]) -> None:
        for tensors in self._sets:
            for name, value in values.items():
                tensors[name].data[...] = np.asarray(value, self.graphs.dtype)

    def bind_data(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._data = {name: _contiguous(a) for name, a in arrays.items()}
        if self.loop_graph is not None:
            for request in self._requests.values():
                self._set_data(request, self._data)

    def _set_data(self, request: Any, arrays: Mapping[str, np.ndarray]) -> None:
        """The loop's dataset inputs (the caller keeps the arrays alive)."""
        assert self.loop_graph is not None
        for name, array in arrays.items():
            request.set_tensor(self.loop_graph.inputs[data_name(name)], _host(array))

    def _request(self, source: dict[str, ov.Tensor], into: dict[str, ov.Tensor]) -> Any:
        """A request of the train graph reading `source` and writing `into`, bound once
        per pair of sets: binding the carried tensors cost about 90 of a digits MLP step's
        280 us, and requests share the compiled graph's memory."""
        key = (id(source), id(into))
        if key not in self._requests:
            graph, looped = self.train_graph, self.loop_graph is not None
            request = graph.model.create_infer_request()
            for name, tensor in source.items():
                request.set_tensor(graph.inputs[IN + name if looped else name], tensor)
                out = OUT + name if looped else next_name(name)
                request.set_tensor(graph.outputs[out], into[name])
            for name, tensor in ((IN + STEP if looped else STEP, self._step), (SEED, self._seed)):
                if name in graph.inputs:  # pruned from a step without dropout or schedule
                    request.set_tensor(graph.inputs[name], tensor)
            if looped:
                self._set_data(request, self._data)
            self._requests[key] = request
        return self._requests[key]

    def loop(
        self,
        source: int,
        step: int,
        order: np.ndarray,
        block: Mapping[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        if self.loop_graph is None:
            return self._steps(source, step, order, block)
        graph = self.loop_graph
        request = self._request(self._sets[source], self._sets[(source + 1) % SETS])
        rows = _contiguous(order)  # these arrays stay alive until the call returns
        blocked = {n: _contiguous(a) for n, a in (block or {}).items()}
        request.set_tensor(graph.inputs[ORDER], _host(rows))
        if block is not None:
            self._set_data(request, blocked)
        self._step_host[...] = step
        request.infer()
        scalars = self.graphs.scalars
        outs = [np.array(request.get_tensor(graph.outputs[OUT + n]).data) for n in scalars]
        if block is not None:
            self._set_data(request, self._data)  # the bound dataset for the next call
        return outs

    def step(self, source: int, step: int, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One step: a loop call of one batch, `feeds` as its block, so it computes what a
        step inside a K-step call computes (OpenVINO's Loop body rounds the update apart
        from the single-step graph compiled alone)."""
        if self.loop_graph is None:
            return self._one(self._sets[source], self._sets[(source + 1) % SETS], step, feeds)
        rows = len(next(iter(feeds.values())))
        order = np.arange(rows, dtype=np.int64)[None]
        return [value[0] for value in self.loop(source, step, order, feeds)]

    def _steps(
        self,
        source: int,
        step: int,
        order: np.ndarray,
        block: Mapping[str, np.ndarray] | None,
    ) -> list[np.ndarray]:
        """Without the Loop, a call's K steps one by one, as one loop call would run them:
        from `source` into `source + 1`, the steps between through two scratch sets, so the
        third set (the input of the previous call, kept for a divergence replay) stays."""
        data = block if block is not None else self._data
        k = len(order)
        targets = [self._scratch[i % 2] for i in range(k - 1)] + [self._sets[(source + 1) % SETS]]
        seen: list[list[np.ndarray]] = []
        current = self._sets[source]
        for i, row in enumerate(order):
            feeds = {name: array[row] for name, array in data.items()}
            seen.append(self._one(current, targets[i], step + i, feeds))
            current = targets[i]
        return [np.stack([s[j] for s in seen]) for j in range(len(self.graphs.scalars))]

    @cached_property
    def _scratch(self) -> tuple[dict[str, ov.Tensor], dict[str, ov.Tensor]]:
        """Two sets for the steps inside a call run one by one."""
        first, second = (
            {name: ov.Tensor(np.array(t.data)) for name, t in self._sets[0].items()}
            for _ in range(2)
        )
        return first, second

    def _one(
        self,
        source: dict[str, ov.Tensor],
        into: dict[str, ov.Tensor],
        step: int,
        feeds: Mapping[str, np.ndarray],
    ) -> list[np.ndarray]:
        """One step of the single-step graph from the tensors `source` into `into`."""
        graph, request = self.train_graph, self._request(source, into)
        held = {name: _contiguous(value) for name, value in feeds.items()}
        for name, value in held.items():
            request.set_tensor(graph.inputs[name], _host(value))
        self._step_host[...] = step
        request.infer()
        return [np.array(request.get_tensor(graph.outputs[n]).data) for n in self.graphs.scalars]

    def evaluator(self, source: int, weights: Mapping[str, np.ndarray] | None = None) -> Evaluator:
        graph = self.eval_graph
        tensors = dict(self._sets[source])
        if weights is not None:
            given = {n: _contiguous(weights[n], self.graphs.dtype) for n in self.graphs.weights}
            tensors = {name: ov.Tensor(value) for name, value in given.items()}  # copies

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            for name in self.graphs.weights:
                graph.set_input(name, tensors[name])
            held = {name: _contiguous(value) for name, value in feeds.items()}
            for name, value in held.items():
                graph.set_input(name, _host(value))
            graph.request.infer()
            return {name: graph.output(name) for name in graph.output_names}

        return run


BACKEND: Backend = OpenVino("f32")
BF16: Backend = OpenVino("bf16")
"""Explicitly in bf16 (`openvino_bf16`): faster on CPUs with bf16 units, outputs off by
up to about 0.65 on the digits model."""
