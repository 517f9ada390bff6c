"""dnnspec against PyTorch eager: what users run end to end, one train step, inference.

    python tools/bench.py [--suite e2e,step,infer] [--repeats 3] [--seconds 3]
                          [--threads N] [--device cpu|cuda] [--epochs SCALE]
                          [--only TEXT] [--timeout S] [--json]

- **e2e**: `dnnspec train` (the real loop: data order, per-epoch validation, logging,
  checkpoints) as its own process against `tools/bench_torch.py`, an idiomatic PyTorch
  loop doing the same work on the same data, split, batch and epochs. The two alternate
  (which goes first alternates too), `--repeats` times; the table shows the median
  training-loop seconds and whole-process seconds (interpreter start, imports, spec
  compilation and session creation included), the ratios PyTorch / dnnspec (higher is
  faster for dnnspec) with their spread over the rounds, and each process's peak RSS.
- **step**: one train step on a fixed batch, both frameworks in this process, alternating
  in 0.2 s rounds (a shared virtual CPU drifts by 20% over seconds); median steps/s. MLPs
  and CNNs (a digits-size CNN with batchnorm, and 32-channel 3x3 convolutions at 28x28).
- **infer**: the deployable model at batch 1 and 256 (onnxruntime on model.onnx against
  PyTorch eager under no_grad), same alternation.

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

import numpy as np

from dnnspec.assemble.steps import build_inference, build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.runtime.backend import Device
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.session import make_session
from dnnspec.runtime.trainer import Trainer, initial_values
from dnnspec.schema import arg_int
from dnnspec.training.schedules import Timing

TOOLS = Path(__file__).resolve().parent
DEVICE: Device = "cpu"
"""Where both frameworks run (`--device cuda`: dnnspec's CUDA provider, torch on cuda)."""
LR = {"sgd": 0.01, "adam": 0.001}


def mlp_spec(
    widths: tuple[int, ...], dropout: float, optimizer: str, batch: int, **train: Any
) -> str:
    """An MLP spec: ReLU hidden layers, dropout after the first one when `dropout` > 0."""
    hidden = [f"  dense({w}) -> relu" for w in widths[1:-1]]
    if dropout:
        hidden[0] += f" -> dropout({dropout})"
    data = train.get("data", "digits")
    return (
        f"model bench {{\n  input x: float32[N, {widths[0]}]\n" + "\n".join(hidden) + "\n"
        f"  dense({widths[-1]})\n}}\n"
        f"train {{\n  data {data}\n  loss cross_entropy\n"
        f"  optimizer {optimizer}(lr = {LR[optimizer]})\n  batch {batch}\n"
        f"  epochs {train.get('epochs', 1)}\n  metrics accuracy\n  seed 0\n}}\n"
    )


# end to end --------------------------------------------------------------------------
@dataclass(frozen=True)
class E2ECase:
    name: str
    widths: tuple[int, ...]
    batch: int
    optimizer: str
    epochs: int
    dropout: float = 0.0
    samples: int = 0  # 0: the built-in digits; else seeded random data of this many rows


E2E = [
    E2ECase(
        "digits MLP 64-256-256-10, dropout, adam, batch 64",
        (64, 256, 256, 10),
        64,
        "adam",
        100,
        0.2,
    ),
    E2ECase(
        "digits MLP 64-256-256-10, dropout, sgd, batch 64", (64, 256, 256, 10), 64, "sgd", 100, 0.2
    ),
    E2ECase("digits MLP 64-256-256-10, sgd, batch 1024", (64, 256, 256, 10), 1024, "sgd", 200),
    E2ECase(
        "MLP 784-1024-1024-10, sgd, batch 256", (784, 1024, 1024, 10), 256, "sgd", 4, 0.0, 8192
    ),
]


def scaled(case: E2ECase, factor: float) -> E2ECase:
    return replace(case, epochs=max(1, round(case.epochs * factor)))


def _prepare_e2e(case: E2ECase, work: Path, threads: int | None) -> tuple[list[str], list[str]]:
    """Write both programs' inputs; returns the dnnspec and PyTorch command lines."""
    work.mkdir(parents=True, exist_ok=True)
    if case.samples:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(case.samples, case.widths[0])).astype(np.float32)
        y = rng.integers(0, case.widths[-1], case.samples).astype(np.int64)
        np.savez(work / "data.npz", x=x, y=y)
        data = f'file(path = "{work / "data.npz"}", validation = 0.2)'
    else:
        data = "digits(validation = 0.2)"
    spec = mlp_spec(
        case.widths, case.dropout, case.optimizer, case.batch, epochs=case.epochs, data=data
    )
    (work / "bench.dnn").write_text(spec)
    # the split dnnspec itself makes, so that both programs train on the same samples
    prep = prepare(load_spec(work / "bench.dnn"))
    train, val = prep.train_data, prep.val_data
    np.savez(work / "torch_data.npz", x=train.x, y=train.y, val_x=val.x, val_y=val.y)
    config = {
        "widths": list(case.widths),
        "dropout": case.dropout,
        "optimizer": case.optimizer,
        "lr": LR[case.optimizer],
        "batch": case.batch,
        "epochs": case.epochs,
        "seed": 0,
        "threads": threads or os.cpu_count() or 1,
        "device": DEVICE,
        "data": str(work / "torch_data.npz"),
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
        DEVICE,
        "--overwrite",
        "--no-plot",  # the PyTorch loop draws no curves either
        "--json",
    ]
    theirs = [sys.executable, str(TOOLS / "bench_torch.py"), str(work / "torch.json")]
    return ours, theirs


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


