"""Assemble the three graphs of a spec: train_step.onnx, eval_step.onnx and model.onnx.

All three lower the same typed model, so they agree by construction:
- train step: (params, optimizer state, step, seed, batch) -> (loss, metric sums, new
  params, new state); forward, our backward pass, penalties, schedule and update in-graph;
- eval step: (params, batch) -> (loss, metric sums), no dropout;
- model: batch inputs -> output, trained weights as initializers, no training inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from dnnspec.assemble.describe import carried_metadata, model_metadata, train_interface
from dnnspec.assemble.lower import lower_outputs
from dnnspec.assemble.passes import StepFacts, run_passes
from dnnspec.autodiff.engine import gradients
from dnnspec.check.shapes import TypedModel, param_name
from dnnspec.errors import error
from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.rng import FIRST_ROW, TableRandom
from dnnspec.ir import GRAPH_NAMES, Head, TrainSpec
from dnnspec.layers.base import LowerCtx, ParamSpec, TensorType
from dnnspec.metadata import ImageMeta, ModelMetadata
from dnnspec.schema import arg_float
from dnnspec.training.accumulate import GRAD_SUM, SAMPLES, accumulate, state_kinds, update_timing
from dnnspec.training.augment import augment
from dnnspec.training.clip import CLIPPING
from dnnspec.training.losses import LOSSES, LossOut, loss_out
from dnnspec.training.metrics import IGNORE, METRICS, binary_confusion, confusion
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.preprocess import MATCH, Affine, Preprocessing
from dnnspec.training.regularize import REGULARIZERS
from dnnspec.training.schedules import LR_FACTOR, SCHEDULES, Timing

STEP, SEED, TARGET, LOSS, OUTPUT = GRAPH_NAMES
CONFUSION = "eval/confusion"
"""Eval-step output of class models: [true, predicted] counts, for confusion.csv."""


def confusion_name(output: str) -> str:
    """The eval-step output of one class output's counts (`eval/confusion/digit`)."""
    return f"{CONFUSION}/{output}" if output else CONFUSION


@dataclass(frozen=True)
class Trained:
    """One trained output and the names it has in the step graphs: a model's one unnamed
    output reads `target` and is `loss`; a named output `digit` reads `target/digit` and
    adds `loss/digit` (its unweighted loss) beside `loss`, the weighted total."""

    head: Head
    type: TensorType
    classes: int | None
    scale: Affine | None = None
    """`scale_target`'s fit: the loss reads scaled targets, the metrics unscaled outputs."""

    @property
    def name(self) -> str:
        """Its name in model.onnx."""
        return self.head.output or OUTPUT

    @property
    def target(self) -> str:
        return f"{TARGET}/{self.head.output}" if self.head.output else TARGET

    @property
    def loss(self) -> str:
        return f"{LOSS}/{self.head.output}" if self.head.output else LOSS

    def metric_keys(self) -> list[str]:
        """Its metrics as the records name them: `digit_accuracy` (`accuracy` unnamed)."""
        return [self.head.prefix + m.name for m in self.head.metrics]

    @property
    def binary(self) -> bool:
        """One 0/1 unit per sample ([N, 1] under a loss of 0/1 targets): a binary classifier."""
        return LOSSES.get(self.head.loss.name).target == "binary" and self.type.dims[1:] == (1,)

    @property
    def counted(self) -> bool:
        """Whether the eval step counts its [true, predicted] classes (confusion.csv)."""
        return self.classes is not None or self.binary


def trained_outputs(
    typed: TypedModel,
    train: TrainSpec,
    classes: int | None,
    targets: Mapping[str, Affine] | None = None,
) -> list[Trained]:
    """Every output with its loss, type and class count (`classes` is the count of a
    model's one unnamed output, as the data gave it) and its target scaling (`targets`,
    by output name)."""
    found = []
    for head in train.trained():
        out = typed.outputs.get(head.output, typed.output)
        count = classes
        if head.output:
            last = out.dims[-1] if out.dims else None
            is_class = LOSSES.get(head.loss.name).target == "class"
            count = last if is_class and isinstance(last, int) else None
        found.append(Trained(head, out, count, (targets or {}).get(head.output)))
    return found


@dataclass(frozen=True)
class Slot:
    """One parameter tensor and the state kept beside it: the optimizer's, and under
    `accumulate` its gradient sum (`grad_sum`)."""

    name: str
    spec: ParamSpec
    state: tuple[str, ...] = ()

    def state_name(self, kind: str) -> str:
        return f"{self.name}.{kind}"

    def names(self) -> list[str]:
        """The parameter followed by its state tensors: what a train step carries over."""
        return [self.name, *(self.state_name(k) for k in self.state)]


