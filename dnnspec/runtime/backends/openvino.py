"""The OpenVINO backend: carried tensors as OpenVINO tensors, handed to compiled graphs.

Every graph is compiled for the CPU with `INFERENCE_PRECISION_HINT` f32: without it
OpenVINO computes float32 graphs in bf16 on CPUs that have it, which moved the digits
model's outputs by up to 0.65 here. `openvino_bf16` (`BF16`) asks for bf16 explicitly.

The carried tensors live in SETS buffer sets of `ov.Tensor`s; a step sets the tensors of
the set it reads as the graph's inputs and those of the set it writes as its outputs, so
OpenVINO writes the update in place and nothing carried passes through the host.

A call's K steps run one by one through the single-step graph, batches gathered on the
host, not through the train-loop graph: OpenVINO 2026.4 compiles the ONNX `Loop`, but
its body computes the update 1 ulp apart from the same step compiled alone (so K-step
calls were not bit-identical to single steps, which resume and divergence replay rely
on), and it was slower: digits MLP, one thread, 721 us per step in the Loop against 543
us as single steps (onnxruntime's Loop: 165). A graph that does not compile raises
`CannotCompile` naming its node, and `runtime/fallback.py` runs the run in onnxruntime.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import onnx
import openvino as ov

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
        self.input_names = {i.name for i in model.graph.input}
        self.output_names = [o.name for o in model.graph.output]

    def set_input(self, name: str, tensor: ov.Tensor) -> None:
        self.request.set_tensor(self.inputs[name], tensor)

    def set_output(self, name: str, tensor: ov.Tensor) -> None:
        self.request.set_tensor(self.outputs[name], tensor)

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
            raise CannotCompile(
                "openvino", graphs.step.graph.name, f"a {graphs.dtype} graph (it computes in f32)"
            )
        return OvTrainState(graphs, self.precision, values)


def _default_threads() -> int:
    return threads()


def _on_the_cpu(device: Device) -> None:
    """This backend runs on the CPU; asking it for CUDA is a mistake, not a fallback."""
    if device == "cuda":
        raise error(
            "the openvino runtime runs on the CPU, not CUDA",
            help="use --device cpu (or auto), or --runtime onnxruntime to train on CUDA",
        )


class OvTrainState:
    """The compiled step and eval graphs and the buffer sets."""

    device = "cpu"

    def __init__(self, graphs: TrainGraphs, precision: str, values: Mapping[str, np.ndarray]):
        self.graphs = graphs
        count = threads(graphs.flops)
        self.step_graph = Compiled(graphs.step, precision, count)
        self.eval_graph = Compiled(graphs.eval, precision, count)
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

    def loop(
        self,
        source: int,
        step: int,
        order: np.ndarray,
        block: Mapping[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """The K steps one by one through the single-step graph (the module's docstring
        says why not the Loop graph), as one loop call would run them: from `source` into
        `source + 1`, the steps between through two scratch sets, so the third set (the
        input of the previous call, kept for a divergence replay) stays as it was."""
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
        graph, request = self.step_graph, self._request(source, into)
        held = {name: _contiguous(value) for name, value in feeds.items()}
        for name, value in held.items():
            request.set_tensor(graph.inputs[name], _host(value))
        self._step_host[...] = step
        request.infer()
        return [np.array(request.get_tensor(graph.outputs[n]).data) for n in self.graphs.scalars]

    def _request(self, source: dict[str, ov.Tensor], into: dict[str, ov.Tensor]) -> Any:
        """A request of the step graph reading `source` and writing `into`, bound once per
        pair of sets: binding the carried tensors cost about 90 of a digits MLP step's
        280 us, and requests share the compiled graph's memory."""
        key = (id(source), id(into))
        if key not in self._requests:
            graph = self.step_graph
            request = graph.model.create_infer_request()
            for name, tensor in source.items():
                request.set_tensor(graph.inputs[name], tensor)
                request.set_tensor(graph.outputs[next_name(name)], into[name])
            for name, tensor in ((STEP, self._step), (SEED, self._seed)):
                if name in graph.inputs:  # pruned from a step without dropout or schedule
                    request.set_tensor(graph.inputs[name], tensor)
            self._requests[key] = request
        return self._requests[key]

    def step(self, source: int, step: int, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self._one(self._sets[source], self._sets[(source + 1) % SETS], step, feeds)

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
