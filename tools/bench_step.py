"""The in-process suites of tools/bench.py: one train step and inference, dnnspec and
PyTorch eager in this process on a fixed batch, alternating in 0.2 s rounds (a shared
virtual CPU drifts by 20% over seconds); each row is the median rate.

The cases are MLPs, CNNs (a digits-size CNN with batchnorm, and 32-channel 3x3
convolutions at 28x28), LSTMs (unrolled and Scan) and specs/char_transformer.dnn, each
beside the same network in PyTorch (both built from one `bench_models` description).
Without torch only dnnspec's rates are measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench_models import LR, CharTransformer, Cnn, Lstm, Mlp, spec_text

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


def mlp_spec(
    widths: tuple[int, ...], dropout: float, optimizer: str, batch: int, **train: Any
) -> str:
    """An MLP spec: ReLU hidden layers, dropout after the first one when `dropout` > 0."""
    net = Mlp(widths, dropout)
    return spec_text(net, train.get("data", "digits"), optimizer, batch, train.get("epochs", 1))


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
    """A CNN train step (`bench_models.Cnn`) on a batch of random images."""

    name: str
    net: Cnn
    batch: int = 64
    optimizer: str = "adam"


DIGITS_CNN = Cnn(8, (16, 32), (0, 1), norm=True)
"""specs/digits_cnn.dnn's network, taking the images as [N, 1, 8, 8]."""
CNN_28 = Cnn(28, (32, 32), (1,), norm=False)
CNNS = [
    CnnCase("digits CNN 8x8, conv 16-32 + batchnorm, batch 64, adam", DIGITS_CNN),
    CnnCase("CNN 28x28, conv 32-32, batch 64, adam", CNN_28),
]


def cnn_pair(case: CnnCase, have_torch: bool) -> list[Callable[[], object]]:
    text = spec_text(case.net, "digits", case.optimizer, case.batch, metrics=False)
    spec = load_spec_text(text, "<bench>")
    assert spec.train is not None
    program = build_train_step(check_spec(spec), spec.train, 10, Timing(100, 10_000))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(case.batch, *case.net.sample[1])).astype(np.float32)
    y = rng.integers(0, 10, case.batch).astype(np.int64)
    trainer = Trainer(program, DEVICE, 0)
    fns: list[Callable[[], object]] = [lambda: trainer.train_step({"x": x}, y)]
    if have_torch:
        fns.append(_torch_step(case.net.module().to(DEVICE), case.optimizer, x, y))
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


def step_pair(
    case: StepCase, x: np.ndarray, y: np.ndarray, have_torch: bool
) -> list[Callable[[], object]]:
    trainer = Trainer(_program(case), DEVICE, 0)
    fns: list[Callable[[], object]] = [lambda: trainer.train_step({"x": x}, y)]
    if have_torch:
        fns.append(_torch_step(Mlp(case.widths).module().to(DEVICE), case.optimizer, x, y))
    return fns


def infer_pair(case: StepCase, x: np.ndarray, have_torch: bool) -> list[Callable[[], object]]:
    program = _program(case)
    params = initial_values(program, 0, params_only=True)
    model = build_inference(program.typed, program.slots, params, program.metadata)
    session = make_session(model, DEVICE)
    fns: list[Callable[[], object]] = [lambda: session.run(["output"], {"x": x})]
    if have_torch:
        import torch

        net = Mlp(case.widths).module().eval().to(DEVICE)

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
    """An LSTM train step (`bench_models.Lstm`), Adam, on a batch of random sequences."""

    name: str
    net: Lstm
    batch: int


LSTM_SCAN = Lstm(32, 32, 128)
"""T = 32, above the unrolling limit: the train step loops a Scan."""
LSTMS = [
    LstmCase("LSTM 16x32 -> 128, T = 16 (unrolled), batch 64", Lstm(16, 32, 128), 64),
    LstmCase("LSTM 32x32 -> 128, T = 32 (Scan), batch 64", LSTM_SCAN, 64),
    LstmCase(
        "LSTM 32x32 -> 128, symbolic T (Scan), batch 64", Lstm(32, 32, 128, symbolic=True), 64
    ),
    LstmCase("LSTM 8x16 -> 32, T = 8 (unrolled), batch 32", Lstm(8, 16, 32), 32),
]


def lstm_pair(
    case: LstmCase, x: np.ndarray, y: np.ndarray, have_torch: bool
) -> list[Callable[[], object]]:
    """dnnspec's train step and the same nn.LSTM + Linear step in PyTorch."""
    text = spec_text(case.net, "digits", "adam", case.batch, metrics=False)
    spec = load_spec_text(text, "<bench>")
    assert spec.train is not None
    trainer = Trainer(
        build_train_step(check_spec(spec), spec.train, 10, Timing(100, 10_000)), DEVICE, 0
    )
    fns: list[Callable[[], object]] = [lambda: trainer.train_step({"x": x}, y)]
    if have_torch:
        fns.append(_torch_step(case.net.module().to(DEVICE), "adam", x, y))
    return fns


def bench_lstm(case: LstmCase, seconds: float, have_torch: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(case.batch, *case.net.sample[1])).astype(np.float32)
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
        model = CharTransformer(d, heads, layers, vocab, t).module().to(DEVICE)
        fns.append(_torch_step(model, "adam", x, y.reshape(-1)))
    return fns


def bench_transformer(case: TransformerCase, seconds: float, have_torch: bool) -> dict[str, Any]:
    measured = rates(transformer_pair(case, have_torch), seconds)
    row: dict[str, Any] = {"case": asdict(case), "dnnspec_per_s": measured[0]}
    if have_torch:
        row["torch_per_s"] = measured[1]
        row["ratio"] = measured[0] / measured[1]
    return row
