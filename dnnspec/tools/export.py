"""`dnnspec export`: a run's model (or a spec's initialised one) as a self-describing ONNX
file at a chosen opset, optionally in float16, or its train and eval steps for drivers
outside dnnspec; every written graph is checked before the command reports success.

Every graph is checked as `tools/checks.py` says (the full ONNX checker at the written
opset, strict shape inference, onnxruntime against `onnx.reference` on random inputs); a
float16 model is also compared with the float32 one it came from.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from dnnspec.assemble.describe import spec_hash
from dnnspec.assemble.steps import SEED, STEP, Program, build_inference
from dnnspec.check.shapes import TypedModel, check_spec, param_name
from dnnspec.errors import DiagnosticError, error
from dnnspec.files import is_regular, make_directory, read_bytes, write_bytes, write_text
from dnnspec.frontend import load_spec
from dnnspec.ir import Spec
from dnnspec.metadata import Interface, ModelMetadata, OutputRole, TensorMeta
from dnnspec.resolve import pin_paths, read_lock
from dnnspec.runtime import checkpoint
from dnnspec.runtime.model_file import MAX_MODEL_BYTES, read_model
from dnnspec.runtime.prepare import compile_program
from dnnspec.runtime.session import make_session
from dnnspec.runtime.trainer import initial_values
from dnnspec.tools.checks import (
    HALF_TOLERANCE,
    TOLERANCE,
    Check,
    difference,
    first_line,
    random_feeds,
    verify,
)
from dnnspec.tools.half import FLOAT16_MAX, HalfError, to_float16
from dnnspec.tools.opset import MIN_OPSET, OpsetError, convert, lowest_opset, newest_opset
from dnnspec.tools.outputs import DEFAULT, add_outputs, parse_kinds

OPENVINO = (
    "in OpenVINO, set INFERENCE_PRECISION_HINT to f32: on a CPU with bf16 its default computes "
    "float32 graphs in bf16, which moved outputs by up to 0.65 (docs/portability.md)"
)
RUN_MARKS = ("metrics.jsonl", "checkpoint", "spec.lock.json")
"""What marks a directory as a run's (trained, or compiled by `compile`)."""
RUN_FILES = frozenset(
    {"model.onnx", "train_step.onnx", "eval_step.onnx", "spec.lock.json", "metrics.jsonl"}
)
"""The files of a run that an export must not replace."""


@dataclass
class Exported:
    """What `export` wrote and how it was checked."""

    files: dict[str, Path]
    opset: int
    trained: bool
    precision: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    opset_chosen: str = "requested"
    """`lowest`: the lowest opset the graphs need (the default); `requested`: --opset."""
    outputs: list[OutputRole] = field(default_factory=list)
    """What each output of the exported model holds (model exports)."""

    def opset_text(self) -> str:
        """`opset 17 (the lowest this model needs)`, for the summary."""
        if self.opset_chosen == "lowest":
            return f"opset {self.opset} (the lowest these graphs need; --opset N writes another)"
        return f"opset {self.opset}"

    def as_json(self) -> dict[str, Any]:
        return {
            "files": {k: str(v) for k, v in self.files.items()},
            "opset": self.opset,
            "opset_chosen": self.opset_chosen,
            "outputs": [o.model_dump(mode="json") for o in self.outputs],
            "trained": self.trained,
            "precision": self.precision,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "notes": self.notes,
        }


@dataclass
class _Source:
    """A run directory or a spec: its resolved spec, typed model and model.onnx."""

    spec: Spec
    typed: TypedModel
    model: onnx.ModelProto
    trained: bool
    run_dir: Path | None
    program: Program | None = None
    notes: list[str] = field(default_factory=list)


def _version() -> str:
    try:
        return importlib.metadata.version("dnnspec")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _from_spec(path: Path) -> _Source:
    spec = load_spec(path, {})
    compiled = compile_program(spec)
    program = compiled.program
    params = initial_values(program, program.train.seed, params_only=True)
    model = build_inference(
        program.typed, program.model_slots(), params, program.metadata, program.preprocess
    )
    notes = ["the model is untrained: its weights are the spec's seeded initialisation"]
    if compiled.read_data:
        notes.append(f"the data was read because {compiled.read_data}")
    notes += [f"not recorded without the data: {what}" for what in compiled.from_data]
    return _Source(spec, program.typed, model, False, None, program, notes)


