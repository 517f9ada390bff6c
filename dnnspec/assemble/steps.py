"""Assemble the three graphs of a spec: train_step.onnx, eval_step.onnx and model.onnx.

All three lower the same typed model, so they agree by construction:
- train step: (params, optimizer state, step, seed, batch) -> (loss, metric sums, new
  params, new state); forward, our backward pass, penalties, schedule and update in-graph;
- eval step: (params, batch) -> (loss, metric sums), no dropout;
- model: batch inputs -> output, trained weights as initializers, no training inputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from dnnspec.assemble.fuse import fold_gemm_updates
from dnnspec.autodiff.engine import gradients
from dnnspec.check.shapes import TypedModel, param_name
from dnnspec.data.datasets import DATASETS
from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.rng import HashRandom
from dnnspec.ir import GRAPH_NAMES, TrainSpec
from dnnspec.layers.base import LowerCtx, ParamSpec
from dnnspec.lower.model import lower_model
from dnnspec.schema import arg_float, arg_int
from dnnspec.training.clip import CLIPPING
from dnnspec.training.losses import LOSSES, LossOut, loss_out
from dnnspec.training.metrics import IGNORE, METRICS, confusion
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.preprocess import MATCH, Preprocessing
from dnnspec.training.regularize import REGULARIZERS
from dnnspec.training.schedules import LR_FACTOR, SCHEDULES, Timing, UnknownTiming

STEP, SEED, TARGET, LOSS, OUTPUT = GRAPH_NAMES
CONFUSION = "eval/confusion"
"""Eval-step output of class models: [true, predicted] counts, for confusion.csv."""


@dataclass(frozen=True)
class Slot:
    """One parameter tensor and the optimizer state kept beside it."""

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
    parameters (with their optimizer state), `buffers` the layers' non-trained state
    (batchnorm's running statistics): carried and checkpointed alike, but only `slots`
    are differentiated and updated by the optimizer."""

    typed: TypedModel
    train: TrainSpec
    classes: int | None
    slots: list[Slot]
    metric_names: list[str]
    train_step: onnx.ModelProto
    eval_step: onnx.ModelProto
    float_dtype: str = "float32"
    metadata: dict[str, str] = field(default_factory=dict)
    buffers: list[Slot] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    preprocess: Preprocessing | None = None
    """Fitted input preprocessing: the graphs read transformed data, model.onnx raw data."""
    """Scalars the host sets between epochs (a plateau schedule's factor, 1 at the start),
    carried and checkpointed like state but in no model."""

    def carried(self) -> list[str]:
        """Names of all tensors carried from one train step to the next."""
        slots = [n for s in self.slots for n in s.names()]
        return [*slots, *(s.name for s in self.buffers), *self.controls]

    def model_slots(self) -> list[Slot]:
        """What model.onnx holds: the parameters and the non-trained state."""
        return [*self.slots, *self.buffers]


def parameter_slots(typed: TypedModel, state: tuple[str, ...] = ()) -> list[Slot]:
    return [
        Slot(param_name(layer.node.name, p.name), p, state)
        for layer in typed.layers
        for p in layer.params
    ]


def buffer_slots(typed: TypedModel) -> list[Slot]:
    return [
        Slot(param_name(layer.node.name, s.name), s) for layer in typed.layers for s in layer.state
    ]


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


def _target_input(b: GraphBuilder, typed: TypedModel, target: str) -> str:
    out = typed.output
    if target == "class":
        return b.add_input(TARGET, "int64", list(out.dims[:-1]))
    return b.add_input(TARGET, b.float_dtype, out.dims)


def metric_width(typed: TypedModel, classes: int | None) -> int:
    """What a metric's statistics are sized by: the classes, or the output's units."""
    last = typed.output.dims[-1] if typed.output.dims else 1
    return classes if classes is not None else (last if isinstance(last, int) else 1)


def _loss_and_metrics(
    b: GraphBuilder, train: TrainSpec, output: str, classes: int | None, width: int
) -> tuple[LossOut, list[str]]:
    """The graph output `loss` (the batch mean) and one `metric.<name>` of summable
    statistics per metric."""
    loss = loss_out(LOSSES.get(train.loss.name).build(b, output, TARGET, classes, train.loss.args))
    b.rename(loss.loss, LOSS)
    b.add_output(LOSS, b.float_dtype, [])
    names = []
    for metric in train.metrics:
        definition = METRICS.get(metric.name)
        args = dict(metric.args)
        if definition.target == "class":  # the loss's padding class counts nowhere
            args[IGNORE] = train.loss.args.get("ignore_index", -1)
        value = definition.build(b, output, TARGET, width, args)
        name = f"metric.{metric.name}"
        b.rename(value, name)
        b.add_output(name, b.float_dtype, list(definition.stats(width)))
        names.append(metric.name)
    return loss, names