def next_name(name: str) -> str:
    """The train-step output that replaces input `name` after one update."""
    return f"{name}.next"


@dataclass
class Program:
    """Everything the runtime needs to drive a spec's graphs. `slots` are the trained
    parameters (with their optimizer state), `buffers` the frozen parameters and the
    layers' non-trained state (batchnorm's running statistics): carried and checkpointed
    alike, but only `slots` are differentiated and updated by the optimizer."""

    typed: TypedModel
    train: TrainSpec
    classes: int | None
    slots: list[Slot]
    metric_names: list[str]
    """Record keys of the metrics (`digit_accuracy`), each a `metric.<key>` output."""
    train_step: onnx.ModelProto
    eval_step: onnx.ModelProto
    float_dtype: str = "float32"
    metadata: ModelMetadata = field(default_factory=ModelMetadata)
    """What model.onnx will say about itself (the data's facts are added by preparation)."""
    buffers: list[Slot] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    accumulators: list[str] = field(default_factory=list)
    """Carried scalars of `accumulate` (the samples summed), zero at the start."""
    start: dict[str, np.ndarray] = field(default_factory=dict)
    """Parameters that start from earlier weights (`init from(...)`) instead of their
    initialiser, by name: read by data preparation, used by `initial_values`."""
    preprocess: Preprocessing | None = None
    """Fitted input preprocessing: the graphs read transformed data, model.onnx raw data."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Files written beside model.onnx, by name (a text model's tokenizer.json)."""
    outputs: list[Trained] = field(default_factory=list)

    def metric_info(self) -> dict[str, tuple[str, str]]:
        """Record key -> (metric, output name) of every metric the step graphs emit; a
        named output's own loss is `(LOSS, name)` under `<name>_loss`."""
        info: dict[str, tuple[str, str]] = {}
        for out in self.outputs:
            if out.head.output:
                info[f"{out.head.prefix}{LOSS}"] = (LOSS, out.head.output)
            for metric, key in zip(out.head.metrics, out.metric_keys(), strict=True):
                info[key] = (metric.name, out.head.output)
        return info

    def scalar_outputs(self) -> dict[str, str]:
        """Record key -> step-graph output of each per-batch statistic besides `loss`."""
        found = {}
        for out in self.outputs:
            if out.head.output:
                found[f"{out.head.prefix}{LOSS}"] = out.loss
            found |= {key: f"metric.{key}" for key in out.metric_keys()}
        return found

    def carried(self) -> list[str]:
        """Names of all tensors carried from one train step to the next."""
        slots = [n for s in self.slots for n in s.names()]
        return [*slots, *(s.name for s in self.buffers), *self.controls, *self.accumulators]

    def model_slots(self) -> list[Slot]:
        """What model.onnx holds: the parameters and the non-trained state."""
        return [*self.slots, *self.buffers]


def parameter_slots(typed: TypedModel, state: tuple[str, ...] = ()) -> list[Slot]:
    """The trained parameters (not the frozen ones), each with its optimizer state."""
    return [
        Slot(param_name(layer.node.name, p.name), p, state)
        for layer in typed.layers
        for p in layer.params
        if not p.frozen
    ]


def buffer_slots(typed: TypedModel) -> list[Slot]:
    """What the train step carries unchanged by the optimizer: the layers' non-trained
    state, and frozen parameters (no gradient, no optimizer state, no decay; the step
    hands them on as they came, and model.onnx holds them like any weight)."""
    frozen = [
        Slot(param_name(layer.node.name, p.name), p)
        for layer in typed.layers
        for p in layer.params
        if p.frozen
    ]
    state = [
        Slot(param_name(layer.node.name, s.name), s) for layer in typed.layers for s in layer.state
    ]
    return [*frozen, *state]


def _float_dtype(dtype: str, float_dtype: str) -> str:
    return float_dtype if dtype.startswith("float") else dtype


def _add_model_inputs(b: GraphBuilder, typed: TypedModel) -> dict[str, str]:
    names = {}
    for decl in typed.spec.model.inputs:
        names[decl.name] = b.add_input(
            decl.name, _float_dtype(decl.dtype, b.float_dtype.name), decl.dims
        )
    return names


