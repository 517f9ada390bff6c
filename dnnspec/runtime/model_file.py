"""Reading a model.onnx someone hands us: nothing in it is trusted until checked.

A kill can leave a 0-byte file, a foreign tool can leave one without our metadata, and a
hostile one can declare huge initializers, point at external data or use an operator
onnxruntime lacks. Each is a diagnostic here, before a session is built or a weight read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dnnspec.errors import DiagnosticError, error
from dnnspec.files import GiB, read_bytes
from dnnspec.runtime.session import Device, make_session

MAX_MODEL_BYTES = 2 * GiB
"""Largest model.onnx read: protobuf's own limit for one message."""

DTYPES = {"float32", "float64", "int64", "int32", "bool"}


@dataclass(frozen=True)
class InputInfo:
    name: str
    dtype: str
    shape: tuple[int | str, ...]
    vocab: int | None = None
    """Token ids must lie in [0, vocab) when embeddings read this input."""


@dataclass(frozen=True)
class OutputInfo:
    """One graph output: its name (`output`, or a named output's), and for a class output
    the names of its classes."""

    name: str
    labels: tuple[str, ...] | None = None
    loss: str | None = None
    """The loss it was trained with (how `--proba` reads its scores)."""


@dataclass(frozen=True)
class ModelFile:
    """A checked model.onnx: the proto, its declared input, classes and spec hash."""

    path: Path
    proto: onnx.ModelProto
    input: InputInfo
    classes: int | None
    spec_hash: str | None
    vocab: list[str] | None = None
    """What each token id means, for a model trained on text (`dnnspec generate`)."""
    context: int = 0
    """The sequence length the model was trained on (0: not a text model)."""
    outputs: tuple[OutputInfo, ...] = ()
    """Every graph output, in order; named outputs when `named`."""
    named: bool = False
    expects: dict[str, Any] | None = None
    """`dnnspec.expects`: the raw columns, their preprocessing, classes, the training CSV."""

    def weights(self) -> dict[str, np.ndarray]:
        return {t.name: numpy_helper.to_array(t) for t in self.proto.graph.initializer}

    def session(self, device: Device) -> Any:
        """An onnxruntime session; a model it cannot run is a diagnostic."""
        try:
            return make_session(self.proto, device)
        except DiagnosticError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            reason = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc)
            raise error(f"onnxruntime cannot run '{self.path}': {reason}") from None


def _bad(path: Path, why: str) -> Exception:
    return error(
        f"'{path}' is not a model written by dnnspec: {why}",
        help="pass a run directory written by `dnnspec train` (or `dnnspec compile`)",
    )


def _meta_json(path: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, ValueError):
        raise _bad(path, f"its metadata '{key}' is missing or not JSON") from None


def _input(path: Path, meta: dict[str, str], graph: onnx.GraphProto) -> InputInfo:
    declared = _meta_json(path, meta, "dnnspec.inputs")
    if not isinstance(declared, list) or len(declared) != 1 or not isinstance(declared[0], dict):
        raise _bad(path, "its metadata 'dnnspec.inputs' does not name one input")
    entry = declared[0]
    name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
    if (
        not isinstance(name, str)
        or dtype not in DTYPES
        or not isinstance(shape, list)
        or not shape
        or not all(
            (isinstance(d, int) and not isinstance(d, bool) and d >= 1) or isinstance(d, str)
            for d in shape
        )
    ):
        raise _bad(path, "its metadata 'dnnspec.inputs' is malformed")
    graph_inputs = {i.name: i for i in graph.input}
    if list(graph_inputs) != [name]:
        raise _bad(path, f"its graph's inputs {list(graph_inputs)} are not ['{name}']")
    elem = graph_inputs[name].type.tensor_type.elem_type
    if elem != helper.np_dtype_to_tensor_dtype(np.dtype(dtype)):
        raise _bad(path, f"its graph takes input '{name}' as another type than {dtype}")
    vocab = entry.get("vocab")
    if vocab is not None and (not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1):
        raise _bad(path, "its metadata 'dnnspec.inputs' is malformed")
    return InputInfo(name, dtype, tuple(shape), vocab)


def _outputs(
    path: Path, meta: dict[str, str], graph: onnx.GraphProto, classes: list[str] | None
) -> tuple[OutputInfo, ...]:
    """The graph's outputs as the metadata declares them: one `output`, or the named
    outputs `dnnspec.outputs` lists (with the class names of class outputs)."""
    names = [o.name for o in graph.output]
    if "dnnspec.outputs" not in meta:
        if names != ["output"]:
            raise _bad(path, "its graph has no single output named 'output'")
        return (OutputInfo("output", tuple(classes) if classes else None),)
    declared = _meta_json(path, meta, "dnnspec.outputs")
    found = []
    for entry in declared if isinstance(declared, list) else [None]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad(path, "its metadata 'dnnspec.outputs' is malformed")
        labels = entry.get("class_labels")
        if labels is not None and (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) for x in labels)
        ):
            raise _bad(path, "its metadata 'dnnspec.outputs' is malformed")
        loss = entry.get("loss")
        if loss is not None and not isinstance(loss, str):
            raise _bad(path, "its metadata 'dnnspec.outputs' is malformed")
        found.append(OutputInfo(entry["name"], tuple(labels) if labels else None, loss))
    if [o.name for o in found] != names:
        raise _bad(path, f"its graph's outputs {names} are not those its metadata names")
    return tuple(found)