def build_train_step(
    typed: TypedModel,
    train: TrainSpec,
    classes: int | None,
    timing: Timing,
    float_dtype: str = "float32",
    emit_grads: bool = False,
) -> Program:
    """The training step; `emit_grads` also outputs each parameter's gradient (grad.<name>)."""
    opt = OPTIMIZERS.get(train.optimizer.name)
    opt_args = train.optimizer.args
    slots = parameter_slots(typed, opt.state(opt_args))
    buffers = buffer_slots(typed)
    b = GraphBuilder("train_step", float_dtype)
    b.reserve(LOSS)
    params = _add_params(b, [*slots, *buffers], as_inputs=True)
    for slot in slots:
        for kind in slot.state:
            b.add_input(slot.state_name(kind), b.float_dtype, slot.spec.shape)
    b.add_input(STEP, "int64", [])
    b.add_input(SEED, "int64", [])
    inputs = _add_model_inputs(b, typed)
    loss_def = LOSSES.get(train.loss.name)
    _target_input(b, typed, loss_def.target)

    ctx = LowerCtx(b, "train", typed.types, rng=HashRandom(b, SEED, STEP))
    output = lower_model(typed, ctx, inputs, params)
    for buffer in buffers:
        updated = ctx.updates.get(buffer.name) or b.op("Identity", [buffer.name])
        b.rename(updated, next_name(buffer.name))
        b.add_output(next_name(buffer.name), b.float_dtype, buffer.spec.shape)
    loss, metric_names = _loss_and_metrics(b, train, output, classes, metric_width(typed, classes))
    # the engine differentiates the loss nodes, unless the loss wrote its own gradient
    seed = {output: loss.vjp()} if loss.vjp else {LOSS: b.const(1.0, hint="d_loss")}
    grads = gradients(b, seed, [s.name for s in slots])
    clipped = grads
    if train.clip is not None:
        clipped = CLIPPING.get(train.clip.name).build(b, grads, train.clip.args)

    step_f = b.op("Cast", [STEP], hint="step_f", to=b.float_elem)
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
        state = {kind: slot.state_name(kind) for kind in slot.state}
        args = opt_args if slot.spec.decay else {**opt_args, "weight_decay": 0.0}
        new_param, new_state = opt.update(b, slot.name, grad, state, scalars, args)
        for name, value in [(slot.name, new_param), *((state[k], v) for k, v in new_state.items())]:
            b.rename(value, next_name(name))
            b.add_output(next_name(name), b.float_dtype, slot.spec.shape)

    fold_gemm_updates(b, scalars["lr"], {s.name: s.spec.shape for s in slots})
    b.prune()
    metadata = model_metadata(typed, train, classes)
    step_graph = b.model({**metadata, **carried_metadata(slots, buffers)}, "dnnspec training step")
    interface = train_interface(step_graph, typed, train, slots, buffers, timing)
    step_graph.metadata_props.add(key=INTERFACE, value=json.dumps(interface))
    return Program(
        typed,
        train,
        classes,
        slots,
        metric_names,
        train_step=step_graph,
        eval_step=build_eval_step(typed, train, classes, [*slots, *buffers], float_dtype),
        float_dtype=float_dtype,
        metadata=metadata,
        buffers=buffers,
        controls=controls,
    )


INTERFACE = "dnnspec.interface"
"""Train-step metadata: every input and output with its role, and the run's step counts
(docs/training-graph.md), as JSON for drivers in other languages and runtimes."""


