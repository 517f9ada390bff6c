"""What a layer family registers: argument schema, shape rule, parameters, FLOPs, lowering.

Adding a layer touches one module under `layers/` (plus tests): it calls
`LAYERS.add(name, LayerDef(...))` and everything else (resolve's argument checking,
`check`'s shapes and layer table, lowering to ONNX, parameter initialisation) reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Dim, Node
from dnnspec.registry import Registry
from dnnspec.schema import Signature, arg_int

Mode = Literal["train", "eval"]


@dataclass(frozen=True)
class TensorType:
    """Static type of a value: dtype and symbolic (str) or literal (int) dims.

    `sequence`: the value is [N, T, features] as sequence layers make it (time on axis 1,
    features last), so conv1d, the 1-D and global pools and batchnorm read it over time
    (`layers/layout.py`). Equality compares dtype and dims only."""

    dtype: str
    dims: tuple[Dim, ...]
    sequence: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        short = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool"}
        return f"{short.get(self.dtype, self.dtype)}[{', '.join(str(d) for d in self.dims)}]"


@dataclass(frozen=True)
class ParamSpec:
    """One trainable tensor of a layer; `name` is local ('weight', 'bias'). `decay`: the
    L1/L2 penalties apply to it (weights, not biases). `frozen`: the train section's
    `freeze` keeps it as it starts (settled by check)."""

    name: str
    shape: tuple[int, ...]
    init: str  # a name in layers.init.INITIALISERS, or "auto" (settled by check)
    fan_in: int = 1
    fan_out: int = 1
    decay: bool = True
    frozen: bool = False


class ShapeError(Exception):
    """Raised by a shape rule; `check` turns it into a Diagnostic at the node's span with
    notes naming the layers that produced each operand and their types."""

    def __init__(self, message: str, help: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.help = help


class RandomSource(Protocol):
    """Supplies uniform [0, 1) noise of a value's shape (of static rank `rank`), reproducible
    from (seed, step, salt)."""

    def uniform_like(self, b: GraphBuilder, like: str, rank: int, salt: int) -> str: ...


@dataclass
class LowerCtx:
    """State handed to each layer's lowering: the builder, the mode and static types.

    A layer with non-trained state (batchnorm's running statistics) reads the state's
    current value from its `params` like a parameter and, when training, records the
    value that replaces it in `updates` (keyed by the state's graph name); the training
    step outputs it as `<name>.next`."""

    b: GraphBuilder
    mode: Mode
    types: dict[str, TensorType]
    rng: RandomSource | None = None
    salt: int = 0
    updates: dict[str, str] = field(default_factory=dict)

    @property
    def training(self) -> bool:
        return self.mode == "train"


SHARED = "shared."
"""What a layer's lowering finds the parameters of the node it shares (`LayerDef.shares`)
under: `shared.weight`."""

InferFn = Callable[[Sequence[TensorType], dict[str, Any]], TensorType]
ParamsFn = Callable[[Sequence[TensorType], dict[str, Any]], list[ParamSpec]]
FlopsFn = Callable[[Sequence[TensorType], TensorType, dict[str, Any]], int]
LowerFn = Callable[[LowerCtx, Node, Sequence[str], dict[str, str]], str]


def no_params(inputs: Sequence[TensorType], args: dict[str, Any]) -> list[ParamSpec]:
    return []


Values = Literal["values", "probabilities", "log_probabilities"]
"""What an activation's output holds: the checks of a classification loss read it (a
from-logits loss squashes probabilities twice; `nll` reads log-probabilities)."""


@dataclass(frozen=True)
class Activation:
    """Facts about an activation that other stages act on, so none of them lists names.

    `relu_like`: it passes about half of a zero-mean input, so a weight feeding only such
    layers starts He-initialised when its init is `auto`. `output`: what its values are."""

    relu_like: bool = False
    output: Values = "values"


@dataclass(frozen=True)
class LayerDef:
    """A layer: `arity` tensor inputs (None: two or more), its schema and its rules."""

    signature: Signature
    infer: InferFn
    lower: LowerFn
    params: ParamsFn = no_params
    state: ParamsFn = no_params
    """Non-trained tensors carried between steps (running statistics): not counted as
    parameters, not differentiated, saved in checkpoints and model.onnx."""
    flops: FlopsFn | None = None
    arity: int | None = 1
    doc: str = ""
    activation: Activation | None = None
    """Set on activations (elementwise or normalising): what they mean to other stages."""
    shares: str | None = None
    """The str argument naming a node whose parameters this layer also reads (dense's
    `tie`): lowering hands them to it as `shared.<param>`."""
    shared: ParamsFn = no_params
    """The parameters it reads from that node, by local name and shape (check compares)."""
    recent: tuple[str, ...] = ()
    """Arguments added since runs were first written: left out of the spec hash at their
    default, so a spec written before them keeps its hash (and its runs resume)."""
    token_ids: str | None = None
    """The int argument bounding the token ids its first input holds (embedding's `vocab`):
    the data and model.onnx's input metadata are checked against it."""


LAYERS: Registry[LayerDef] = Registry("layer")


def token_vocab(node: Node, value: str) -> int | None:
    """How many token ids `node` accepts when it reads `value` as ids; None when it does not
    (another layer, or `value` is not its first input)."""
    arg = LAYERS.get(node.layer).token_ids
    if arg is None or not node.inputs or node.inputs[0] != value:
        return None
    return arg_int(node.args, arg)


def output_values(layer: str) -> Values:
    """What `layer`'s output holds: an activation's `output`, plain values otherwise."""
    activation = LAYERS.get(layer).activation
    return "values" if activation is None else activation.output


def relu_like(layer: str) -> bool:
    """Whether `layer` is a ReLU-like activation (He init for the weights feeding it)."""
    activation = LAYERS.get(layer).activation
    return activation is not None and activation.relu_like