def _add_params(
    b: GraphBuilder, slots: list[Slot], as_inputs: bool, values: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, str]]:
    """Parameters as graph inputs (step graphs) or initializers (the deployable model)."""
    by_node: dict[str, dict[str, str]] = {}
    for slot in slots:
        node, local = slot.name.rsplit(".", 1)
        if as_inputs:
            b.add_input(slot.name, b.float_dtype, slot.spec.shape)
        else:
            assert values is not None
            b.add_initializer(slot.name, values[slot.name].astype(b.float_dtype))
        by_node.setdefault(node, {})[local] = slot.name
    return by_node


def _target_inputs(b: GraphBuilder, outputs: list[Trained]) -> None:
    """One target input per trained output: class ids shaped like the output without its
    class axis, or values shaped like the output."""
    for out in outputs:
        if LOSSES.get(out.head.loss.name).target == "class":
            b.add_input(out.target, "int64", list(out.type.dims[:-1]))
        else:
            b.add_input(out.target, b.float_dtype, out.type.dims)


def metric_width(out: TensorType, classes: int | None) -> int:
    """What a metric's statistics are sized by: the classes, or the output's units."""
    last = out.dims[-1] if out.dims else 1
    return classes if classes is not None else (last if isinstance(last, int) else 1)


def _loss_and_metrics(
    b: GraphBuilder, outputs: list[Trained], values: dict[str, str]
) -> list[tuple[str, LossOut]]:
    """The graph output `loss` (the batch mean; with named outputs the weighted sum of
    their losses, each also output as `loss/<name>`) and one `metric.<key>` of summable
    statistics per metric. Returns each output's value and loss."""
    losses: list[tuple[str, LossOut]] = []
    terms = []
    for out in outputs:
        head, value = out.head, values[out.head.output]
        target, shown = out.target, value
        if out.scale is not None:  # the loss in scaled units, the metrics in the target's
            shift = b.const(out.scale.shift.astype(b.float_dtype))
            scale = b.const(out.scale.scale.astype(b.float_dtype))
            target = b.op("Mul", [b.op("Sub", [out.target, shift]), scale], hint="scaled_target")
            shown = unscale(b, value, out.scale)
        built = LOSSES.get(head.loss.name).build(b, value, target, out.classes, head.loss.args)
        loss = loss_out(built)
        losses.append((value, loss))
        if head.output:
            b.rename(loss.loss, out.loss)
            b.add_output(out.loss, b.float_dtype, [])
            weight = b.const(head.weight, hint=f"{head.output}_weight")
            terms.append(b.op("Mul", [out.loss, weight], hint=f"{head.output}_weighted"))
        else:
            terms.append(loss.loss)
        width = metric_width(out.type, out.classes)
        for metric, key in zip(head.metrics, out.metric_keys(), strict=True):
            definition = METRICS.get(metric.name).on(LOSSES.get(head.loss.name).target)
            args = dict(metric.args)
            if definition.target == "class":  # the loss's padding class counts nowhere
                args[IGNORE] = head.loss.args.get("ignore_index", -1)
            stats = definition.build(b, shown, out.target, width, args)
            b.rename(stats, f"metric.{key}")
            b.add_output(f"metric.{key}", b.float_dtype, list(definition.stats(width)))
    total = terms[0] if len(terms) == 1 else b.op("Sum", terms, hint="weighted_losses")
    b.rename(total, LOSS)
    b.add_output(LOSS, b.float_dtype, [])
    return losses


