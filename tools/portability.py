"""Run every example spec's graphs in every installed ONNX runtime and compare them.

Per spec, assembled as `dnnspec train` assembles it and fed the spec's own training data
(batches of the spec's size and of half that plus one by turns, so each runtime runs the
symbolic batch at two sizes; dropout on), in onnxruntime (the baseline), onnx.reference,
OpenVINO, tract and onnx2torch, whichever are installed. Four rows:

- `model.onnx` on one batch;
- `train step x1`: the first train step from the initial state;
- `train xN, each from onnxruntime's state`: every one of N steps run from onnxruntime's
  state before it, the largest difference of any (the step counter, schedule, dropout
  masks and batch sizes of N steps, without compounding);
- `train xN chained`: each step fed the runtime's own `.next` outputs, the last compared.

Training can amplify rounding (chained Adam steps; a max-pool gradient split between
near-tied elements): each of the last two rows names onnxruntime's own "1-ulp spread",
how far its result moves when every carried value is moved one float32 ulp before each
step (rounding noise, as another runtime's arithmetic adds), and allows ten times that
spread where that exceeds the tolerance. The spread is the larger of two probes, every
value one ulp up or down at random and every value one ulp up: the second tips the
near-ties of a max-pool window that the first leaves alone.

Differences are the largest over all outputs, relative to a value's magnitude where that
exceeds 1; a runtime fails a cell beyond the tolerance (1e-4), on an error, or when it does
not finish in time: every runtime runs in its own child process with a deadline per cell
and is killed past it ("timeout after Ns"). The children also keep OpenVINO's takeover of
SIGINT (once it has compiled a model) away from the caller. Exits 1 when any cell fails.

    python tools/portability.py [SPEC.dnn ...] [--spec NAME ...] [--runtime NAME ...]
                                [--steps 50] [--timeout 120] [--markdown | --json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from runtimes import RUNTIMES, installed, version

from dnnspec.runtime.backend import Inference

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4
MODEL, STEP1, EACH, CHAINED = "model.onnx", "train step x1", "train steps, each", "chained"
SPREAD, EACH_SPREAD = "spread", "each spread"
"""Row keys: the model, the first step, the largest difference of each step run from
onnxruntime's state, the last of the chained steps; SPREAD and EACH_SPREAD are
onnxruntime's own chain and steps from states one float32 ulp away."""
CHAOS = 10.0
"""The chained steps may differ by this many times onnxruntime's own 1-ulp spread."""

Feeds = dict[str, np.ndarray]


@dataclass
class Cell:
    """One runtime on one graph: the largest difference, or why it could not run."""

    diff: float | None = None
    error: str | None = None
    seconds: float | None = None
    worst: str | None = None
    """The output that differs most."""
    tolerance: float = TOLERANCE

    def ok(self) -> bool:
        return self.error is None and self.diff is not None and self.diff <= self.tolerance

    def __str__(self) -> str:
        if self.error is not None:
            return self.error
        assert self.diff is not None
        text = f"{self.diff:.1e}" if self.diff else "0"
        if self.diff <= self.tolerance:
            return text
        return f"differs: {text}" + (f" in {self.worst}" if self.worst else "")


@dataclass
class Row:
    spec: str
    graph: str
    cells: dict[str, Cell] = field(default_factory=dict)


# ---- the cases: graphs and feeds written by the parent, read by every child