def _check_initializers(path: Path, graph: onnx.GraphProto) -> None:
    """Every weight holds exactly the bytes its dims declare, in the file itself."""
    for tensor in graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            raise _bad(path, f"weight '{tensor.name}' points at external data")
        if any(d < 0 for d in tensor.dims):
            raise _bad(path, f"weight '{tensor.name}' has a negative dimension")
        count = math.prod(tensor.dims)
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"weight '{tensor.name}' has an unknown type") from None
        if tensor.HasField("raw_data"):
            held = len(tensor.raw_data) // itemsize
        else:
            field_name = helper.tensor_dtype_to_field(tensor.data_type)
            held = len(getattr(tensor, field_name))
        if held != count:
            raise _bad(
                path,
                f"weight '{tensor.name}' declares {count:,} values but holds {held:,}",
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expects(path: Path, meta: dict[str, str], info: InputInfo) -> dict[str, Any] | None:
    """The column description predict relies on, checked for the types it reads."""
    if "dnnspec.expects" not in meta:
        return None
    expected = _meta_json(path, meta, "dnnspec.expects")
    bad = _bad(path, "its metadata 'dnnspec.expects' is malformed")
    if not isinstance(expected, dict) or not isinstance(expected.get("columns"), list):
        raise bad
    columns = expected["columns"]
    if len(info.shape) != 2 or (_is_int(info.shape[1]) and len(columns) != info.shape[1]):
        raise bad
    for column in columns:
        if not isinstance(column, dict) or not isinstance(column.get("steps"), list):
            raise bad
        if column.get("name") is not None and not isinstance(column["name"], str):
            raise bad
        for step in column["steps"]:
            if not isinstance(step, dict):
                raise bad
            if step.get("step") == "one_hot" and not (
                isinstance(step.get("categories"), list)
                and all(isinstance(c, str) for c in step["categories"])
            ):
                raise bad
    csv = expected.get("csv")
    if csv is not None:
        if not isinstance(csv, dict) or not all(_is_int(csv.get(k)) for k in ("width", "target")):
            raise bad
        features = csv.get("features")
        if (
            not isinstance(features, list)
            or len(features) != len(columns)
            or not all(_is_int(f) and 0 <= f < csv["width"] for f in features)
            or not 0 <= csv["target"] < csv["width"]
        ):
            raise bad
        if csv.get("target_name") is not None and not isinstance(csv["target_name"], str):
            raise bad
    return expected


def read_model(path: Path) -> ModelFile:
    """model.onnx from a run directory, checked from its bytes to its metadata."""
    data = read_bytes(path, "model", MAX_MODEL_BYTES)
    if not data:
        raise _bad(path, "it is empty (a run killed before it wrote its model?)")
    try:
        proto = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - protobuf raises several unrelated types
        raise _bad(path, "it is not an ONNX file") from None
    if not proto.graph.node and not proto.graph.output:
        raise _bad(path, "it holds no graph")
    meta = {p.key: p.value for p in proto.metadata_props}
    info = _input(path, meta, proto.graph)
    _check_initializers(path, proto.graph)
    classes = None
    labels: list[str] | None = None
    if "dnnspec.class_labels" in meta:
        labels = _meta_json(path, meta, "dnnspec.class_labels")
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) for x in labels)
        ):
            raise _bad(path, "its metadata 'dnnspec.class_labels' is not a list of labels")
        classes = len(labels)
    outputs = _outputs(path, meta, proto.graph, labels)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise _bad(path, f"it fails the ONNX checker: {str(exc).splitlines()[0][:200]}") from None
    vocab = None
    if "dnnspec.vocab" in meta:
        vocab = _meta_json(path, meta, "dnnspec.vocab")
        if not isinstance(vocab, list) or not all(isinstance(x, str) for x in vocab) or not vocab:
            raise _bad(path, "its metadata 'dnnspec.vocab' is not a list of tokens")
    context = meta.get("dnnspec.context", "0")
    if not context.isdigit():
        raise _bad(path, "its metadata 'dnnspec.context' is not a length")
    return ModelFile(
        path,
        proto,
        info,
        classes,
        meta.get("dnnspec.spec_hash"),
        vocab,
        int(context),
        outputs,
        "dnnspec.outputs" in meta,
        _expects(path, meta, info),
    )