def build_train_step(
    typed: TypedModel,
    train: TrainSpec,
    classes: int | None,
    timing: Timing,
    float_dtype: str = "float32",
    emit_grads: bool = False,
    targets: Mapping[str, Affine] | None = None,
    sharded: bool = False,
) -> Program:
    """The training step; `emit_grads` also outputs each parameter's gradient (grad.<name>,
    of this micro-batch under `accumulate`); `sharded` adds the input FIRST_ROW, so a
    data-parallel worker's rows draw their global rows' dropout masks; `targets`:
    `scale_target`'s fit by output name; `timing` counts batches (micro-batches under
    `accumulate`)."""
    opt = OPTIMIZERS.get(train.optimizer.name)
    opt_args = train.optimizer.args
    every = train.accumulate
    slots = parameter_slots(typed, (*opt.state(opt_args), *state_kinds(every)))
    buffers = buffer_slots(typed)
    b = GraphBuilder("train_step", float_dtype)
    b.reserve(LOSS)
    params = _add_params(b, [*slots, *buffers], as_inputs=True)
    for slot in slots:
        for kind in slot.state:
            b.add_input(slot.state_name(kind), b.float_dtype, slot.spec.shape)
    accumulators = [b.add_input(SAMPLES, b.float_dtype, [])] if every > 1 else []
    b.add_input(STEP, "int64", [])
    b.add_input(SEED, "int64", [])
    inputs = _add_model_inputs(b, typed)
    outputs = trained_outputs(typed, train, classes, targets)
    _target_inputs(b, outputs)

    rng = TableRandom(b, SEED, STEP, b.add_input(FIRST_ROW, "int64", []) if sharded else None)
    if train.augment:
        inputs = _augmented(b, typed, train, inputs, rng)
    ctx = LowerCtx(b, "train", typed.types, rng=rng)
    values = lower_outputs(typed, ctx, inputs, params)
    for buffer in buffers:
        updated = ctx.updates.get(buffer.name) or b.op("Identity", [buffer.name])
        b.rename(updated, next_name(buffer.name))
        b.add_output(next_name(buffer.name), b.float_dtype, buffer.spec.shape)
    losses = _loss_and_metrics(b, outputs, values)
    grads = gradients(b, _loss_seed(b, outputs, losses), [s.name for s in slots])
    clipped, updates, acc = grads, STEP, None
    if every > 1:  # the update sees the group's mean gradient and counts updates
        sums = {s.name: s.state_name(GRAD_SUM) for s in slots}
        first = inputs[typed.spec.model.inputs[0].name]
        acc = accumulate(b, grads, sums, first, STEP, every, timing.steps_per_epoch)
        clipped, updates = acc.grads, acc.updates
        b.rename(acc.reset_when_applied(b, acc.samples), next_name(SAMPLES))
        b.add_output(next_name(SAMPLES), b.float_dtype, [])
    if train.clip is not None:
        clipped = CLIPPING.get(train.clip.name).build(b, clipped, train.clip.args)

    timing = update_timing(timing, every)
    step_f = b.op("Cast", [updates], hint="step_f", to=b.float_elem)
    sched = SCHEDULES.get(train.schedule.name)
    factor = sched.build(b, step_f, train.schedule.args, timing)
    controls = []
    if sched.host_fed:
        controls.append(b.add_input(LR_FACTOR, b.float_dtype, []))
        b.add_output(
            b.op("Identity", [LR_FACTOR], outputs=[next_name(LR_FACTOR)]), b.float_dtype, []
        )
        factor = b.op("Mul", [factor, LR_FACTOR], hint="fed_factor")
    lr = b.op("Mul", [factor, b.const(arg_float(opt_args, "lr"))], hint="lr")
    scalars = opt.prepare(b, step_f, lr, opt_args)
    for slot in slots:
        grad = grads[slot.name]
        if emit_grads:
            b.add_output(
                b.op("Identity", [grad], outputs=[f"grad.{slot.name}"]),
                b.float_dtype,
                slot.spec.shape,
            )
        grad = clipped[slot.name]
        if slot.spec.decay:
            for reg in train.regularize:
                term = REGULARIZERS.get(reg.name).grad(b, slot.name, reg.args)
                grad = b.op("Add", [grad, term])
        state = {kind: slot.state_name(kind) for kind in slot.state if kind != GRAD_SUM}
        args = opt_args if slot.spec.decay else {**opt_args, "weight_decay": 0.0}
        new_param, new_state = opt.update(b, slot.name, grad, state, scalars, args)
        if acc is not None:  # the parameter and its state change on a group's last batch
            new_param = acc.keep_unless_applied(b, new_param, slot.name)
            new_state = {k: acc.keep_unless_applied(b, v, state[k]) for k, v in new_state.items()}
            state[GRAD_SUM] = slot.state_name(GRAD_SUM)
            new_state[GRAD_SUM] = acc.reset_when_applied(b, acc.sums[slot.name])
        for name, value in [(slot.name, new_param), *((state[k], v) for k, v in new_state.items())]:
            b.rename(value, next_name(name))
            b.add_output(next_name(name), b.float_dtype, slot.spec.shape)

    run_passes(b, "train_step", StepFacts(scalars["lr"], {s.name: s.spec.shape for s in slots}))
    metadata = model_metadata(typed, train, classes)
    step_meta = metadata.model_copy(update={"carried": carried_metadata(slots, buffers)}, deep=True)
    step_graph = b.model(step_meta.to_props(), "dnnspec training step")
    step_meta.interface = train_interface(step_graph, typed, train, slots, buffers, timing, outputs)
    step_meta.write(step_graph)
    return Program(
        typed,
        train,
        classes,
        slots,
        [k for out in outputs for k in out.metric_keys()],
        train_step=step_graph,
        eval_step=build_eval_step(typed, train, classes, [*slots, *buffers], float_dtype, targets),
        float_dtype=float_dtype,
        metadata=metadata,
        buffers=buffers,
        controls=controls,
        outputs=outputs,
        accumulators=accumulators,
    )


