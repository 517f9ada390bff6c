"""dnnspec against PyTorch eager: what users run end to end, one train step, inference.

    python tools/bench.py [--suite e2e,step,infer] [--repeats 3] [--seconds 3]
                          [--threads N] [--device cpu|cuda] [--epochs SCALE]
                          [--runtime auto|onnxruntime|openvino] [--only TEXT]
                          [--timeout S] [--json]

- **e2e**: `dnnspec train --runtime auto` (the real loop: data order, per-epoch
  validation, logging, checkpoints, in the runtime its probe picks, named in brackets) as
  its own process against `tools/bench_torch.py`, an idiomatic PyTorch loop doing the same
  work on the same data file, split, batch and epochs (one row: the minimal loop a PyTorch
  user writes). MLPs, the digits CNN, a 28x28 CNN, an LSTM looped by Scan and the char
  transformer, each network described once in `tools/bench_models.py`. The two alternate
  (which goes first alternates too), `--repeats` times, after one untimed epoch of
  dnnspec that runs the probe; the table shows the median training-loop seconds and
  whole-process seconds (interpreter start, imports, spec compilation and session
  creation included), the ratios PyTorch / dnnspec (higher is faster for dnnspec) with
  their spread over the rounds, and each process's peak RSS.
- **step** (`tools/bench_step.py`, as **infer**): one train step on a fixed batch, both
  frameworks in this process, alternating in 0.2 s rounds (a shared virtual CPU drifts by
  20% over seconds); median steps/s. MLPs, CNNs (a digits-size CNN with batchnorm, and
  32-channel 3x3 convolutions at 28x28), LSTMs and the char transformer.
- **infer**: the deployable model at batch 1 and 256 (onnxruntime on model.onnx against
  PyTorch eager under no_grad), same alternation.
- **parallel** (only when asked; `tools/bench_parallel.py`): `train --workers` scaling, 1
  process against 1 and 2 MPI workers on the MLP 784-1024-1024-10 at batch 512, with the
  all-reduce's share of a step, then the same workers as Ray actors on a local Ray.
- **data** (only when asked; `tools/bench_data.py`, which also runs alone with a smaller
  `--data-gib`): training from files against a PyTorch `DataLoader` twin, a 4 GiB Parquet
  table streamed under a memory budget (peak RSS, rows/s) and a smaller one in memory, an
  image folder CNN and an audio folder model.

`--device cuda` runs both on the GPU (dnnspec with data, parameters and state on the
device, PyTorch with its tensors there). Without torch (the `bench` extra) only
dnnspec's numbers are printed. This is a benchmark, not a test: on a loaded machine
PyTorch's spinning threads collapse, so rerun it quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import bench_step
import numpy as np
from bench_models import LR, CharTransformer, Mlp, Net, net_config, spec_text
from bench_step import (
    CNN_28,
    CNNS,
    DIGITS_CNN,
    INFER,
    LSTM_SCAN,
    LSTMS,
    STEPS,
    TRANSFORMERS,
    bench_cnn,
    bench_inproc,
    bench_lstm,
    bench_transformer,
)

from dnnspec.data.datasets import DATASETS
from dnnspec.errors import Span
from dnnspec.frontend import load_spec
from dnnspec.runtime.prepare import prepare

TOOLS = Path(__file__).resolve().parent


# end to end --------------------------------------------------------------------------
@dataclass(frozen=True)
class E2ECase:
    """A row: `net` (both programs build it from this one description) trained `epochs`
    with `optimizer` at `batch`, validated every epoch on the `validation` share. The data
    is a registered dataset (`data` called with `data_args`), or with `samples` seeded
    normal inputs and uniform classes of that many rows; either is written once to an .npz
    both programs read. `loop` picks the PyTorch side: "same" does dnnspec's work,
    "minimal" is the loop a PyTorch user writes (tools/bench_torch.py has both), at
    `torch_threads` intra-op threads (0: one per core) unless --threads says otherwise."""

    name: str
    net: Net
    batch: int
    optimizer: str
    epochs: int
    data: str = "digits"
    data_args: tuple[tuple[str, Any], ...] = ()
    samples: int = 0
    validation: float = 0.2
    loop: str = "same"
    torch_threads: int = 0


DIGITS_MLP = Mlp((64, 256, 256, 10), 0.2)
E2E = [
    E2ECase("digits MLP 64-256-256-10, dropout, adam, batch 64", DIGITS_MLP, 64, "adam", 100),
    E2ECase(
        "digits MLP 64-256-256-10, dropout, adam, batch 64, minimal PyTorch loop",
        DIGITS_MLP,
        64,
        "adam",
        100,
        loop="minimal",
        torch_threads=2,
    ),
    E2ECase("digits MLP 64-256-256-10, dropout, sgd, batch 64", DIGITS_MLP, 64, "sgd", 100),
    E2ECase("digits MLP 64-256-256-10, sgd, batch 1024", Mlp((64, 256, 256, 10)), 1024, "sgd", 200),
    E2ECase(
        "MLP 784-1024-1024-10, sgd, batch 256",
        Mlp((784, 1024, 1024, 10)),
        256,
        "sgd",
        4,
        samples=8192,
    ),
    E2ECase("digits CNN 8x8, conv 16-32 + batchnorm, batch 64, adam", DIGITS_CNN, 64, "adam", 50),
    E2ECase("CNN 28x28, conv 32-32, batch 64, adam", CNN_28, 64, "adam", 3, samples=4096),
    E2ECase(
        "LSTM 32x32 -> 128, T = 32 (Scan), batch 64, adam", LSTM_SCAN, 64, "adam", 5, samples=4096
    ),
    E2ECase(
        "char transformer d64 x2, T = 64, batch 32, adam",
        CharTransformer(),
        32,
        "adam",
        6,
        data="text",
        data_args=(("context", 64),),
        validation=0.1,
    ),
]


def scaled(case: E2ECase, factor: float) -> E2ECase:
    return replace(case, epochs=max(1, round(case.epochs * factor)))


def _dataset(name: str, args: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The samples of `data name(args)`, loaded as a spec's train section loads them."""
    entry = DATASETS.get(name)
    span = Span(file="<bench>", line=1, col=1, end_line=1, end_col=1)
    bound = entry.signature.bind(name, [], [(k, v, span) for k, v in args.items()], span)
    data = entry.load(bound, 0, span)
    return data.x, data.y


