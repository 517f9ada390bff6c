"""The training loop: K steps per call of the train-loop graph over rotating buffer sets.

A backend (`runtime/backend.py`) holds parameters and optimizer state (every carried
tensor) on the device in three buffer sets: a call reads set i and writes set i+1 (mod 3).
The dataset is bound once too, so a call hands over only the K x B sample indices of its
batches (`assemble/loop.py` gathers them in the graph), runs K steps, reads K losses and
rotates. Nothing carried is copied to the host during an epoch, and the calls are sized
to take about `CALL_SECONDS`, which is all the progress bar needs.

A non-finite loss shows up one step after the update that broke the parameters, so the
last good parameters are the input of the step before it. The third buffer set keeps the
input of the previous call intact; when a call meets a non-finite loss, the trainer
replays the previous call and this one step by step from that set (steps are
deterministic, and K-step calls give bit-identical results to single steps), stopping
with the input of the step before the bad one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnnspec.assemble.loop import build_train_loop
from dnnspec.assemble.steps import LOSS, Program, confusion_name
from dnnspec.data.datasets import Dataset
from dnnspec.data.stream import Chunked, Feed, Streamed, epoch_order
from dnnspec.layers.init import initial_value
from dnnspec.runtime.backend import DEFAULT, SETS, Device, TrainGraphs
from dnnspec.runtime.data import head_targets
from dnnspec.runtime.fallback import train_state
from dnnspec.training.metrics import METRICS


class Diverged(Exception):
    """The loss (or the parameters) became NaN or infinite; training stops."""

    def __init__(self, step: int, epoch: int, loss: float, what: str = "the loss") -> None:
        super().__init__(f"{what} became {loss} at step {step} (epoch {epoch})")
        self.step, self.epoch, self.loss, self.what = step, epoch, loss, what


Elements = int | dict[str, int]
"""Target elements of a batch: one count, or one per output name (named outputs)."""


@dataclass
class EpochStats:
    """Sums accumulated over the batches of one pass: the loss, and each metric's
    statistics (scalars or arrays, added elementwise). `info` maps a record key to its
    metric and output (`Program.metric_info`); without it a key is a metric's name."""

    loss: float = 0.0
    samples: int = 0
    elements: dict[str, int] = field(default_factory=dict)
    metric_sums: dict[str, np.ndarray] = field(default_factory=dict)
    confusions: dict[str, np.ndarray] = field(default_factory=dict)
    """[true class, predicted class] counts of an evaluation pass, per class output
    (`""`: a model's one unnamed output)."""
    info: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def confusion(self) -> np.ndarray | None:
        """The confusion counts of a model's one unnamed class output."""
        return self.confusions.get("")

    def add(self, loss: float, n: int, elements: Elements, metrics: dict[str, np.ndarray]) -> None:
        self.loss += loss * n
        self.samples += n
        for output, count in (elements if isinstance(elements, dict) else {"": elements}).items():
            self.elements[output] = self.elements.get(output, 0) + count
        for k, v in metrics.items():
            value = np.asarray(v, np.float64)
            if self.info.get(k, (k, ""))[0] == LOSS:  # an output's batch-mean loss
                value = value * n
            self.metric_sums[k] = self.metric_sums[k] + value if k in self.metric_sums else value

    def add_steps(
        self, losses: np.ndarray, n: int, elements: Elements, metrics: dict[str, np.ndarray]
    ) -> None:
        """K steps of `n` samples each, summed in step order as K calls of `add` would (a
        cumulative sum adds in order, so the totals are the same to the bit)."""
        k = len(losses)
        for loss in losses.tolist():
            self.loss += loss * n
        self.samples += n * k
        for output, count in (elements if isinstance(elements, dict) else {"": elements}).items():
            self.elements[output] = self.elements.get(output, 0) + count * k
        for key, v in metrics.items():
            values = np.asarray(v, np.float64)
            if self.info.get(key, (key, ""))[0] == LOSS:
                values = values * n
            if key in self.metric_sums:
                values = np.concatenate([self.metric_sums[key][None], values])
            self.metric_sums[key] = np.cumsum(values, axis=0)[-1]

    def result(self) -> dict[str, Any]:
        """Means: loss per sample (with named outputs each one's loss too), each metric
        finished from its totals over the samples or elements it is counted in (per-class
        values as `<key>_per_class`)."""
        out: dict[str, Any] = {"loss": self.loss / max(1, self.samples)}
        for key, total in self.metric_sums.items():
            name, output = self.info.get(key, (key, ""))
            if name == LOSS:
                out[key] = float(total) / max(1, self.samples)
                continue
            definition = METRICS.get(name)
            count = self.samples if definition.per == "sample" else self.elements.get(output, 0)
            out[key] = definition.finish(total, count)
            values = None if definition.per_class is None else definition.per_class(total)
            if values is not None:
                out[f"{key}_per_class"] = values
        return out

    def totals(self, name: str) -> np.ndarray:
        """A metric's summed statistics (the confusion matrix of precision/recall/f1)."""
        return self.metric_sums[name]


