"""Run every example spec's graphs in every installed ONNX runtime and compare them.

For each spec: `model.onnx` on a random batch, then one train step and fifty chained train
steps (each step's `.next` outputs fed back as the next step's inputs, `step` counting up,
dropout on), in onnxruntime (the baseline), onnx.reference, OpenVINO, tract and
onnx2torch, whichever are installed. Prints a table of the largest difference from
onnxruntime per graph (relative to the value's magnitude where that exceeds 1) and exits 1
when an installed runtime disagrees beyond the tolerance or fails to run a graph.

    python tools/portability.py [--steps 50] [--markdown] [SPEC ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from dnnspec.assemble.steps import (
    SEED,
    STEP,
    Program,
    build_inference,
    build_train_step,
    next_name,
)
from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec
from dnnspec.runtime.trainer import initial_values
from dnnspec.training.losses import LOSSES
from dnnspec.training.schedules import Timing

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4
BATCH, LENGTH = 8, 5

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], Feeds]
Loader = Callable[[onnx.ModelProto], Runner]


def _onnxruntime(model: onnx.ModelProto) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def _reference(model: onnx.ModelProto) -> Runner:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    return lambda feeds: dict(zip(names, evaluator.run(None, feeds), strict=True))


def _openvino(model: onnx.ModelProto) -> Runner:
    import openvino as ov

    core = ov.Core()
    # without the hint OpenVINO may compute float32 graphs in bf16/f16 on CPUs that have them
    compiled = core.compile_model(
        core.read_model(model.SerializeToString(), b""),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1},
    )
    order = [i.get_any_name() for i in compiled.inputs]

    def run(feeds: Feeds) -> Feeds:
        result = compiled([feeds[n] for n in order])
        return {k.get_any_name(): np.asarray(v) for k, v in result.items()}

    return run


def _tract(model: onnx.ModelProto) -> Runner:
    import tract

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path)
        runnable = tract.onnx().load(path).into_model().into_runnable()
    order = [i.name for i in model.graph.input if i.name not in _initializers(model)]
    names = [o.name for o in model.graph.output]

    def run(feeds: Feeds) -> Feeds:
        outputs = runnable.run([np.require(feeds[n], requirements="C") for n in order])
        return dict(zip(names, (t.to_numpy() for t in outputs), strict=True))

    return run


def _onnx2torch(model: onnx.ModelProto) -> Runner:
    import torch
    from onnx2torch import convert

    module = convert(model)
    order = [i.name for i in model.graph.input if i.name not in _initializers(model)]
    names = [o.name for o in model.graph.output]

    def run(feeds: Feeds) -> Feeds:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.asarray(feeds[n])) for n in order))
        values = out if isinstance(out, tuple | list) else (out,)
        return dict(zip(names, (v.numpy() for v in values), strict=True))

    return run


def _initializers(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer}


RUNTIMES: dict[str, tuple[str, Loader]] = {
    "onnxruntime": ("onnxruntime", _onnxruntime),
    "onnx.reference": ("onnx", _reference),
    "OpenVINO": ("openvino", _openvino),
    "tract": ("tract", _tract),
    "onnx2torch": ("onnx2torch", _onnx2torch),
}
"""Runtime name -> (module that must be importable, loader); onnxruntime is the baseline."""


def installed() -> list[str]:
    return [name for name, (module, _) in RUNTIMES.items() if importlib.util.find_spec(module)]


@dataclass
class Cell:
    """One runtime on one graph: the largest difference, or why it could not run."""

    diff: float | None = None
    error: str | None = None

    def ok(self) -> bool:
        return self.error is None and self.diff is not None and self.diff <= TOLERANCE

    def __str__(self) -> str:
        if self.error is not None:
            return f"fails: {self.error}"
        return f"{self.diff:.1e}" if self.diff else "0"


@dataclass
class Row:
    spec: str
    graph: str
    cells: dict[str, Cell] = field(default_factory=dict)


def _diff(ours: Feeds, base: Feeds) -> float:
    worst = 0.0
    for name, want in base.items():
        got = np.asarray(ours[name], dtype=np.float64)
        want64 = np.asarray(want, dtype=np.float64)
        if got.shape != want64.shape:
            raise ValueError(f"{name} has shape {got.shape}, not {want64.shape}")
        scale = max(1.0, float(np.abs(want64).max(initial=0.0)))
        worst = max(worst, float(np.abs(got - want64).max(initial=0.0)) / scale)
    return worst


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:90] + ("..." if len(text) > 90 else "")


def _program(path: Path) -> tuple[Program, onnx.ModelProto, Feeds, Feeds]:
    """The spec's graphs with initial weights, a model feed and a first train-step feed."""
    spec = load_spec(path)
    assert spec.train is not None
    typed = check_spec(spec)
    last = typed.output.dims[-1]
    class_target = LOSSES.get(spec.train.trained()[0].loss.name).target == "class"
    classes = last if isinstance(last, int) and class_target else None
    program = build_train_step(typed, spec.train, classes, Timing(10, 100))
    values = initial_values(program, 0)
    model = build_inference(typed, program.model_slots(), values, program.metadata)
    rng = np.random.default_rng(0)
    inputs: Feeds = {}
    for decl in spec.model.inputs:
        dims = (BATCH, *(d if isinstance(d, int) else LENGTH for d in decl.dims[1:]))
        inputs[decl.name] = (
            rng.integers(0, 2, dims)  # token ids inside every example's vocabulary
            if decl.dtype.startswith("int")
            else rng.normal(size=dims).astype(np.float32)
        )
    train = {
        **{k: v.astype(np.float32) for k, v in values.items()},
        **inputs,
        STEP: np.array(0, np.int64),
        SEED: np.array(3, np.int64),
    }
    for out in program.outputs:  # one target per trained output
        out_dims = (BATCH, *(d if isinstance(d, int) else LENGTH for d in out.type.dims[1:]))
        train[out.target] = (
            rng.integers(0, out.classes, out_dims[:-1])
            if out.classes
            else rng.normal(size=out_dims).astype(np.float32)
        )
    return program, model, inputs, train