def _augmented(
    b: GraphBuilder, typed: TypedModel, train: TrainSpec, inputs: dict[str, str], rng: TableRandom
) -> dict[str, str]:
    """The first input with the train section's augmentations applied: an image batch
    [N, C, H, W] of float pixels and static height and width (else a located error)."""
    decl = typed.spec.model.inputs[0]
    height, width = decl.dims[2:] if len(decl.dims) == 4 else (None, None)
    if not (decl.dtype.startswith("float") and isinstance(height, int) and isinstance(width, int)):
        dims = ", ".join(map(str, decl.dims))
        raise error(
            f"augment transforms images [N, C, H, W] of float pixels, but input "
            f"'{decl.name}' is {decl.dtype}[{dims}]",
            train.augment[0].span,
            help="declare the image input as float32[N, channels, height, width]",
        )
    calls = [(call.name, call.args) for call in train.augment]
    return {**inputs, decl.name: augment(b, inputs[decl.name], (height, width), calls, rng)}


def _loss_seed(
    b: GraphBuilder, outputs: list[Trained], losses: list[tuple[str, LossOut]]
) -> dict[str, str]:
    """Where the engine starts: d loss = 1, unless every loss wrote its own gradient
    (then each output is seeded with it, times its weight: several outputs that are one
    value add up)."""
    if not all(loss.vjp for _, loss in losses):
        return {LOSS: b.const(1.0, hint="d_loss")}
    seed: dict[str, str] = {}
    for out, (value, loss) in zip(outputs, losses, strict=True):
        assert loss.vjp is not None
        grad = loss.vjp()
        if out.head.output:
            grad = b.op("Mul", [grad, b.const(out.head.weight)], hint="d_weighted")
        seed[value] = b.op("Add", [seed[value], grad]) if value in seed else grad
    return seed


def build_eval_step(
    typed: TypedModel,
    train: TrainSpec,
    classes: int | None,
    slots: list[Slot],
    float_dtype: str = "float32",
    targets: Mapping[str, Affine] | None = None,
) -> onnx.ModelProto:
    """Loss and metric sums of a batch with the current parameters (and non-trained
    state), without dropout."""
    b = GraphBuilder("eval_step", float_dtype)
    b.reserve(LOSS)
    params = _add_params(b, slots, as_inputs=True)
    inputs = _add_model_inputs(b, typed)
    outputs = trained_outputs(typed, train, classes, targets)
    _target_inputs(b, outputs)
    values = lower_outputs(typed, LowerCtx(b, "eval", typed.types), inputs, params)
    _loss_and_metrics(b, outputs, values)
    for out in outputs:
        name, value = confusion_name(out.head.output), values[out.head.output]
        if out.classes is not None:
            ignore = {IGNORE: out.head.loss.args.get("ignore_index", -1)}
            b.rename(confusion(b, value, out.target, out.classes, ignore), name)
            b.add_output(name, b.float_dtype, [out.classes, out.classes])
        elif out.binary:
            b.rename(binary_confusion(b, value, out.target), name)
            b.add_output(name, b.float_dtype, [2, 2])
    run_passes(b, "eval_step")
    return b.model(model_metadata(typed, train, classes).to_props(), "dnnspec evaluation step")


