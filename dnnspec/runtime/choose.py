"""Which backend runs a command: a registered name, or `auto`, the faster one measured.

`auto` trains a few steps of the run in each candidate (`CANDIDATES` that are installed),
as the Trainer would run them, and picks the one with the shorter step. The choice is
cached per spec hash, machine and device in `$XDG_CACHE_HOME/dnnspec/runtimes.json`
(`~/.cache/dnnspec` without it), so the probe runs once; `eval` and `predict` under
`auto` use the choice cached for the model's spec, else onnxruntime. bf16 is never
picked: it computes other results.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnnspec.assemble.steps import Program
from dnnspec.data.datasets import Dataset
from dnnspec.errors import Diagnostic, DiagnosticError, Span, did_you_mean, error
from dnnspec.files import write_text
from dnnspec.runtime.backend import BACKENDS, DEFAULT, Device
from dnnspec.runtime.trainer import HOST_LOOP_STEP_SECONDS, Diverged, Trainer

AUTO = "auto"
CANDIDATES = ("onnxruntime", "openvino")
"""What `auto` measures, in order of preference on a tie."""
PROBE_SECONDS = 0.1
"""About how long each timed call of the probe takes (two per candidate, after one
warm-up call of two steps)."""


def check_name(name: str, span: Span | None = None) -> str:
    """`name` as registered (or `auto`); an unknown one is a located diagnostic listing the
    runtimes."""
    canonical = BACKENDS.canonical(name)
    if name == AUTO or canonical is not None:
        return canonical or name
    known = [AUTO, *BACKENDS]
    close = did_you_mean(name, known)
    listed = "the runtimes are " + ", ".join(known)
    raise error(
        f"unknown runtime '{name}'",
        span,
        help=f"{close} ({listed})" if close and close.startswith("did") else listed,
    )


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dnnspec" / "runtimes.json"


def _key(spec_hash: str, device: Device) -> str:
    """The spec, this machine (name, processor, cores) and the device asked for."""
    machine = f"{platform.node()}|{platform.machine()}|{platform.processor()}|{os.cpu_count()}"
    return f"{spec_hash}|{machine}|{device}"


def _read_cache() -> dict[str, dict[str, object]]:
    """The cache, empty when it is missing or unreadable (it only saves a probe)."""
    try:
        found = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def cached(spec_hash: str, device: Device) -> str | None:
    """The runtime `auto` chose for this spec on this machine, if a probe ran."""
    entry = _read_cache().get(_key(spec_hash, device))
    name = entry.get("runtime") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and name in BACKENDS else None


@dataclass(frozen=True)
class Choice:
    """The runtime `auto` picked and the seconds per step it measured (or cached)."""

    name: str
    seconds: dict[str, float]
    cached: bool

    def note(self) -> Diagnostic:
        times = ", ".join(f"{n} {s * 1e3:.3g} ms" for n, s in self.seconds.items())
        how = f"cached in {cache_path()}" if self.cached else "measured now"
        return Diagnostic(
            message=f"runtime auto: {self.name} (per step: {times}; {how})",
            severity="note",
        )


def choose(program: Program, data: Dataset, input_name: str, device: Device, seed: int) -> Choice:
    """`auto` for a training run: the cached choice, or the faster candidate measured
    now (and cached)."""
    key = _key(program.metadata.spec_hash or "", device)
    entry = _read_cache().get(key)
    name = entry.get("runtime") if isinstance(entry, dict) else None
    if isinstance(entry, dict) and isinstance(name, str) and name in BACKENDS:
        times = entry.get("seconds")
        return Choice(name, dict(times) if isinstance(times, dict) else {}, True)
    seconds: dict[str, float] = {}
    for name in CANDIDATES:
        if BACKENDS.get(name).installed():
            measured = _probe(name, program, data, input_name, device, seed)
            if measured is not None:
                seconds[name] = measured
    best = min(seconds, key=seconds.__getitem__) if seconds else DEFAULT
    cache = _read_cache()
    cache[key] = {"runtime": best, "seconds": seconds}
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        write_text(cache_path(), json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except (OSError, DiagnosticError):
        pass  # no cache: the next run probes again
    return Choice(best, seconds, False)


def _probe(
    name: str, program: Program, data: Dataset, input_name: str, device: Device, seed: int
) -> float | None:
    """Seconds per train step of `name` on this run's first batches, as the Trainer runs
    them (K per call, or one by one for a slow step); None where it cannot compile."""
    try:
        trainer = Trainer(program, device, seed, steps_per_call=2, backend=name)
    except DiagnosticError:  # e.g. a CPU runtime asked for CUDA: not a candidate
        return None
    if trainer.runtime != name:
        return None
    batch = program.train.batch
    full = max(1, len(data) // batch)
    order = np.arange(len(data))  # which samples does not matter to the time
    trainer._bind_data(data, input_name)

    def timed(k: int) -> float:
        k = min(k, full)
        rows = order[: k * batch].reshape(k, -1) if len(data) >= batch else order[None]
        started = time.perf_counter()
        trainer.run_steps(rows)
        return (time.perf_counter() - started) / len(rows)

    try:
        first = timed(2)
        trainer.host_loop = first >= HOST_LOOP_STEP_SECONDS
        k = max(1, int(PROBE_SECONDS / max(first, 1e-7)))
        return float(np.min([timed(k), timed(k)]))
    except Diverged:  # the first steps already diverge: no measurement
        return None


def for_model(name: str, spec_hash: str | None, device: Device) -> str:
    """The runtime `eval` and `predict` open a model in: `auto` is the one a probe chose
    for its spec on this machine, else onnxruntime (one pass is not worth a probe)."""
    name = check_name(name)
    if name != AUTO:
        return name
    return (cached(spec_hash, device) if spec_hash else None) or DEFAULT