def _from_run(run_dir: Path) -> _Source:
    lock = run_dir / "spec.lock.json"
    if not (run_dir / "model.onnx").exists() or not lock.exists():
        raise error(
            f"'{run_dir}' is not a run directory: it lacks model.onnx or spec.lock.json",
            help="pass a directory written by `dnnspec train` or `dnnspec compile`, or a .dnn spec",
        )
    file = read_model(run_dir / "model.onnx")
    spec = read_lock(lock)
    typed = check_spec(spec)
    if file.spec_hash != spec_hash(typed):
        raise error(
            f"'{run_dir / 'model.onnx'}' and '{lock}' come from different specs",
            help="pass a run directory written by one `dnnspec train`",
        )
    trained = is_regular(run_dir / "checkpoint" / "last.npz")
    notes = [] if trained else ["the model is untrained: the directory holds no checkpoint"]
    return _Source(spec, typed, file.proto, trained, run_dir, notes=notes)


def _source(path: Path) -> _Source:
    if path.is_dir():
        return _from_run(path)
    if path.suffix == ".dnn":
        return _from_spec(path)
    raise error(
        f"'{path}' is neither a run directory nor a .dnn spec",
        help="export a run (`dnnspec export runs/digits --out model.onnx`) or a spec",
    )


def _layer_of(node_name: str, spec: Spec) -> str | None:
    """The spec layer a node belongs to: its name's first scope (`dense_1/Gemm`), or the
    one after `grad/` for the backward pass."""
    parts = node_name.split("/")
    if parts and parts[0] == "grad":
        parts = parts[1:]
    names = {n.name for n in spec.model.nodes}
    return parts[0] if len(parts) > 1 and parts[0] in names else None


def opset_error(exc: OpsetError, spec: Spec, target: int, graph: str) -> DiagnosticError:
    """An opset conversion failure at the spec's layer (or its loss/metrics)."""
    layer = _layer_of(exc.node.name, spec)
    node = next((n for n in spec.model.nodes if n.name == layer), None)
    where = f"{layer} ({node.layer})" if node is not None else f"the {graph}'s loss and update"
    span = node.span if node is not None else (spec.train.span if spec.train else None)
    hint = (
        f"export with --opset {exc.needs} or newer"
        if exc.needs is not None
        else "this construct has no form at any other opset; export at the default opset"
    )
    return error(
        f"{where} cannot be written at opset {target}: {exc.message} (node '{exc.node.name}')",
        span,
        help=hint,
    )


def _at_opset(model: onnx.ModelProto, target: int, spec: Spec, graph: str) -> onnx.ModelProto:
    try:
        return convert(model, target)
    except OpsetError as exc:
        raise opset_error(exc, spec, target, graph) from None


def _where(source: _Source, graph: str) -> str:
    """How diagnostics name one of the source's graphs."""
    return str(source.run_dir / f"{graph}.onnx") if source.run_dir else f"the compiled {graph}"


def _describe(infos: Any) -> list[TensorMeta]:
    out = []
    for info in infos:
        tensor = info.type.tensor_type
        dtype = (
            "string"
            if tensor.elem_type == onnx.TensorProto.STRING
            else onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        )
        shape: list[int | str] = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        out.append(TensorMeta(name=info.name, dtype=dtype, shape=shape))
    return out


def _describe_model(
    model: onnx.ModelProto,
    where: str,
    source: _Source,
    opset: int,
    precision: str,
    roles: list[OutputRole] | None = None,
) -> ModelMetadata:
    """Producer, opset, precision, whether trained, the resolved spec and the graph's
    interface (with `roles`, what each output holds), beside the metadata model.onnx
    already carries (spec hash, class names, preprocessing, parameters). Returns the whole
    record."""
    model.producer_name, model.producer_version = "dnnspec", _version()
    initializers = {t.name for t in model.graph.initializer}
    meta = ModelMetadata.from_model(model, where)
    meta.spec = pin_paths(source.spec, missing_ok=True).model_dump(mode="json")
    meta.trained, meta.precision, meta.opset = source.trained, precision, opset
    meta.graph_inputs = _describe(i for i in model.graph.input if i.name not in initializers)
    meta.graph_outputs = _describe(model.graph.output)
    meta.output_roles = roles
    meta.write(model)
    return meta


# float16 ----------------------------------------------------------------------------------

_NO_KERNEL = re.compile(
    r"Could not find an implementation for (\w+)\(\d+\) node with name '([^']*)'"
)


