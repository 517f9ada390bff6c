"""What a dnnspec graph says about itself: one typed record of its `dnnspec.*` metadata.

Every graph dnnspec writes (model.onnx, the train and eval steps, exported files) carries
ONNX `metadata_props` under `dnnspec.<field>` keys, one per field of `ModelMetadata`: text
fields as they are, everything else as JSON. Assembly, training and export build the record
and write it with `write`/`to_props`; every reader goes through `from_model`, which checks
each key against its type, so a foreign, damaged or hostile file is one located diagnostic
naming the key, never a traceback in the code that reads it.

`format_version` says which layout a file holds. Files of the first layout predate the key
(an absent key reads as 1); a file from a newer dnnspec is refused with a message saying so.
A change to the layout that older readers would misread raises `FORMAT_VERSION`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from dnnspec.errors import DiagnosticError, error

if TYPE_CHECKING:  # only its protobuf is read: importing onnx is left to the callers
    import onnx

FORMAT_VERSION = 1
"""The metadata layout this dnnspec writes and the newest it reads."""

PREFIX = "dnnspec."

Dim = int | str
"""A dimension: a size, or a symbolic name (`N`)."""

DType = Literal["float32", "float64", "int64", "int32", "bool", "uint8"]


class Record(BaseModel):
    """A JSON record of the metadata: strict types (a bool is no count, "3" no number). A
    field with a default is left out when None; a required one is written even as null."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True)

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, info in type(self).model_fields.items():
            if not info.is_required() and getattr(self, name) is None:
                data.pop(name, None)
        return data


class OpenRecord(Record):
    """A record whose further keys depend on a kind field (a step's, a role's): kept as read."""

    model_config = ConfigDict(extra="allow")


class InputMeta(Record):
    """A model input as declared: name, dtype and shape (sizes at least 1)."""

    name: str
    dtype: DType
    shape: Annotated[list[Annotated[int, Field(ge=1)] | str], Field(min_length=1)]
    vocab: Annotated[int, Field(ge=1)] | None = None
    """Token ids must lie in [0, vocab) when embeddings read this input."""
    columns: list[str] | None = None
    """A model of several inputs trained on a table: the columns this input read, by name
    (a prediction file's columns are picked by them)."""


class OutputMeta(Record):
    """A named output: its shape and, when trained, its loss, weight and class names."""

    name: str
    shape: list[Dim] | None = None
    loss: str | None = None
    """The loss it was trained with (how `predict --proba` reads its scores)."""
    weight: float | None = None
    class_labels: Annotated[list[str], Field(min_length=1)] | None = None


class ParameterMeta(Record):
    """A trained parameter: its graph name, layer node and parameter name apart (block
    node names hold dots)."""

    name: str
    node: str
    param: str


class CarriedMeta(ParameterMeta):
    """A tensor the train step carries: `parameter`, an optimizer state kind, `state`
    (a layer's non-trained state, such as running statistics) or `frozen` (a parameter
    the train section's `freeze` keeps as it starts)."""

    kind: str


class TensorMeta(Record):
    """A graph input or output as ONNX types it."""

    name: str
    dtype: str
    shape: list[Dim]


class OutputRole(Record):
    """What an exported graph output holds: `role` is `logits` (scores a softmax or sigmoid
    turns into probabilities), `log_probabilities`, `values`, `probabilities`, `labels`
    (int64 class ids, or 0/1 per unit) or `class_names` (strings); `output` is the model
    output it comes from, `how` the computation in words."""

    name: str
    output: str
    role: str
    how: str | None = None


class InterfaceTensor(TensorMeta, OpenRecord):
    """A train-step input or output and its role (docs/training-graph.md); the role's own
    keys (`node`, `param`, `kind`, `replaces`, ...) follow."""

    role: str


class OptimizerMeta(Record):
    name: str
    state: list[str]


class LossTerm(Record):
    output: str
    name: str
    target: str
    weight: float


class LossMeta(Record):
    """The loss and its target kind, or for named outputs the weighted sum's terms."""

    name: str
    target: str | None = None
    terms: list[LossTerm] | None = None


class Interface(Record):
    """`dnnspec.interface`: what a driver needs to run a train step outside dnnspec."""

    inputs: list[InterfaceTensor]
    outputs: list[InterfaceTensor]
    step_starts_at: int
    seed: int
    batch: int
    epochs: int
    steps_per_epoch: int | None
    total_steps: int | None
    optimizer: OptimizerMeta
    schedule: str
    loss: LossMeta

    def carried(self) -> list[str]:
        """The inputs a driver carries from step to step (parameters, state, controls)."""
        data_roles = ("step", "seed", "input", "target", "first_row")
        return [t.name for t in self.inputs if t.role not in data_roles]


