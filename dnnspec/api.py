"""The Python API: the same pipeline as the CLI, as functions; the one public surface
(the CLI is a thin layer over it).

import dnnspec
program = dnnspec.compile("specs/digits_mlp.dnn")
result = dnnspec.train("specs/digits_mlp.dnn", hidden=64, out="runs/h64")
model = dnnspec.load(result.run_dir)
probabilities = model.predict(x)

Every function taking a spec accepts a path or a `Spec` from `load_spec`. Keyword overrides
replace params: a string is read as `--set` text (`hidden="64"` is the int 64), any other
value as itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from dnnspec.assemble.steps import OUTPUT, Program
from dnnspec.check import shapes
from dnnspec.check.shapes import TypedModel
from dnnspec.data.datasets import read_inputs
from dnnspec.errors import error
from dnnspec.files import write_text
from dnnspec.frontend import load_spec as _load_spec
from dnnspec.ir import Spec
from dnnspec.resolve import read_lock, write_lock
from dnnspec.runtime.cadence import Cadence
from dnnspec.runtime.data import fits_shape
from dnnspec.runtime.generate import encode, sample
from dnnspec.runtime.run import (
    Interrupted,
    Reporter,
    RunResult,
    export_model,
    new_run_dir,
    prepare,
    run_training,
    write_graphs,
)
from dnnspec.runtime.session import Device, make_session
from dnnspec.runtime.trainer import Trainer, initial_values
from dnnspec.tools.format import Formatted, format_file
from dnnspec.tools.inspect import GraphSummary, graph_of, inspect_path, render_dot, to_dot
from dnnspec.tools.plot import can_plot, plot_runs
from dnnspec.tune.tuner import Interrupted as TuneInterrupted
from dnnspec.tune.tuner import ProgressFn, Tuner, TuneResult

__all__ = [
    "Cadence",
    "Device",
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
    "check_spec",
    "compile",
    "format_file",
    "inspect",
    "plot",
    "draw_graph",
    "load",
    "load_spec",
    "save",
    "train",
    "tune",
]


def _texts(overrides: dict[str, Any]) -> dict[str, str]:
    """Keyword overrides as `--set` text: a string as it stands, other values as JSON."""
    return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in overrides.items()}


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


def compile(source: str | Path | Spec, /, **overrides: Any) -> Program:  # noqa: A001 - the verb
    """Check a spec and assemble its train-step and eval-step graphs (loads its data)."""
    return prepare(_spec(source, overrides)).program


def save(program: Program, out: str | Path) -> dict[str, Path]:
    """Write a compiled program into `out`: its train-step and eval-step graphs, model.onnx
    with the seeded initial weights and spec.lock.json; returns each file by kind."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the output directory '{out}': {exc.strerror}") from None
    paths = write_graphs(program, out)
    params = initial_values(program, program.train.seed, params_only=True)
    paths["model"] = export_model(program, params, out / "model.onnx")
    paths["lock"] = out / "spec.lock.json"
    write_lock(program.typed.spec, paths["lock"])
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
    **overrides: Any,
) -> RunResult:
    """Train a spec into `out` (default: a new runs/<spec name>[-n]); keyword arguments
    override its params (`hidden=64`). `resume` continues the run in `out` from its last
    checkpoint; `reporter` receives progress; `checkpoint_every` is a `Cadence` or its
    text (`5` epochs, `30s`; default at most once a minute). Ctrl-C raises `Interrupted`
    (the run keeps model.onnx of the last finished epoch and can be resumed). `stop_after`
    pauses the run after that epoch; resuming continues it as if it had never paused. `plot`
    draws curves.png into the run (default: when matplotlib is installed)."""
    if resume and out is None:
        raise error("resume needs the run directory to continue: out=DIR")
    spec = _spec(source, overrides)
    run_dir = Path(out) if out is not None else new_run_dir(Path(spec.source))
    every = (
        Cadence.parse(checkpoint_every) if isinstance(checkpoint_every, str) else checkpoint_every
    )
    result = run_training(
        spec, run_dir, device, epochs, reporter, resume, overwrite, every, stop_after
    )
    if plot if plot is not None else can_plot():
        result.paths["curves"] = plot_runs([result.run_dir], result.run_dir / "curves.png")
    return result


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
    """A trained run: its deployable model.onnx plus what is needed to evaluate it."""

    def __init__(self, run_dir: Path, device: Device = "auto") -> None:
        self.run_dir, self.device = run_dir, device
        path = run_dir / "model.onnx"
        if not path.exists():
            raise error(
                f"'{run_dir}' holds no model.onnx",
                help="pass a directory written by `dnnspec train`",
            )
        try:
            self.onnx = onnx.load(path)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
            raise error(f"'{path}' is not a readable ONNX model: {exc}") from None
        meta = {p.key: p.value for p in self.onnx.metadata_props}
        self.inputs = json.loads(meta.get("dnnspec.inputs", "[]"))
        labels = meta.get("dnnspec.class_labels")
        self.classes = len(json.loads(labels)) if labels else None
        self.vocab: list[str] | None = (
            json.loads(meta["dnnspec.vocab"]) if "dnnspec.vocab" in meta else None
        )
        self.context = int(meta.get("dnnspec.context", "0"))
        self.session = make_session(self.onnx, device)

    def predict(self, x: np.ndarray | str | Path) -> np.ndarray:
        """Model outputs for a batch, given as an array or an .npy, .npz (array `x`) or .csv
        file; shapes and dtypes are checked against the spec."""
        decl = self.inputs[0]
        x = read_inputs(Path(x)) if isinstance(x, str | Path) else np.asarray(x)
        if not fits_shape(tuple(decl["shape"]), x.shape, {}):
            raise error(
                f"input '{decl['name']}' expects shape [{', '.join(map(str, decl['shape']))}], "
                f"got [{', '.join(map(str, x.shape))}]"
            )
        if x.dtype.kind not in "biuf":
            raise error(f"input '{decl['name']}' expects {decl['dtype']} data, got {x.dtype}")
        output: np.ndarray = self.session.run([OUTPUT], {decl["name"]: x.astype(decl["dtype"])})[0]
        return output

    def generate(self, prompt: str, tokens: int, temperature: float = 1.0, seed: int = 0) -> str:
        """`tokens` characters sampled after `prompt` from a model trained on text (the
        `text` dataset): softmax(scores / temperature), 0 for the most likely one."""
        if self.vocab is None or len(self.inputs) != 1 or self.inputs[0]["dtype"] != "int64":
            raise error(
                f"the model in '{self.run_dir}' was not trained on text",
                help="generate samples from a model whose data is `text(...)`, with one "
                "int64 input of token ids",
            )
        decl, vocab = self.inputs[0], self.vocab
        length = decl["shape"][1] if len(decl["shape"]) == 2 else None
        fixed = isinstance(length, int)
        context = length if isinstance(length, int) else self.context

        def scores(ids: np.ndarray) -> np.ndarray:
            out: np.ndarray = self.session.run([OUTPUT], {decl["name"]: ids})[0]
            return out

        new = sample(
            scores, encode(prompt, vocab), tokens, len(vocab), context, fixed, temperature, seed
        )
        return "".join(vocab[i] for i in new)

    def evaluate(self) -> dict[str, float]:
        """Loss and metrics of model.onnx's weights on the run's validation split."""
        spec = read_lock(self.run_dir / "spec.lock.json")
        prep = prepare(spec)
        trainer = Trainer(prep.program, self.device, prep.train.seed)
        weights = {t.name: numpy_helper.to_array(t) for t in self.onnx.graph.initializer}
        values = trainer.values()
        values.update({s.name: weights[s.name] for s in prep.program.model_slots()})
        trainer.load_values(values)
        data = prep.val_data if len(prep.val_data) else prep.train_data
        return trainer.evaluate(data, spec.model.inputs[0].name)


def load(run_dir: str | Path, device: Device = "auto") -> Model:
    """Open a trained run directory for prediction and evaluation."""
    return Model(Path(run_dir), device)


def inspect(path: str | Path) -> list[GraphSummary]:
    """What is inside an .onnx file, the graphs of a run directory, or a spec's graphs."""
    return inspect_path(Path(path))


def draw_graph(path: str | Path, out: str | Path, graph: str = "model") -> Path:
    """Draw one graph of `path` (see `inspect`) as Graphviz DOT (`out` ending in .dot), or
    as .svg/.png when Graphviz is installed; nodes are clustered by the spec's layers."""
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
    paths = [Path(r) for r in runs]
    if out is None:
        out = paths[0] / "curves.png" if len(paths) == 1 else Path("curves.png")
    return plot_runs(paths, Path(out))
