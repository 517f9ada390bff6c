"""Reading a model.onnx someone hands us: nothing in it is trusted until checked.

A kill can leave a 0-byte file, a foreign tool can leave one without our metadata, and a
hostile one can declare huge initializers, point at external data or use an operator
onnxruntime lacks. Each is a diagnostic here, before a session is built or a weight read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dnnspec.errors import DiagnosticError, Span, error
from dnnspec.files import GiB, read_bytes
from dnnspec.metadata import ModelMetadata, not_ours
from dnnspec.runtime.backend import DEFAULT, Device
from dnnspec.runtime.fallback import Opened, open_graph

MAX_MODEL_BYTES = 2 * GiB
"""Largest model.onnx read: protobuf's own limit for one message."""


@dataclass(frozen=True)
class InputInfo:
    name: str
    dtype: str
    shape: tuple[int | str, ...]
    vocab: int | None = None
    """Token ids must lie in [0, vocab) when embeddings read this input."""
    columns: tuple[str, ...] | None = None
    """The table columns it was trained on, when one of several inputs."""


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
    """A checked model.onnx: the proto, its declared inputs, classes and spec hash."""

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
    meta: ModelMetadata = field(default_factory=ModelMetadata)
    """Every `dnnspec.*` key, checked (`dnnspec.metadata`)."""
    inputs: tuple[InputInfo, ...] = ()
    """Every input, in the graph's order (`input` is the first)."""

    def weights(self) -> dict[str, np.ndarray]:
        return {t.name: numpy_helper.to_array(t) for t in self.proto.graph.initializer}

    def session(self, device: Device, name: str = DEFAULT) -> Opened:
        """The model opened in the backend `name` (in onnxruntime, with a warning, where
        `name` cannot compile it); a model it cannot run is a diagnostic."""
        try:
            return open_graph(name, self.proto, device)
        except DiagnosticError:
            raise
        except Exception as exc:  # noqa: BLE001 - runtimes raise their own untyped errors
            reason = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc)
            raise error(f"{name} cannot run '{self.path}': {reason}") from None


def _inputs(path: Path, meta: ModelMetadata, graph: onnx.GraphProto) -> tuple[InputInfo, ...]:
    """The inputs the metadata declares, in order, each typed as the graph takes it."""
    if meta.inputs is None:
        raise not_ours(path, "its metadata 'dnnspec.inputs' is missing or not JSON")
    if not meta.inputs:
        raise not_ours(path, "its metadata 'dnnspec.inputs' names no input")
    graph_inputs = {i.name: i for i in graph.input}
    names = [entry.name for entry in meta.inputs]
    if list(graph_inputs) != names:
        raise not_ours(path, f"its graph's inputs {list(graph_inputs)} are not {names}")
    found = []
    for entry in meta.inputs:
        elem = graph_inputs[entry.name].type.tensor_type.elem_type
        if elem != helper.np_dtype_to_tensor_dtype(np.dtype(entry.dtype)):
            raise not_ours(
                path, f"its graph takes input '{entry.name}' as another type than {entry.dtype}"
            )
        columns = tuple(entry.columns) if entry.columns is not None else None
        found.append(InputInfo(entry.name, entry.dtype, tuple(entry.shape), entry.vocab, columns))
    return tuple(found)


def _outputs(path: Path, meta: ModelMetadata, graph: onnx.GraphProto) -> tuple[OutputInfo, ...]:
    """The graph's outputs as the metadata declares them: one `output`, or the named
    outputs `dnnspec.outputs` lists (with the class names of class outputs)."""
    names = [o.name for o in graph.output]
    if meta.outputs is None:
        if names != ["output"]:
            raise not_ours(path, "its graph has no single output named 'output'")
        labels = tuple(meta.class_labels) if meta.class_labels else None
        return (OutputInfo("output", labels, meta.loss),)
    found = tuple(
        OutputInfo(o.name, tuple(o.class_labels) if o.class_labels else None, o.loss)
        for o in meta.outputs
    )
    if [o.name for o in found] != names:
        raise not_ours(path, f"its graph's outputs {names} are not those its metadata names")
    return found


def _check_initializers(
    path: Path,
    graph: onnx.GraphProto,
    refuse: Callable[[Path, str], DiagnosticError] = not_ours,
) -> None:
    """Every weight holds exactly the bytes its dims declare, in the file itself; `refuse`
    makes the diagnostic of a file that breaks this, from its path and why."""
    for tensor in graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            raise refuse(path, f"weight '{tensor.name}' points at external data")
        if any(d < 0 for d in tensor.dims):
            raise refuse(path, f"weight '{tensor.name}' has a negative dimension")
        count = math.prod(tensor.dims)
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise refuse(path, f"weight '{tensor.name}' has an unknown type") from None
        if tensor.HasField("raw_data"):
            held = len(tensor.raw_data) // itemsize
        else:
            field_name = helper.tensor_dtype_to_field(tensor.data_type)
            held = len(getattr(tensor, field_name))
        if held != count:
            raise refuse(
                path,
                f"weight '{tensor.name}' declares {count:,} values but holds {held:,}",
            )


def read_weights(path: Path, span: Span | None = None) -> dict[str, np.ndarray]:
    """The initializers of any ONNX file (ours or a foreign tool's), checked as
    `read_model` checks them: within the size limit, every value in the file itself."""
    data = read_bytes(path, "model", MAX_MODEL_BYTES, span)
    try:
        proto = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - protobuf raises several unrelated types
        raise error(f"cannot start from '{path}': it is not an ONNX file", span) from None
    _check_initializers(
        path, proto.graph, lambda p, why: error(f"cannot start from '{p}': {why}", span)
    )
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def read_model(path: Path) -> ModelFile:
    """model.onnx from a run directory, checked from its bytes to its metadata."""
    data = read_bytes(path, "model", MAX_MODEL_BYTES)
    if not data:
        raise not_ours(path, "it is empty (a run killed before it wrote its model?)")
    try:
        proto = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - protobuf raises several unrelated types
        raise not_ours(path, "it is not an ONNX file") from None
    if not proto.graph.node and not proto.graph.output:
        raise not_ours(path, "it holds no graph")
    meta = ModelMetadata.from_model(proto, path)
    inputs = _inputs(path, meta, proto.graph)
    _check_initializers(path, proto.graph)
    outputs = _outputs(path, meta, proto.graph)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        why = f"it fails the ONNX checker: {str(exc).splitlines()[0][:200]}"
        raise not_ours(path, why) from None
    return ModelFile(
        path,
        proto,
        inputs[0],
        len(meta.class_labels) if meta.class_labels else None,
        meta.spec_hash,
        meta.vocab,
        meta.context or 0,
        outputs,
        meta.outputs is not None,
        None if meta.expects is None else meta.expects.model_dump(mode="json"),
        meta,
        inputs,
    )