class PreprocessStep(OpenRecord):
    """A fitted preprocessing step (`standardize`'s shift and scale, `one_hot`'s column
    and categories, ...)."""

    column: int | None = None
    step: str


class ColumnStep(OpenRecord):
    """What is done to one raw column, in the terms of the step's definition."""

    step: str
    categories: list[str] | None = None

    @model_validator(mode="after")
    def _one_hot_has_categories(self) -> ColumnStep:
        if self.step == "one_hot" and self.categories is None:
            raise ValueError("a one_hot step lists its categories")
        return self


class ColumnMeta(Record):
    name: str | None
    steps: list[ColumnStep]


class CsvLayout(Record):
    """Where the training CSV held the inputs and the target."""

    width: int
    header: list[str] | None
    features: list[int]
    target: int
    target_name: str | None

    @model_validator(mode="after")
    def _within_width(self) -> CsvLayout:
        if not all(0 <= f < self.width for f in self.features) or not 0 <= self.target < self.width:
            raise ValueError("a column lies outside the CSV's width")
        return self


class ImageMeta(Record):
    """`dnnspec.image`: model.onnx of a model trained on images takes decoded pixels as a
    deployer has them, `uint8 [N, height, width, channels]` (channels last, 1 grey or 3
    RGB), and turns them into the `[N, channels, height, width]` floats it was trained on:
    pixel x `scale` (1/255, so [0, 1])."""

    input: str
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    size: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)]
    channels: Literal[1, 3]
    scale: float


class AudioMeta(Record):
    """`dnnspec.audio`: model.onnx of a model trained on audio clips takes float32 waveforms
    `[N, samples]` in [-1, 1], mono, sampled at `sample_rate` (`dnnspec predict` resamples a
    WAV file at another rate to it)."""

    input: str
    sample_rate: Annotated[int, Field(ge=1)]
    samples: Annotated[int, Field(ge=1)]


class TextMeta(Record):
    """`dnnspec.text`: model.onnx of a model trained on texts takes token ids `int64 [N,
    length]` (id 0 pads), made by the tokenizer saved beside it (`tokenizer`, a standard
    tokenizer.json that pads and truncates to `length` itself); `lengths`, the input that
    takes each text's count of real ids (int64 [N]), where the model has one."""

    input: str
    tokenizer: str
    kind: Literal["bpe", "wordpiece"]
    length: Annotated[int, Field(ge=1)]
    pad_id: Literal[0] = 0
    lengths: str | None = None


class Expects(Record):
    """`dnnspec.expects`: the raw columns in order with what is done to each, the features
    the network sees, the class names and the training CSV's layout (runtime/columns.py)."""

    input: str
    width: int
    columns: list[ColumnMeta]
    features: list[str]
    classes: list[str] | None
    unknown_category: str
    csv: CsvLayout | None = None

    @model_validator(mode="after")
    def _csv_matches_columns(self) -> Expects:
        if self.csv is not None and len(self.csv.features) != len(self.columns):
            raise ValueError("the CSV's features are not the columns")
        return self


MESSAGES = {
    "class_labels": "is not a list of labels",
    "vocab": "is not a list of tokens",
    "context": "is not a length",
}
"""How a bad value of a key is described, where "is malformed" would say less."""

TEXT = frozenset({"model", "spec_hash", "loss", "precision"})
"""Fields stored as the text itself; the others are JSON."""

PYDANTIC_JSON = frozenset({"spec"})
"""JSON fields written as pydantic writes a model (compact, `1e-8`), not as `json.dumps`:
the resolved spec's text is what `Spec.model_dump_json` wrote before the record existed."""


def _prop_text(name: str, value: Any) -> str:
    if name in TEXT:
        return str(value)
    if name in PYDANTIC_JSON:
        return pydantic_core.to_json(value).decode()
    return json.dumps(value)


