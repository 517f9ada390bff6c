"""Train-step throughput: dnnspec's generated graphs against PyTorch eager, in one process.

    python tools/bench.py [--seconds 3] [--threads 2]

For each model the same MLP, batch, loss and optimizer run in both frameworks on the
same random batch, in alternating rounds; the table shows median steps/s and the ratio
dnnspec / PyTorch. Without torch installed only dnnspec's numbers are printed. This is a
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dnnspec.assemble.steps import build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec_text
from dnnspec.runtime.trainer import Trainer
from dnnspec.training.schedules import Timing


@dataclass(frozen=True)
class Case:
    name: str
    widths: tuple[int, ...]
    batch: int
    optimizer: str

    def spec(self) -> str:
        hidden = "\n".join(f"  dense({w}) -> relu" for w in self.widths[1:-1])
        opt = {"sgd": "sgd(lr = 0.01)", "adam": "adam(lr = 0.001)"}[self.optimizer]
        return (
            f"model bench {{\n  input x: float32[N, {self.widths[0]}]\n{hidden}\n"
            f"  dense({self.widths[-1]})\n}}\n"
            f"train {{\n  data digits\n  loss cross_entropy\n  optimizer {opt}\n"
            f"  batch {self.batch}\n  epochs 1\n}}\n"
        )


CASES = [
    Case("digits MLP 64-256-256-10, batch 64, sgd", (64, 256, 256, 10), 64, "sgd"),
    Case("digits MLP 64-256-256-10, batch 64, adam", (64, 256, 256, 10), 64, "adam"),
    Case("MLP 784-1024-1024-10, batch 256, sgd", (784, 1024, 1024, 10), 256, "sgd"),
    Case("MLP 784-1024-1024-10, batch 256, adam", (784, 1024, 1024, 10), 256, "adam"),
]


@dataclass(frozen=True)
class LstmCase:
    """lstm(units) over [N, steps, features] (the last step's output) -> dense(10), Adam;
    `symbolic` declares T as a name, so the loop is a Scan instead of unrolled."""

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


LSTM_CASES = [
    LstmCase("LSTM 16x32 -> 128, T = 16 (unrolled), batch 64", 16, 32, 128, 64),
    LstmCase("LSTM 32x32 -> 128, T = 32 (Scan), batch 64", 32, 32, 128, 64),
    LstmCase("LSTM 32x32 -> 128, symbolic T (Scan), batch 64", 32, 32, 128, 64, symbolic=True),
    LstmCase("LSTM 8x16 -> 32, T = 8 (unrolled), batch 32", 8, 16, 32, 32),
]


def lstm_dnnspec_step(case: LstmCase, x: np.ndarray, y: np.ndarray) -> Callable[[], object]:
    spec = load_spec_text(case.spec(), "<bench>")
    assert spec.train is not None
    program = build_train_step(check_spec(spec), spec.train, 10, Timing(100, 10_000))
    trainer = Trainer(program, "cpu", 0)
    return lambda: trainer.train_step({"x": x}, y)


def lstm_torch_step(case: LstmCase, x: np.ndarray, y: np.ndarray) -> Callable[[], object] | None:
    try:
        import torch
    except ImportError:
        return None
    lstm = torch.nn.LSTM(case.features, case.units, batch_first=True)
    head = torch.nn.Linear(case.units, 10)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out, _ = lstm(tx)
        loss = loss_fn(head(out[:, -1]), ty)
        loss.backward()
        opt.step()
        loss.item()

    return step


def rates(steps: list[Callable[[], object]], seconds: float) -> list[float]:
    """Steps per second of each step function: after a warm-up they run in alternating
    rounds of about 0.2 s for `seconds` each, so that machine noise (a shared virtual
    CPU drifts by 20% over seconds) hits all of them alike; each rate is the median
    over its rounds."""
    for step in steps:
        for _ in range(20):
            step()
    per_round: list[list[float]] = [[] for _ in steps]
    for _ in range(max(1, round(seconds / 0.2))):
        for step, seen in zip(steps, per_round, strict=True):
            time.sleep(0.05)  # let the other framework's spinning worker threads park
            n, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < 0.2:
                step()
                n += 1
            seen.append(n / elapsed)
    return [statistics.median(seen) for seen in per_round]


def dnnspec_step(case: Case, x: np.ndarray, y: np.ndarray) -> Callable[[], object]:
    spec = load_spec_text(case.spec(), "<bench>")
    assert spec.train is not None
    program = build_train_step(check_spec(spec), spec.train, case.widths[-1], Timing(100, 10_000))
    trainer = Trainer(program, "cpu", 0)
    return lambda: trainer.train_step({"x": x}, y)


def torch_step(case: Case, x: np.ndarray, y: np.ndarray) -> Callable[[], object] | None:
    try:
        import torch
    except ImportError:
        return None
    layers: list[torch.nn.Module] = []
    for a, b in zip(case.widths[:-2], case.widths[1:-1], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(case.widths[-2], case.widths[-1]))
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.01)
        if case.optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.001)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(tx), ty)
        loss.backward()
        opt.step()
        loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["DNNSPEC_THREADS"] = str(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    print(f"{'model':<44} {'dnnspec steps/s':>16} {'torch steps/s':>14} {'ratio':>7}")
    for case in CASES:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(case.batch, case.widths[0])).astype(np.float32)
        y = rng.integers(0, case.widths[-1], case.batch).astype(np.int64)
        theirs_step = torch_step(case, x, y)
        steps = [dnnspec_step(case, x, y), *([theirs_step] if theirs_step else [])]
        ours, *rest = rates(steps, args.seconds)
        theirs = rest[0] if rest else None
        ratio = f"{ours / theirs:6.2f}x" if theirs else "    -"
        theirs_s = f"{theirs:14.0f}" if theirs else f"{'(no torch)':>14}"
        print(f"{case.name:<44} {ours:16.0f} {theirs_s} {ratio}", flush=True)
    for lcase in LSTM_CASES:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(lcase.batch, lcase.steps, lcase.features)).astype(np.float32)
        y = rng.integers(0, 10, lcase.batch).astype(np.int64)
        theirs_step = lstm_torch_step(lcase, x, y)
        steps = [lstm_dnnspec_step(lcase, x, y), *([theirs_step] if theirs_step else [])]
        ours, *rest = rates(steps, args.seconds)
        theirs = rest[0] if rest else None
        ratio = f"{ours / theirs:6.2f}x" if theirs else "    -"
        theirs_s = f"{theirs:14.0f}" if theirs else f"{'(no torch)':>14}"
        print(f"{lcase.name:<44} {ours:16.0f} {theirs_s} {ratio}", flush=True)


if __name__ == "__main__":
    main()
