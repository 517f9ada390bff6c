"""Pydantic models of a spec after `resolve`: the contract every later stage reads.

A resolved spec has no params, blocks or repeats left: the model is a flat DAG of layer
nodes with every argument bound and defaulted, and each node keeps the span of its call
plus the chain of block/repeat call sites it was expanded from. It is what
`spec.lock.json` holds, and it round-trips through JSON unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer
from typing_extensions import TypeAliasType

from dnnspec.errors import Span
from dnnspec.schema import Duration

DType = Literal["float32", "float64", "int64", "int32", "bool"]
Direction = Literal["min", "max"]
SpaceKind = Literal["choice", "uniform", "log_uniform", "int_range"]
Dim = int | str
GRAPH_NAMES = ("step", "seed", "target", "loss", "output")
"""The names the compiled graphs give their own inputs and outputs: no model input may
take one, or it would collide with them in train_step.onnx or model.onnx."""
ArgValue = TypeAliasType("ArgValue", "bool | int | float | str | Duration | list[ArgValue]")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputDecl(_Strict):
    """`input x: float32[N, 64]`: a graph input with symbolic (str) or literal (int) dims."""

    name: str
    dtype: DType
    dims: tuple[Dim, ...]
    span: Span


class Node(_Strict):
    """One layer application; its output value has the same name as the node."""

    name: str
    layer: str
    inputs: tuple[str, ...]
    args: dict[str, ArgValue]
    span: Span
    origin: tuple[Span, ...] = ()


class Output(_Strict):
    """`digit: logits` of `return digit: logits, size: h`: one named output of the model
    and the value it is."""

    name: str
    value: str
    span: Span


class Graph(_Strict):
    """The model: inputs, nodes in topological order, and the value it returns. A model
    with named outputs lists them in `outputs` (`output` is then the first one's value)."""

    name: str
    inputs: tuple[InputDecl, ...]
    nodes: tuple[Node, ...]
    output: str
    span: Span
    outputs: tuple[Output, ...] = ()

    def output_values(self) -> dict[str, str]:
        """Output name -> value: `""` names the one output of a model without named ones."""
        if not self.outputs:
            return {"": self.output}
        return {o.name: o.value for o in self.outputs}


class Call(_Strict):
    """A named thing with bound arguments: `adam(lr = 1e-3)`, `cross_entropy`, `digits(...)`."""

    name: str
    args: dict[str, ArgValue]
    span: Span


class Selector(_Strict):
    """A node (every parameter of it and of nodes inside it, `enc`) or one parameter
    (`head.bias`) named in the train section."""

    name: str
    span: Span


class Init(_Strict):
    """`init from("runs/base", rename = [conv_1 -> features_1], exclude = [head])`: the
    parameters start from a run's (or any) model.onnx, matched by name. `rename` maps a
    name in the file (a node, or node.param) to this spec's; `exclude` names this spec's
    nodes or parameters that keep their initialiser."""

    path: str
    rename: tuple[tuple[str, str], ...] = ()
    exclude: tuple[Selector, ...] = ()
    span: Span


class Head(_Strict):
    """How one model output is trained: its loss, the loss's weight in the total and its
    metrics. `output` is the output's name, `""` for a model without named outputs."""

    output: str
    loss: Call
    weight: float = 1.0
    metrics: tuple[Call, ...] = ()
    span: Span

    @property
    def prefix(self) -> str:
        """What this output's record keys start with: `digit_` (`digit_accuracy`), or
        nothing for a model's one unnamed output."""
        return f"{self.output}_" if self.output else ""


RECENT_TRAIN_DEFAULTS: dict[str, Any] = {"accumulate": 1, "freeze": (), "init": None}
"""Train settings the previous release did not have, with the default that means so (a
list setting's default is an empty tuple, which a JSON dump writes as a list)."""


class TrainSpec(_Strict):
    """The `train { ... }` section, every default made explicit. A model with one unnamed
    output has `loss` (and `metrics`); one with named outputs has a `heads` entry each."""

    data: Call
    loss: Call | None = None
    optimizer: Call
    schedule: Call
    batch: int
    epochs: int
    regularize: tuple[Call, ...] = ()
    metrics: tuple[Call, ...] = ()
    early_stop: Call | None = None
    seed: int = 0
    clip: Call | None = None
    split: Call | None = None
    preprocess: tuple[Call, ...] = ()
    test: float | str | None = None
    """A fraction of the data held out, or a data file, evaluated once at the end."""
    runtime: Call | None = pydantic.Field(default=None, exclude=True)
    """`runtime openvino`: the backend that trains it (a name, no arguments). Where it runs
    is not what it means: left out of the spec's text and hash, so a run resumes under
    another runtime."""
    decay: tuple[Selector, ...] = ()
    no_decay: tuple[Selector, ...] = ()
    augment: tuple[Call, ...] = ()
    """Augmentations of the image input in the train step, in order."""
    freeze: tuple[Selector, ...] = ()
    """Nodes (or node.param) whose parameters training leaves as they start."""
    init: Init | None = None
    heads: tuple[Head, ...] = ()
    accumulate: int = 1
    """Micro-batches whose gradients make one optimizer update (`accumulate 4`)."""
    span: Span

    @model_serializer(mode="wrap")
    def _recent_left_out(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Settings newer than the previous release are left out at their default, so a
        spec written before them keeps the text and the hash that release recorded."""
        data = handler(self)
        for name, default in RECENT_TRAIN_DEFAULTS.items():
            if not isinstance(data, dict) or name not in data:
                continue
            value = tuple(data[name]) if isinstance(data[name], list) else data[name]
            if value == default:
                data.pop(name)
        return data

    def trained(self) -> tuple[Head, ...]:
        """Every trained output with its loss and metrics, whichever way it was written."""
        if self.heads:
            return self.heads
        assert self.loss is not None, "a train section has a loss or heads"
        return (Head(output="", loss=self.loss, metrics=self.metrics, span=self.loss.span),)


class SearchDim(_Strict):
    """`hidden in choice(32, 64)`: the space one param is drawn from during a search."""

    param: str
    space: SpaceKind
    values: tuple[ArgValue, ...]
    span: Span


class SearchSpec(_Strict):
    """The `search method(...) { ... }` section: a method call and the space it explores."""

    method: Call
    objective: str
    direction: Direction
    dims: tuple[SearchDim, ...]
    span: Span


class Spec(_Strict):
    """A whole resolved spec: what `spec.lock.json` contains."""

    source: str
    params: dict[str, ArgValue]
    model: Graph
    train: TrainSpec | None = None
    search: SearchSpec | None = None