def _value_info(info: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = info.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
    return {"name": info.name, "dtype": dtype, "shape": shape}


def train_interface(
    model: onnx.ModelProto,
    typed: TypedModel,
    train: TrainSpec,
    slots: list[Slot],
    buffers: list[Slot],
    timing: Timing,
) -> dict[str, Any]:
    """What a driver needs to run `model` (a train step) outside dnnspec: each input and
    output with dtype, shape and role; the schedule's step counts (None when the schedule
    does not use them and the program was compiled without counting the data)."""
    roles: dict[str, dict[str, Any]] = {STEP: {"role": "step"}, SEED: {"role": "seed"}}
    roles[LR_FACTOR] = {"role": "control", "initial": 1.0}
    roles[TARGET] = {"role": "target", "loss": train.loss.name}
    roles.update({d.name: {"role": "input"} for d in typed.spec.model.inputs})
    for slot in slots:
        node = slot.name[: -len(slot.spec.name) - 1]
        where = {"node": node, "param": slot.spec.name}
        roles[slot.name] = {"role": "parameter", **where}
        roles.update({slot.state_name(k): {"role": "optimizer_state", "kind": k, **where}
                      for k in slot.state})  # fmt: skip
    for buffer in buffers:
        node = buffer.name[: -len(buffer.spec.name) - 1]
        roles[buffer.name] = {"role": "layer_state", "node": node, "param": buffer.spec.name}
    inputs = [_value_info(i) | roles[i.name] for i in model.graph.input]
    carried = {i["name"] for i in inputs if i["role"] not in ("step", "seed", "input", "target")}
    outputs = []
    for o in model.graph.output:
        if o.name == LOSS:
            role: dict[str, Any] = {"role": "loss"}
        elif o.name.startswith("metric."):
            definition = METRICS.get(o.name.removeprefix("metric."))
            role = {"role": "metric", "per": definition.per}
        elif o.name.endswith(".next") and o.name.removesuffix(".next") in carried:
            role = {"role": "next", "replaces": o.name.removesuffix(".next")}
        else:
            role = {"role": "gradient", "of": o.name.removeprefix("grad.")}
        outputs.append(_value_info(o) | role)
    counts: dict[str, int | None] = {"steps_per_epoch": None, "total_steps": None}
    if not isinstance(timing, UnknownTiming):
        counts = {"steps_per_epoch": timing.steps_per_epoch, "total_steps": timing.total_steps}
    opt = OPTIMIZERS.get(train.optimizer.name)
    return {
        "inputs": inputs,
        "outputs": outputs,
        "step_starts_at": 0,
        "seed": train.seed,
        "batch": train.batch,
        "epochs": train.epochs,
        **counts,
        "optimizer": {"name": train.optimizer.name, "state": list(opt.state(train.optimizer.args))},
        "schedule": train.schedule.name,
        "loss": {"name": train.loss.name, "target": LOSSES.get(train.loss.name).target},
    }


def build_eval_step(
    typed: TypedModel,
    train: TrainSpec,
    classes: int | None,
    slots: list[Slot],
    float_dtype: str = "float32",
) -> onnx.ModelProto:
    """Loss and metric sums of a batch with the current parameters (and non-trained
    state), without dropout."""
    b = GraphBuilder("eval_step", float_dtype)
    b.reserve(LOSS)
    params = _add_params(b, slots, as_inputs=True)
    inputs = _add_model_inputs(b, typed)
    _target_input(b, typed, LOSSES.get(train.loss.name).target)
    output = lower_model(typed, LowerCtx(b, "eval", typed.types), inputs, params)
    _loss_and_metrics(b, train, output, classes, metric_width(typed, classes))
    if classes is not None:
        ignore = {IGNORE: train.loss.args.get("ignore_index", -1)}
        b.rename(confusion(b, output, TARGET, classes, ignore), CONFUSION)
        b.add_output(CONFUSION, b.float_dtype, [classes, classes])
    b.prune()
    return b.model(model_metadata(typed, train, classes), "dnnspec evaluation step")


def build_inference(
    typed: TypedModel,
    slots: list[Slot],
    values: dict[str, np.ndarray],
    metadata: dict[str, str],
    preprocess: Preprocessing | None = None,
) -> onnx.ModelProto:
    """The deployable model: inputs -> `output`, weights (and running statistics) baked in
    as initializers; `slots` are the program's `model_slots()`. The fitted preprocessing
    runs first, so the model takes raw features."""
    b = GraphBuilder(typed.spec.model.name, "float32")
    b.reserve(OUTPUT)
    params = _add_params(b, slots, as_inputs=False, values=values)
    if preprocess is not None:
        decl = typed.spec.model.inputs[0]
        raw = b.add_input(decl.name, "float32", [decl.dims[0], preprocess.width])
        inputs = {decl.name: _preprocess(b, raw, preprocess)}
    else:
        inputs = _add_model_inputs(b, typed)
    output = lower_model(typed, LowerCtx(b, "eval", typed.types), inputs, params)
    if output in inputs.values():
        output = b.op("Identity", [output])
    b.rename(output, OUTPUT)
    b.add_output(OUTPUT, "float32", typed.output.dims)
    return b.model(metadata, f"dnnspec model {typed.spec.model.name}")


def _preprocess(b: GraphBuilder, x: str, prep: Preprocessing) -> str:
    """The fitted steps as nodes: Sub/Mul per scaling step, then the one-hot expansion as
    one Gather of the raw column each feature reads, |value - category| < 0.5 for the
    indicators and a Where that keeps the plain columns. Equal-19 and Cast-21 are avoided:
    onnx2torch lacks them, and these ops run the same in every runtime we test."""
    for step in prep.scale:
        shifted = b.op("Sub", [x, b.const(step.shift.astype(np.float32))], hint=step.name)
        x = b.op("Mul", [shifted, b.const(step.scale.astype(np.float32))], hint=step.name)
    if not prep.one_hot:
        return x
    source, hot, value = prep.expansion()
    picked = b.op("Gather", [x, b.const(source, "int64")], hint="one_hot", axis=1)
    distance = b.op("Abs", [b.op("Sub", [picked, b.const(value.astype(np.float32))])])
    near = b.op("Less", [distance, b.const(np.float32(MATCH))], hint="one_hot")
    indicator = b.op("Where", [near, b.const(np.float32(1)), b.const(np.float32(0))])
    return b.op("Where", [b.const(hot, "bool"), indicator, picked], hint="one_hot")


def _without_locations(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_locations(v)
            for k, v in value.items()
            if k not in ("span", "origin", "source")
        }
    if isinstance(value, list):
        return [_without_locations(v) for v in value]
    return value


def spec_hash(typed: TypedModel) -> str:
    """A digest of what the resolved spec means (not where it is written: moving the file
    or adding a comment keeps the hash), so a model or checkpoint can be traced to it. Data
    file paths are left out too: spec.lock.json pins them absolute, and checkpoints carry a
    digest of the data itself. The epoch count is left out as well: `--epochs` may extend a
    run (a checkpoint records the count it started with, and resume checks it)."""
    meaning = _without_locations(typed.spec.model_dump(mode="json"))
    train = meaning.get("train")
    if train:
        train.pop("epochs", None)
        for name in DATASETS.get(train["data"]["name"]).paths:
            train["data"]["args"].pop(name, None)
    return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:16]