def bench_e2e(
    case: E2ECase, repeats: int, threads: int | None, have_torch: bool, timeout: float
) -> dict[str, Any]:
    """Both programs on `case`, alternating, `repeats` rounds; medians and ratios."""
    env = dict(os.environ)
    if threads:  # else each framework picks its own
        env.update(DNNSPEC_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(TOOLS.parent), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="dnnspec-bench-") as tmp:
        ours_cmd, theirs_cmd = _prepare_e2e(case, Path(tmp), threads)
        runs: dict[str, list[dict[str, float]]] = {"dnnspec": [], "torch": []}
        for r in range(repeats):
            order = [("dnnspec", ours_cmd), ("torch", theirs_cmd)]
            if r % 2:
                order.reverse()
            for name, cmd in order:
                if name == "torch" and not have_torch:
                    continue
                time.sleep(0.5)  # let the previous process's threads and page cache settle
                runs[name].append(_run_process(cmd, env, timeout))
    row: dict[str, Any] = {"case": asdict(case), "runs": runs}
    for name, seen in runs.items():
        if seen:
            row[name] = {k: statistics.median(s[k] for s in seen) for k in seen[0]}
    if runs["torch"]:
        for key in ("loop", "whole", "loop_cpu", "whole_cpu"):
            per_round = [
                t[key] / o[key] for o, t in zip(runs["dnnspec"], runs["torch"], strict=True)
            ]
            row[f"{key}_ratio"] = row["torch"][key] / row["dnnspec"][key]
            row[f"{key}_ratio_range"] = [min(per_round), max(per_round)]
        row["rss_ratio"] = row["dnnspec"]["rss_mb"] / row["torch"]["rss_mb"]
    return row


# one step and inference, in process ----------------------------------------------------
def rates(steps: list[Callable[[], object]], seconds: float) -> list[float]:
    """Calls per second of each function: after a warm-up they run in alternating rounds of
    about 0.2 s for `seconds` each, so that machine noise hits all of them alike; each rate
    is the median over its rounds."""
    for step in steps:
        for _ in range(20):
            step()
    per_round: list[list[float]] = [[] for _ in steps]
    for _ in range(max(1, round(seconds / 0.2))):
        for step, seen in zip(steps, per_round, strict=True):
            time.sleep(0.05)  # let the other framework's worker threads park
            n, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < 0.2:
                step()
                n += 1
            seen.append(n / elapsed)
    return [statistics.median(seen) for seen in per_round]


@dataclass(frozen=True)
class StepCase:
    name: str
    widths: tuple[int, ...]
    batch: int
    optimizer: str


