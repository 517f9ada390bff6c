"""The Python API: the same pipeline as the CLI, as functions; the one public surface
(the CLI is a thin layer over it).

import dnnspec
program = dnnspec.compile("specs/digits_mlp.dnn")
result = dnnspec.train("specs/digits_mlp.dnn", hidden=64, out="runs/h64")
model = dnnspec.load(result.run_dir)
logits = model.predict(x)  # a dict of arrays by name for a model with named outputs

Every function taking a spec accepts a path or a `Spec` from `load_spec`. Keyword overrides
replace params: a string is read as `--set` text (`hidden="64"` is the int 64), any other
value as itself.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import numpy.typing as npt

from dnnspec.check import shapes
from dnnspec.check.shapes import TypedModel
from dnnspec.errors import DiagnosticError, Span, did_you_mean, error
from dnnspec.frontend import load_spec as _load_spec
from dnnspec.ir import Spec

if TYPE_CHECKING:
    from dnnspec.assemble.compile import Compiled
    from dnnspec.assemble.steps import Program
    from dnnspec.runtime.backend import Device
    from dnnspec.runtime.cadence import Cadence
    from dnnspec.runtime.model_file import InputInfo
    from dnnspec.runtime.parallel import FOLLOWER
    from dnnspec.runtime.run import (
        Interrupted,
        Reporter,
        RunResult,
    )
    from dnnspec.tools.export import Exported
    from dnnspec.tools.format import Formatted, format_file
    from dnnspec.tools.inspect import GraphSummary
    from dnnspec.tune.tuner import Interrupted as TuneInterrupted
    from dnnspec.tune.tuner import ProgressFn, TuneResult

__all__ = [
    "Cadence",
    "Compiled",
    "Device",
    "Exported",
    "FOLLOWER",
    "Formatted",
    "GraphSummary",
    "Interrupted",
    "Model",
    "Program",
    "Reporter",
    "RunResult",
    "Spec",
    "TuneInterrupted",
    "TuneResult",
    "TypedModel",
    "check_data",
    "check_spec",
    "compile",
    "compile_details",
    "export",
    "format_file",
    "input_columns",
    "inspect",
    "launch_workers",
    "plot",
    "draw_graph",
    "load",
    "load_spec",
    "save",
    "train",
    "tune",
]

_LATER = {
    "Cadence": ("dnnspec.runtime.cadence", "Cadence"),
    "Compiled": ("dnnspec.assemble.compile", "Compiled"),
    "Device": ("dnnspec.runtime.backend", "Device"),
    "Exported": ("dnnspec.tools.export", "Exported"),
    "FOLLOWER": ("dnnspec.runtime.parallel", "FOLLOWER"),
    "Formatted": ("dnnspec.tools.format", "Formatted"),
    "GraphSummary": ("dnnspec.tools.inspect", "GraphSummary"),
    "Interrupted": ("dnnspec.runtime.run", "Interrupted"),
    "Program": ("dnnspec.assemble.steps", "Program"),
    "Reporter": ("dnnspec.runtime.run", "Reporter"),
    "RunResult": ("dnnspec.runtime.run", "RunResult"),
    "TuneInterrupted": ("dnnspec.tune.tuner", "Interrupted"),
    "TuneResult": ("dnnspec.tune.tuner", "TuneResult"),
    "format_file": ("dnnspec.tools.format", "format_file"),
}
"""The API's names from the stages after `check` (module, name): imported on first use, so
that `check` loads neither the runtime nor onnxruntime (docs/performance.md, "Process
start")."""


def __getattr__(name: str) -> Any:
    if name in _LATER:
        module, attr = _LATER[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _texts(overrides: dict[str, Any]) -> dict[str, str]:
    """Keyword overrides as `--set` text: a string as it stands, other values as JSON
    (NumPy scalars and arrays as the numbers and lists they hold)."""
    return {k: json.dumps(v, default=_plain) if not isinstance(v, str) else v
            for k, v in overrides.items()}  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"a param is a number, string, bool or list, got {type(value).__name__}")


def load_spec(path: str | Path, /, **overrides: Any) -> Spec:
    """Parse and resolve a spec file; keyword arguments override its params."""
    return _load_spec(path, _texts(overrides))


def _spec(source: str | Path | Spec, overrides: dict[str, Any]) -> Spec:
    if not isinstance(source, Spec):
        return load_spec(source, **overrides)
    if overrides:
        raise TypeError("params of an already resolved Spec cannot be overridden")
    return source


def check_spec(source: str | Path | Spec, /, **overrides: Any) -> TypedModel:
    """Resolve and shape-check a spec without touching data: each layer's type, parameters
    and FLOPs, and the warnings (mistakes that still train). (`dnnspec.check` is the
    package of that stage, hence the longer name.)"""
    return shapes.check_spec(_spec(source, overrides))


def input_columns(source: str | Path | Spec, /, **overrides: Any) -> dict[str, Any] | None:
    """For a spec that preprocesses rows of features: the data's raw columns, what is
    done to each (fitted on the training split, as training fits it) and the features the
    model's input holds (one_hot makes it wider than the data); `{"error": ...}` when the
    data cannot be read or fitted; None without preprocessing."""
    from dnnspec.runtime.prepare import load_parts

    spec = _spec(source, overrides)
    if spec.train is None or not spec.train.preprocess:
        return None
    try:
        return load_parts(spec.train, shapes.check_spec(spec)).expected
    except DiagnosticError as exc:
        return {"error": exc.diagnostics[0].message}


def check_data(source: str | Path | Spec, /, **overrides: Any) -> dict[str, Any] | None:
    """Read and prepare the spec's data as `train` does (loaded, checked against the model,
    split, preprocessing fitted), raising the diagnostic `train` would raise for it; the
    input columns as `input_columns` gives them (None without preprocessing). A spec
    without a train section, or whose data file does not exist yet, is left unchecked
    (None): compiling and checking a spec need no data."""
    from dnnspec.data.datasets import DATASETS, locate_file
    from dnnspec.runtime.prepare import load_parts

    spec = _spec(source, overrides)
    train = spec.train
    if train is None:
        return None
    for name in DATASETS.get(train.data.name).paths:
        try:
            locate_file(str(train.data.args[name]), train.data.span)
        except DiagnosticError:
            return None
    expected = load_parts(train, shapes.check_spec(spec)).expected
    return expected if train.preprocess else None


def compile(source: str | Path | Spec, /, **overrides: Any) -> Program:  # noqa: A001 - the verb
    """Check a spec and assemble its train-step and eval-step graphs; the data is read only
    when the graphs depend on it (see `compile_details`)."""
    from dnnspec.assemble.compile import compile_spec
    from dnnspec.runtime.prepare import program_from_data

    return compile_spec(_spec(source, overrides), program_from_data).program


def compile_details(source: str | Path | Spec, /, **overrides: Any) -> Compiled:
    """`compile`, saying whether and why the data was read (fitted preprocessing, a
    schedule counted in epochs) and what only the data would have told (class names)."""
    from dnnspec.assemble.compile import compile_spec
    from dnnspec.runtime.prepare import program_from_data

    return compile_spec(_spec(source, overrides), program_from_data)


def export(
    source: str | Path,
    /,
    out: str | Path,
    opset: int | None = None,
    fp16: bool = False,
    train: bool = False,
    outputs: Sequence[str] | None = None,
    web: bool = False,
) -> Exported:
    """Export a run directory's model.onnx (or a spec's initialised model) to `out` at
    `opset` (default: the lowest the model needs, from 17), in float16 with `fp16`, with
    `outputs` (of "logits", "probabilities", "labels", "class_names"; default the model's
    own, "logits"); with `train`, the train and eval steps, their initial state and
    interface.json into the directory `out`. Every graph is checked (full ONNX checker,
    shape inference, onnxruntime against onnx.reference) before it is written; see
    docs/training-graph.md for the interface. With `web`, the directory `out` becomes a
    static site that trains in the browser (docs/cli.md, "Training in the browser")."""
    from dnnspec.tools.export import export as _export
    from dnnspec.tools.web import export_site

    kinds = list(outputs) if outputs is not None else None
    if web:
        return export_site(Path(source), Path(out), opset, fp16, kinds)
    return _export(Path(source), Path(out), opset, fp16, train, kinds)


def save(program: Program, out: str | Path) -> dict[str, Path]:
    """Write a compiled program into `out`: its train-step and eval-step graphs, model.onnx
    with the seeded initial weights and spec.lock.json; returns each file by kind."""
    from dnnspec.files import DirectoryLock, make_directory
    from dnnspec.resolve import pin_paths, write_lock
    from dnnspec.runtime.run import export_model, write_graphs
    from dnnspec.runtime.trainer import initial_values

    out = Path(out)
    make_directory(out, "the output directory")
    with DirectoryLock(out):
        if (out / "metrics.jsonl").exists() or (out / "checkpoint").exists():
            raise error(
                f"'{out}' holds a training run; compiling into it would replace its model",
                help="choose another --out",
            )
        paths = write_graphs(program, out)
        params = initial_values(program, program.train.seed, params_only=True)
        paths["model"] = export_model(program, params, out / "model.onnx")
        paths.update({Path(name).stem: out / name for name in program.files})  # tokenizer.json
        paths["lock"] = out / "spec.lock.json"
        # compiling need not read the data, so its file need not exist yet
        write_lock(pin_paths(program.typed.spec, missing_ok=True), paths["lock"])
    return paths


def train(
    source: str | Path | Spec,
    /,
    out: str | Path | None = None,
    device: Device = "auto",
    epochs: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    reporter: Reporter | None = None,
    checkpoint_every: Cadence | str | None = None,
    stop_after: int | None = None,
    plot: bool | None = None,
    runtime: str | None = None,
    **overrides: Any,
) -> RunResult:
    """Train a spec into `out` (default: a new runs/<spec name>[-n]); keyword arguments
    override its params (`hidden=64`). `resume` continues the run in `out` from its last
    checkpoint; `reporter` receives progress; `checkpoint_every` is a `Cadence` or its
    text (`5` epochs, `30s`; default at most once a minute). Ctrl-C raises `Interrupted`
    (the run keeps model.onnx of the last finished epoch and can be resumed). `stop_after`
    pauses the run after that epoch; resuming continues it as if it had never paused. `plot`
    draws curves.png into the run (default: when matplotlib is installed). `runtime` trains
    in that backend (`onnxruntime`, `openvino`, `openvino_bf16`, or `auto`: the faster,
    measured; default: the spec's `runtime`, else onnxruntime); a run resumes in any."""
    from dnnspec.runtime.cadence import Cadence
    from dnnspec.runtime.parallel import FOLLOWER
    from dnnspec.runtime.run import new_run_dir, run_training
    from dnnspec.tools.plot import can_plot, plot_runs

    if resume and out is None:
        raise error("resume needs the run directory to continue: out=DIR")
    spec = _spec(source, overrides)
    run_dir = Path(out) if out is not None else new_run_dir(Path(spec.source))
    every = (
        Cadence.parse(checkpoint_every) if isinstance(checkpoint_every, str) else checkpoint_every
    )
    result = run_training(
        spec, run_dir, device, epochs, reporter, resume, overwrite, every, stop_after, runtime
    )
    if result.stopped != FOLLOWER and (plot if plot is not None else can_plot()):
        result.paths["curves"] = plot_runs([result.run_dir], result.run_dir / "curves.png")
    return result


def launch_workers(
    source: str | Path | Spec, workers: int, argv: Sequence[str], out: str | Path | None
) -> int | None:
    """`dnnspec ARGV` (a `train` into `out`) as `workers` data-parallel processes (MPI):
    their exit status, or None where this process trains alone or already is one of them.
    A worker count the spec's `batch` cannot share is a located error. Without `out` the
    run directory is chosen here, so that all workers, and a restart, use the same."""
    from dnnspec.runtime.parallel import check_workers, launch, worker_rank
    from dnnspec.runtime.run import new_run_dir

    spec = _spec(source, {})
    check_workers(spec, workers)
    if workers == 1 or worker_rank() is not None:
        return None
    run_dir = Path(out) if out is not None else new_run_dir(Path(spec.source))
    given = [*argv] if out is not None else [*argv, "--out", str(run_dir)]
    return launch(workers, given, run_dir)


def tune(
    source: str | Path,
    /,
    out: str | Path | None = None,
    workers: int | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    device: Device = "cpu",
    backend: str = "local",
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> TuneResult:
    """Run the spec's search section into `out` (default: a new runs/<spec name>-tune[-n]):
    each trial is a run directory under `out/trials/`, the table goes to results.csv and
    results.jsonl, the best values into best.dnn. Keyword arguments override params in
    every trial. Ctrl-C raises `TuneInterrupted` (finished trials are kept; `resume`
    continues)."""
    from dnnspec.runtime.run import new_run_dir
    from dnnspec.tune.tuner import Tuner

    if resume and out is None:
        raise error("resume needs the search directory to continue: out=DIR")
    texts = _texts(overrides)
    tuner = Tuner(
        Path(source),
        _load_spec(source, texts),
        texts,
        Path(out) if out is not None else new_run_dir(Path(source), "-tune"),
        workers or os.cpu_count() or 1,
        trials,
        epochs,
        device,
        backend,
        address,
        resume,
        overwrite,
        progress,
    )
    return tuner.run()


class Model:
    """A trained run: its deployable model.onnx plus what is needed to evaluate it. Every
    file of the run directory is checked before it is used (see runtime/model_file.py)."""

    def __init__(
        self, run_dir: Path, device: Device = "auto", runtime: str = "onnxruntime"
    ) -> None:
        """`runtime`: the backend that runs the model (`auto`: the one training chose for
        its spec on this machine)."""
        from dnnspec.runtime.choose import for_model
        from dnnspec.runtime.model_file import read_model

        self.run_dir, self.device = run_dir, device
        path = run_dir / "model.onnx"
        try:
            present = path.exists() or path.is_symlink()
        except OSError:  # e.g. a path too long to look up: reading it says so
            present = True
        if not present:
            raise error(
                f"'{run_dir}' holds no model.onnx",
                help="pass a directory written by `dnnspec train`",
            )
        self.file = read_model(path)
        self.onnx = self.file.proto
        self.classes = self.file.classes
        self.runtime = for_model(runtime, self.file.spec_hash, device)
        self.session, self.warnings = self.file.session(device, self.runtime)
        self.labels: list[str] = list(self.file.meta.class_labels or [])
        self.loss = self.file.meta.loss

    def probabilities(self, outputs: np.ndarray, output: str | None = None) -> np.ndarray:
        """The model's outputs (or named `output`'s) as probabilities, the way its loss
        reads them: softmax of the logits (cross_entropy), exp of log-probabilities (nll), a
        sigmoid per unit (binary_cross_entropy)."""
        from dnnspec.assemble.steps import OUTPUT
        from dnnspec.training.losses import LOSSES

        loss = next(o.loss for o in self.file.outputs if o.name == (output or OUTPUT))
        known = loss is not None and loss in LOSSES
        definition = LOSSES.get(loss) if known and loss is not None else None
        if definition is None or definition.probabilities is None:
            which = f"output '{output}' of " if output is not None else ""
            raise error(
                f"{which}the model in '{self.run_dir}' predicts values"
                + (f" (loss {loss})" if loss else "")
                + ", not classes, so it has no probabilities",
                help="probabilities come from models trained with cross_entropy, nll or "
                "binary_cross_entropy",
            )
        return definition.probabilities(outputs.astype(np.float64))

    def has_probabilities(self, output: str) -> bool:
        """Whether `output` was trained by a loss that reads probabilities."""
        from dnnspec.training.losses import LOSSES

        loss = next((o.loss for o in self.file.outputs if o.name == output), None)
        return loss is not None and loss in LOSSES and LOSSES.get(loss).probabilities is not None

    def binary(self, output: str | None = None) -> bool:
        """Whether the output (named `output`) is one 0/1 unit: a binary classifier whose
        logit says how likely the positive class (id 1) is."""
        from dnnspec.assemble.steps import OUTPUT
        from dnnspec.training.losses import LOSSES

        info = next(o for o in self.file.outputs if o.name == (output or OUTPUT))
        kind = LOSSES.get(info.loss).target if info.loss and info.loss in LOSSES else None
        graph_output = next(o for o in self.onnx.graph.output if o.name == info.name)
        dims = graph_output.type.tensor_type.shape.dim
        return kind == "binary" and len(dims) == 2 and dims[1].dim_value == 1

    def class_names(self, output: str | None = None) -> list[str] | None:
        """The output's class names in id order: those recorded (class ids as text where the
        targets were ids), "0" and "1" for a binary one given numbers; None where it
        predicts values or several 0/1 units."""
        from dnnspec.assemble.steps import OUTPUT

        info = next(o for o in self.file.outputs if o.name == (output or OUTPUT))
        if self.binary(output):
            return list(info.labels or ("0", "1"))
        return list(info.labels) if info.labels is not None else None

    def class_ids(self, outputs: np.ndarray, output: str | None = None) -> list[int | None]:
        """Each sample's predicted class id: the highest score, or for a binary output 1
        where the logit exceeds 0 (the probability exceeds 0.5, as binary_accuracy and
        precision count); None for a row that is not finite (a diverged model)."""
        finite = np.isfinite(outputs).all(axis=-1)
        ids = (outputs[..., 0] > 0) if self.binary(output) else outputs.argmax(axis=-1)
        return [int(c) if ok else None for c, ok in zip(ids, finite, strict=True)]

    def predict(
        self,
        x: npt.ArrayLike | Mapping[str, npt.ArrayLike] | str | Path,
        drop_target: bool = False,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Model outputs for a batch: for a model with one (unnamed) output its array, for
        a model with named outputs (`return digit: ..., ink: ...`) a dict of one array per
        output name, in the model's order. The batch is an array (a pandas DataFrame by the
        column names the model records, a Series as one column) or an .npy, .npz (array
        `x`), .csv or .parquet file (or folder); shapes and dtypes are checked against the
        spec: numbers for a float input are cast to its dtype (float64 or int64 to float32,
        as scikit-learn and Keras do; a value beyond float32's range is refused), other
        dtypes are refused, and CSV text is read as the declared dtype. A CSV with a header
        (or a Parquet file) is read by the column names the model records (other columns,
        such as the target, are ignored); `drop_target` takes the inputs out of rows laid
        out as the training CSV (target included). A model of several inputs takes a dict
        of arrays by input name, or an .npz with one array per input name, or a CSV or
        Parquet file read by the columns each input was trained on. A model trained with
        teacher forcing (an input `decoder_in`) given the batch without it decodes it."""
        from dnnspec.assemble.steps import OUTPUT

        names = [o.name for o in self.file.outputs]
        decoded = self._decoded(x)
        if decoded is not None:
            return decoded
        values = self.session.run(names, self._feeds(x, drop_target))
        outputs = dict(zip(names, values, strict=True))
        return outputs if self.file.named else outputs[OUTPUT]

    def _decoded(
        self, x: npt.ArrayLike | Mapping[str, npt.ArrayLike] | str | Path
    ) -> np.ndarray | None:
        """The scores of a model trained with teacher forcing when the batch (a dict or an
        .npz) lacks its `decoder_in`: decoded greedily (runtime/generate.py), the start
        token the id one past the classes; None when the batch is fed as it is."""
        from dnnspec.assemble.steps import OUTPUT
        from dnnspec.data.datasets import MAX_DATA_BYTES
        from dnnspec.data.formats.npz import read_npz
        from dnnspec.runtime.generate import DECODER_INPUT, decode

        decl = next((d for d in self.file.inputs if d.name == DECODER_INPUT), None)
        if decl is None:
            return None
        if isinstance(x, str | Path) and Path(x).suffix == ".npz":
            x = read_npz(Path(x), MAX_DATA_BYTES)
        if not isinstance(x, Mapping) or not x or DECODER_INPUT in x:
            return None
        length = decl.shape[1] if len(decl.shape) == 2 else None
        if not isinstance(length, int) or self.classes is None or self.file.named:
            raise error(
                f"no array given for '{DECODER_INPUT}', and it cannot be decoded: that "
                "needs it declared int64[N, length] with a number for length, and one "
                "output of class scores",
                help=f"pass '{DECODER_INPUT}' with the other inputs",
            )
        rows = len(np.asarray(next(iter(x.values()))))
        feeds = self._feeds({**x, DECODER_INPUT: np.zeros((rows, length), np.int64)}, False)

        def scores(decoder_in: np.ndarray) -> np.ndarray:
            out: np.ndarray = self.session.run([OUTPUT], {**feeds, DECODER_INPUT: decoder_in})[0]
            return out

        return decode(scores, rows, length, self.classes)

    def _feeds(
        self, x: npt.ArrayLike | Mapping[str, npt.ArrayLike] | str | Path, drop_target: bool
    ) -> dict[str, np.ndarray]:
        """Every input of a batch by name, read and checked against its declaration."""
        from dnnspec.data.datasets import read_batch
        from dnnspec.data.formats import Feed
        from dnnspec.runtime.data import from_text

        inputs = self.file.inputs
        if len(inputs) == 1 and not isinstance(x, Mapping):
            return {inputs[0].name: self._x(x, drop_target, inputs[0])}
        names = [decl.name for decl in inputs]
        if drop_target:
            raise error("--drop-target takes the inputs out of rows of a model's one input")
        if isinstance(x, str | Path):
            path = Path(x)
            shapes: dict[str, tuple[int | str, ...] | None] = {d.name: d.shape for d in inputs}
            columns = {d.name: d.columns for d in inputs if d.columns is not None}
            batch = read_batch(path, Feed(shapes, self.file.expects, columns=columns))
            given: dict[str, Any] = dict(batch.arrays)
            if batch.text:
                for decl in inputs:
                    given[decl.name] = from_text(given[decl.name], decl.dtype, f"'{path}'")
        elif isinstance(x, Mapping):
            given = dict(x)
        else:
            raise error(
                f"the model has {len(inputs)} inputs ({', '.join(names)}): pass a dict of "
                "arrays by input name",
                help="or an .npz file with one array per input name",
            )
        for name in given:
            if name not in names:
                raise error(
                    f"the model has no input '{name}'",
                    help=did_you_mean(name, names) or f"its inputs: {', '.join(names)}",
                )
        for name in names:
            if name not in given:
                raise error(f"no array given for the model's input '{name}'")
        feeds = {decl.name: self._x(given[decl.name], False, decl) for decl in inputs}
        rows = {name: len(array) if array.ndim else 0 for name, array in feeds.items()}
        if len(set(rows.values())) > 1:
            shown = ", ".join(f"'{name}' {count}" for name, count in rows.items())
            raise error(f"the inputs hold different numbers of rows: {shown}")
        return feeds

    def _x(self, x: npt.ArrayLike | str | Path, drop_target: bool, decl: InputInfo) -> np.ndarray:
        """A batch of inputs read and checked against the input `decl`."""
        from dnnspec.data.datasets import read_batch
        from dnnspec.data.formats import Feed
        from dnnspec.runtime.columns import pick_columns
        from dnnspec.runtime.data import fits_shape, from_text

        expected = self.file.expects if len(self.file.inputs) == 1 else None
        raw_width = decl.shape[1] if len(decl.shape) == 2 and isinstance(decl.shape[1], int) else -1
        picked = False  # a CSV of rows is read by its columns
        if isinstance(x, str | Path):
            path = Path(x)
            audio = self.file.meta.audio  # a WAV file is read at the model's sample rate
            rate = None if audio is None else audio.sample_rate
            feed = Feed({decl.name: decl.shape}, expected, drop_target, sample_rate=rate)
            batch = read_batch(path, feed)
            x, picked = batch.arrays[decl.name], batch.picked
            if batch.text:
                x = from_text(x, decl.dtype, f"'{path}'")
        x = np.asarray(_from_pandas(x, expected))
        rows = len(decl.shape) == 2 and x.ndim == 2
        if drop_target and not picked:
            if not rows:
                raise error("--drop-target applies to rows of features [N, F]")
            x = x[:, pick_columns(x.shape[1], None, expected, raw_width, True, "the input")]
        if not fits_shape(decl.shape, x.shape, {}):
            csv = expected.get("csv") if expected else None
            extra = rows and (
                x.shape[1] == raw_width + 1 or (csv is not None and x.shape[1] == csv["width"])
            )
            raise error(
                f"input '{decl.name}' expects shape [{', '.join(map(str, decl.shape))}], "
                f"got [{', '.join(map(str, x.shape))}]"
                + (": does it still hold the target column?" if extra else ""),
                help=(
                    "pass --drop-target (drop_target=True) to take the inputs out of rows "
                    "laid out as the training CSV"
                    if extra and csv is not None
                    else None
                ),
            )
        declared = np.dtype(decl.dtype)
        if x.dtype != declared and declared.kind == "f" and x.dtype.kind in "fiu":
            # numbers for a float input: cast, refusing only values beyond its range
            x = from_text(np.asarray(x, np.float64), decl.dtype, f"input '{decl.name}'")
        if x.dtype != np.dtype(decl.dtype):
            raise error(
                f"input '{decl.name}' expects {decl.dtype} data, got {x.dtype}",
                help=f"convert it first, e.g. x.astype(np.{decl.dtype}), checking that "
                "nothing is lost",
            )
        if decl.vocab is not None and x.size:
            bad = np.argwhere((x < 0) | (x >= decl.vocab))
            if len(bad):
                index = tuple(int(i) for i in bad[0])
                raise error(
                    f"input '{decl.name}' holds token id {int(x[index])} at sample "
                    f"{index[0]}, position {index[1:]}, outside the model's vocabulary of "
                    f"{decl.vocab} (0..{decl.vocab - 1})",
                    help="token ids are those the model was trained with, counted from 0",
                )
        return x

    def texts_of(self, path: str | Path, column: str = "text") -> list[str]:
        """The texts of a file for `encode_texts`: a CSV's `column`, else one text per
        non-empty line."""
        from dnnspec.data.texts import read_texts

        return read_texts(Path(path), column)

    def encode_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The inputs of a model trained on texts (`text_folder`) for `texts`: the ids the
        run's tokenizer.json makes (and each text's count of real ids, for a model with a
        lengths input), ready for `predict`."""
        from dnnspec.data.tokenizer import encode as encode_with
        from dnnspec.data.tokenizer import load as load_tokenizer

        text = self.file.meta.text
        if text is None:
            raise error(
                f"the model in '{self.run_dir}' was not trained on texts",
                help="texts feed a model whose data is text_folder(...)",
            )
        tokenizer = load_tokenizer(self.run_dir / Path(text.tokenizer).name)
        ids, lengths = encode_with(tokenizer, texts)
        return {text.input: ids} | ({text.lengths: lengths} if text.lengths else {})

    def generate(self, prompt: str, tokens: int, temperature: float = 1.0, seed: int = 0) -> str:
        """`tokens` characters (or subwords) sampled after `prompt` from a model trained on
        text (the `text` dataset): softmax(scores / temperature), 0 for the most likely one."""
        from dnnspec.assemble.steps import OUTPUT
        from dnnspec.runtime.generate import DECODER_INPUT, sample

        decl, vocab = self.file.input, self.file.vocab
        if vocab is None or decl.dtype != "int64" or len(decl.shape) != 2:
            seq2seq = any(d.name == DECODER_INPUT for d in self.file.inputs)
            raise error(
                f"the model in '{self.run_dir}' was not trained on text",
                help=f"predict decodes its '{DECODER_INPUT}' given its other inputs alone"
                if seq2seq
                else "generate samples from a model whose data is `text(...)`, with one "
                "int64 input of token ids",
            )
        length = decl.shape[1]
        fixed = isinstance(length, int)
        context = length if isinstance(length, int) else self.file.context

        def scores(ids: np.ndarray) -> np.ndarray:
            out: np.ndarray = self.session.run([OUTPUT], {decl.name: ids})[0]
            return out

        new = sample(
            scores, self._prompt_ids(prompt, vocab), tokens, len(vocab), context, fixed,
            temperature, seed,
        )  # fmt: skip
        return "".join(vocab[i] for i in new)

    def _prompt_ids(self, prompt: str, vocab: Sequence[str]) -> list[int]:
        """The prompt's ids: by the run's tokenizer.json for a model trained on subwords,
        else one per character."""
        from dnnspec.data.tokenizer import load as load_tokenizer
        from dnnspec.runtime.generate import encode

        text = self.file.meta.text
        if text is None:
            return encode(prompt, vocab)
        tokenizer = load_tokenizer(self.run_dir / Path(text.tokenizer).name)
        ids: list[int] = tokenizer.encode(prompt).ids
        if not ids:
            raise error("--prompt is empty", help="give at least one word to continue from")
        return ids

    def evaluate(self, data: str | Path | None = None) -> dict[str, Any]:
        """Loss and metrics of model.onnx's weights on the run's validation split, or on a
        data file read as the spec's `file` dataset reads one; a class model's result
        holds its `confusion` matrix ([true, predicted] counts) too."""
        from dnnspec.resolve import read_lock
        from dnnspec.runtime.columns import transform
        from dnnspec.runtime.data import head_labels
        from dnnspec.runtime.prepare import prepare, read_like_data
        from dnnspec.runtime.trainer import Trainer

        spec = read_lock(self.run_dir / "spec.lock.json")
        prep = prepare(spec)
        program = prep.program
        if self.file.spec_hash != program.metadata.spec_hash:
            raise error(
                f"'{self.file.path}' and '{self.run_dir / 'spec.lock.json'}' come from "
                "different specs",
                help="pass a run directory written by one `dnnspec train`",
            )
        trainer = Trainer(program, self.device, prep.train.seed, backend=self.runtime)
        self.warnings += trainer.warnings
        weights = self.file.weights()
        values = trainer.values()
        params = {}
        for slot in program.model_slots():
            weight = weights.get(slot.name)
            if weight is None or weight.shape != values[slot.name].shape:
                raise error(f"'{self.file.path}' lacks the weight '{slot.name}' of its spec")
            params[slot.name] = weight
        if data is not None:
            steps = prep.program.preprocess
            held_out = read_like_data(
                prep.train,
                str(Path(data).resolve()),
                prep.typed,
                head_labels(prep.train_data),
                _file_span(Path(data)),
                "data file",
                like=prep.train_data,
            )
            if steps is not None and held_out.x.shape[1:] != (steps.width,):
                raise error(
                    f"'{data}' has {held_out.x.shape[1]} feature columns; the model reads "
                    f"{steps.width}",
                    help="evaluate a file with the columns of the training data",
                )
            held_out = transform(held_out, steps)
        elif len(prep.val_data):
            held_out = prep.val_data
        else:
            raise error(
                f"the run in '{self.run_dir}' has no validation split (validation = 0), so "
                "there is no held-out data to evaluate",
                help=f"evaluate a data file: dnnspec eval {self.run_dir} data.csv",
            )
        stats = trainer.evaluate_stats(held_out, spec.model.inputs[0].name, params=params)
        result: dict[str, Any] = stats.result()
        for output, counts in stats.confusions.items():
            result[f"{output}_confusion" if output else "confusion"] = counts.tolist()
        return result


def _from_pandas(x: Any, expected: dict[str, Any] | None) -> Any:
    """A pandas DataFrame as an array of its columns (those the model records, in its order,
    when it has them all), a Series as one column; anything else as it is. pandas is no
    dependency: an object can only be one when the caller has imported it."""
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return x
    if isinstance(x, pandas.Series):
        return x.to_frame().to_numpy()
    if not isinstance(x, pandas.DataFrame):
        return x
    names = [c["name"] for c in expected["columns"]] if expected else []
    columns = [str(c) for c in x.columns]
    if names and all(n in columns for n in names):
        x = x.iloc[:, [columns.index(n) for n in names]]
    return x.to_numpy()


def _file_span(path: Path) -> Span:
    """Diagnostics about a data file handed on the command line point at the file."""
    return Span(file=str(path), line=1, col=1, end_line=1, end_col=2)


def write_predictions(
    predictions: np.ndarray, out: str | Path, header: Sequence[str] | None = None
) -> Path:
    """Predictions as .npy or .csv (one row per sample), written atomically; a CSV may
    start with a `header` row naming the columns."""
    from dnnspec.files import write_with

    out = Path(out)
    if out.suffix not in PREDICTION_FORMATS:
        raise error(f"--out '{out}': predictions are written as .npy or .csv")
    if out.suffix == ".csv" and predictions.ndim > 2:
        raise error(
            f"the predictions have shape {list(predictions.shape)}: a CSV holds one row per "
            "sample, so only outputs of rank 1 or 2",
            help="write them as .npy instead",
        )
    if out.suffix == ".npy":
        write_with(out, lambda f: np.save(f, predictions), f"predictions '{out}'")
    else:
        rows = predictions.reshape(len(predictions), -1) if predictions.ndim else predictions

        def write(f: Any) -> None:
            if header is not None:
                f.write((",".join(_csv_cell(h) for h in header) + "\n").encode())
            np.savetxt(f, rows, delimiter=",", fmt="%s" if rows.dtype == object else "%.18e")

        write_with(out, write, f"predictions '{out}'")
    return out


PREDICTION_FORMATS = (".npy", ".csv")
OUTPUTS_FORMATS = (".npz", ".csv")
"""How the predictions of a model with named outputs are written."""


def _write_npz(f: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """An .npz of `arrays` by name (`np.savez(f, **arrays)` would take an output named
    `file` for its own argument)."""
    with zipfile.ZipFile(f, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def write_output_predictions(predictions: dict[str, np.ndarray], out: str | Path) -> Path:
    """Every named output's predictions: an .npz with one array per output name, or a CSV
    with one row per sample whose header names each column `<output>_<i>` (the columns of
    each output flattened in order), written atomically."""
    from dnnspec.files import write_with

    out = Path(out)
    if out.suffix not in OUTPUTS_FORMATS:
        raise error(
            f"--out '{out}': the predictions of a model with named outputs are written as "
            ".npz (one array per output) or .csv"
        )
    if out.suffix == ".npz":
        write_with(out, lambda f: _write_npz(f, predictions), f"predictions '{out}'")
        return out
    deep = [k for k, v in predictions.items() if v.ndim > 2]
    if deep:
        raise error(
            f"output '{deep[0]}' has shape {list(predictions[deep[0]].shape)}: a CSV holds "
            "one row per sample, so only outputs of rank 1 or 2",
            help="write them as .npz instead",
        )
    blocks = [v.reshape(len(v), -1) for v in predictions.values()]
    header = [
        f"{k}_{i}" for k, b in zip(predictions, blocks, strict=True) for i in range(b.shape[1])
    ]
    rows = np.concatenate(blocks, axis=1)
    write_with(
        out,
        lambda f: np.savetxt(f, rows, delimiter=",", header=",".join(header), comments=""),
        f"predictions '{out}'",
    )
    return out


def _csv_cell(text: str) -> str:
    """A header or class name as one CSV cell (quoted when it holds a comma or quote)."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def proba_table(model: Model, outputs: np.ndarray) -> tuple[list[str], np.ndarray]:
    """`predict --proba` as a table: `class,p_<name>...` for a class model (the predicted
    class by name, then the probability of each), `class,p_<positive>` for a binary one
    (the predicted class by name, then the probability of the positive one, its sigmoid),
    `p_unit_<i>...` (the probability that unit i is 1) for several 0/1 units."""
    if outputs.ndim != 2:
        raise error(
            f"the outputs have shape {list(outputs.shape)}: --proba writes one row of "
            "probabilities per sample, so only outputs [N, C]",
            help="predict without --proba and write .npy",
        )
    proba = model.probabilities(outputs)
    names = model.class_names()
    if names is None:
        return [f"p_unit_{i}" for i in range(proba.shape[1])], proba
    table = np.empty((len(proba), 1 + proba.shape[1]), object)
    # a diverged row has no class: an empty cell
    table[:, 0] = ["" if c is None else _csv_cell(names[c]) for c in model.class_ids(outputs)]
    table[:, 1:] = [[f"{p:.9g}" for p in row] for row in proba]
    shown = names[1:] if model.binary() else names
    return ["class", *(f"p_{name}" for name in shown)], table


def load(run_dir: str | Path, device: Device = "auto", runtime: str = "onnxruntime") -> Model:
    """Open a trained run directory for prediction and evaluation in `runtime` (a backend,
    or `auto`: the one training measured faster for its spec here)."""
    if not str(run_dir):
        raise error("the run directory path is empty")
    return Model(Path(run_dir), device, runtime)


def inspect(path: str | Path) -> list[GraphSummary]:
    """What is inside an .onnx file, the graphs of a run directory, or a spec's graphs."""
    from dnnspec.tools.inspect import inspect_path

    return inspect_path(Path(path))


def draw_graph(path: str | Path, out: str | Path, graph: str = "model") -> Path:
    """Draw one graph of `path` (see `inspect`) as Graphviz DOT (`out` ending in .dot), or
    as .svg/.png when Graphviz is installed; nodes are clustered by the spec's layers."""
    from dnnspec.files import write_text
    from dnnspec.tools.inspect import graph_of, render_dot, to_dot

    out = Path(out)
    dot = to_dot(graph_of(Path(path), graph))
    if out.suffix == ".dot":
        write_text(out, dot, "DOT file")
    else:
        render_dot(dot, out)
    return out


def plot(runs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Learning curves of one or more runs as a PNG (needs matplotlib: `dnnspec[plot]`);
    by default the run's curves.png, or curves.png here for several runs."""
    from dnnspec.tools.plot import plot_runs

    paths = [Path(r) for r in runs]
    if out is None:
        out = paths[0] / "curves.png" if len(paths) == 1 else Path("curves.png")
    return plot_runs(paths, Path(out))