def initial_values(program: Program, seed: int, params_only: bool = False) -> dict[str, np.ndarray]:
    """Seeded parameters (each layer's initialiser), zero optimizer state and the layers'
    initial non-trained state (running mean 0, variance 1); what `init from(...)` gave
    (`program.start`) replaces the drawn values, so the other draws stay as they were."""
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
    values |= program.start
    if not params_only:
        for name in program.controls:
            values[name] = np.ones((), dtype)
        for name in program.accumulators:
            values[name] = np.zeros((), dtype)
    return values


def train_graphs(program: Program, seed: int) -> TrainGraphs:
    """What a backend is handed to train `program`."""
    return TrainGraphs(
        loop=build_train_loop(program.train_step),
        step=program.train_step,
        eval=program.eval_step,
        carried=tuple(program.carried()),
        weights=tuple(s.name for s in program.model_slots()),
        scalars=(LOSS, *program.scalar_outputs().values()),
        dtype=np.dtype(program.float_dtype),
        seed=seed,
        # a train step is about three forward passes (forward, input and weight gradients)
        flops=3.0 * program.typed.total_flops() * program.train.batch,
    )


def batches(n: int, batch: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    index = np.arange(n) if order is None else order
    for start in range(0, n, batch):
        yield index[start : start + batch]


CALL_SECONDS = 0.25
"""Target duration of one train-loop call: few enough progress updates that the host
does almost nothing per step, often enough for a live bar and a prompt Ctrl-C."""
MAX_STEPS_PER_CALL = 4096
HOST_LOOP_STEP_SECONDS = 0.005
"""Steps at least this long run one per call of the train-step graph instead: for them
the Loop costs more per step than the per-call overhead it saves (docs/performance.md)."""
RESIDENT_BYTES = 2 << 30
"""Datasets up to this size live on the device for the whole run; larger ones are
gathered on the host, call by call, into a [K*B, ...] block (same graph). A streamed
dataset (`data/stream.py`) is gathered so too, its rows handed over by its reader."""


@dataclass
class _Call:
    """A train-loop call kept for replay: the buffer set it read, its first step, its
    batches (sample indices, [K, B])."""

    source: int
    step: int
    rows: np.ndarray


class Trainer:
    """Drives one run's carried tensors, held by a backend (onnxruntime by default)."""

    def __init__(
        self,
        program: Program,
        device: Device = "cpu",
        seed: int = 0,
        steps_per_call: int | None = None,
        backend: str = DEFAULT,
    ) -> None:
        """`steps_per_call` fixes K; by default it adapts to take about CALL_SECONDS.
        `backend`: a name registered in `runtime.backend.BACKENDS`."""
        self.program = program
        self.seed = seed
        self.dtype = np.dtype(program.float_dtype)
        self.carried = program.carried()
        graphs, values = train_graphs(program, seed), initial_values(program, seed)
        # `runtime`: the backend that holds the state (onnxruntime where `backend` cannot
        # compile the graphs, with a warning in `warnings`)
        self.state, self.runtime, self.warnings = train_state(backend, graphs, device, values)
        self.device = self.state.device
        self.step = 0
        self.adaptive = steps_per_call is None
        self.host_loop = False
        self.steps_per_call = steps_per_call or 8
        self._keys = list(program.scalar_outputs())  # record keys of the scalars after loss
        self._current = 0
        self._previous: int | None = None
        self._last_call: _Call | None = None
        self._data: tuple[Dataset | Streamed, str, bool] | None = None
        self._feed: Feed | None = None

    def targets(self, data: Dataset) -> dict[str, np.ndarray]:
        """Step-graph target input -> the data's targets for it."""
        return {out.target: head_targets(data)[out.head.output] for out in self.program.outputs}

    def elements(self, data: Dataset | Streamed, rows: int | None = None) -> dict[str, int]:
        """Target elements per output in `rows` samples (all of `data` when None)."""
        count = len(data) if rows is None else rows
        found = {}
        for out in self.program.outputs:
            if isinstance(data, Streamed):
                shape = data.source.shapes[out.head.output or "y"]
            else:
                shape = head_targets(data)[out.head.output].shape[1:]
            found[out.head.output] = count * int(np.prod(shape, dtype=np.int64))
        return found

    def values(self) -> dict[str, np.ndarray]:
        """Host copies of the current parameters and state; a scalar the Loop hands back
        as [1] (a host-fed control) keeps its shape []."""
        out = self.state.read(self._current, self.carried)
        for name in [*self.program.controls, *self.program.accumulators]:
            out[name] = out[name].reshape(())
        return out

    def load_values(self, values: dict[str, np.ndarray]) -> None:
        """Replace the carried tensors (resume, or restoring the best epoch)."""
        self.state.write({name: values[name] for name in self.carried})
        self._previous = self._last_call = None

    def set_control(self, name: str, value: float) -> None:
        """Set a host-fed scalar (a plateau factor) for the steps from now on."""
        self.state.write({name: np.array(value, self.dtype)})
        self._previous = self._last_call = None

    def params(self) -> dict[str, np.ndarray]:
        """Host copies of what model.onnx holds: parameters and non-trained state."""
        return self.state.read(self._current, [s.name for s in self.program.model_slots()])

    # data --------------------------------------------------------------------
    def _bind_data(self, data: Dataset | Streamed, input_name: str) -> bool:
        """Hand `data` to the backend once, each model input by name (`input_name`: the
        one input's, which reads `data.x`; several read `data.inputs`); returns whether it
        is resident (else each call hands over its own gathered block)."""
        if self._data is not None and self._data[0] is data and self._data[1] == input_name:
            return self._data[2]
        if isinstance(data, Streamed):
            self._data = (data, input_name, False)
            return False
        inputs, targets = data.feeds(input_name), self.targets(data)
        size = sum(a.nbytes for a in (*inputs.values(), *targets.values()))
        resident = self.device == "cpu" or size <= RESIDENT_BYTES
        if resident:
            self.state.bind_data({**inputs, **targets})
        self._data = (data, input_name, resident)
        return resident

    # steps -------------------------------------------------------------------
    def train_step(
        self, x: dict[str, np.ndarray], y: np.ndarray | dict[str, np.ndarray]
    ) -> tuple[float, dict[str, np.ndarray]]:
        """One step on a batch given by the caller (tests, benchmarks): `y` the targets,
        or with named outputs a dict of them by output name; `run_epoch` is the fast path.
        Returns the loss and each statistic by record key."""
        given = y if isinstance(y, dict) else {"": y}
        feeds = dict(x)
        for out in self.program.outputs:
            feeds[out.target] = np.ascontiguousarray(given[out.head.output])
        outs = self.state.step(self._current, self.step, feeds)
        self._last_call = None
        loss = float(outs[0])
        self._advance(loss, 1)
        return loss, dict(zip(self._keys, outs[1:], strict=True))

    def _advance(self, loss: float, steps: int) -> None:
        """Rotate the buffer sets after a call; a non-finite loss rolls back to the input
        of the previous call instead and stops."""
        if not math.isfinite(loss):
            if self._previous is not None:
                self._current = self._previous
            raise Diverged(self.step, -1, loss)
        self._previous, self._current = self._current, (self._current + 1) % SETS
        self.step += steps

    def _block(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The rows `flat` of the bound data gathered on the host, by graph input name."""
        assert self._data is not None
        data, input_name, _ = self._data
        if isinstance(data, Streamed):
            assert self._feed is not None
            got = self._feed.gather(flat)
            heads = {out.head.output or "y": out.target for out in self.program.outputs}
            return {heads.get(name, name): np.ascontiguousarray(a) for name, a in got.items()}
        arrays = (*data.feeds(input_name).items(), *self.targets(data).items())
        return {name: np.ascontiguousarray(array[flat]) for name, array in arrays}

    def _call(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the K steps whose batches are `rows`; per-step losses and metric sums."""
        assert self._data is not None
        if self._data[2]:
            outs = self.state.loop(self._current, self.step, rows)
        else:
            flat = rows.reshape(-1)
            block = self._block(flat)
            order = np.arange(flat.size, dtype=np.int64).reshape(rows.shape)
            outs = self.state.loop(self._current, self.step, order, block)
        return outs[0], dict(zip(self._keys, outs[1:], strict=True))

    def run_steps(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """K train steps in one call over the bound data; `rows` [K, B] are sample indices.
        On a non-finite loss, replays step by step to leave the last good parameters."""
        if self.host_loop:
            return self._host_steps(rows)
        source, step = self._current, self.step
        losses, metrics = self._call(rows)
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            self._replay(rows[: bad[0] + 1])
        self._advance(float(losses[-1]), len(rows))
        self._last_call = _Call(source, step, rows)
        return losses, metrics

    def _host_steps(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The same steps through the single-step graph, batches gathered on the host."""
        targets = {out.target: out.head.output for out in self.program.outputs}
        seen = []
        for row in rows:
            block = self._block(row)
            x = {name: a for name, a in block.items() if name not in targets}
            seen.append(
                self.train_step(x, {targets[k]: v for k, v in block.items() if k in targets})
            )
        losses = np.array([loss for loss, _ in seen], self.dtype)
        return losses, {m: np.array([ms[m] for _, ms in seen], self.dtype) for m in self._keys}

    def _replay(self, rows: np.ndarray) -> None:
        """Re-run the previous call and `rows` one step at a time from the previous call's
        input (still intact in its buffer set) until the non-finite loss raises."""
        if self._last_call is not None:
            before = self._last_call
            self._current, self._previous, self.step = before.source, None, before.step
            rows = np.concatenate([before.rows, rows])
        for row in rows:
            loss, _ = self._call(row[None])
            self._advance(float(loss[0]), 1)
        raise Diverged(self.step, -1, math.nan)  # unreachable unless steps are not replayable

    def evaluate(self, data: Dataset, input_name: str, batch: int = 1024) -> dict[str, Any]:
        return self.evaluate_stats(data, input_name, batch).result()

    def evaluate_stats(
        self,
        data: Dataset | Chunked,
        input_name: str,
        batch: int = 1024,
        params: dict[str, np.ndarray] | None = None,
    ) -> EpochStats:
        """The summed loss and metric statistics of one pass over `data`, no dropout, with
        the current parameters or `params` (e.g. the best epoch's); for a class model also
        the confusion matrix. Data too large to hold is evaluated chunk by chunk."""
        stats = EpochStats(info=self.program.metric_info())
        run = self.state.evaluator(self._current, params)
        scalars = self.program.scalar_outputs()
        for part in data.parts() if isinstance(data, Chunked) else [data]:
            arrays = {**part.feeds(input_name), **self.targets(part)}
            for idx in batches(len(part), batch):
                feeds = {name: np.ascontiguousarray(a[idx]) for name, a in arrays.items()}
                outs = run(feeds)
                metrics = {key: outs[name] for key, name in scalars.items()}
                stats.add(float(outs[LOSS]), len(idx), self.elements(part, len(idx)), metrics)
                for out in self.program.outputs:
                    name = confusion_name(out.head.output)
                    if name in outs:
                        counts = outs[name].astype(np.int64)
                        before = stats.confusions.get(out.head.output)
                        stats.confusions[out.head.output] = (
                            counts if before is None else before + counts
                        )
        return stats

    def run_epoch(
        self,
        data: Dataset | Streamed,
        input_name: str,
        batch: int,
        epoch: int,
        on_call: Callable[[np.ndarray, int], None] | None = None,
    ) -> dict[str, Any]:
        """One pass in the epoch's order: full batches in calls of `steps_per_call` steps
        (adapted to take about CALL_SECONDS each), then the partial last batch.
        `on_call(losses of its steps, samples)` follows each call. Once a step is seen to
        take HOST_LOOP_STEP_SECONDS, the steps of a call run one by one instead. Streamed
        data is read by a background reader in its own epoch order (`Streamed.order`)."""
        self._bind_data(data, input_name)
        if not isinstance(data, Streamed):
            return self._epoch(
                data, epoch_order(len(data), self.seed, epoch), batch, epoch, on_call
            )
        self._feed = data.feed(self.seed, epoch)
        try:
            return self._epoch(data, data.order(self.seed, epoch), batch, epoch, on_call)
        finally:
            self._feed.close()
            self._feed = None

    def _epoch(
        self,
        data: Dataset | Streamed,
        order: np.ndarray,
        batch: int,
        epoch: int,
        on_call: Callable[[np.ndarray, int], None] | None,
    ) -> dict[str, Any]:
        """The calls of one epoch over `order` (see `run_epoch`)."""
        full, rest = divmod(len(order), batch)
        per_sample = self.elements(data, 1)
        stats = EpochStats(info=self.program.metric_info())
        done = 0
        while done < full + (rest > 0):
            if done < full:
                k = min(full - done, self.steps_per_call)
                rows = order[done * batch : (done + k) * batch].reshape(k, batch)
            else:
                k, rows = 1, order[full * batch :].reshape(1, rest)
            started = time.perf_counter()
            try:
                losses, metrics = self.run_steps(rows)
            except Diverged as exc:
                raise Diverged(exc.step, epoch, exc.loss, exc.what) from None
            if done < full and self.adaptive:
                per_step = (time.perf_counter() - started) / k
                self.host_loop = self.host_loop or per_step >= HOST_LOOP_STEP_SECONDS
                self.steps_per_call = max(
                    1, min(MAX_STEPS_PER_CALL, int(CALL_SECONDS / max(per_step, 1e-7)))
                )
            n = rows.shape[1]
            stats.add_steps(losses, n, {k: n * v for k, v in per_sample.items()}, metrics)
            if on_call is not None:
                on_call(losses, k * n)
            done += k
        return stats.result()