STEPS = [
    StepCase("digits MLP 64-256-256-10, batch 64, sgd", (64, 256, 256, 10), 64, "sgd"),
    StepCase("digits MLP 64-256-256-10, batch 64, adam", (64, 256, 256, 10), 64, "adam"),
    StepCase("MLP 784-1024-1024-10, batch 256, sgd", (784, 1024, 1024, 10), 256, "sgd"),
    StepCase("MLP 784-1024-1024-10, batch 256, adam", (784, 1024, 1024, 10), 256, "adam"),
]
INFER = [
    StepCase("digits MLP 64-256-256-10 inference, batch 1", (64, 256, 256, 10), 1, ""),
    StepCase("digits MLP 64-256-256-10 inference, batch 256", (64, 256, 256, 10), 256, ""),
]


@dataclass(frozen=True)
class CnnCase:
    """A CNN train step: `side` x `side` single-channel images, 3x3 `same` convolutions of
    `channels` filters (each followed by batchnorm when `norm`, then ReLU), a 2x2 max pool
    after the convolutions numbered in `pool_after`, flatten, dense(10)."""

    name: str
    side: int
    channels: tuple[int, ...]
    pool_after: tuple[int, ...]
    norm: bool
    batch: int = 64
    optimizer: str = "adam"


CNNS = [
    CnnCase(
        "digits CNN 8x8, conv 16-32 + batchnorm, batch 64, adam",
        8,
        (16, 32),
        (0, 1),
        True,
    ),
    CnnCase("CNN 28x28, conv 32-32, batch 64, adam", 28, (32, 32), (1,), False),
]


def cnn_spec(case: CnnCase) -> str:
    lines = [f"  input x: float32[N, 1, {case.side}, {case.side}]"]
    for i, width in enumerate(case.channels):
        norm = " -> batchnorm" if case.norm else ""
        lines.append(f"  conv2d({width}, 3, padding = same, bias = {str(not case.norm).lower()})"
                     f"{norm} -> relu")  # fmt: skip
        if i in case.pool_after:
            lines.append("  max_pool2d(2)")
    lines += ["  flatten", "  dense(10)"]
    return (
        "model bench {\n" + "\n".join(lines) + "\n}\n"
        f"train {{\n  data digits\n  loss cross_entropy\n  optimizer {case.optimizer}"
        f"(lr = {LR[case.optimizer]})\n  batch {case.batch}\n  epochs 1\n  seed 0\n}}\n"
    )


def _torch_cnn(case: CnnCase) -> Any:
    import torch

    layers: list[torch.nn.Module] = []
    side, channels = case.side, 1
    for i, width in enumerate(case.channels):
        layers.append(torch.nn.Conv2d(channels, width, 3, padding=1, bias=not case.norm))
        if case.norm:
            layers.append(torch.nn.BatchNorm2d(width))
        layers.append(torch.nn.ReLU())
        if i in case.pool_after:
            layers.append(torch.nn.MaxPool2d(2))
            side //= 2
        channels = width
    layers += [torch.nn.Flatten(), torch.nn.Linear(channels * side * side, 10)]
    return torch.nn.Sequential(*layers)


def cnn_pair(case: CnnCase, have_torch: bool) -> list[Callable[[], object]]:
    spec = load_spec_text(cnn_spec(case), "<bench>")
    assert spec.train is not None
    program = build_train_step(check_spec(spec), spec.train, 10, Timing(100, 10_000))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(case.batch, 1, case.side, case.side)).astype(np.float32)
    y = rng.integers(0, 10, case.batch).astype(np.int64)
    trainer = Trainer(program, DEVICE, 0)
    fns: list[Callable[[], object]] = [lambda: trainer.train_step({"x": x}, y)]
    if have_torch:
        fns.append(_torch_step(_torch_cnn(case).to(DEVICE), case.optimizer, x, y))
    return fns