def build_inference(
    typed: TypedModel,
    slots: list[Slot],
    values: dict[str, np.ndarray],
    metadata: ModelMetadata,
    preprocess: Preprocessing | None = None,
) -> onnx.ModelProto:
    """The deployable model: inputs -> `output`, weights (and running statistics) baked in
    as initializers; `slots` are the program's `model_slots()`. The fitted preprocessing
    runs first, so the model takes raw features (decoded uint8 pixels, for images); a
    scaled target's output is unscaled last, so the model predicts in the target's units."""
    b = GraphBuilder(typed.spec.model.name, "float32")
    for name in [OUTPUT, *(o.name for o in typed.spec.model.outputs)]:
        b.reserve(name)
    params = _add_params(b, slots, as_inputs=False, values=values)
    if preprocess is not None and preprocess.transforms_columns():
        decl = typed.spec.model.inputs[0]
        raw = b.add_input(decl.name, "float32", [decl.dims[0], preprocess.width])
        inputs = {decl.name: _preprocess(b, raw, preprocess)}
    elif metadata.image is not None:
        inputs = {metadata.image.input: _pixels(b, typed, metadata.image)}
    else:
        inputs = _add_model_inputs(b, typed)
    outs = lower_outputs(typed, LowerCtx(b, "eval", typed.types), inputs, params)
    for name, target in (preprocess.targets if preprocess is not None else {}).items():
        outs[name] = unscale(b, outs[name], target)
    for name, value in outs.items():
        if value in inputs.values() or list(outs.values()).count(value) > 1:
            value = b.op("Identity", [value])  # an input, or one value under two names
        out = name or OUTPUT
        b.rename(value, out)
        b.add_output(out, "float32", typed.outputs[name].dims)
    run_passes(b, "model")
    return b.model(metadata.to_props(), f"dnnspec model {typed.spec.model.name}")


def unscale(b: GraphBuilder, value: str, scale: Affine) -> str:
    """A scaled output in the target's units: value / scale + shift (the same nodes in the
    step graphs' metrics and in model.onnx, so they agree to the bit)."""
    inverse = b.const((1.0 / scale.scale).astype(b.float_dtype))
    return b.op("Add", [b.op("Mul", [value, inverse]), b.const(scale.shift.astype(b.float_dtype))])


def _pixels(b: GraphBuilder, typed: TypedModel, image: ImageMeta) -> str:
    """model.onnx's image input, uint8 [N, H, W, C] as a decoder gives it, as the float32
    [N, C, H, W] x scale training read: Cast, Transpose and Mul by the same float32 constant
    the reader used, so the model sees the training values to the bit."""
    decl = next(d for d in typed.spec.model.inputs if d.name == image.input)
    height, width = image.size
    raw = b.add_input(decl.name, "uint8", [decl.dims[0], height, width, image.channels])
    floats = b.op("Cast", [raw], hint="pixels", to=onnx.TensorProto.FLOAT)
    planar = b.op("Transpose", [floats], hint="pixels", perm=[0, 3, 1, 2])
    return b.op("Mul", [planar, b.const(np.float32(image.scale))], hint="pixels")


def _preprocess(b: GraphBuilder, x: str, prep: Preprocessing) -> str:
    """The fitted steps as nodes: imputation as Where(IsNaN(x) and imputed, fill, x), Sub/Mul
    per scaling step, then the one-hot expansion as one Gather of the raw column each
    feature reads, |value - category| < 0.5 for the indicators and a Where that keeps the
    plain columns, and the missing indicators (gathered from IsNaN) appended. Equal-19 and
    Cast-21 are avoided: onnx2torch lacks them, and these ops run the same in every runtime
    we test."""
    missing = b.op("IsNaN", [x], hint="impute") if prep.impute else ""
    indicated, flags = prep.indicated(), ""
    if indicated:
        flags = b.op("Where", [missing, b.const(np.float32(1)), b.const(np.float32(0))])
        flags = b.op("Gather", [flags, b.const(np.array(indicated), "int64")], axis=1)
    if prep.impute:
        fill, imputed = np.zeros(prep.width, np.float32), np.zeros(prep.width, bool)
        for filling in prep.impute:
            fill[list(filling.columns)], imputed[list(filling.columns)] = filling.fill, True
        gaps = b.op("And", [missing, b.const(imputed, "bool")], hint="impute")
        x = b.op("Where", [gaps, b.const(fill), x], hint="impute")
    for step in prep.scale:
        shifted = b.op("Sub", [x, b.const(step.shift.astype(np.float32))], hint=step.name)
        x = b.op("Mul", [shifted, b.const(step.scale.astype(np.float32))], hint=step.name)
    if prep.one_hot:
        source, hot, value = prep.expansion()
        picked = b.op("Gather", [x, b.const(source, "int64")], hint="one_hot", axis=1)
        distance = b.op("Abs", [b.op("Sub", [picked, b.const(value.astype(np.float32))])])
        near = b.op("Less", [distance, b.const(np.float32(MATCH))], hint="one_hot")
        indicator = b.op("Where", [near, b.const(np.float32(1)), b.const(np.float32(0))])
        x = b.op("Where", [b.const(hot, "bool"), indicator, picked], hint="one_hot")
    return b.op("Concat", [x, flags], axis=1) if indicated else x
