"""The data suite of `tools/bench.py` (`--suite data`): `dnnspec train` reading its data from
files against `tools/bench_torch_data.py`, a PyTorch `DataLoader` twin reading the same files
with the libraries a PyTorch user would (pyarrow, Pillow, soundfile; no torchvision or
torchaudio), same model, split, batch and epochs.

    python tools/bench_data.py [--data-gib 4] [--images 2000] [--clips 1000] [--repeats 3]
                               [--loader-workers 0] [--threads N] [--only TEXT]
                               [--timeout S] [--json]

- **Parquet, streamed**: a seeded float32 table of `--data-gib` GiB (256 feature columns and
  an int64 label, 128 row groups; 4 GiB is 4,194,304 rows), an MLP 256-64-10, one epoch,
  5% held out, with a memory budget of 1/16 of the table so that training streams it;
  the twin is an `IterableDataset` over the row groups (seeded group order, rows shuffled
  within a group) read with pyarrow. dnnspec's peak RSS must stay under 1 GiB.
- **Parquet, in memory**: the same on a table of 1/8 the size that fits its budget (read
  whole; the twin reads it whole with pyarrow and indexes batches): the in-memory rate
  beside the streamed one.
- **image folder**: seeded 40x40 RGB PNGs in 10 class folders, resized bilinearly to 32x32
  and scaled by 1/255, a CNN (conv 16-32, max pools, dense 10); the twin's `Dataset` decodes
  with Pillow on every access.
- **audio folder**: `tools/tone_clips.py`'s four keywords (1 s, 16 kHz WAV), the log-mel front
  end (n_fft 400, hop 160, 40 mels) and a 1-D CNN; the twin reads with soundfile and computes
  the log-mel with `torch.stft` and the same filterbank.

Each pair runs as in the end-to-end suite (`bench.py`'s process runner: alternating
processes, medians, peak RSS from a launcher). dnnspec reads or decodes its data before its
training loop and the twin inside it, so compare the *process* columns; samples/s counts
the rows trained over the whole process. The data is generated into a temporary folder per
row and deleted after it; the 4 GiB row needs about 4.3 GiB of free disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tone_clips
from bench import (
    TOOLS,
    _choose_runtime,
    _pair,
    _ratio,
    alternate,
    bench_env,
    machine,
    medians,
    print_tables,
)
from bench_models import LR, Mlp, net_config, spec_text

from dnnspec.data.audio import CLIPS
from dnnspec.data.dataset import Dataset
from dnnspec.data.folders import Files, class_folders
from dnnspec.data.images import IMAGES
from dnnspec.data.split import split_indices
from dnnspec.data.stream import hash_split

FEATURES, CLASSES, GROUPS = 256, 10, 128
VALIDATION = {"parquet": 0.05, "images": 0.2, "audio": 0.2}
STREAM_RSS_MB = 1024
"""The streamed row's peak RSS must stay under this."""
IN_MEMORY = 8
"""The in-memory table has 1/IN_MEMORY of the streamed table's rows."""


@dataclass(frozen=True)
class Settings:
    data_gib: float = 4.0
    images: int = 2000
    clips: int = 1000
    repeats: int = 3
    loader_workers: int = 0
    threads: int | None = None
    device: str = "cpu"
    timeout: float = 3600
    only: str = ""


@dataclass(frozen=True)
class DataCase:
    name: str
    kind: str  # a key of PREPARE
    batch: int
    epochs: int
    streamed: bool = False
    rss_limit_mb: float = 0.0
    runtime: str = "onnxruntime"
    """`auto` for the convolutional rows: an untimed run first probes the runtimes, as in
    the end-to-end suite (the MLP rows need no probe, which would read the table again)."""


def budget_mib(s: Settings) -> float:
    """The streamed table's memory budget: 1/16 of the table (256 MiB for 4 GiB), which
    holds two of its row groups a window and its held-out 5%."""
    return s.data_gib * 1024 / 16