def write_case(path: Path, steps: int, where: Path) -> None:
    """The spec's model.onnx and train_step.onnx with initial weights (assembled as `dnnspec
    train` does, with its data), the model's feed, the initial state, one batch of the
    spec's own training data per step and the carried names, under `where`."""
    from dnnspec.assemble.steps import SEED, STEP, build_inference, next_name
    from dnnspec.frontend import load_spec
    from dnnspec.runtime.prepare import prepare
    from dnnspec.runtime.trainer import initial_values

    prepared = prepare(load_spec(path))
    program, data = prepared.program, prepared.train_data
    values = initial_values(program, 0)
    model = build_inference(prepared.typed, program.model_slots(), values, program.metadata)
    onnx.save(model, where / "model.onnx")
    onnx.save(program.train_step, where / "train_step.onnx")
    inputs = data.feeds(prepared.spec.model.inputs[0].name)  # one array per model input
    sizes = (prepared.train.batch, prepared.train.batch // 2 + 1)
    start = 0
    for i in range(steps):
        size = sizes[i % len(sizes)]
        rows = np.arange(start, start + size) % len(data)
        start += size
        batch = {**{k: v[rows] for k, v in inputs.items()}, STEP: np.array(i, np.int64)}
        for out in program.outputs:  # one target per trained output
            batch[out.target] = (data.targets[out.head.output] if out.head.output else data.y)[rows]
        _save(where / f"batch{i}.npz", batch)
        if i == 0:
            feed = {k: _model_input(program, v[rows]) for k, v in inputs.items()}
            _save(where / "model_feed.npz", feed)
    state: Feeds = {k: v.astype(np.float32) for k, v in values.items()}
    _save(where / "state.npz", {**state, SEED: np.array(3, np.int64)})
    carried = {name: next_name(name) for name in program.carried()}
    (where / "case.json").write_text(json.dumps({"steps": steps, "carried": carried}))


def _model_input(program: Any, x: np.ndarray) -> np.ndarray:
    """A batch as model.onnx takes it: an image model's decoded uint8 pixels [N, H, W, C]
    (the steps read them as float32 [N, C, H, W] x scale)."""
    image = program.metadata.image
    if image is None:
        return x
    return np.rint(x / image.scale).astype(np.uint8).transpose(0, 2, 3, 1)


def _save(path: Path, arrays: Feeds) -> None:
    payload: dict[str, Any] = dict(arrays)
    np.savez(path, **payload)


def _load(path: Path) -> Feeds:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _step_outputs(where: Path, i: int) -> Feeds:
    return _load(where / f"onnxruntime.step{i}.npz")


def _runner(runtime: Inference, model: onnx.ModelProto) -> Callable[[Feeds], Feeds]:
    """`model` opened on one thread: feeds -> every output by name."""
    graph = runtime.open(model, "cpu", threads=1)
    names = [o.name for o in model.graph.output]
    return lambda feeds: dict(zip(names, graph.run(None, feeds), strict=True))


def run_case(
    runtime: str, where: Path, graph: str
) -> Iterator[tuple[str, Feeds | tuple[float, str | None]]]:
    """(row, outputs to compare with onnxruntime's, or the difference already taken).

    `model`: the model's outputs. `train`: the first step, then the last of the chained
    steps; then the largest difference of any step run from onnxruntime's own state
    before it (saved by onnxruntime's run). onnxruntime itself runs its chain again with
    its state moved one float32 ulp at random before every step, and its steps from such
    states: how far rounding noise alone moves them."""
    opened = RUNTIMES[runtime][1]
    if graph == "model":
        run = _runner(opened, onnx.load(where / "model.onnx"))
        yield MODEL, run(_load(where / "model_feed.npz"))
        return
    case = json.loads((where / "case.json").read_text())
    steps, carried = case["steps"], case["carried"]
    run = _runner(opened, onnx.load(where / "train_step.onnx"))
    initial = _load(where / "state.npz")

    signs = np.random.default_rng(0)

    def nudge(feeds: Feeds, up: bool = False) -> Feeds:
        """Every nonzero carried float moved one ulp up or down at random (or up):
        rounding noise (zeros stay, so a second moment cannot turn negative)."""
        moved = dict(feeds)
        for k in carried:
            v = feeds[k]
            if v.dtype.kind == "f":
                down = np.zeros(v.shape, bool) if up else signs.random(v.shape) < 0.5
                away = np.where(down, -np.inf, np.inf).astype(v.dtype)
                moved[k] = np.where(v == 0, v, np.nextafter(v, away))
        return moved

    def chain(feeds: Feeds, record: bool, noisy: str = "") -> Iterator[Feeds]:
        """`noisy`: "random" or "up", the ulp nudge applied before every step."""
        feeds = dict(feeds)
        for i in range(steps):
            fed = nudge(feeds, up=noisy == "up") if noisy else feeds
            out = run({**fed, **_load(where / f"batch{i}.npz")})
            if record:
                _save(where / f"onnxruntime.step{i}.npz", out)
            for name, updated in carried.items():
                feeds[name] = out[updated]
            yield out

    baseline = runtime == "onnxruntime"
    last: Feeds = {}
    for i, out in enumerate(chain(initial, record=baseline)):
        if i == 0:
            yield STEP1, out
        if i == steps - 1:
            yield CHAINED, out
            last = out
    if baseline:
        # the larger spread of two noisy chains, each value one ulp at random and every
        # value one ulp up before every step (as for the single steps below)
        ends = [list(chain(initial, record=False, noisy=kind))[-1] for kind in ("random", "up")]
        yield SPREAD, max(ends, key=lambda end: _diff(end, last)[0])
    worst: tuple[float, str | None] = (0.0, None)
    for i in range(steps):
        before = _step_outputs(where, i - 1) if i else {}
        feeds = {**initial, **{n: before[u] for n, u in carried.items() if before}}
        # onnxruntime: the larger spread of two probes, each value one ulp at random and
        # every value one ulp up (which tips other near-ties of a max-pool window)
        probes = [nudge(feeds), nudge(feeds, up=True)] if baseline else [feeds]
        for probe in probes:
            out = run({**probe, **_load(where / f"batch{i}.npz")})
            diff, name = _diff(out, _step_outputs(where, i))
            if diff > worst[0]:
                worst = (diff, f"{name} of step {i + 1}")
    yield (EACH_SPREAD if baseline else EACH), worst


def child(runtime: str, where: Path, graph: str) -> None:
    """Run one graph kind and report each result as a JSON line on stdout (outputs saved
    beside the case), so the parent can time each cell and kill a hung runtime."""
    started = time.perf_counter()
    try:
        for index, (name, result) in enumerate(run_case(runtime, where, graph)):
            report: dict[str, Any] = {"graph": name, "index": index}
            if isinstance(result, tuple):
                report["diff"], report["worst"] = result
            else:
                _save(where / f"{runtime}.{graph}.{index}.npz", result)
            report["seconds"] = time.perf_counter() - started
            print(json.dumps(report), flush=True)
            started = time.perf_counter()
    except Exception as error:  # a runtime's failure is a result of the table
        print(json.dumps({"error": _short(error)}), flush=True)


# ---- the parent: children with deadlines, differences, the table


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return "fails: " + text[:110] + ("..." if len(text) > 110 else "")


def _diff(ours: Feeds, base: Feeds) -> tuple[float, str | None]:
    """The largest difference over the outputs and the output it is in."""
    worst, where = 0.0, None
    for name, want in base.items():
        if name not in ours:
            raise ValueError(f"no output {name}")
        got = np.asarray(ours[name], dtype=np.float64)
        want64 = np.asarray(want, dtype=np.float64)
        if not np.isfinite(want64).all():
            raise ValueError(f"onnxruntime's {name} is not finite: nothing to compare")
        if got.shape != want64.shape:
            raise ValueError(f"{name} has shape {got.shape}, not {want64.shape}")
        if not np.isfinite(got).all() and not np.array_equal(got, want64, equal_nan=True):
            return float("inf"), name
        scale = max(1.0, float(np.abs(want64).max(initial=0.0)))
        diff = float(np.abs(got - want64).max(initial=0.0)) / scale
        if diff > worst:
            worst, where = diff, name
    return worst, where


def _died(proc: subprocess.Popen[str], errors: Path) -> str:
    """Why a child ended without a result: its exit status and last line of stderr."""
    code = proc.wait()
    last = (
        [line for line in errors.read_text(errors="replace").splitlines() if line.strip()] or [""]
    )[-1]
    return f"crashes (exit {code}): {' '.join(last.split())[:100]}".rstrip(": ")


def _lines(stream: Any, into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _cells(
    runtime: str, where: Path, graph: str, names: list[str], timeout: float
) -> dict[str, tuple[Cell, Feeds | None]]:
    """Run one child; each of `names` gets its outputs, its error or its timeout."""
    command = [sys.executable, __file__, "--child", runtime, str(where), graph]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    errors = where / f"{runtime}.{graph}.stderr"
    with errors.open("w") as sink:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    results: dict[str, tuple[Cell, Feeds | None]] = {}
    try:
        for name in names:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                results[name] = (Cell(error=f"timeout after {timeout:g}s"), None)
                break
            report = json.loads(line) if line else {"error": _died(proc, errors)}
            if "error" in report:
                results[name] = (Cell(error=report["error"]), None)
                break
            cell = Cell(seconds=float(report["seconds"]))
            if "diff" in report:
                cell.diff, cell.worst = float(report["diff"]), report["worst"]
                results[name] = (cell, None)
            else:
                results[name] = (cell, _load(where / f"{runtime}.{graph}.{report['index']}.npz"))
    finally:
        proc.kill()
        proc.wait()
    last = list(results.values())[-1][0] if results else Cell(error="fails: no result")
    for name in names:  # what could not run because an earlier cell failed
        results.setdefault(name, (Cell(error=last.error), None))
    return results


def _label(key: str, steps: int, spread: float | None) -> str:
    shown = "?" if spread is None else f"{spread:.1e}"
    if key == EACH:
        return f"train x{steps}, each from onnxruntime's state (1-ulp spread {shown})"
    if key == CHAINED:
        return f"train x{steps} chained (1-ulp spread {shown})"
    return key


def check_spec_file(path: Path, runtimes: Sequence[str], steps: int, timeout: float) -> list[Row]:
    """The spec's rows: model, first step, each step from onnxruntime's state, chained."""
    others = [r for r in runtimes if r != "onnxruntime"]
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        write_case(path, steps, where)
        model = _cells("onnxruntime", where, "model", [MODEL], timeout)
        train = _cells(
            "onnxruntime", where, "train", [STEP1, CHAINED, SPREAD, EACH_SPREAD], timeout
        )
        base = {**model, **train}
        spread = None
        nudged, chained = train[SPREAD][1], train[CHAINED][1]
        if nudged is not None and chained is not None:
            spread = _diff(nudged, chained)[0]
        each_spread = train[EACH_SPREAD][0].diff
        spreads = {EACH: each_spread, CHAINED: spread}
        rows = {
            k: Row(path.stem, _label(k, steps, spreads.get(k)))
            for k in [MODEL, STEP1, EACH, CHAINED]
        }
        for runtime in others:
            found = {
                **_cells(runtime, where, "model", [MODEL], timeout),
                **_cells(runtime, where, "train", [STEP1, CHAINED, EACH], timeout),
            }
            for key, (cell, outputs) in found.items():
                want = base[key if key != EACH else STEP1]
                if want[1] is None:
                    cell.diff, cell.error = None, f"onnxruntime {want[0].error}"
                elif outputs is not None:
                    try:
                        cell.diff, cell.worst = _diff(outputs, want[1])
                    except ValueError as error:
                        cell.error = _short(error)
                allowed = spreads.get(key)
                if allowed is not None and np.isfinite(allowed):
                    cell.tolerance = max(TOLERANCE, CHAOS * allowed)
                rows[key].cells[runtime] = cell
    return list(rows.values())


def table(rows: Sequence[Row], runtimes: Sequence[str], markdown: bool) -> str:
    others = [r for r in runtimes if r != "onnxruntime"]
    header = ["spec", "graph", *others]
    body = [[row.spec, row.graph, *(str(row.cells[r]) for r in others)] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join([*lines, *("| " + " | ".join(cells) + " |" for cells in body)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *body]
    )


def summary(rows: Sequence[Row], runtimes: Sequence[str]) -> str:
    """Per spec, the runtimes green on every graph of it."""
    lines = []
    for spec in dict.fromkeys(r.spec for r in rows):
        mine = [r for r in rows if r.spec == spec]
        green = [n for n in runtimes if n == "onnxruntime" or all(r.cells[n].ok() for r in mine)]
        lines.append(f"{spec}: green in {len(green)} ({', '.join(green)})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", type=Path, help="spec files; default: every example")
    parser.add_argument(
        "--spec",
        action="append",
        default=[],
        help="an example by name (digits_mlp) or a file; repeatable",
    )
    parser.add_argument(
        "--runtime",
        action="append",
        choices=list(RUNTIMES),
        help="repeatable; default: all installed",
    )
    parser.add_argument("--steps", type=int, default=50, help="chained train steps (default 50)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per cell before a runtime is killed"
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--markdown", action="store_true", help="print a Markdown table")
    form.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        runtime, where, graph = args.child
        child(runtime, Path(where), graph)
        return 0
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    available = installed()
    missing = [r for r in args.runtime or [] if r not in available]
    if missing:
        parser.error(f"not installed: {', '.join(missing)}")
    runtimes = ["onnxruntime", *(r for r in args.runtime or available if r != "onnxruntime")]
    named = [Path(s) if s.endswith(".dnn") else ROOT / "specs" / f"{s}.dnn" for s in args.spec]
    specs = [*args.specs, *named] or sorted((ROOT / "specs").glob("*.dnn"))
    unknown = [str(p) for p in specs if not p.is_file()]
    if unknown:
        parser.error(f"no such spec: {', '.join(unknown)}")
    rows = [
        row for path in specs for row in check_spec_file(path, runtimes, args.steps, args.timeout)
    ]
    versions = {r: version(r) for r in runtimes}
    failed = [(row, name) for row in rows for name, cell in row.cells.items() if not cell.ok()]
    if args.json:
        print(
            json.dumps(
                {
                    "date": datetime.date.today().isoformat(),
                    "tolerance": TOLERANCE,
                    "steps": args.steps,
                    "versions": versions,
                    "rows": [
                        {
                            "spec": row.spec,
                            "graph": row.graph,
                            "cells": {n: {**asdict(c), "ok": c.ok()} for n, c in row.cells.items()},
                        }
                        for row in rows
                    ],
                },
                indent=1,
            )
        )
    else:
        print(
            f"largest difference from onnxruntime {versions['onnxruntime']} "
            f"(tolerance {TOLERANCE:g}, {datetime.date.today().isoformat()}); "
            + ", ".join(f"{r} {versions[r]}" for r in runtimes[1:])
        )
        print(table(rows, runtimes, args.markdown))
        print()
        print(summary(rows, runtimes))
    for row, name in failed:
        print(f"FAIL {row.spec} {row.graph} in {name}: {row.cells[name]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
