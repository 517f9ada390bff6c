"""Train-step throughput: dnnspec's generated graphs against PyTorch eager, in one process.

    python tools/bench.py [--seconds 3] [--threads 2]

For each model the same MLP, batch, loss and optimizer run in both frameworks on the
same random batch; the table shows steps/s and the ratio dnnspec / PyTorch. Without
torch installed only dnnspec's numbers are printed. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec_text
from dnnspec.graph.assemble import build_train_step
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


def rate(step: Callable[[], object], seconds: float) -> float:
    """Steps per second after a warm-up, timed over at least `seconds`."""
    for _ in range(20):
        step()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(10):
            step()
        n += 10
    return n / elapsed


def dnnspec_rate(case: Case, x: np.ndarray, y: np.ndarray, seconds: float) -> float:
    spec = load_spec_text(case.spec(), "<bench>")
    assert spec.train is not None
    program = build_train_step(check_spec(spec), spec.train, case.widths[-1], Timing(100, 10_000))
    trainer = Trainer(program, "cpu", 0)
    return rate(lambda: trainer.train_step({"x": x}, y), seconds)


def torch_rate(case: Case, x: np.ndarray, y: np.ndarray, seconds: float) -> float | None:
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

    return rate(step, seconds)


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
        ours = dnnspec_rate(case, x, y, args.seconds)
        theirs = torch_rate(case, x, y, args.seconds)
        ratio = f"{ours / theirs:6.2f}x" if theirs else "    -"
        theirs_s = f"{theirs:14.0f}" if theirs else f"{'(no torch)':>14}"
        print(f"{case.name:<44} {ours:16.0f} {theirs_s} {ratio}", flush=True)


if __name__ == "__main__":
    main()
