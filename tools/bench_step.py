"""The in-process suites of tools/bench.py: one train step and inference, dnnspec and
PyTorch eager in this process on a fixed batch, alternating in 0.2 s rounds (a shared
virtual CPU drifts by 20% over seconds); each row is the median rate.

The cases are MLPs, CNNs (a digits-size CNN with batchnorm, and 32-channel 3x3
convolutions at 28x28), LSTMs (unrolled and Scan) and specs/char_transformer.dnn, each
beside the same network in PyTorch. Without torch only dnnspec's rates are measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnnspec.assemble.steps import build_inference, build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.runtime.backend import Device
from dnnspec.runtime.session import make_session
from dnnspec.runtime.trainer import Trainer, initial_values
from dnnspec.schema import arg_int
from dnnspec.training.schedules import Timing

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


# one step and inference -------------------------------------------------------------
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