def _write_data(case: E2ECase, path: Path) -> None:
    """The case's samples as arrays `x` (shaped as the net's input) and `y`."""
    dtype, shape = case.net.sample
    if case.samples:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(case.samples, *shape)).astype(dtype)
        y = rng.integers(0, case.net.classes, case.samples)
    else:
        x, y = _dataset(case.data, dict(case.data_args))
    np.savez(path, x=x.reshape(len(x), *shape).astype(dtype), y=y.astype(np.int64))


def _prepare_e2e(case: E2ECase, work: Path, threads: int | None) -> tuple[list[str], list[str]]:
    """Write both programs' inputs; returns the dnnspec and PyTorch command lines."""
    work.mkdir(parents=True, exist_ok=True)
    _write_data(case, work / "data.npz")
    data = f'file(path = "{work / "data.npz"}", validation = {case.validation})'
    spec = spec_text(case.net, data, case.optimizer, case.batch, epochs=case.epochs)
    (work / "bench.dnn").write_text(spec)
    # the split dnnspec itself makes, so that both programs train on the same samples
    prep = prepare(load_spec(work / "bench.dnn"))
    np.savez(work / "split.npz", train=prep.train_index, validation=prep.val_index)
    config = {
        "net": net_config(case.net),
        "loop": case.loop,
        "optimizer": case.optimizer,
        "lr": LR[case.optimizer],
        "batch": case.batch,
        "epochs": case.epochs,
        "seed": 0,
        "threads": threads or case.torch_threads or os.cpu_count() or 1,
        "device": bench_step.DEVICE,
        "data": str(work / "data.npz"),
        "split": str(work / "split.npz"),
        "out": str(work / "torch_run"),
    }
    (work / "torch.json").write_text(json.dumps(config))
    ours = [
        sys.executable,
        "-m",
        "dnnspec",
        "train",
        str(work / "bench.dnn"),
        "--out",
        str(work / "run"),
        "--device",
        bench_step.DEVICE,
        "--runtime",
        "auto",  # the faster runtime, by the probe (see _choose_runtime)
        "--overwrite",
        "--no-plot",  # the PyTorch loop draws no curves either
        "--json",
    ]
    theirs = [sys.executable, str(TOOLS / "bench_torch.py"), str(work / "torch.json")]
    return ours, theirs


