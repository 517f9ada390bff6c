"""Outputs a deployer reads without knowing the loss: beside each model output (its
logits, log-probabilities or values), its probabilities as the loss reads them, its class
ids and its class names, as sklearn-onnx's `output_probability` and `output_label`.

Probabilities follow the output's loss as `predict --proba` does: softmax over the last
axis for a loss that applies softmax (cross_entropy), a sigmoid per unit for one that
applies a sigmoid (binary_cross_entropy), exp of log-probabilities (nll). Labels are int64:
the argmax over the last axis, or for a sigmoid output 1 per unit where the logit exceeds 0
(the probability exceeds 0.5, as the binary metrics count). Class names are strings
gathered from the recorded names by those ids (ONNX `Gather` over a string constant, in
the default domain, so every runtime that reads strings reads them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dnnspec.errors import did_you_mean, error
from dnnspec.metadata import ModelMetadata, OutputRole
from dnnspec.training.losses import LOSSES

KINDS = ("logits", "probabilities", "labels", "class_names")
"""What `--outputs` may list; `logits` is the model's own output, whatever it holds."""
DEFAULT = ("logits",)
"""The model's outputs alone, as model.onnx holds them."""

UNNAMED = "output"
"""The graph output of a model without named outputs."""


@dataclass(frozen=True)
class _Head:
    """A model output: its graph name, its loss and the names of its classes."""

    name: str
    loss: str | None
    classes: list[str] | None

    def squash(self) -> str | None:
        """The op turning this output into probabilities (None: it predicts values)."""
        definition = LOSSES.get(self.loss) if self.loss and self.loss in LOSSES else None
        if definition is None or definition.probabilities is None:
            return None
        return {"softmax": "Softmax", "sigmoid": "Sigmoid"}.get(definition.applies or "", "Exp")

    def role(self) -> tuple[str, str | None]:
        squash = self.squash()
        if squash is None:
            return "values", None
        if squash == "Exp":
            return "log_probabilities", None
        return "logits", f"{squash.lower()} gives the probabilities"

    def derived(self, kind: str) -> str:
        """The graph output name of `kind` for this output (`probabilities/<name>` beside
        a named output, as the train step names `loss/<name>`)."""
        return kind if self.name == UNNAMED else f"{kind}/{self.name}"