def half_model(model: onnx.ModelProto, typed: TypedModel) -> tuple[onnx.ModelProto, list[str]]:
    """`model` in float16; nodes onnxruntime's CPU provider has no float16 kernel for stay
    float32 (found by loading the model, one at a time). Returns the model and notes."""
    weights = {
        param_name(layer.node.name, p.name)
        for layer in typed.layers
        for p in [*layer.params, *layer.state]
    }
    keep: set[str] = set()
    kept_ops: list[str] = []
    for _ in range(len(model.graph.node) + 1):
        try:
            half, saturated = to_float16(model, weights, frozenset(keep))
        except HalfError as exc:
            raise error(f"the model cannot be written in float16: {exc}") from None
        try:
            make_session(half, "cpu")
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped
            found = _NO_KERNEL.search(str(exc))
            if found is None or found.group(2) in keep:
                raise error(
                    f"onnxruntime cannot load the float16 model: {first_line(exc)}"
                ) from None
            keep.add(found.group(2))
            if found.group(1) not in kept_ops:
                kept_ops.append(found.group(1))
            continue
        notes = []
        if kept_ops:
            notes.append(
                "computed in float32 (onnxruntime's CPU provider has no float16 kernel): "
                + ", ".join(kept_ops)
            )
        if saturated:
            notes.append(
                f"constants saturated to float16's range (±{FLOAT16_MAX:g}): "
                + ", ".join(saturated)
            )
        return half, notes
    raise AssertionError("unreachable: every node was tried")


# the commands -----------------------------------------------------------------------------


def _opset(requested: int | None) -> int | None:
    """The requested opset, checked (None: the lowest the graphs need, found later)."""
    if requested is None:
        return None
    newest = newest_opset()
    if not MIN_OPSET <= requested <= newest:
        raise error(
            f"--opset {requested} is outside the opsets dnnspec writes ({MIN_OPSET} to "
            f"{newest}, the newest the installed onnxruntime loads)",
            help=f"layer_norm's LayerNormalization needs opset {MIN_OPSET}; "
            f"choose --opset {MIN_OPSET}..{newest}",
        )
    return requested


def _target(graphs: list[onnx.ModelProto], requested: int | None) -> tuple[int, str]:
    """The opset to write `graphs` at and why: as requested, or the lowest from MIN_OPSET
    every one of them converts to (older converters, onnx2torch's among them, read fewer
    new operator versions)."""
    if requested is not None:
        return requested, "requested"
    return max(lowest_opset(g, MIN_OPSET) for g in graphs), "lowest"


def refuse_run_files(directory: Path, names: list[str]) -> None:
    """Refuse to write files `names` into `directory` where it holds a run (trained, or
    compiled) and one of them is a file of that run: an export must not replace a run's
    model or steps, as `compile` refuses to compile into a trained run."""
    if not any((directory / mark).exists() for mark in RUN_MARKS):
        return
    clash = next((n for n in names if n in RUN_FILES), None)
    if clash is not None:
        raise error(
            f"'{directory}' holds a run; exporting into it would replace its {clash}",
            help="choose an --out outside the run directory (or another file name in it)",
        )


def export(
    path: Path,
    out: Path,
    opset: int | None = None,
    fp16: bool = False,
    train: bool = False,
    outputs: list[str] | None = None,
) -> Exported:
    """Write `path`'s (a run directory's or a spec's) model to `out` (with `outputs`, the
    outputs of `tools.outputs.KINDS` it lists), or with `train` its train and eval steps,
    initial state and interface into the directory `out`."""
    target = _opset(opset)
    kinds = parse_kinds(outputs)
    if train and outputs is not None:
        raise error(
            "--outputs applies to the inference model; the train steps keep their outputs",
            help="drop --outputs, or export the model without --train",
        )
    if train:
        refuse_run_files(out, ["train_step.onnx", "eval_step.onnx", "state.npz"])
    else:
        refuse_run_files(out.parent, [out.name])
    source = _source(path)
    if train:
        if fp16:
            raise error(
                "--fp16 applies to the inference model; train steps are exported in float32",
                help="drop --fp16, or export the model without --train",
            )
        return _export_train(source, out, target)
    return _export_model(source, out, target, fp16, kinds)