def _choose_runtime(cmd: list[str], env: dict[str, str], timeout: float) -> str:
    """One untimed epoch of dnnspec's command: `--runtime auto` probes the runtimes and
    caches its choice (under the `XDG_CACHE_HOME` of `env`), so every timed round runs the
    choice as a user's later runs of the spec do. Returns the note saying which it chose."""
    done = subprocess.run(
        [*cmd, "--epochs", "1"], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    notes = [w["message"] for w in json.loads(done.stdout)["warnings"]]
    return next(n for n in notes if n.startswith("runtime auto: "))


LAUNCHER = """
import json, os, subprocess, sys, time
cmd = json.loads(sys.argv[1])
with open(sys.argv[2], "wb") as out, open(sys.argv[3], "wb") as err:
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=out, stderr=err)
    _, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"whole": time.perf_counter() - start, "code": os.waitstatus_to_exitcode(status),
                  "whole_cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}))
"""
"""Starts a benchmarked process from a small interpreter: Linux carries the parent's peak
RSS into a forked child's `ru_maxrss` across exec, and this process has torch loaded."""


def _run_process(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, float]:
    """Wall and CPU seconds of the whole process and of the loop it reports, and its peak
    RSS (MB). CPU seconds say what the work cost when other processes share the cores."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp, "out"), Path(tmp, "err")
        launch = [sys.executable, "-c", LAUNCHER, json.dumps(cmd), str(out), str(err)]
        with subprocess.Popen(
            launch, stdout=subprocess.PIPE, env=env, start_new_session=True
        ) as proc:
            try:
                measured = json.loads(proc.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise RuntimeError(f"{' '.join(cmd)} ran past {timeout:g} s") from None
            except BaseException:  # Ctrl-C or a kill of the benchmark: take the child along
                os.killpg(proc.pid, signal.SIGKILL)
                raise
        if measured["code"] != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read_text()[-2000:]}")
        report = json.loads(out.read_text())
    del measured["code"]
    return {"loop": float(report["seconds"]), "loop_cpu": float(report["cpu_seconds"]), **measured}


Runs = dict[str, list[dict[str, float]]]
"""Each program's measurements (`_run_process`), one per round, by "dnnspec" and "torch"."""


def bench_env(threads: int | None) -> dict[str, str]:
    """The environment both programs of a pair run in: `threads` intra-op threads each
    (else each framework picks its own), and tools/ importable."""
    env = dict(os.environ)
    if threads:
        env.update(DNNSPEC_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(TOOLS.parent), env.get("PYTHONPATH", "")])
    return env


def alternate(
    ours: list[str],
    theirs: list[str],
    env: dict[str, str],
    repeats: int,
    timeout: float,
    have_torch: bool,
    after_torch: Callable[[], None] | None = None,
) -> Runs:
    """Both processes `repeats` rounds, which one goes first alternating (the PyTorch one
    only with torch installed; `after_torch` checks each of its runs)."""
    runs: Runs = {"dnnspec": [], "torch": []}
    for r in range(repeats):
        order = [("dnnspec", ours), ("torch", theirs)][:: -1 if r % 2 else 1]
        for name, cmd in order:
            if name == "torch" and not have_torch:
                continue
            time.sleep(0.5)  # let the previous process's threads and page cache settle
            runs[name].append(_run_process(cmd, env, timeout))
            if name == "torch" and after_torch is not None:
                after_torch()
    return runs


