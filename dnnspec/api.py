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
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from dnnspec.check import shapes
from dnnspec.check.shapes import TypedModel
from dnnspec.errors import DiagnosticError, error
from dnnspec.frontend import load_spec as _load_spec
from dnnspec.ir import Spec

if TYPE_CHECKING:
    from dnnspec.assemble.compile import Compiled
    from dnnspec.assemble.steps import Program
    from dnnspec.runtime.backend import Device
    from dnnspec.runtime.cadence import Cadence
    from dnnspec.runtime.model import Model
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
    "Model": ("dnnspec.runtime.model", "Model"),
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
    from dnnspec.runtime.prepare import compile_program

    return compile_program(_spec(source, overrides)).program


def compile_details(source: str | Path | Spec, /, **overrides: Any) -> Compiled:
    """`compile`, saying whether and why the data was read (fitted preprocessing, a
    schedule counted in epochs) and what only the data would have told (class names)."""
    from dnnspec.runtime.prepare import compile_program

    return compile_program(_spec(source, overrides))


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
    source: str | Path | Spec,
    workers: int,
    argv: Sequence[str],
    out: str | Path | None,
    backend: str = "mpi",
    address: str | None = None,
) -> int | None:
    """`dnnspec ARGV` (a `train` into `out`) as `workers` data-parallel processes, started
    by MPI's launcher (`backend` "mpi") or as Ray actors ("ray", on the cluster at
    `address`, else a local Ray): their exit status, or None where this process trains
    alone or already is one of them. A worker count the spec's `batch` cannot share is a
    located error. Without `out` the run directory is chosen here, so that all workers,
    and a restart, use the same."""
    from dnnspec.runtime.parallel import check_workers, launch, worker_rank
    from dnnspec.runtime.run import new_run_dir

    if address is not None and backend != "ray":
        raise error(
            "--address only applies to --backend ray",
            help="add --backend ray to train on that Ray cluster, or drop --address",
        )
    spec = _spec(source, {})
    check_workers(spec, workers)
    if worker_rank() is not None or (workers == 1 and backend == "mpi"):
        return None
    run_dir = Path(out) if out is not None else new_run_dir(Path(spec.source))
    given = [*argv] if out is not None else [*argv, "--out", str(run_dir)]
    if backend == "ray":
        from dnnspec.runtime.ray_workers import launch_ray

        return launch_ray(workers, given, run_dir, address)
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
    from dnnspec.runtime.model import Model

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
