"""What the assembled graphs say about themselves: model.onnx's metadata record (inputs,
outputs, parameters, the spec hash, class names until the data names them), the train
step's carried tensors, and its interface for drivers outside dnnspec
(docs/training-graph.md). The graphs are built in `assemble/steps.py`; this module only
describes them, and `metadata.py` types what it writes.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import onnx

from dnnspec.check.shapes import TypedModel, param_name
from dnnspec.data.datasets import DATASETS
from dnnspec.graph.rng import FIRST_ROW
from dnnspec.ir import GRAPH_NAMES, TrainSpec
from dnnspec.layers.base import LAYERS, token_vocab
from dnnspec.metadata import (
    CarriedMeta,
    InputMeta,
    Interface,
    ModelMetadata,
    OutputMeta,
    ParameterMeta,
)
from dnnspec.schema import Signature
from dnnspec.training.accumulate import SAMPLES
from dnnspec.training.losses import LOSSES
from dnnspec.training.metrics import METRICS
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.schedules import LR_FACTOR, Timing, UnknownTiming

if TYPE_CHECKING:
    from dnnspec.assemble.steps import Slot, Trained

STEP, SEED, _TARGET, LOSS, _OUTPUT = GRAPH_NAMES


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
    trained: list[Trained],
) -> Interface:
    """`dnnspec.interface`, what a driver needs to run `model` (a train step) outside
    dnnspec (docs/training-graph.md): each input and
    output with dtype, shape and role; the schedule's step counts (None when the schedule
    does not use them and the program was compiled without counting the data)."""
    roles: dict[str, dict[str, Any]] = {STEP: {"role": "step"}, SEED: {"role": "seed"}}
    roles[LR_FACTOR] = {"role": "control", "initial": 1.0}
    roles[SAMPLES] = {"role": "accumulator", "initial": 0.0}
    roles[FIRST_ROW] = {"role": "first_row"}
    for out in trained:  # `target`, or `target/<output>` per named output
        roles[out.target] = {"role": "target", "loss": out.head.loss.name}
        if out.head.output:
            roles[out.target] |= {"output": out.head.output, "weight": out.head.weight}
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
    data = ("step", "seed", "input", "target", "first_row")
    carried = {i["name"] for i in inputs if i["role"] not in data}
    losses = {out.loss: out.head.output for out in trained if out.head.output}
    metrics = {
        key: (m.name, out.head.output)
        for out in trained
        for m, key in zip(out.head.metrics, out.metric_keys(), strict=True)
    }
    outputs = []
    for o in model.graph.output:
        if o.name == LOSS:
            role: dict[str, Any] = {"role": "loss"}
        elif o.name in losses:
            role = {"role": "output_loss", "output": losses[o.name]}
        elif o.name.startswith("metric."):
            metric, output = metrics[o.name.removeprefix("metric.")]
            role = {"role": "metric", "per": METRICS.get(metric).per}
            role |= {"metric": metric, "output": output} if output else {}
        elif o.name.endswith(".next") and o.name.removesuffix(".next") in carried:
            role = {"role": "next", "replaces": o.name.removesuffix(".next")}
        else:
            role = {"role": "gradient", "of": o.name.removeprefix("grad.")}
        outputs.append(_value_info(o) | role)
    counts: dict[str, int | None] = {"steps_per_epoch": None, "total_steps": None}
    if not isinstance(timing, UnknownTiming):
        counts = {"steps_per_epoch": timing.steps_per_epoch, "total_steps": timing.total_steps}
    opt = OPTIMIZERS.get(train.optimizer.name)
    interface = {
        "inputs": inputs,
        "outputs": outputs,
        "step_starts_at": 0,
        "seed": train.seed,
        "batch": train.batch,
        "epochs": train.epochs,
        **counts,
        "optimizer": {"name": train.optimizer.name, "state": list(opt.state(train.optimizer.args))},
        "schedule": train.schedule.name,
        "loss": _loss_interface(trained),
    }
    return Interface.model_validate(interface)


def _loss_interface(trained: list[Trained]) -> dict[str, Any]:
    """The interface's `loss`: its name and target kind, or for named outputs the weighted
    sum's terms (`loss = sum of weight * loss of output`)."""
    if not trained[0].head.output:
        name = trained[0].head.loss.name
        return {"name": name, "target": LOSSES.get(name).target}
    terms = [
        {
            "output": out.head.output,
            "name": out.head.loss.name,
            "target": LOSSES.get(out.head.loss.name).target,
            "weight": out.head.weight,
        }
        for out in trained
    ]
    return {"name": "weighted_sum", "terms": terms}


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


def _drop_recent(args: dict[str, Any], recent: tuple[str, ...], signature: Signature) -> None:
    """Leave out of `args` the `recent` arguments that hold their default."""
    for name in recent:
        arg = signature.get(name)
        if arg is not None and args.get(name) == arg.default:
            args.pop(name)


