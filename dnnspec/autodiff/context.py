"""What a VJP rule sees: the builder, static types of forward values, and shared helpers.

Rules prefer static facts (ranks, dims, constant inputs) so the backward graph needs no
Shape/Expand/Transpose nodes; the helpers here fall back to Shape-based code only when a
fact is unknown. Dims are ints (static), strings (symbolic, equal names mean equal sizes)
or None (unknown); a shape of None means the rank itself is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from typing_extensions import TypeIs

from dnnspec.autodiff.residuals import Residuals
from dnnspec.graph.builder import Dim, GraphBuilder

Shape = tuple[Dim, ...]
ValueType = tuple[int, Shape | None]
Differentiate = Callable[[GraphBuilder, dict[str, str], Sequence[str]], dict[str, str]]


class AutodiffError(Exception):
    """The forward graph cannot be differentiated (no rule, or a rule lacks static facts)."""


def captured(graph: onnx.GraphProto) -> list[str]:
    """Outer values a body graph reads by name (ONNX lets Scan/Loop/If bodies capture the
    enclosing scope), in first-use order; nested bodies count too."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    names: list[str] = []
    for node in graph.node:
        inner = [
            name
            for attribute in node.attribute
            if attribute.type == onnx.AttributeProto.GRAPH
            for name in captured(attribute.g)
        ]
        for name in [*node.input, *inner]:
            if name and name not in defined and name not in names:
                names.append(name)
        defined.update(node.output)
    return names


def body_values(node: onnx.NodeProto) -> set[str]:
    """Every value name the node's body graphs (and theirs) define: inputs, constants and
    node outputs."""
    names: set[str] = set()
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graph = attribute.g
            names.update(v.name for v in graph.input)
            names.update(t.name for t in graph.initializer)
            for inner in graph.node:
                names.update(o for o in inner.output if o)
                names |= body_values(inner)
    return names


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs followed by the outer values its body graphs capture: a rule returns
    one gradient per entry, so a Scan body's weights get theirs like explicit inputs."""
    inputs = list(node.input)
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            inputs.extend(n for n in captured(attribute.g) if n not in inputs)
    return inputs


def _static(dim: Dim) -> TypeIs[int]:
    return isinstance(dim, int)


def static_dims(dims: Sequence[Dim] | None) -> tuple[int, ...] | None:
    """`dims` when every one is a known integer; None when any is symbolic or unknown."""
    if dims is None:
        return None
    known = tuple(d for d in dims if _static(d))
    return known if len(known) == len(dims) else None


def same_dim(a: Dim, b: Dim) -> bool:
    """True when two dims are known to be equal at run time."""
    return a is not None and a == b


def broadcast_axes(src: Shape, dst: Shape) -> tuple[list[int], list[int]] | None:
    """Axes of `src` to sum so a gradient shaped `src` fits a broadcast operand shaped `dst`.

    Returns (leading axes to drop, inner axes to sum keeping them), or None when some axis
    cannot be decided statically (a symbolic operand dim against a different output dim).
    """
    lead = len(src) - len(dst)
    if lead < 0:
        return None
    inner = []
    for axis, (s, d) in enumerate(zip(src[lead:], dst, strict=True), start=lead):
        if d == 1:
            if s != 1:
                inner.append(axis)
        elif not (same_dim(s, d) or _static(d) or s == 1):
            return None
    return list(range(lead)), inner