def _torch_step(model: Any, optimizer: str, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    import torch

    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(
        model.parameters(), lr=LR[optimizer]
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(tx), ty)
        loss.backward()
        opt.step()
        loss.item()

    return step


def bench_cnn(case: CnnCase, seconds: float, have_torch: bool) -> dict[str, Any]:
    measured = rates(cnn_pair(case, have_torch), seconds)
    row: dict[str, Any] = {"case": asdict(case), "dnnspec_per_s": measured[0]}
    if have_torch:
        row["torch_per_s"] = measured[1]
        row["ratio"] = measured[0] / measured[1]
    return row


def _program(case: StepCase) -> Any:
    spec = load_spec_text(
        mlp_spec(case.widths, 0.0, case.optimizer or "sgd", max(case.batch, 2)), "<bench>"
    )
    assert spec.train is not None
    return build_train_step(check_spec(spec), spec.train, case.widths[-1], Timing(100, 10_000))


def _torch_mlp(widths: tuple[int, ...]) -> Any:
    import torch

    layers: list[torch.nn.Module] = []
    for a, b in zip(widths[:-2], widths[1:-1], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(widths[-2], widths[-1]))


def step_pair(
    case: StepCase, x: np.ndarray, y: np.ndarray, have_torch: bool
) -> list[Callable[[], object]]:
    trainer = Trainer(_program(case), DEVICE, 0)
    fns: list[Callable[[], object]] = [lambda: trainer.train_step({"x": x}, y)]
    if have_torch:
        fns.append(_torch_step(_torch_mlp(case.widths).to(DEVICE), case.optimizer, x, y))
    return fns


def infer_pair(case: StepCase, x: np.ndarray, have_torch: bool) -> list[Callable[[], object]]:
    program = _program(case)
    params = initial_values(program, 0, params_only=True)
    model = build_inference(program.typed, program.slots, params, program.metadata)
    session = make_session(model, DEVICE)
    fns: list[Callable[[], object]] = [lambda: session.run(["output"], {"x": x})]
    if have_torch:
        import torch

        net = _torch_mlp(case.widths).eval().to(DEVICE)

        def forward() -> None:  # host array in, host array out, as onnxruntime's run()
            with torch.no_grad():
                net(torch.from_numpy(x).to(DEVICE)).cpu().numpy()

        fns.append(forward)
    return fns


def bench_inproc(case: StepCase, seconds: float, have_torch: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(case.batch, case.widths[0])).astype(np.float32)
    y = rng.integers(0, case.widths[-1], case.batch).astype(np.int64)
    fns = step_pair(case, x, y, have_torch) if case.optimizer else infer_pair(case, x, have_torch)
    measured = rates(fns, seconds)
    row: dict[str, Any] = {"case": asdict(case), "dnnspec_per_s": measured[0]}
    if have_torch:
        row["torch_per_s"] = measured[1]
        row["ratio"] = measured[0] / measured[1]
    return row


@dataclass(frozen=True)
class LstmCase:
    """lstm(units) over [N, steps, features] (the last step's output) -> dense(10), Adam;
    `symbolic` declares T as a name, so the loop is a Scan whatever the length."""

    name: str
    steps: int
    features: int
    units: int
    batch: int
    symbolic: bool = False

    def spec(self) -> str:
        t = "T" if self.symbolic else str(self.steps)
        return (
            f"model bench {{\n  input x: float32[N, {t}, {self.features}]\n"
            f"  lstm({self.units})\n  dense(10)\n}}\n"
            "train {\n  data digits\n  loss cross_entropy\n  optimizer adam(lr = 0.001)\n"
            f"  batch {self.batch}\n  epochs 1\n}}\n"
        )


LSTMS = [
    LstmCase("LSTM 16x32 -> 128, T = 16 (unrolled), batch 64", 16, 32, 128, 64),
    LstmCase("LSTM 32x32 -> 128, T = 32 (Scan), batch 64", 32, 32, 128, 64),
    LstmCase("LSTM 32x32 -> 128, symbolic T (Scan), batch 64", 32, 32, 128, 64, symbolic=True),
    LstmCase("LSTM 8x16 -> 32, T = 8 (unrolled), batch 32", 8, 16, 32, 32),
]


def lstm_pair(
    case: LstmCase, x: np.ndarray, y: np.ndarray, have_torch: bool
) -> list[Callable[[], object]]:
    """dnnspec's train step and the same nn.LSTM + Linear step in PyTorch."""
    spec = load_spec_text(case.spec(), "<bench>")
    assert spec.train is not None
    trainer = Trainer(
        build_train_step(check_spec(spec), spec.train, 10, Timing(100, 10_000)), DEVICE, 0
    )
    fns: list[Callable[[], object]] = [lambda: trainer.train_step({"x": x}, y)]
    if have_torch:
        import torch

        lstm = torch.nn.LSTM(case.features, case.units, batch_first=True).to(DEVICE)
        head = torch.nn.Linear(case.units, 10).to(DEVICE)
        opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=LR["adam"])
        loss_fn = torch.nn.CrossEntropyLoss()
        tx, ty = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            out, _ = lstm(tx)
            loss = loss_fn(head(out[:, -1]), ty)
            loss.backward()
            opt.step()
            loss.item()

        fns.append(step)
    return fns