def _export_model(
    source: _Source,
    out: Path,
    requested: int | None,
    fp16: bool,
    kinds: tuple[str, ...] = DEFAULT,
) -> Exported:
    if out.suffix != ".onnx":
        raise error(f"--out '{out}': the model is written as an .onnx file")
    rng = np.random.default_rng(0)
    where = _where(source, "model")
    recorded = ModelMetadata.from_model(source.model, where)
    with_outputs, roles = add_outputs(source.model, recorded, kinds)
    target, chosen = _target([with_outputs], requested)
    model = _at_opset(with_outputs, target, source.spec, "model")
    meta = _describe_model(model, where, source, target, "float32", roles)
    feeds = random_feeds(model, meta, {}, rng)
    check, full = verify(model, "model", feeds, TOLERANCE)
    notes = [*source.notes, OPENVINO]
    result = Exported({"model": out}, target, source.trained, "float32", [check], notes)
    result.opset_chosen, result.outputs = chosen, roles
    if fp16:
        half, half_notes = half_model(model, source.typed)
        _describe_model(half, where, source, target, "float16", roles)
        check16, outs = verify(half, "float16 model", feeds, HALF_TOLERANCE)
        # the float outputs (scores, probabilities); labels follow them
        names = [o.name for o in model.graph.output if full[o.name].dtype.kind == "f"]
        gap = max(difference(outs[name], full[name]) for name in names)
        if not gap <= HALF_TOLERANCE:
            raise error(
                f"the float16 model's output (in onnxruntime) differs from the float32 "
                f"model's by {gap:.3g} (tolerance {HALF_TOLERANCE:g})",
                help="this model loses too much in float16; export it in float32",
            )
        result.checks += [check16, Check("float16 model", "float32 model", gap, HALF_TOLERANCE)]
        result.precision, model = "float16", half
        result.notes += half_notes
    make_directory(out.parent, "the output directory")
    write_bytes(out, model.SerializeToString(), "exported model")
    return result


def _train_state(source: _Source, interface: Interface) -> tuple[dict[str, np.ndarray], int]:
    """The carried tensors a driver starts from: a run's checkpoint (its step count too),
    or the spec's initialisation at step 0."""
    carried = interface.carried()
    if source.run_dir is not None and source.trained:
        arrays, header = checkpoint.load(source.run_dir / "checkpoint" / "last.npz")
        missing = [name for name in carried if name not in arrays]
        if missing:
            raise error(
                f"checkpoint in '{source.run_dir}' lacks '{missing[0]}' of its train step",
                help="the run directory was written by another version; train it again",
            )
        return {name: arrays[name] for name in carried}, int(header["step"])
    program = source.program or compile_program(source.spec).program
    values = initial_values(program, program.train.seed)
    return {name: values[name] for name in carried}, 0


def _read_graph(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(read_bytes(path, "graph", MAX_MODEL_BYTES))
    except DiagnosticError:
        raise
    except Exception:  # noqa: BLE001 - protobuf raises several unrelated types
        raise error(f"'{path}' is not an ONNX file") from None


def _export_train(source: _Source, out: Path, requested: int | None) -> Exported:
    if out.suffix == ".onnx":
        raise error(
            f"--out '{out}': with --train, --out names a directory",
            help="it receives train_step.onnx, eval_step.onnx, state.npz and interface.json",
        )
    if source.run_dir is not None:
        graphs = {k: _read_graph(source.run_dir / f"{k}.onnx") for k in ("train_step", "eval_step")}
    else:
        assert source.program is not None
        graphs = {"train_step": source.program.train_step, "eval_step": source.program.eval_step}
    recorded = ModelMetadata.from_model(graphs["train_step"], _where(source, "train_step"))
    if recorded.interface is None:
        raise error(
            f"'{source.run_dir}/train_step.onnx' records no interface (an older dnnspec wrote it)",
            help="train the spec again, or export the spec itself",
        )
    state, step = _train_state(source, recorded.interface)
    interface = recorded.interface.model_dump(mode="json") | {"start_step": step}
    rng = np.random.default_rng(0)
    written: dict[str, onnx.ModelProto] = {}
    checks = []
    target, chosen = _target(list(graphs.values()), requested)
    for name, graph in graphs.items():
        model = _at_opset(graph, target, source.spec, name.replace("_", " "))
        meta = _describe_model(model, _where(source, name), source, target, "float32")
        given = dict(state) | {
            STEP: np.array(step, np.int64),
            SEED: np.array(source.spec.train.seed if source.spec.train else 0, np.int64),
        }
        feeds = random_feeds(
            model,
            meta,
            {k: v for k, v in given.items() if any(i.name == k for i in model.graph.input)},
            rng,
        )
        check, _ = verify(model, name.replace("_", " "), feeds, TOLERANCE)
        checks.append(check)
        written[name] = model
    make_directory(out, "the output directory")
    files = {}
    for name, model in written.items():
        files[name] = out / f"{name}.onnx"
        write_bytes(files[name], model.SerializeToString(), f"exported {name}")
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"step": np.array(step, np.int64), **state}
    np.savez(buffer, **arrays)
    files["state"] = out / "state.npz"
    write_bytes(files["state"], buffer.getvalue(), "initial state")
    files["interface"] = out / "interface.json"
    write_text(files["interface"], json.dumps(interface, indent=2) + "\n", "interface")
    notes = [*source.notes, OPENVINO]
    return Exported(files, target, source.trained, "float32", checks, notes, chosen)