def medians(runs: Runs, ratios: tuple[str, ...]) -> dict[str, Any]:
    """Each program's median of every measure, and for each of `ratios` PyTorch / dnnspec
    of the medians with its range over the rounds."""
    row: dict[str, Any] = {}
    for name, seen in runs.items():
        if seen:
            row[name] = {k: statistics.median(s[k] for s in seen) for k in seen[0]}
    if runs["torch"]:
        for key in ratios:
            per_round = [
                t[key] / o[key] for o, t in zip(runs["dnnspec"], runs["torch"], strict=True)
            ]
            row[f"{key}_ratio"] = row["torch"][key] / row["dnnspec"][key]
            row[f"{key}_ratio_range"] = [min(per_round), max(per_round)]
    return row


def bench_e2e(
    case: E2ECase,
    repeats: int,
    threads: int | None,
    have_torch: bool,
    timeout: float,
    runtime: str = "auto",
) -> dict[str, Any]:
    """Both programs on `case`, alternating, `repeats` rounds; medians and ratios. dnnspec
    runs in `runtime`, where "auto" the one its probe picks."""
    env = bench_env(threads)
    with tempfile.TemporaryDirectory(prefix="dnnspec-bench-") as tmp:
        ours_cmd, theirs_cmd = _prepare_e2e(case, Path(tmp), threads)
        if runtime == "auto":
            env["XDG_CACHE_HOME"] = str(Path(tmp, "cache"))  # a fresh probe for this machine
            note = _choose_runtime(ours_cmd, env, timeout)
            runtime = note.removeprefix("runtime auto: ").split()[0]
        else:
            ours_cmd[ours_cmd.index("auto")] = runtime
            note = f"runtime {runtime}, as asked"
        print(f"{case.name}: {note}", file=sys.stderr)
        runs = alternate(ours_cmd, theirs_cmd, env, repeats, timeout, have_torch)
    row: dict[str, Any] = {"case": asdict(case), "runtime": runtime, "note": note, "runs": runs}
    row |= medians(runs, ("loop", "whole", "loop_cpu", "whole_cpu"))
    if runs["torch"]:
        row["rss_ratio"] = row["dnnspec"]["rss_mb"] / row["torch"]["rss_mb"]
    return row


# report ----------------------------------------------------------------------------------
def machine(threads: int | None) -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads or "each framework's default",
        "device": bench_step.DEVICE,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if bench_step.DEVICE == "cuda" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    return info


