"""Static shape and dtype inference over a resolved spec: the typed model.

Each node's layer rule sees its operands' symbolic types and returns its output type, its
parameters and its FLOPs per sample. A rule's `ShapeError` becomes a located diagnostic
with a note at the layer (or input) that produced each operand and at each block call or
repeat the node came from. The failing node's value is then poisoned, so one mistake is
reported once while independent mistakes are all reported together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec.errors import Diagnostic, DiagnosticError, Note, Span, did_you_mean
from dnnspec.files import GiB, size_text
from dnnspec.ir import Call, Node, Selector, Spec
from dnnspec.layers.base import (
    LAYERS,
    ParamSpec,
    ShapeError,
    TensorType,
    output_values,
    relu_like,
)
from dnnspec.training.losses import LOSSES

MAX_PARAMS = 2**29
"""Parameters a model may have: 2 GiB of float32, the size ONNX caps a model file at, and
model.onnx keeps its weights inside the file."""

MAX_ACTIVATION_BYTES = 64 * GiB
"""What one batch's activations may take: every layer's output, which training keeps for
the backward pass (symbolic dims count as 1, so this is a floor). Past it no machine here
trains the model, and onnxruntime would fail allocating."""

ITEM_BYTES = {"float64": 8, "int64": 8, "float32": 4, "int32": 4, "bool": 1}

UNKNOWN = TensorType("unknown", ())
"""The type of a value whose producer failed to check; nodes reading it are skipped."""


def param_name(node_name: str, local: str) -> str:
    """The graph-wide name of a layer's parameter: `dense_1.weight`, `residual_1.dense_2.bias`."""
    return f"{node_name}.{local}"


@dataclass(frozen=True)
class LayerInfo:
    """One checked node: its output type, the parameters it owns, its FLOPs per sample and
    its non-trained state (not counted as parameters)."""

    node: Node
    out: TensorType
    params: list[ParamSpec]
    flops: int
    state: list[ParamSpec] = field(default_factory=list)

    @property
    def param_count(self) -> int:
        return sum(math.prod(p.shape) for p in self.params)

    @property
    def frozen_count(self) -> int:
        """The elements of its parameters that `freeze` keeps as they start."""
        return sum(math.prod(p.shape) for p in self.params if p.frozen)


@dataclass(frozen=True)
class TypedModel:
    """A spec whose every value has a static type: what lowering and the layer table read."""

    spec: Spec
    types: dict[str, TensorType]
    layers: list[LayerInfo]
    output: TensorType
    warnings: tuple[Diagnostic, ...] = ()
    """Mistakes that still train, but badly: shown by check, train and compile."""
    outputs: dict[str, TensorType] = field(default_factory=dict)
    """Each output's type by name (`""`: the one output of a model without named ones)."""

    def param_count(self) -> int:
        """Every parameter element."""
        return sum(layer.param_count for layer in self.layers)

    def frozen_count(self) -> int:
        """The parameter elements `freeze` keeps as they start (the rest train)."""
        return sum(layer.frozen_count for layer in self.layers)

    def total_flops(self) -> int:
        """Forward FLOPs per sample (inference mode)."""
        return sum(layer.flops for layer in self.layers)


