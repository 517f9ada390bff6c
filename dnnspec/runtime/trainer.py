"""The training loop: rotating IOBinding buffers over the train-step graph.

Parameters and optimizer state live as OrtValues on the device, in three buffer sets
bound once: binding i reads set i and writes set i+1 (mod 3). A step binds only the
batch, the step counter and the seed, runs, reads the scalar loss, and rotates. Nothing
carried is copied to the host during training. A non-finite loss shows up one step after
the update that broke the parameters, so the third set is what keeps the last good
ones: the input of the previous step, whose loss was finite, is still intact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from dnnspec.assemble.steps import LOSS, SEED, STEP, TARGET, Program, next_name
from dnnspec.data.datasets import Dataset
from dnnspec.runtime.session import Device, make_session
from dnnspec.training.init import initial_value
from dnnspec.training.metrics import METRICS


class Diverged(Exception):
    """The loss (or the parameters) became NaN or infinite; training stops."""

    def __init__(self, step: int, epoch: int, loss: float, what: str = "the loss") -> None:
        super().__init__(f"{what} became {loss} at step {step} (epoch {epoch})")
        self.step, self.epoch, self.loss, self.what = step, epoch, loss, what


@dataclass
class EpochStats:
    """Sums accumulated over the batches of one pass."""

    loss: float = 0.0
    samples: int = 0
    elements: int = 0
    metric_sums: dict[str, float] = field(default_factory=dict)

    def add(self, loss: float, n: int, elements: int, metrics: dict[str, float]) -> None:
        self.loss += loss * n
        self.samples += n
        self.elements += elements
        for k, v in metrics.items():
            self.metric_sums[k] = self.metric_sums.get(k, 0.0) + v

    def result(self) -> dict[str, float]:
        """Means: loss per sample, each metric per sample or per element as it declares."""
        out = {"loss": self.loss / max(1, self.samples)}
        for name, total in self.metric_sums.items():
            per = METRICS.get(name).per
            out[name] = total / max(1, self.samples if per == "sample" else self.elements)
        return out


def initial_values(program: Program, seed: int, params_only: bool = False) -> dict[str, np.ndarray]:
    """Seeded parameters (each layer's initialiser), zero optimizer state and the layers'
    initial non-trained state (running mean 0, variance 1)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(program.float_dtype)
    values: dict[str, np.ndarray] = {}
    for slot in program.slots:
        values[slot.name] = initial_value(slot.spec, rng, dtype)
        if not params_only:
            for kind in slot.state:
                values[slot.state_name(kind)] = np.zeros(slot.spec.shape, dtype)
    for buffer in program.buffers:
        values[buffer.name] = initial_value(buffer.spec, rng, dtype)
    return values


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch, a pure function of (seed, epoch) so resume replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(n: int, batch: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    index = np.arange(n) if order is None else order
    for start in range(0, n, batch):
        yield index[start : start + batch]


class Trainer:
    """Owns the train and eval sessions and the carried tensors of one run."""

    def __init__(self, program: Program, device: Device = "cpu", seed: int = 0) -> None:
        self.program = program
        self.seed = seed
        self.train_session = make_session(program.train_step, device)
        self.eval_session = make_session(program.eval_step, device)
        self.device = (
            "cuda" if "CUDAExecutionProvider" in self.train_session.get_providers() else "cpu"
        )
        self.dtype = np.dtype(program.float_dtype)
        self.step = 0
        self.carried = program.carried()
        values = initial_values(program, seed)
        self._buffers = [self._device_values(values) for _ in range(3)]
        # host scalars bound once: OrtValues made by `ortvalue_from_numpy` alias their
        # arrays, so writing the step counter in place is all a step needs to do for it
        self._step_host = np.zeros((), np.int64)
        self._scalars = {
            STEP: ort.OrtValue.ortvalue_from_numpy(self._step_host),
            SEED: ort.OrtValue.ortvalue_from_numpy(np.array(seed, np.int64)),
        }
        self._results = {
            name: ort.OrtValue.ortvalue_from_shape_and_type([], self.dtype, "cpu", 0)
            for name in self._scalar_outputs()
        }
        self._current = 0
        self._previous: int | None = None
        self._bindings = [self._binding(i, (i + 1) % 3) for i in range(3)]

    # device state ------------------------------------------------------------
    def _device_values(self, values: dict[str, np.ndarray]) -> dict[str, ort.OrtValue]:
        """Fresh onnxruntime-owned tensors (`ortvalue_from_numpy` would alias the array)."""
        out = {}
        for name in self.carried:
            value = np.ascontiguousarray(values[name], self.dtype)
            out[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                value.shape, self.dtype, self.device, 0
            )
            out[name].update_inplace(value)
        return out

    def _binding(self, src: int, dst: int) -> ort.IOBinding:
        io = self.train_session.io_binding()
        for name in self.carried:
            io.bind_ortvalue_input(name, self._buffers[src][name])
            io.bind_ortvalue_output(next_name(name), self._buffers[dst][name])
        for name, value in self._scalars.items():
            io.bind_ortvalue_input(name, value)
        for name, value in self._results.items():
            io.bind_ortvalue_output(name, value)
        return io

    def _scalar_outputs(self) -> list[str]:
        return [LOSS, *(f"metric.{m}" for m in self.program.metric_names)]

    def values(self) -> dict[str, np.ndarray]:
        """Host copies of the current parameters and state (`OrtValue.numpy()` is a view)."""
        return {k: v.numpy().copy() for k, v in self._buffers[self._current].items()}

    def load_values(self, values: dict[str, np.ndarray]) -> None:
        """Replace the carried tensors (resume, or restoring the best epoch)."""
        for buf in self._buffers:
            for name in self.carried:
                buf[name].update_inplace(np.ascontiguousarray(values[name].astype(self.dtype)))

    def params(self) -> dict[str, np.ndarray]:
        """Host copies of what model.onnx holds: parameters and non-trained state."""
        current = self._buffers[self._current]
        return {s.name: current[s.name].numpy().copy() for s in self.program.model_slots()}

    # steps -------------------------------------------------------------------
    def train_step(self, x: dict[str, np.ndarray], y: np.ndarray) -> tuple[float, dict[str, float]]:
        io = self._bindings[self._current]
        for name, value in x.items():
            io.bind_cpu_input(name, value)
        io.bind_cpu_input(TARGET, y)
        self._step_host[...] = self.step
        self.train_session.run_with_iobinding(io)
        loss = float(self._results[LOSS].numpy())
        if not math.isfinite(loss):
            if self._previous is not None:
                self._current = self._previous
            raise Diverged(self.step, -1, loss)
        metrics = {
            m: float(self._results[f"metric.{m}"].numpy()) for m in self.program.metric_names
        }
        self._previous, self._current = self._current, (self._current + 1) % 3
        self.step += 1
        return loss, metrics

    def evaluate(self, data: Dataset, input_name: str, batch: int = 1024) -> dict[str, float]:
        stats = EpochStats()
        io = self.eval_session.io_binding()
        for name in (s.name for s in self.program.model_slots()):
            io.bind_ortvalue_input(name, self._buffers[self._current][name])
        for out in self._scalar_outputs():
            io.bind_output(out, "cpu")
        for idx in batches(len(data), batch):
            y = data.y[idx]
            io.bind_cpu_input(input_name, np.ascontiguousarray(data.x[idx]))
            io.bind_cpu_input(TARGET, np.ascontiguousarray(y))
            self.eval_session.run_with_iobinding(io)
            outs = [o.numpy() for o in io.get_outputs()]
            metrics = {m: float(outs[1 + i]) for i, m in enumerate(self.program.metric_names)}
            stats.add(float(outs[0]), len(idx), int(y.size), metrics)
        return stats.result()

    def run_epoch(
        self,
        data: Dataset,
        input_name: str,
        batch: int,
        epoch: int,
        on_step: Callable[[int, float], None] | None = None,
    ) -> dict[str, float]:
        stats = EpochStats()
        for idx in batches(len(data), batch, epoch_order(len(data), self.seed, epoch)):
            y = np.ascontiguousarray(data.y[idx])
            try:
                loss, metrics = self.train_step({input_name: np.ascontiguousarray(data.x[idx])}, y)
            except Diverged as exc:
                raise Diverged(exc.step, epoch, exc.loss, exc.what) from None
            stats.add(loss, len(idx), int(y.size), metrics)
            if on_step is not None:
                on_step(len(idx), loss)
        return stats.result()