def carried_metadata(slots: list[Slot], buffers: list[Slot]) -> dict[str, str]:
    """`dnnspec.carried`: every tensor the train step carries, as structured data (node and
    parameter apart, since block node names hold dots), for drivers and `dnnspec inspect`;
    a layer's non-trained state (running statistics) has kind `state`."""
    carried = []
    for slot in slots:
        node = slot.name[: -len(slot.spec.name) - 1]
        carried.append(
            {"name": slot.name, "node": node, "param": slot.spec.name, "kind": "parameter"}
        )
        carried += [
            {"name": slot.state_name(k), "node": node, "param": slot.spec.name, "kind": k}
            for k in slot.state
        ]
    for buffer in buffers:
        node = buffer.name[: -len(buffer.spec.name) - 1]
        carried.append(
            {"name": buffer.name, "node": node, "param": buffer.spec.name, "kind": "state"}
        )
    return {"dnnspec.carried": json.dumps(carried)}


def _vocab(typed: TypedModel, name: str) -> dict[str, int]:
    """`{"vocab": V}` when embeddings read input `name` as token ids: ids must be below
    the smallest table's V (a prediction with another id would fail inside Gather)."""
    sizes = [
        arg_int(n.args, "vocab")
        for n in typed.spec.model.nodes
        if n.layer == "embedding" and n.inputs[0] == name
    ]
    return {"vocab": min(sizes)} if sizes else {}


def model_metadata(
    typed: TypedModel, train: TrainSpec | None, classes: int | None
) -> dict[str, str]:
    inputs = [
        {"name": d.name, "dtype": _float_dtype(d.dtype, "float32"), "shape": list(d.dims)}
        | _vocab(typed, d.name)
        for d in typed.spec.model.inputs
    ]
    parameters = [
        {"name": param_name(layer.node.name, p.name), "node": layer.node.name, "param": p.name}
        for layer in typed.layers
        for p in layer.params
    ]
    meta: dict[str, Any] = {
        "dnnspec.model": typed.spec.model.name,
        "dnnspec.parameters": json.dumps(parameters),
        "dnnspec.inputs": json.dumps(inputs),
        "dnnspec.output_shape": json.dumps(list(typed.output.dims)),
        "dnnspec.spec_hash": spec_hash(typed),
    }
    if classes is not None:
        meta["dnnspec.class_labels"] = json.dumps([str(i) for i in range(classes)])
    if train is not None:
        meta["dnnspec.loss"] = train.loss.name
    return meta