class VjpContext:
    """Per-`gradients` call state handed to every rule."""

    def __init__(
        self,
        b: GraphBuilder,
        types: dict[str, ValueType],
        needed: set[str],
        consts: dict[str, np.ndarray],
        differentiate: Differentiate | None = None,
    ) -> None:
        self.b = b
        self.differentiate = differentiate
        """The engine itself, for rules that differentiate a body graph (Scan)."""
        self.residuals = Residuals(b)
        """Forward values a rule needs that no forward node outputs yet (Dropout's mask, a
        Scan body's values at every step): the one way a rule changes a forward node."""
        self._types = types
        self._needed = needed
        self._consts = consts
        self._shape_nodes: dict[str, str] = {}
        self._expand_sources: dict[str, str] = {}
        self._scanned = 0

    # static facts -----------------------------------------------------------------
    def needs(self, name: str) -> bool:
        """Whether a gradient for value `name` is wanted (it lies between a wrt and a seed)."""
        return name in self._needed

    def shape(self, name: str) -> Shape | None:
        entry = self._types.get(name)
        return None if entry is None else entry[1]

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def require_rank(self, name: str, op: str) -> int:
        rank = self.rank(name)
        if rank is None:
            raise AutodiffError(
                f"the {op} gradient needs the rank of '{name}', which shape "
                "inference could not determine"
            )
        return rank

    def elem(self, name: str) -> int:
        """ONNX element type of `name` (the builder's float type when unknown)."""
        entry = self._types.get(name)
        return entry[0] if entry is not None and entry[0] else self.b.float_elem

    def const_value(self, name: str | None) -> np.ndarray | None:
        """The value of an initializer or Constant output; None when computed at run time."""
        return None if not name else self._consts.get(name)

    def ints(self, name: str | None) -> list[int] | None:
        """A constant integer input (axes, perm, starts) as a list; None when not constant."""
        value = self.const_value(name)
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]

    @staticmethod
    def attr(node: onnx.NodeProto, name: str, default: object) -> Any:
        """Attribute `name` of `node`, or `default`. ONNX attribute values are dynamically
        typed (int, float, bytes, lists), so callers state the type: int(...), float(...)."""
        for attribute in node.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default

    @staticmethod
    def input(node: onnx.NodeProto, index: int) -> str | None:
        """Optional input `index` of `node`, None when omitted or left empty."""
        return node.input[index] if index < len(node.input) and node.input[index] else None

    # emission helpers -----------------------------------------------------------------
    def scalar(self, value: float, like: str) -> str:
        """A scalar constant with the element type of value `like`."""
        dtype = helper.tensor_dtype_to_np_dtype(self.elem(like))
        return self.b.const(value, dtype, hint="g_c")

    def int_const(self, values: Sequence[int]) -> str:
        return self.b.const(list(values), "int64", hint="g_i")

    def shape_of(self, name: str) -> str:
        """A Shape node for `name`, emitted once per value."""
        if name not in self._shape_nodes:
            self._shape_nodes[name] = self.b.op("Shape", [name], hint=f"{name}_shape")
        return self._shape_nodes[name]

    def shape_tensor(self, name: str) -> str:
        """A Reshape target for `name`'s shape: a constant when at most one dim is unknown
        (it becomes -1), a Shape node otherwise."""
        shape = self.shape(name)
        if shape is not None and 0 not in shape:
            unknown = [d for d in shape if not _static(d)]
            if len(unknown) <= 1:
                return self.int_const([d if _static(d) else -1 for d in shape])
        return self.shape_of(name)

    def zeros_like(self, name: str) -> str:
        """Zeros shaped like `name`: ConstantOfShape of a constant shape when static (which
        onnxruntime folds away), of Shape(name) otherwise."""
        shape = static_dims(self.shape(name))
        dims = self.int_const(shape) if shape is not None else self.shape_of(name)
        dtype = helper.tensor_dtype_to_np_dtype(self.elem(name))
        value = numpy_helper.from_array(np.zeros(1, dtype))
        return self.b.op("ConstantOfShape", [dims], hint=f"d_{name}_zero", value=value)

    def unexpanded(self, grad: str, full: Shape | None, other: str) -> str:
        """The input of the Expand that produced `grad`, when `grad` is about to be
        multiplied by `other` and `other` already has `grad`'s full static shape `full`:
        the product broadcasts to that shape anyway, so the expanded copy is skipped (and
        pruned if nothing else reads it). A loss's scalar seed, spread over the batch by a
        mean's rule, then costs no tensor-sized Expand. Otherwise `grad` itself."""
        if full is None or any(d is None for d in full) or self.shape(other) != full:
            return grad
        nodes = self.b.nodes
        for node in nodes[self._scanned :]:
            if node.op_type == "Expand" and node.domain in ("", "ai.onnx"):
                self._expand_sources[node.output[0]] = node.input[0]
        self._scanned = len(nodes)
        return self._expand_sources.get(grad, grad)

    def reduce_to(self, grad: str, grad_shape: Shape | None, target: str) -> str:
        """Sum a gradient shaped `grad_shape` down to the shape of broadcast operand `target`.

        Static shapes give at most ReduceSum (+ Squeeze when both leading and inner axes are
        summed); otherwise the summed axes are found at run time from Shape(target).
        """
        target_shape = self.shape(target)
        if grad_shape is not None and target_shape is not None:
            plan = broadcast_axes(grad_shape, target_shape)
            if plan is not None:
                lead, inner = plan
                if not inner:
                    if not lead:
                        return grad
                    return self.b.op("ReduceSum", [grad, self.int_const(lead)], keepdims=0)
                summed = self.b.op("ReduceSum", [grad, self.int_const(lead + inner)], keepdims=1)
                if not lead:
                    return summed
                return self.b.op("Squeeze", [summed, self.int_const(lead)])
        if grad_shape is None or target_shape is None:
            raise AutodiffError(f"summing a broadcast gradient onto '{target}' needs its rank")
        return self._reduce_to_dynamic(grad, len(grad_shape) - len(target_shape), target)

    def _reduce_to_dynamic(self, grad: str, lead: int, target: str) -> str:
        """Sum over every axis where the target (padded with `lead` leading ones) has size 1."""
        b = self.b
        dims = self.shape_of(target)
        if lead:
            dims = b.op("Concat", [self.int_const([1] * lead), dims], axis=0)
        ones = b.op("Equal", [dims, self.int_const([1])])
        axes = b.op("Reshape", [b.op("NonZero", [ones]), self.int_const([-1])])
        summed = b.op("ReduceSum", [grad, axes], keepdims=1, noop_with_empty_axes=1)
        return b.op("Reshape", [summed, self.shape_of(target)])