def _ratio(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return "-"
    low, high = row[f"{key}_range"]
    return f"{row[key]:.2f}x ({low:.2f}-{high:.2f})"


def _pair(row: dict[str, Any], key: str, form: str) -> str:
    theirs = row.get("torch")
    return f"{row['dnnspec'][key]:{form}} / " + (f"{theirs[key]:{form}}" if theirs else "-")


def _rate(per_s: float) -> str:
    """Steps or calls per second: whole numbers, one decimal below 100."""
    return f"{per_s:.0f}" if per_s >= 100 else f"{per_s:.1f}"


def print_tables(report: dict[str, Any]) -> None:
    """Markdown tables, as docs/performance.md holds them."""
    m = report["machine"]
    print(
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, device {m['device']}"
        f"{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, load average "
        f"{m['load_average'][0]} before / {m['load_average_after'][0]} after; python "
        f"{m['python']}, onnxruntime {m['onnxruntime']}, torch {m['torch']}; {m['date']}"
    )
    if report.get("e2e"):
        print(
            "\nEnd to end, median of alternating processes; s = dnnspec / PyTorch; ratio ="
            " PyTorch / dnnspec (higher is faster), min-max over rounds in brackets.\n"
        )
        print(
            "| model | loop s | loop ratio | loop CPU ratio | process s | process ratio "
            "| process CPU ratio | peak RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in report["e2e"]:
            print(
                f"| {row['case']['name']} [{row['runtime']}] | {_pair(row, 'loop', '.2f')} "
                f"| {_ratio(row, 'loop_ratio')} | {_ratio(row, 'loop_cpu_ratio')} "
                f"| {_pair(row, 'whole', '.2f')} "
                f"| {_ratio(row, 'whole_ratio')} | {_ratio(row, 'whole_cpu_ratio')} "
                f"| {_pair(row, 'rss_mb', '.0f')} |"
            )
    for key, title in (("step", "Train step, steps/s"), ("infer", "Inference, calls/s")):
        if report.get(key):
            print(
                f"\n{title}: in one process, alternating 0.2 s rounds, median; ratio = "
                "dnnspec / PyTorch.\n"
            )
            print("| model | dnnspec | PyTorch | ratio |\n|---|---|---|---|")
            for row in report[key]:
                theirs = _rate(row["torch_per_s"]) if "torch_per_s" in row else "-"
                ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
                ours = _rate(row["dnnspec_per_s"])
                print(f"| {row['case']['name']} | {ours} | {theirs} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite",
        default="e2e,step,infer",
        help="comma-separated: e2e, step, infer, parallel (tools/bench_parallel.py), data "
        "(tools/bench_data.py: writes 4.5 GiB to the temporary folder)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end rounds per framework")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="per in-process row and framework"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op threads for both (default: each its own: dnnspec one thread for small "
        "steps, else one per core; PyTorch one per core)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per e2e process")
    parser.add_argument(
        "--epochs", type=float, default=1.0, help="scale every e2e case's epochs (0.1: quick)"
    )
    parser.add_argument(
        "--runtime",
        choices=["auto", "onnxruntime", "openvino"],
        default="auto",
        help="dnnspec's runtime in the e2e suite (default: the one `--runtime auto` picks)",
    )
    parser.add_argument("--only", default="", help="run only the rows whose name contains this")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # children die with the bench
    bench_step.DEVICE = "cuda" if args.device == "cuda" else "cpu"
    if args.threads:
        os.environ["DNNSPEC_THREADS"] = str(args.threads)
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        have_torch = True
    except ImportError:
        have_torch = False
    suites = set(args.suite.split(","))
    report: dict[str, Any] = {"machine": machine(args.threads)}
    if "e2e" in suites:
        report["e2e"] = [
            bench_e2e(
                scaled(c, args.epochs),
                args.repeats,
                args.threads,
                have_torch,
                args.timeout,
                args.runtime,
            )
            for c in E2E
            if args.only in c.name
        ]
    if "step" in suites:
        report["step"] = [
            bench_inproc(c, args.seconds, have_torch) for c in STEPS if args.only in c.name
        ]
        report["step"] += [
            bench_cnn(c, args.seconds, have_torch) for c in CNNS if args.only in c.name
        ]
        report["step"] += [
            bench_lstm(c, args.seconds, have_torch) for c in LSTMS if args.only in c.name
        ]
        report["step"] += [
            bench_transformer(c, args.seconds, have_torch)
            for c in TRANSFORMERS
            if args.only in c.name
        ]
    if "infer" in suites:
        report["infer"] = [
            bench_inproc(c, args.seconds, have_torch) for c in INFER if args.only in c.name
        ]
    if "parallel" in suites:  # not by default: it needs the parallel extra and a quiet machine
        import bench_parallel

        report["parallel"] = bench_parallel.run(30, [1, 2])
    if "data" in suites:  # not by default: it writes gigabytes of data
        import bench_data

        settings = bench_data.Settings(
            repeats=args.repeats,
            threads=args.threads,
            device=bench_step.DEVICE,
            only=args.only,  # and its own --timeout: a streamed epoch of 4 GiB takes minutes
        )
        report["data"] = bench_data.run(settings, have_torch)
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_tables(report)
        if "parallel" in report:
            import bench_parallel

            bench_parallel.print_table(report["parallel"])
        if "data" in report:
            import bench_data

            bench_data.print_table(report["data"])


if __name__ == "__main__":
    main()
