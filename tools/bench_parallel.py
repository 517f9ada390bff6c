"""Data-parallel scaling (`dnnspec train --workers N`): samples/s of one process and of
1 and 2 MPI workers on a compute-bound MLP (784-1024-1024-10, batch 512, SGD), and the
share of a step spent in the all-reduce; then the same workers as Ray actors
(`--backend ray`). `tools/bench.py --suite parallel` runs it; alone:

    python tools/bench_parallel.py [--steps 30] [--workers 1,2] [--ray-address ADDR] [--json]

Each MPI measurement is its own `mpiexec -n N` launch of this file with `--worker`: rank 0
prints one JSON line (steps timed after a warm-up of 3). The Ray rows run the same ranks
as actors (runtime/ray_workers.py) on a Ray started for them or, with `--ray-address`, on
a cluster: a local one is `ray start --head --port 6390 --num-cpus 1` plus a worker node
`ray start --address 127.0.0.1:6390 --num-cpus 1` (then `--ray-address 127.0.0.1:6390`).
The machine must be quiet: with 2 cores, 2 workers leave nothing to anyone else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from bench_step import mlp_spec

from dnnspec.frontend import load_spec
from dnnspec.runtime.parallel import ENV, parallel_trainer
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.ray_workers import launch_ray
from dnnspec.runtime.trainer import Trainer

WIDTHS = (784, 1024, 1024, 10)
BATCH = 512
WARM = 3


def write_spec(work: Path, steps: int) -> Path:
    """Seeded random data of (steps + WARM) batches, all training rows."""
    rows = (steps + WARM) * BATCH
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, WIDTHS[0])).astype(np.float32)
    y = rng.integers(0, WIDTHS[-1], rows).astype(np.int64)
    np.savez(work / "data.npz", x=x, y=y)
    data = f'file(path = "{work / "data.npz"}", validation = 0)'
    path = work / "mlp.dnn"
    path.write_text(mlp_spec(WIDTHS, 0.0, "sgd", BATCH, data=data))
    return path


def measure(spec: Path, steps: int, parallel: bool) -> dict[str, Any] | None:
    """This process's run of WARM + `steps` steps; rank 0's figures (None elsewhere)."""
    prep = prepare(load_spec(spec))
    name = prep.spec.model.inputs[0].name
    rows = np.arange(len(prep.train_data)).reshape(-1, BATCH)
    if parallel:
        trainer: Trainer = parallel_trainer(prep.program, 0, len(prep.train_data))
    else:
        trainer = Trainer(prep.program, seed=0, steps_per_call=1)
    trainer._bind_data(prep.train_data, name)
    trainer.run_steps(rows[:WARM])
    comm_before = getattr(trainer, "communication", 0.0)
    started = time.perf_counter()
    for row in rows[WARM:]:
        trainer.run_steps(row[None])
    seconds = time.perf_counter() - started
    if getattr(trainer, "rank", 0):
        return None
    comm = getattr(trainer, "communication", 0.0) - comm_before
    return {
        "samples_per_s": steps * BATCH / seconds,
        "step_ms": 1000 * seconds / steps,
        "all_reduce_share": comm / seconds,
    }


def run(steps: int, workers: list[int], ray_address: str | None = None) -> list[dict[str, Any]]:
    """One process, then each worker count, each in its own launch, by MPI then Ray."""
    found: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_spec(Path(tmp), steps)
        one = measure(spec, steps, parallel=False)
        assert one is not None
        found.append({"workers": "1 process", **one})
        mpiexec = str(Path(sys.executable).with_name("mpiexec"))
        for n in workers:
            command = [mpiexec, "-n", str(n), sys.executable, __file__, "--worker", str(spec)]
            done = subprocess.run(
                [*command, "--steps", str(steps)],
                env={**os.environ, ENV: str(n)},
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            found.append(
                {"workers": n, **row, "speedup": row["samples_per_s"] / one["samples_per_s"]}
            )
        if find_spec("ray") is None:
            return found
        for n in workers:
            command = [sys.executable, __file__, "--ray-driver", str(n), "--steps", str(steps)]
            address = ["--ray-address", ray_address] if ray_address else []
            done = subprocess.run(
                [*command, *address, str(spec)],
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            where = "Ray cluster" if ray_address else "local Ray"
            found.append(
                {
                    "workers": f"{n} ({where})",
                    **row,
                    "speedup": row["samples_per_s"] / one["samples_per_s"],
                }
            )
    return found


def ray_driver(workers: int, spec: str, steps: int, address: str | None) -> int:
    """`workers` Ray actors each running this file with `--worker SPEC`."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--worker", spec, "--steps", str(steps)]
        return launch_ray(workers, argv, Path(tmp), address, script=__file__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--ray-address", metavar="ADDR", help="a Ray cluster for the Ray rows")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--ray-driver", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.ray_driver:
        sys.exit(ray_driver(args.ray_driver, args.spec, args.steps, args.ray_address))
    if args.worker:
        row = measure(Path(args.worker), args.steps, parallel=True)
        if row is not None:
            print(json.dumps(row), flush=True)
        return
    rows = run(args.steps, [int(n) for n in args.workers.split(",")], args.ray_address)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| workers | samples/s | ms/step | all-reduce share | vs 1 process |")
    print("|---|---|---|---|---|")
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if "speedup" in r else "1"
        print(
            f"| {r['workers']} | {r['samples_per_s']:.0f} | {r['step_ms']:.1f} "
            f"| {100 * r['all_reduce_share']:.0f}% | {speedup} |"
        )


if __name__ == "__main__":
    main()