def bench_lstm(case: LstmCase, seconds: float, have_torch: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(case.batch, case.steps, case.features)).astype(np.float32)
    y = rng.integers(0, 10, case.batch).astype(np.int64)
    measured = rates(lstm_pair(case, x, y, have_torch), seconds)
    row: dict[str, Any] = {"case": asdict(case), "dnnspec_per_s": measured[0]}
    if have_torch:
        row["torch_per_s"] = measured[1]
        row["ratio"] = measured[0] / measured[1]
    return row


@dataclass(frozen=True)
class TransformerCase:
    """specs/char_transformer.dnn's train step (2 pre-norm causal layers, d 64, 4 heads,
    T 64, vocabulary 29, Adam) on one batch, against the same network in PyTorch."""

    name: str
    batch: int = 32


TRANSFORMERS = [TransformerCase("char transformer d64 x2, T = 64, batch 32, adam")]


def _torch_char_transformer(d: int, heads: int, layers: int, vocab: int, t: int) -> Any:
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))
            self.register_buffer("mask", torch.triu(torch.ones(t, t, dtype=torch.bool), 1))

        def forward(self, x: Any) -> Any:
            h = self.norm1(x)
            x = x + self.attn(h, h, h, attn_mask=self.mask, need_weights=False)[0]
            return x + self.ff(self.norm2(x))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(t, d) * 0.02)
            self.layers = nn.Sequential(*[Layer() for _ in range(layers)])
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, vocab))

        def forward(self, ids: Any) -> Any:
            return self.head(self.layers(self.embed(ids) + self.pos)).reshape(-1, vocab)

    return Model()


def transformer_pair(case: TransformerCase, have_torch: bool) -> list[Callable[[], object]]:
    spec = load_spec(Path(__file__).resolve().parent.parent / "specs" / "char_transformer.dnn")
    assert spec.train is not None
    params = spec.params
    d, heads, layers = arg_int(params, "d"), arg_int(params, "heads"), arg_int(params, "layers")
    vocab, t = arg_int(params, "vocab"), arg_int(params, "context")
    program = build_train_step(check_spec(spec), spec.train, vocab, Timing(100, 10_000))
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, (case.batch, t)).astype(np.int64)
    y = rng.integers(0, vocab, (case.batch, t)).astype(np.int64)
    trainer = Trainer(program, DEVICE, 0)
    fns: list[Callable[[], object]] = [lambda: trainer.train_step({"text": x}, y)]
    if have_torch:
        model = _torch_char_transformer(d, heads, layers, vocab, t).to(DEVICE)
        fns.append(_torch_step(model, "adam", x, y.reshape(-1)))
    return fns


def bench_transformer(case: TransformerCase, seconds: float, have_torch: bool) -> dict[str, Any]:
    measured = rates(transformer_pair(case, have_torch), seconds)
    row: dict[str, Any] = {"case": asdict(case), "dnnspec_per_s": measured[0]}
    if have_torch:
        row["torch_per_s"] = measured[1]
        row["ratio"] = measured[0] / measured[1]
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
        "device": DEVICE,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if DEVICE == "cuda" and torch.cuda.is_available():
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
                f"| {row['case']['name']} | {_pair(row, 'loop', '.2f')} "
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
        "--suite", default="e2e,step,infer", help="comma-separated: e2e, step, infer"
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
    parser.add_argument("--only", default="", help="run only the rows whose name contains this")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # children die with the bench
    global DEVICE
    DEVICE = "cuda" if args.device == "cuda" else "cpu"
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
            bench_e2e(scaled(c, args.epochs), args.repeats, args.threads, have_torch, args.timeout)
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
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_tables(report)


if __name__ == "__main__":
    main()