def parse_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The requested kinds, checked, in KINDS order (None: DEFAULT)."""
    if kinds is None:
        return DEFAULT
    chosen = [k.strip() for k in kinds if k.strip()]
    if not chosen:
        raise error("--outputs lists no output", help=f"choose from {', '.join(KINDS)}")
    for kind in chosen:
        if kind not in KINDS:
            raise error(
                f"--outputs: unknown output '{kind}'",
                help=did_you_mean(kind, KINDS) or f"choose from {', '.join(KINDS)}",
            )
    return tuple(k for k in KINDS if k in chosen)


def _heads(meta: ModelMetadata) -> list[_Head]:
    if meta.outputs is not None:
        return [_Head(o.name, o.loss, o.class_labels) for o in meta.outputs]
    return [_Head(UNNAMED, meta.loss, meta.class_labels)]


def _info(
    name: str, elem: int, dims: Sequence[onnx.TensorShapeProto.Dimension]
) -> onnx.ValueInfoProto:
    shape = [d.dim_param or d.dim_value if (d.dim_param or d.HasField("dim_value")) else None
             for d in dims]  # fmt: skip
    return helper.make_tensor_value_info(name, elem, shape)


def add_outputs(
    model: onnx.ModelProto, meta: ModelMetadata, kinds: tuple[str, ...]
) -> tuple[onnx.ModelProto, list[OutputRole]]:
    """A copy of `model` with the requested outputs of every model output that has them
    (the model's own outputs dropped without `logits`), and what each graph output holds."""
    heads = _heads(meta)
    classy = [h for h in heads if h.squash() is not None]
    wanted = [k for k in kinds if k != "logits"]
    if wanted and not classy:
        losses = ", ".join(sorted({h.loss for h in heads if h.loss})) or "none"
        raise error(
            f"--outputs {','.join(wanted)}: the model predicts values (loss {losses}), not "
            "classes, so it has no probabilities or labels",
            help="probabilities come from outputs trained with cross_entropy, nll or "
            "binary_cross_entropy; export --outputs logits",
        )
    if "class_names" in kinds and not any(_names_of(h) for h in classy):
        raise error(
            "--outputs class_names: the model records no class names (its targets were ids)",
            help="export --outputs labels for the class ids",
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    taken |= {o for n in graph.node for o in n.output}
    infos = {o.name: o for o in graph.output}
    outputs: list[onnx.ValueInfoProto] = []
    roles: list[OutputRole] = []
    for head in heads:
        raw = infos[head.name]
        if "logits" in kinds:
            outputs.append(raw)
            role, how = head.role()
            roles.append(OutputRole(name=head.name, output=head.name, role=role, how=how))
        squash = head.squash()
        if squash is None:
            continue
        for kind in wanted:
            built = _build(graph, head, squash, kind, raw, taken)
            if built is not None:
                outputs.append(built[0])
                roles.append(OutputRole(name=built[0].name, output=head.name, role=kind,
                                        how=built[1]))  # fmt: skip
    del graph.output[:]
    graph.output.extend(outputs)
    return out, roles


def _names_of(head: _Head) -> list[str] | None:
    """The class names `class_names` gathers from: one per class (two for one sigmoid)."""
    return (
        head.classes
        if head.classes and (head.squash() != "Sigmoid" or len(head.classes) == 2)
        else None
    )


def _build(
    graph: onnx.GraphProto,
    head: _Head,
    squash: str,
    kind: str,
    raw: onnx.ValueInfoProto,
    taken: set[str],
) -> tuple[onnx.ValueInfoProto, str] | None:
    """The nodes of one derived output appended to `graph`: its value info and how it is
    computed (None where this output has no such thing: class names it did not record)."""
    name = _claim(taken, head.derived(kind))
    dims = raw.type.tensor_type.shape.dim
    elem = raw.type.tensor_type.elem_type
    scope = f"export/{name}"
    binary = squash == "Sigmoid"
    label_dims = list(dims) if binary else list(dims)[:-1]
    if kind == "probabilities":
        node = helper.make_node(squash, [head.name], [name], name=scope)
        if squash == "Softmax":
            node.attribute.append(helper.make_attribute("axis", -1))
        graph.node.append(node)
        how = {"Softmax": "softmax over the last axis", "Sigmoid": "sigmoid per unit"}
        return _info(name, elem, dims), how.get(squash, "exp of the log-probabilities")
    if kind == "labels":
        _labels(graph, head.name, name, binary, elem, taken, scope)
        how_label = (
            "1 where the logit exceeds 0, i.e. the probability exceeds 0.5; else 0"
            if binary
            else "the id of the largest score: argmax over the last axis"
        )
        return _info(name, TensorProto.INT64, label_dims), how_label
    names = _names_of(head)
    if names is None:
        return None
    ids = head.derived("labels")
    if ids not in taken:  # class names without the ids as an output: an inner value
        ids = _claim(taken, f"{name}/ids")
        _labels(graph, head.name, ids, binary, elem, taken, f"{scope}/ids")
    table = _claim(taken, f"{name}/table")
    graph.initializer.append(numpy_helper.from_array(np.array(names, dtype=object), table))
    graph.node.append(helper.make_node("Gather", [table, ids], [name], name=scope, axis=0))
    return _info(name, TensorProto.STRING, label_dims), "the class name of each label"


def _claim(taken: set[str], name: str) -> str:
    """`name` for a new value, refused where the model already has one (an input so named)."""
    if name in taken:
        raise error(
            f"--outputs: the model already has a value named '{name}'",
            help="rename the model's input",
        )
    taken.add(name)
    return name


def _labels(
    graph: onnx.GraphProto, raw: str, name: str, binary: bool, elem: int, taken: set[str],
    scope: str,
) -> None:  # fmt: skip
    """The int64 class ids of `raw` as value `name`."""
    if binary:
        above, zero = _claim(taken, f"{name}/positive"), _claim(taken, f"{name}/zero")
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        graph.initializer.append(numpy_helper.from_array(np.array(0, dtype), zero))
        graph.node.append(helper.make_node("Greater", [raw, zero], [above], name=f"{scope}/gt"))
        graph.node.append(
            helper.make_node("Cast", [above], [name], name=scope, to=TensorProto.INT64)
        )
    else:
        graph.node.append(
            helper.make_node("ArgMax", [raw], [name], name=scope, axis=-1, keepdims=0)
        )