def cases(s: Settings) -> list[DataCase]:
    gib = s.data_gib
    mlp = "MLP 256-64-10, adam, batch 512, 1 epoch"
    return [
        DataCase(
            f"Parquet {gib:g} GiB streamed (memory {budget_mib(s):g} MiB), {mlp}",
            "parquet",
            512,
            1,
            True,
            STREAM_RSS_MB,
        ),
        DataCase(f"Parquet {gib / IN_MEMORY:g} GiB in memory, {mlp}", "parquet", 512, 1),
        DataCase(
            f"image folder, {s.images} PNG 40x40 RGB -> 32x32, CNN 16-32, adam, batch 64, "
            "10 epochs",
            "images",
            64,
            10,
            runtime="auto",
        ),
        DataCase(
            f"audio folder, {s.clips} WAV 1 s 16 kHz, log_mel + conv1d 32-32, adam, batch 32, "
            "8 epochs",
            "audio",
            32,
            8,
            runtime="auto",
        ),
    ]


# data ------------------------------------------------------------------------------------
def write_parquet(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` of FEATURES standard-normal float32 columns `f000`.. and an int64 `label`
    (the arg-max of a seeded linear map, so the MLP has something to learn), in GROUPS row
    groups; uncompressible, so written without dictionaries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    fields = [(f"f{j:03d}", pa.float32()) for j in range(FEATURES)]
    schema = pa.schema([*fields, ("label", pa.int64())])
    group = -(-rows // GROUPS)
    with pq.ParquetWriter(path, schema, use_dictionary=False) as writer:
        for start in range(0, rows, group):
            columns = rng.standard_normal((FEATURES, min(group, rows - start)), np.float32)
            label = (columns.T @ weights).argmax(axis=1).astype(np.int64)
            arrays = [pa.array(c) for c in columns] + [pa.array(label)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=group)


def write_images(folder: Path, count: int, size: int = 40, seed: int = 0) -> None:
    """`count` RGB PNGs in CLASSES folders: each class a seeded 4x4 colour pattern blown
    up to `size`, shifted by up to 4 pixels and in strong noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, (CLASSES, 4, 4, 3))
    for c in range(CLASSES):
        (folder / f"class_{c}").mkdir(parents=True)
        base = np.kron(patterns[c], np.ones((size // 4, size // 4, 1)))
        for i in range(count // CLASSES):
            shifted = np.roll(base, tuple(rng.integers(-4, 5, 2)), axis=(0, 1))
            noisy = np.clip(shifted + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy, "RGB").save(folder / f"class_{c}" / f"{i:04d}.png")


def _held_in_memory(labels: np.ndarray, validation: float) -> np.ndarray:
    """The rows dnnspec holds out of data it reads whole (class labels: a stratified split,
    `seed 0`), so that the twin validates on the same rows."""
    like = Dataset(np.zeros((len(labels), 0), np.float32), labels)
    return split_indices(like, validation, 0, stratify=True)[1]


def _folder_items(
    root: Path, files: Files, validation: float
) -> tuple[list[tuple[str, int]], np.ndarray]:
    """A class folder's (file, class id) pairs in the order dnnspec reads them, and the rows
    it holds out."""
    items = [
        (str(path), label)
        for label, (_, paths) in enumerate(class_folders(root, files, None))
        for path in paths
    ]
    labels = np.array([label for _, label in items], np.int64)
    return items, _held_in_memory(labels, validation)


Prepared = tuple[str, dict[str, Any], int]
"""A row's spec text, the twin's settings and the samples trained per run."""


MLP = Mlp((FEATURES, 64, CLASSES))
"""The Parquet rows' network (tools/bench_models.py builds it on both sides)."""


def _parquet(case: DataCase, work: Path, s: Settings) -> Prepared:
    rows = round(s.data_gib * (1 << 30) / (4 * FEATURES)) // (1 if case.streamed else IN_MEMORY)
    path = work / "table.parquet"
    write_parquet(path, rows)
    validation = VALIDATION["parquet"]
    if case.streamed:  # dnnspec holds out rows by a seeded hash of the row index
        held = np.flatnonzero(hash_split(rows, validation, 0))
        memory = f"{budget_mib(s):g} MiB"
    else:
        import pyarrow.parquet as pq

        labels = pq.read_table(path, columns=["label"]).column(0).to_numpy()
        held, memory = _held_in_memory(labels, validation), "64 GiB"
    np.save(work / "held.npy", held)
    data = (
        f'file(path = "{path}", target = "label", validation = {validation}, memory = "{memory}")'
    )
    spec = spec_text(MLP, data, "adam", case.batch, case.epochs)
    twin = {"path": str(path), "held": str(work / "held.npy"), "streamed": case.streamed}
    twin |= {"net": net_config(MLP), "lr": LR["adam"]}
    return spec, twin, (rows - len(held)) * case.epochs


CNN = """model images {{
  input x: float32[N, 3, 32, 32]
  conv2d(16, 3, padding = same) -> relu
  max_pool2d(2)
  conv2d(32, 3, padding = same) -> relu
  max_pool2d(2)
  flatten
  dense({classes})
}}
train {{
  data image_folder(path = "{path}", size = [32, 32], channels = 3, validation = {validation})
  loss cross_entropy
  optimizer adam(lr = 1e-3)
  batch {batch}
  epochs {epochs}
  metrics accuracy
  seed 0
}}
"""


def _images(case: DataCase, work: Path, s: Settings) -> Prepared:
    root = work / "images"
    write_images(root, s.images)
    items, held = _folder_items(root, IMAGES, VALIDATION["images"])
    spec = CNN.format(
        classes=CLASSES,
        path=root,
        validation=VALIDATION["images"],
        batch=case.batch,
        epochs=case.epochs,
    )
    twin = {"items": items, "held": held.tolist(), "size": [32, 32], "lr": 1e-3}
    return spec, twin, (len(items) - len(held)) * case.epochs


KEYWORDS = """model keywords {{
  input wave: float32[N, 16000]
  log_mel(n_fft = 400, hop = 160, mels = 40)
  batchnorm
  conv1d(32, 5, padding = same) -> relu
  max_pool1d(2)
  conv1d(32, 5, padding = same) -> relu
  global_avg_pool
  dense({classes})
}}
train {{
  data audio_folder(path = "{path}", sample_rate = 16000, seconds = 1.0, validation = {validation})
  loss cross_entropy
  optimizer adam(lr = 3e-3)
  batch {batch}
  epochs {epochs}
  metrics accuracy
  seed 0
}}
"""


def _audio(case: DataCase, work: Path, s: Settings) -> Prepared:
    root = work / "audio"
    tone_clips.write(root, s.clips // len(tone_clips.CLASSES))
    items, held = _folder_items(root, CLIPS, VALIDATION["audio"])
    spec = KEYWORDS.format(
        classes=len(tone_clips.CLASSES),
        path=root,
        validation=VALIDATION["audio"],
        batch=case.batch,
        epochs=case.epochs,
    )
    twin = {"items": items, "held": held.tolist(), "rate": tone_clips.RATE, "lr": 3e-3}
    twin |= {"samples": tone_clips.RATE, "n_fft": 400, "hop": 160, "mels": 40}
    return spec, twin, (len(items) - len(held)) * case.epochs


PREPARE: dict[str, Callable[[DataCase, Path, Settings], Prepared]] = {
    "parquet": _parquet,
    "images": _images,
    "audio": _audio,
}


# runs ------------------------------------------------------------------------------------
def _commands(case: DataCase, work: Path, s: Settings) -> tuple[list[str], list[str], int]:
    """Write the row's data, spec and twin settings; the two command lines and the samples
    each run trains."""
    spec, twin, samples = PREPARE[case.kind](case, work, s)
    (work / "bench.dnn").write_text(spec)
    twin |= {
        "kind": case.kind,
        "batch": case.batch,
        "epochs": case.epochs,
        "seed": 0,
        "threads": s.threads or os.cpu_count() or 1,
        "workers": s.loader_workers,
        "device": s.device,
        "out": str(work / "torch_run"),
    }
    (work / "torch.json").write_text(json.dumps(twin))
    ours = [sys.executable, "-m", "dnnspec", "train", str(work / "bench.dnn")]
    ours += ["--out", str(work / "run"), "--device", s.device, "--runtime", case.runtime]
    ours += ["--overwrite", "--no-plot", "--json"]
    theirs = [sys.executable, str(TOOLS / "bench_torch_data.py"), str(work / "torch.json")]
    return ours, theirs, samples


def bench_data(case: DataCase, s: Settings, have_torch: bool) -> dict[str, Any]:
    """Both programs on `case`, alternating, `s.repeats` rounds; medians, ratios, rates."""
    env = bench_env(s.threads)
    work = Path(tempfile.mkdtemp(prefix="dnnspec-bench-data-"))
    try:
        ours, theirs, samples = _commands(case, work, s)
        runtime = case.runtime
        if runtime == "auto":
            env["XDG_CACHE_HOME"] = str(work / "cache")  # a fresh probe for this machine
            note = _choose_runtime(ours, env, s.timeout)
            runtime = note.removeprefix("runtime auto: ").split()[0]
        log = work / "torch_run" / "metrics.jsonl"
        runs = alternate(
            ours,
            theirs,
            env,
            s.repeats,
            s.timeout,
            have_torch,
            lambda: _check_samples(log, samples),
        )
        learned = {
            name: _last(work / folder / "metrics.jsonl").get("val_accuracy")
            for name, folder in (("dnnspec", "run"), ("torch", "torch_run"))
            if runs[name]
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row: dict[str, Any] = {"case": asdict(case), "runtime": runtime, "samples": samples}
    row["runs"] = runs
    row["val_accuracy"] = learned  # both learned something: the rows are not void
    row |= medians(runs, ("loop", "whole", "whole_cpu"))
    for name in runs:
        if name in row:
            row[name]["per_s"] = samples / row[name]["whole"]
            row[name]["loop_per_s"] = samples / row[name]["loop"]
    return row


def _check_samples(log: Path, expected: int) -> None:
    """The twin trained on as many rows as dnnspec (the same split), or the row is void."""
    trained = sum(json.loads(line)["samples"] for line in log.read_text().splitlines())
    if trained != expected:
        raise RuntimeError(f"the PyTorch twin trained {trained} samples, dnnspec {expected}")


def _last(log: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(log.read_text().splitlines()[-1])
    return record


def run(s: Settings, have_torch: bool) -> list[dict[str, Any]]:
    return [bench_data(c, s, have_torch) for c in cases(s) if s.only in c.name]


def print_table(rows: list[dict[str, Any]]) -> None:
    """The data suite's markdown table (as docs/performance.md holds it)."""
    print(
        "\nData from files, median of alternating processes; s = dnnspec / PyTorch; ratio ="
        " PyTorch / dnnspec (higher is faster), min-max over rounds in brackets; samples/s"
        " over the whole process (and the training loop).\n"
    )
    print(
        "| data and model | process s | process ratio | process CPU ratio | samples/s "
        "| loop samples/s | peak RSS MB | val accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        limit = row["case"]["rss_limit_mb"]
        over = " **over the limit**" if limit and row["dnnspec"]["rss_mb"] >= limit else ""
        print(
            f"| {row['case']['name']} [{row['runtime']}] | {_pair(row, 'whole', '.2f')} "
            f"| {_ratio(row, 'whole_ratio')} | {_ratio(row, 'whole_cpu_ratio')} "
            f"| {_pair(row, 'per_s', '.0f')} | {_pair(row, 'loop_per_s', '.0f')} "
            f"| {_pair(row, 'rss_mb', '.0f')}{over} "
            f"| {' / '.join(f'{a:.3f}' for a in row['val_accuracy'].values())} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-gib", type=float, default=4.0, help="the streamed table's size")
    parser.add_argument("--images", type=int, default=2000, help="images in the image folder")
    parser.add_argument("--clips", type=int, default=1000, help="clips in the audio folder")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per framework")
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=0,
        help="the twin's DataLoader worker processes (default PyTorch's, 0: read in the loop)",
    )
    parser.add_argument("--threads", type=int, help="intra-op threads for both")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    parser.add_argument("--only", default="", help="run only the rows whose name contains this")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # children die with the bench
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    settings = Settings(
        args.data_gib,
        args.images,
        args.clips,
        args.repeats,
        args.loader_workers,
        args.threads,
        timeout=args.timeout,
        only=args.only,
    )
    report: dict[str, Any] = {"machine": machine(args.threads)}
    report["data"] = run(settings, have_torch)
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_tables(report)  # the machine line
        print_table(report["data"])


if __name__ == "__main__":
    main()