def _chain(run: Runner, program: Program, feeds: Feeds, steps: int) -> Feeds:
    """`steps` train steps from `feeds`, each fed the previous one's carried outputs."""
    feeds = dict(feeds)
    out: Feeds = {}
    for i in range(steps):
        out = run(feeds)
        for name in program.carried():
            feeds[name] = out[next_name(name)]
        feeds[STEP] = np.array(i + 1, np.int64)
    return out


def check_spec_file(path: Path, runtimes: Sequence[str], steps: int) -> list[Row]:
    program, model, inputs, train = _program(path)
    graphs: list[tuple[str, onnx.ModelProto, Callable[[Runner], Feeds]]] = [
        ("model.onnx", model, lambda run: run(inputs)),
        ("train step x1", program.train_step, lambda run: _chain(run, program, train, 1)),
        (
            f"train step x{steps}",
            program.train_step,
            lambda run: _chain(run, program, train, steps),
        ),
    ]
    rows = []
    loaded: dict[tuple[str, int], Runner | BaseException] = {}
    for graph_name, graph, evaluate in graphs:
        row = Row(path.stem, graph_name)
        base = evaluate(RUNTIMES["onnxruntime"][1](graph))
        for name in runtimes:
            if name == "onnxruntime":
                continue
            key = (name, id(graph))
            try:
                if key not in loaded:
                    loaded[key] = RUNTIMES[name][1](graph)
                runner = loaded[key]
                if isinstance(runner, BaseException):
                    raise runner
                row.cells[name] = Cell(diff=_diff(evaluate(runner), base))
            except Exception as error:  # a runtime's failure is a result of the table
                loaded.setdefault(key, error)
                row.cells[name] = Cell(error=_short(error))
        rows.append(row)
    return rows


def table(rows: Sequence[Row], runtimes: Sequence[str], markdown: bool) -> str:
    others = [r for r in runtimes if r != "onnxruntime"]
    header = ["spec", "graph", *others]
    body = [[row.spec, row.graph, *(str(row.cells[r]) for r in others)] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join([*lines, *("| " + " | ".join(cells) + " |" for cells in body)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *body]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", type=Path, help="default: every spec in specs/")
    parser.add_argument("--steps", type=int, default=50, help="chained train steps")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    runtimes = installed()
    specs = args.specs or sorted((ROOT / "specs").glob("*.dnn"))
    rows = [row for path in specs for row in check_spec_file(path, runtimes, args.steps)]
    print(
        f"largest difference from onnxruntime (tolerance {TOLERANCE:g}); installed: "
        + ", ".join(runtimes)
    )
    print(table(rows, runtimes, args.markdown))
    failed = [(row, name) for row in rows for name, cell in row.cells.items() if not cell.ok()]
    for row, name in failed:
        print(f"FAIL {row.spec} {row.graph} in {name}: {row.cells[name]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
