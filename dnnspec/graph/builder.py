"""A small ONNX graph builder: unique value names, node emission, constants, model assembly.

Lowering, autodiff and the training-step assembly all append to one builder, so value
names never collide and constants are shared. Models are written with an explicit opset
and IR version because the onnx package's default IR version is newer than onnxruntime reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
IR_VERSION = 10

Dim = int | str | None

DTYPES: dict[str, int] = {
    "float16": TensorProto.FLOAT16,
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "bool": TensorProto.BOOL,
    "uint32": TensorProto.UINT32,
    "uint8": TensorProto.UINT8,
}


def elem_type(dtype: str | np.dtype) -> int:
    return DTYPES[np.dtype(dtype).name]


def fresh_namer(used: set[str]) -> Callable[[str], str]:
    """Names for nodes added to a finished graph: the hint, else hint_1, hint_2, ... (the
    first not in `used`), each added to `used`."""

    def fresh(hint: str) -> str:
        name, n = hint, 1
        while name in used:
            name, n = f"{hint}_{n}", n + 1
        used.add(name)
        return name

    return fresh


class GraphBuilder:
    """Accumulates nodes, initializers and graph inputs/outputs for one ONNX graph."""

    def __init__(self, name: str, float_dtype: str = "float32") -> None:
        self.name = name
        self.float_dtype = np.dtype(float_dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()
        self._counter: dict[str, int] = {}
        self._const_cache: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._scope: list[str] = []

    def subgraph(self, name: str) -> GraphBuilder:
        """A builder for a control-flow body (Scan, Loop) of this graph: it shares this
        graph's value names, since a body may read outer values by name (and ONNX forbids a
        body from shadowing them), but has its own nodes, constants, inputs and outputs."""
        sub = GraphBuilder(name, self.float_dtype.name)
        sub._used = self._used
        sub._counter = self._counter
        sub._scope = self._scope
        return sub

    @property
    def float_elem(self) -> int:
        """The ONNX element type of this graph's floating-point values."""
        return elem_type(self.float_dtype)

    # names -----------------------------------------------------------------
    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Name the nodes emitted inside after `name` (`dense_1/Gemm`, `grad/dense_1/Gemm`),
        so tools can group a graph's nodes by the spec's layers, as exporters of other
        frameworks do."""
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def node_name(self, op_type: str) -> str:
        return "/".join([*self._scope, op_type]) if self._scope else f"n_{op_type}"

    def fresh(self, hint: str) -> str:
        """A value name not used yet in this graph, derived from `hint`."""
        base = hint.replace(" ", "_") or "v"
        n = self._counter.get(base, 0)
        name = base if n == 0 and base not in self._used else f"{base}_{n}"
        while name in self._used:
            n += 1
            name = f"{base}_{n}"
        self._counter[base] = n + 1
        self._used.add(name)
        return name

    def claim(self, names: Iterable[str]) -> None:
        """Mark names as taken without defining them here: the values of a body graph built
        elsewhere, which a new name must not shadow."""
        self._used.update(names)

    def reserve(self, name: str) -> str:
        """Claim an exact name (graph inputs, parameters); it must be free."""
        if name in self._used:
            raise ValueError(f"value name '{name}' already used")
        self._used.add(name)
        return name

    # graph interface ---------------------------------------------------------
    def add_input(self, name: str, dtype: str | np.dtype, shape: Sequence[Dim]) -> str:
        self.reserve(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type(dtype), list(shape)))
        return name

    def fresh_input(self, hint: str, dtype: str | np.dtype, shape: Sequence[Dim]) -> str:
        """A graph input under a new name derived from `hint` (a body's loop variables)."""
        name = self.fresh(hint)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type(dtype), list(shape)))
        return name

    def add_output(self, name: str, dtype: str | np.dtype, shape: Sequence[Dim] | None) -> str:
        shape_list = None if shape is None else list(shape)
        self.outputs.append(helper.make_tensor_value_info(name, elem_type(dtype), shape_list))
        return name

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        self.reserve(name)
        self.initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def const(
        self,
        value: float | int | Sequence[Any] | np.ndarray | np.generic,
        dtype: npt.DTypeLike | None = None,
        hint: str = "c",
    ) -> str:
        """A constant as a shared initializer (initializers cost no node execution)."""
        dt = np.dtype(dtype) if dtype is not None else self.float_dtype
        array = np.asarray(value, dtype=dt)
        key = (dt.name, array.tobytes(), array.shape)
        if key not in self._const_cache:
            name = self.fresh(hint)
            self.initializers[name] = numpy_helper.from_array(array, name)
            self._const_cache[key] = name
        return self._const_cache[key]

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: int | Sequence[str] = 1,
        hint: str | None = None,
        **attrs: Any,
    ) -> str:
        """Emit one node and return its (first) output name."""
        return self.op_multi(op_type, inputs, outputs, hint, **attrs)[0]

    def op_multi(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: int | Sequence[str] = 1,
        hint: str | None = None,
        **attrs: Any,
    ) -> list[str]:
        """Emit one node and return all output names (fresh ones when `outputs` is a count)."""
        if isinstance(outputs, int):
            base = hint or op_type.lower()
            out_names = [self.fresh(base) for _ in range(outputs)]
        else:
            out_names = list(outputs)
            for name in out_names:
                if name and name not in self._used:
                    self._used.add(name)
        node = helper.make_node(
            op_type, list(inputs), out_names, name=self.fresh(self.node_name(op_type)), **attrs
        )
        self.nodes.append(node)
        return out_names

    def rename(self, old: str, new: str) -> str:
        """Give a computed value an exact name (a graph output) without an Identity node;
        values that are graph inputs or constants get an Identity instead."""
        if old == new:
            return new
        if self._bound(new):
            raise ValueError(f"value name '{new}' already used")
        self._used.add(new)
        if not any(old in n.output for n in self.nodes):
            return self.op("Identity", [old], outputs=[new])
        for node in self.nodes:
            for field in (node.input, node.output):
                for i, name in enumerate(field):
                    if name == old:
                        field[i] = new
        return new

    def _bound(self, name: str) -> bool:
        """Whether `name` already names a value (as opposed to being merely reserved)."""
        return (
            name in self.initializers
            or any(v.name == name for v in self.inputs)
            or any(name in n.output for n in self.nodes)
        )

    # assembly ----------------------------------------------------------------
    def prune(self) -> None:
        """Drop nodes and initializers that no declared output depends on (a random key
        nothing samples, a step counter a constant schedule ignores): in onnxruntime each
        costs a kernel launch per step. Call once the outputs are declared."""
        needed = {o.name for o in self.outputs}
        kept = []
        for node in reversed(self.nodes):
            if any(name in needed for name in node.output):
                kept.append(node)
                needed.update(node.input)
        self.nodes = kept[::-1]
        self.initializers = {k: v for k, v in self.initializers.items() if k in needed}

    def graph(self) -> onnx.GraphProto:
        return helper.make_graph(
            self.nodes,
            self.name,
            self.inputs,
            self.outputs,
            initializer=list(self.initializers.values()),
        )

    def model(self, metadata: dict[str, str] | None = None, doc: str = "") -> onnx.ModelProto:
        model = helper.make_model(
            self.graph(),
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="dnnspec",
            doc_string=doc,
        )
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        return model
