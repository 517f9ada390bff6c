"""A float32 inference graph rewritten to compute in float16, its inputs and outputs still
float32 (a caller's arrays need no conversion; the Casts are in the graph).

Which nodes compute in float16 is decided per node: the weights and everything computed
from them in float16; what the inputs go through before the first weight is read (the
fitted preprocessing: `(x - mean) * scale` on raw features of magnitude 1000 would lose
every digit below 0.5 in float16) in float32, as is any node `keep` names (operators the
runtime has no float16 kernel for). Inputs whose schema fixes them as float32 (Resize's
`scales`) keep float32. Casts are inserted where a value crosses from one to the other.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, defs, helper, numpy_helper

from dnnspec.graph.builder import fresh_namer

FLOAT16_MAX = float(np.finfo(np.float16).max)


class HalfError(Exception):
    """The graph cannot be written in float16 (a weight beyond its range, a loop body)."""


def _fixed_float_inputs(node: onnx.NodeProto, opset: int) -> set[int]:
    """Input positions whose type is tensor(float) whatever the node's other types."""
    schema = defs.get_schema(node.op_type, opset, node.domain)
    fixed = set()
    for i in range(len(node.input)):
        formal = schema.inputs[min(i, len(schema.inputs) - 1)]
        if formal.type_str == "tensor(float)":
            fixed.add(i)
    return fixed


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        types[info.name] = info.type.tensor_type.elem_type
    return types


def to_float16(
    model: onnx.ModelProto, parameters: set[str], keep: frozenset[str] = frozenset()
) -> tuple[onnx.ModelProto, list[str]]:
    """`model` computing in float16, and the constants saturated to float16's range (a
    mask's -1e9 becomes -65504, which softmax also turns into 0). `parameters` names the
    weights (the float32 region ends where one is read; one beyond float16's range is an
    error); `keep` names nodes left in float32."""
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in graph.node for a in n.attribute):  # fmt: skip
        raise HalfError("graphs with loops (Scan, Loop, If) are not converted to float16")
    types = _elem_types(model)
    is_float = {name for name, t in types.items() if t == TensorProto.FLOAT}
    inits = {t.name: t for t in graph.initializer}
    fresh = fresh_namer(set(types) | {n.name for n in graph.node})

    # the float32 region: nodes fed by the inputs (through that region) and reading no weight
    raw = {i.name for i in graph.input}
    half_nodes: set[int] = set()
    for index, node in enumerate(graph.node):
        reads_raw = any(i in raw for i in node.input)
        reads_weight = any(i in parameters for i in node.input)
        from_half = any(i and i not in raw and i not in inits for i in node.input)
        if reads_raw and not reads_weight and not from_half:
            raw.update(node.output)
        elif node.name not in keep:
            half_nodes.add(index)

    precision: dict[str, int] = {i.name: 32 for i in graph.input}
    converted: dict[tuple[str, int], str] = {}
    new_inits: list[onnx.TensorProto] = []
    saturated: list[str] = []
    nodes: list[onnx.NodeProto] = []

    def at(value: str, bits: int) -> str:
        """`value` in float`bits`, converted once if it is held in the other precision."""
        value = renamed.get(value, value)
        if not value or value not in is_float:
            return value
        if value in inits:
            if bits == 32:
                return value
            if (value, 16) not in converted:
                array = numpy_helper.to_array(inits[value])
                if array.size and np.abs(array).max() > FLOAT16_MAX:
                    if value in parameters:
                        raise HalfError(
                            f"weight '{value}' holds {float(np.abs(array).max()):g}, beyond "
                            f"float16's range (±{FLOAT16_MAX:g})"
                        )
                    # a constant standing for infinity (an attention mask's -1e9)
                    array = np.clip(array, -FLOAT16_MAX, FLOAT16_MAX)
                    saturated.append(value)
                name = fresh(f"{value}.fp16")
                new_inits.append(numpy_helper.from_array(array.astype(np.float16), name))
                converted[(value, 16)] = name
            return converted[(value, 16)]
        if precision.get(value, 32) == bits:
            return value
        if (value, bits) not in converted:
            name = fresh(f"{value}.fp{bits}")
            to = TensorProto.FLOAT16 if bits == 16 else TensorProto.FLOAT
            nodes.append(
                helper.make_node("Cast", [value], [name], name=fresh(f"{name}/Cast"), to=to)
            )
            converted[(value, bits)] = name
        return converted[(value, bits)]

    outputs = {o.name for o in graph.output}
    renamed: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        bits = 16 if index in half_nodes else 32
        fixed = _fixed_float_inputs(node, opset)
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(at(v, 32 if i in fixed else bits) for i, v in enumerate(node.input))
        if bits == 16:
            for a in new.attribute:
                if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
                elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                    array = numpy_helper.to_array(a.t)
                    if array.size and np.abs(array).max() > FLOAT16_MAX:  # as initialisers
                        array = np.clip(array, -FLOAT16_MAX, FLOAT16_MAX)
                        saturated.append(node.output[0])
                    half = array.astype(np.float16)
                    a.t.CopyFrom(numpy_helper.from_array(half, a.t.name))
        for k, out in enumerate(node.output):
            if out in is_float:
                precision[out] = bits
            if out in outputs and bits == 16 and out in is_float:
                inner = fresh(f"{out}.fp16")
                new.output[k] = inner
                precision[inner] = 16
                is_float.add(inner)
                renamed[out] = inner
        nodes.append(new)
    for out, inner in renamed.items():
        nodes.append(
            helper.make_node(
                "Cast", [inner], [out], name=fresh(f"{out}/Cast"), to=TensorProto.FLOAT
            )
        )

    read = {i for n in nodes for i in n.input}
    # a weight read only in float16 keeps its name (tools find weights by name)
    for (value, bits), name in converted.items():
        if bits == 16 and value in inits and value not in read:
            for node in nodes:
                renamed_inputs = [value if i == name else i for i in node.input]
                del node.input[:]
                node.input.extend(renamed_inputs)
            next(t for t in new_inits if t.name == name).name = value
            read.add(value)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    fresh_names = {t.name for t in new_inits}
    kept = [t for t in graph.initializer if t.name in read and t.name not in fresh_names]
    del out.graph.initializer[:]
    out.graph.initializer.extend([*kept, *new_inits])
    del out.graph.value_info[:]
    return out, saturated