class _Checker:
    """Walks the nodes in order, keeping each value's type and where it was produced."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        graph = spec.model
        self.types = {d.name: TensorType(d.dtype, d.dims) for d in graph.inputs}
        self.sources: dict[str, tuple[str, Span]] = {
            d.name: (f"is input '{d.name}' declared here", d.span) for d in graph.inputs
        }
        self.nodes: dict[str, Node] = {}
        self.layers: list[LayerInfo] = []
        self.problems: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def run(self) -> TypedModel:
        for node in self.spec.model.nodes:
            self.nodes[node.name] = node
            self.sources[node.name] = (f"comes from {node.name} here", node.span)
            operands = [self.types[name] for name in node.inputs]
            self.types[node.name] = UNKNOWN
            if UNKNOWN in operands:
                continue
            try:
                self.layers.append(self.check_node(node, operands))
            except ShapeError as exc:
                self.problems.append(self.diagnostic(node, operands, exc))
                continue
            self.types[node.name] = self.layers[-1].out
        output = self.types[self.spec.model.output]
        outputs = {k: self.types[v] for k, v in self.spec.model.output_values().items()}
        train = self.spec.train
        losses = {h.output: h.loss for h in train.trained()} if train else {}
        for name, value in self.spec.model.output_values().items():
            self.check_output(name, value, outputs[name], losses.get(name))
        if self.check_size():  # a layer too large to store is too large to run: said once
            self.check_activations()
        if self.problems:
            raise DiagnosticError(self.problems)
        layers = self.with_decay([self.with_init(i) for i in self.layers])
        if self.problems:
            raise DiagnosticError(self.problems)
        return TypedModel(self.spec, self.types, layers, output, tuple(self.warnings), outputs)

    def with_decay(self, layers: list[LayerInfo]) -> list[LayerInfo]:
        """Apply the train section's `decay` / `no_decay` choices over the layers' defaults
        (weights decay; biases, normalisation and position tables do not), and `freeze`."""
        train = self.spec.train
        if train is None or not (train.decay or train.no_decay or train.freeze):
            return layers
        names = [param_name(i.node.name, p.name) for i in layers for p in i.params]
        chosen: dict[str, bool] = {}
        for selectors, on in ((train.no_decay, False), (train.decay, True)):
            chosen.update(self.selected(selectors, names, on))
        frozen = self.selected(train.freeze, names, True)
        if names and len(frozen) == len(names):
            self.problems.append(
                Diagnostic(
                    message="freeze leaves no parameter of the model to train",
                    span=train.freeze[0].span,
                    help="freeze the feature layers and leave the head trainable",
                )
            )
        out = []
        for info in layers:
            params = []
            for p in info.params:
                name = param_name(info.node.name, p.name)
                params.append(
                    replace(p, decay=chosen.get(name, p.decay), frozen=frozen.get(name, False))
                )
            out.append(replace(info, params=params))
        return out

    def selected(
        self, selectors: Sequence[Selector], names: list[str], on: bool
    ) -> dict[str, bool]:
        """The parameter names each selector picks (a node's, or one node.param), each
        mapped to `on`; a selector that picks none is reported."""
        chosen: dict[str, bool] = {}
        for sel in selectors:
            hits = [n for n in names if n == sel.name or n.startswith(sel.name + ".")]
            if not hits:
                nodes = sorted({n.rsplit(".", 1)[0] for n in names})
                self.problems.append(
                    Diagnostic(
                        message=f"no parameter of the model is called '{sel.name}'",
                        span=sel.span,
                        help=did_you_mean(sel.name, [*nodes, *names])
                        or "name a layer with parameters, or layer.param in quotes",
                    )
                )
            chosen.update(dict.fromkeys(hits, on))
        return chosen

    def with_init(self, info: LayerInfo) -> LayerInfo:
        """Settle `auto` initialisers: He for weights feeding only ReLU-like activations
        (they halve the variance), Glorot otherwise."""
        if not any(p.init == "auto" for p in info.params):
            return info
        consumers = {n.layer for n in self.spec.model.nodes if info.node.name in n.inputs}
        he = bool(consumers) and all(relu_like(layer) for layer in consumers)
        init = "he_normal" if he else "glorot_uniform"
        params = [replace(p, init=init) if p.init == "auto" else p for p in info.params]
        return replace(info, params=params)

    def check_node(self, node: Node, operands: list[TensorType]) -> LayerInfo:
        layer = LAYERS.get(node.layer, node.span)
        out = layer.infer(operands, node.args)
        self.check_shared(node, layer.shared(operands, node.args))
        params = layer.params(operands, node.args)
        flops = layer.flops(operands, out, node.args) if layer.flops else 0
        return LayerInfo(node, out, params, flops, layer.state(operands, node.args))

    def check_shared(self, node: Node, wanted: list[ParamSpec]) -> None:
        """A layer reading another's parameters (`dense(vocab, tie = embedding_1)`) names
        a layer before it that has them, in the shapes it reads."""
        if not wanted:
            return
        layer = LAYERS.get(node.layer)
        target = str(node.args[layer.shares or ""])
        owner = next((i for i in self.layers if i.node.name == target), None)
        if owner is None:
            before = [i.node.name for i in self.layers if i.params]
            raise ShapeError(
                f"{node.layer} ties to '{target}', but no layer before it is called so",
                help=did_you_mean(target, before)
                or f"name a layer before it by its name in `dnnspec check`: {', '.join(before)}",
            )
        has = {p.name: p.shape for p in owner.params}
        for p in wanted:
            if has.get(p.name) != p.shape:
                held = f"[{', '.join(map(str, has[p.name]))}]" if p.name in has else "none"
                raise ShapeError(
                    f"{node.layer} reads {target}'s {p.name} as [{', '.join(map(str, p.shape))}]"
                    f", but it is {held}",
                    help="tie an output projection to an embedding(vocab, dim) read at width dim:"
                    " dense(vocab, tie = ...) over [..., dim]",
                )

    def diagnostic(self, node: Node, operands: Sequence[TensorType], exc: ShapeError) -> Diagnostic:
        notes = [
            Note(message=f"{t} {self.sources[name][0]}", span=self.sources[name][1])
            for name, t in zip(node.inputs, operands, strict=True)
        ]
        return Diagnostic(
            message=exc.message,
            span=node.span,
            notes=(*notes, *_origin_notes(node)),
            help=exc.help or self.merge_help(node, operands),
        )

    def merge_help(self, node: Node, operands: Sequence[TensorType]) -> str | None:
        """For merged operands that differ only in width: which layer to widen or add."""
        if LAYERS.get(node.layer).arity is not None or not all(t.dims for t in operands):
            return None
        if len({t.dims[:-1] for t in operands}) > 1 or len({t.dims[-1] for t in operands}) == 1:
            return None
        dense = [n for n in node.inputs if n in self.nodes and self.nodes[n].layer == "dense"]
        if len(dense) == len(node.inputs):
            return "make the dense layers the same width"
        width = self.types[(dense or node.inputs)[0]].dims[-1]
        other = next(n for n in node.inputs if self.types[n].dims[-1] != width)
        widen = f"make {dense[0]} {self.types[other].dims[-1]} wide, or " if dense else ""
        return f"{widen}project {other} with dense({width})"

    def check_size(self) -> bool:
        """Whether the parameters fit in model.onnx (reported when not)."""
        total = sum(layer.param_count for layer in self.layers)
        if total <= MAX_PARAMS:
            return True
        largest = max(self.layers, key=lambda layer: layer.param_count)
        self.problems.append(
            Diagnostic(
                message=f"the model has {total:,} parameters, {total * 4 / 2**30:,.1f} GiB as "
                f"float32; model.onnx holds its weights and an ONNX file is capped at 2 GiB",
                span=largest.node.span,
                notes=tuple(_origin_notes(largest.node)),
                help=f"keep it under {MAX_PARAMS:,}; the largest layer, {largest.node.name} "
                f"(here), has {largest.param_count:,}",
            )
        )
        return False

    def check_activations(self) -> None:
        """One batch's activations against MAX_ACTIVATION_BYTES, located at the largest."""
        if not self.layers:
            return
        batch = self.spec.train.batch if self.spec.train else 1
        sizes = [batch * _bytes_per_sample(info.out) for info in self.layers]
        total = sum(sizes)
        if total <= MAX_ACTIVATION_BYTES:
            return
        largest = self.layers[sizes.index(max(sizes))]
        per = f"a batch of {batch}" if self.spec.train else "one sample"
        self.problems.append(
            Diagnostic(
                message=f"the activations of {per} take {size_text(total)}, over the limit "
                f"of {size_text(MAX_ACTIVATION_BYTES)}; {largest.node.name} (here) alone "
                f"outputs {largest.out}: {size_text(max(sizes))}",
                span=largest.node.span,
                notes=tuple(_origin_notes(largest.node)),
                help="make this layer's output smaller"
                + (", or train with a smaller batch" if batch > 1 else ""),
            )
        )

    def check_output(self, name: str, value: str, output: TensorType, loss: Call | None) -> None:
        """An output's type against its loss's contract (`name` is `""` for a model's one
        unnamed output)."""
        if output == UNKNOWN:
            return
        span = self.sources[value][1]
        which = f"output '{name}'" if name else "the model's output"
        outputs = f"output '{name}' is" if name else "the model outputs"
        if not output.dtype.startswith("float"):
            self.problems.append(
                Diagnostic(
                    message=f"{which} must be a float tensor, got {output}",
                    span=span,
                    help="end the model with a layer that computes floats, e.g. dense(...)",
                )
            )
        if loss is None:
            return
        definition = LOSSES.get(loss.name)
        for message, help in definition.check(loss.args, output.dims):
            self.problems.append(
                Diagnostic(
                    message=f"loss '{loss.name}': {message}",
                    span=loss.span,
                    notes=(Note(message=f"{outputs} {output}", span=span),),
                    help=help,
                )
            )
        if definition.target == "binary" and len(output.dims) < 2:
            self.problems.append(
                Diagnostic(
                    message=f"loss '{loss.name}' needs one logit per target unit, [N, units], "
                    f"but {outputs} {output}",
                    span=span,
                    notes=(Note(message="the loss is chosen here", span=loss.span),),
                    help="end the model with dense(units)",
                )
            )
        last = self.nodes.get(value)
        applied = definition.applies
        # a from-logits loss squashes probabilities again (log-probabilities are harmless:
        # softmax of log-probabilities is softmax of the logits)
        if applied and last is not None and output_values(last.layer) == "probabilities":
            self.warnings.append(
                Diagnostic(
                    severity="warning",
                    message=f"the model ends in {last.layer}, but '{loss.name}' applies "
                    f"{applied} to the model's output itself: it would squash scores twice "
                    "and train slowly",
                    span=last.span,
                    notes=(Note(message="the loss is chosen here", span=loss.span),),
                    help=f"end the model with the dense layer; model.onnx outputs logits, "
                    f"so apply {last.layer} where you use it",
                )
            )
        if definition.target != "class":
            return
        if applied is None and (last is None or output_values(last.layer) != "log_probabilities"):
            self.warnings.append(
                Diagnostic(
                    severity="warning",
                    message=f"'{loss.name}' reads log-probabilities, but "
                    f"{which if name else 'the model'} does not end in log_softmax",
                    span=span,
                    notes=(Note(message="the loss is chosen here", span=loss.span),),
                    help="end the model with log_softmax, or train with cross_entropy on "
                    "the logits",
                )
            )
        if len(output.dims) not in (2, 3) or not isinstance(output.dims[-1], int):
            self.problems.append(
                Diagnostic(
                    message=f"loss '{loss.name}' needs one row of class scores per sample, "
                    f"[N, classes] (or [N, T, classes] for a sequence of labels), but "
                    f"{outputs} {output}",
                    span=span,
                    notes=(Note(message="the loss is chosen here", span=loss.span),),
                    help="flatten and end the model with dense(classes)"
                    if len(output.dims) > 3
                    else "end the model with dense(classes)",
                )
            )


def _bytes_per_sample(t: TensorType) -> int:
    return math.prod(d for d in t.dims[1:] if isinstance(d, int)) * ITEM_BYTES.get(t.dtype, 4)


def _origin_notes(node: Node) -> list[Note]:
    """A note at each block call or repeat the node was expanded from, innermost first.
    Block calls are named when the node's instance prefix accounts for every frame."""
    blocks = [part.rsplit("_", 1)[0] for part in node.name.split(".")[:-1]]
    spans = list(reversed(node.origin))
    if len(blocks) == len(spans):
        return [
            Note(message=f"in block '{block}' called here", span=span)
            for block, span in zip(reversed(blocks), spans, strict=True)
        ]
    return [Note(message="expanded from here", span=span) for span in spans]


def check_spec(spec: Spec) -> TypedModel:
    """Type every value of `spec`'s model; raise every shape and dtype error at once."""
    return _Checker(spec).run()