def spec_hash(typed: TypedModel) -> str:
    """A digest of what the resolved spec means (not where it is written: moving the file
    or adding a comment keeps the hash), so a model or checkpoint can be traced to it. Data
    file paths are left out too: spec.lock.json pins them absolute, and checkpoints carry a
    digest of the data itself. The epoch count is left out as well: `--epochs` may extend a
    run (a checkpoint records the count it started with, and resume checks it), and so are
    the `recent` arguments of the layers, dataset, losses and metrics at their default, so
    a spec written before them keeps its hash."""
    meaning = _without_locations(typed.spec.model_dump(mode="json"))
    for node in meaning["model"]["nodes"]:
        layer = LAYERS.get(node["layer"])
        _drop_recent(node["args"], layer.recent, layer.signature)
    train = meaning.get("train")
    if train:
        train.pop("epochs", None)
        if not train.get("augment"):  # specs written before augment keep their hash
            train.pop("augment", None)
        dataset, args = DATASETS.get(train["data"]["name"]), train["data"]["args"]
        for name in dataset.paths:
            args.pop(name, None)
        _drop_recent(args, dataset.recent, dataset.signature)
        for part in (train, *(train.get("heads") or ())):
            if part.get("loss"):
                loss = LOSSES.get(part["loss"]["name"])
                _drop_recent(part["loss"]["args"], loss.recent, loss.signature)
            for call in part.get("metrics") or ():
                metric = METRICS.get(call["name"])
                _drop_recent(call["args"], metric.recent, metric.signature)
    return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:16]


def carried_metadata(slots: list[Slot], buffers: list[Slot]) -> list[CarriedMeta]:
    """`dnnspec.carried`: every tensor the train step carries, as structured data (node and
    parameter apart, since block node names hold dots), for drivers and `dnnspec inspect`;
    a layer's non-trained state (running statistics) has kind `state`."""
    carried = []
    for slot in slots:
        node = slot.name[: -len(slot.spec.name) - 1]
        kinds = [(slot.name, "parameter"), *((slot.state_name(k), k) for k in slot.state)]
        carried += [CarriedMeta(name=n, node=node, param=slot.spec.name, kind=k) for n, k in kinds]
    for buffer in buffers:
        node = buffer.name[: -len(buffer.spec.name) - 1]
        carried.append(
            CarriedMeta(
                name=buffer.name,
                node=node,
                param=buffer.spec.name,
                kind="frozen" if buffer.spec.frozen else "state",
            )
        )
    return carried


def _vocab(typed: TypedModel, name: str) -> dict[str, int]:
    """`{"vocab": V}` when embeddings read input `name` as token ids: ids must be below
    the smallest table's V (a prediction with another id would fail inside Gather)."""
    sizes = [v for n in typed.spec.model.nodes if (v := token_vocab(n, name)) is not None]
    return {"vocab": min(sizes)} if sizes else {}


def _float32(dtype: str) -> str:
    """A float input's dtype in model.onnx, which always computes in float32."""
    return "float32" if dtype.startswith("float") else dtype


def model_metadata(
    typed: TypedModel, train: TrainSpec | None, classes: int | None
) -> ModelMetadata:
    """What every graph of the spec says about the model: its inputs and outputs,
    parameters, spec hash, loss and class names (ids until the data names them)."""
    inputs = [
        InputMeta.model_validate(
            {"name": d.name, "dtype": _float32(d.dtype), "shape": list(d.dims)}
            | _vocab(typed, d.name)
        )
        for d in typed.spec.model.inputs
    ]
    parameters = [
        ParameterMeta(name=param_name(layer.node.name, p.name), node=layer.node.name, param=p.name)
        for layer in typed.layers
        for p in layer.params
    ]
    return ModelMetadata(
        model=typed.spec.model.name,
        parameters=parameters,
        inputs=inputs,
        output_shape=list(typed.output.dims),
        spec_hash=spec_hash(typed),
        class_labels=None if classes is None else [str(i) for i in range(classes)],
        loss=train.loss.name if train is not None and train.loss is not None else None,
        outputs=_outputs_metadata(typed, train) if typed.spec.model.outputs else None,
    )


def _outputs_metadata(typed: TypedModel, train: TrainSpec | None) -> list[OutputMeta]:
    """`dnnspec.outputs` of a model with named outputs: each one's name and shape, and
    when trained its loss, weight and class names (ids by default)."""
    heads = {h.output: h for h in train.trained()} if train else {}
    found = []
    for out in typed.spec.model.outputs:
        dims = typed.outputs[out.name].dims
        entry = OutputMeta(name=out.name, shape=list(dims))
        head = heads.get(out.name)
        if head is not None:
            entry.loss, entry.weight = head.loss.name, head.weight
            if LOSSES.get(head.loss.name).target == "class" and isinstance(dims[-1], int):
                entry.class_labels = [str(i) for i in range(dims[-1])]
        found.append(entry)
    return found