class ModelMetadata(Record):
    """Every `dnnspec.*` metadata key of a graph; None where a graph has no such key."""

    format_version: int = FORMAT_VERSION
    model: str | None = None
    """The spec's model name."""
    parameters: list[ParameterMeta] | None = None
    inputs: list[InputMeta] | None = None
    output_shape: list[Dim] | None = None
    """The shape of a model's one unnamed output."""
    spec_hash: str | None = None
    """A digest of the resolved spec's meaning (`assemble.describe.spec_hash`)."""
    class_labels: Annotated[list[str], Field(min_length=1)] | None = None
    """The class names of a class model's one output, in id order."""
    loss: str | None = None
    outputs: list[OutputMeta] | None = None
    """Named outputs, in graph order (absent for one unnamed `output`)."""
    carried: list[CarriedMeta] | None = None
    """Train step: every tensor it carries."""
    interface: Interface | None = None
    """Train step: every input and output with its role, and the run's step counts."""
    preprocess: list[PreprocessStep] | None = None
    """The fitted preprocessing model.onnx applies to its raw input, in order."""
    vocab: Annotated[list[str], Field(min_length=1)] | None = None
    """What each token id means, for a model trained on text (`dnnspec generate`)."""
    context: Annotated[int, Field(ge=0)] | None = None
    """The sequence length a text model was trained on."""
    expects: Expects | None = None
    audio: AudioMeta | None = None
    """A model trained on audio clips: the waveforms model.onnx takes."""
    image: ImageMeta | None = None
    """A model trained on images: model.onnx takes uint8 pixels, channels last."""
    text: TextMeta | None = None
    """A model trained on texts: model.onnx takes token ids, the tokenizer file beside it."""
    spec: dict[str, Any] | None = None
    """Exported files: the resolved spec, data paths pinned."""
    trained: bool | None = None
    precision: str | None = None
    opset: int | None = None
    graph_inputs: list[TensorMeta] | None = None
    graph_outputs: list[TensorMeta] | None = None
    output_roles: list[OutputRole] | None = None
    """Exported files: what each graph output holds (`dnnspec export --outputs`)."""

    @field_validator("expects")
    @classmethod
    def _expects_fits_input(cls, value: Expects | None, info: ValidationInfo) -> Expects | None:
        """The columns are the declared input's: a [N, F] input of F columns."""
        inputs: list[InputMeta] | None = info.data.get("inputs")
        if value is None or not inputs:
            return value
        shape = next((i.shape for i in inputs if i.name == value.input), inputs[0].shape)
        if len(shape) != 2 or (isinstance(shape[1], int) and len(value.columns) != shape[1]):
            raise ValueError("the columns are not the input's")
        return value

    def to_props(self) -> dict[str, str]:
        """The metadata_props entries, in field order."""
        data = self.model_dump(mode="json")
        return {PREFIX + name: _prop_text(name, value) for name, value in data.items()}

    def write(self, model: onnx.ModelProto) -> None:
        """Replace `model`'s dnnspec metadata by this record (other keys are kept)."""
        kept = [(p.key, p.value) for p in model.metadata_props if p.key not in KEYS]
        del model.metadata_props[:]
        for key, value in [*kept, *self.to_props().items()]:
            model.metadata_props.add(key=key, value=value)

    @classmethod
    def from_model(cls, model: onnx.ModelProto, path: Path | str) -> ModelMetadata:
        """The checked record of `model` (read from `path`): keys it lacks are None, and a
        value that is not its field's type, or a newer format, is a diagnostic."""
        return cls.from_props({p.key: p.value for p in model.metadata_props}, path)

    @classmethod
    def from_props(cls, props: dict[str, str], path: Path | str) -> ModelMetadata:
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = PREFIX + name
            if key not in props:
                continue
            if name in TEXT:
                values[name] = props[key]
                continue
            try:
                values[name] = json.loads(props[key])
            except ValueError:
                raise not_ours(path, f"its metadata '{key}' is missing or not JSON") from None
        version = values.get("format_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise not_ours(path, f"its metadata '{PREFIX}format_version' is malformed")
        if version > FORMAT_VERSION:
            raise newer(path, version)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            name = str(exc.errors()[0]["loc"][0])
            why = MESSAGES.get(name, "is malformed")
            raise not_ours(path, f"its metadata '{PREFIX}{name}' {why}") from None


KEYS = frozenset(PREFIX + name for name in ModelMetadata.model_fields)


def not_ours(path: Path | str, why: str) -> DiagnosticError:
    """A file that is not (or no longer) a graph dnnspec wrote, and why."""
    return error(
        f"'{path}' is not a model written by dnnspec: {why}",
        help="pass a run directory written by `dnnspec train` (or `dnnspec compile`)",
    )


def newer(path: Path | str, version: int) -> DiagnosticError:
    """A file whose metadata layout this dnnspec predates: upgrading is the way on."""
    return error(
        f"'{path}' was written by a newer dnnspec (metadata format {version}; this one reads "
        f"format {FORMAT_VERSION} and older)",
        help="upgrade dnnspec to read it (`pip install --upgrade dnnspec`)",
    )
