"""The PyTorch side of `tools/bench_data.py`: a `DataLoader` training loop reading the files
`dnnspec train` reads, with the libraries a PyTorch user reaches for (pyarrow, Pillow,
soundfile; no torchvision or torchaudio), as a process of its own.

    python tools/bench_torch_data.py CONFIG.json

`kind` picks the data and model: `parquet` (an `IterableDataset` over the row groups when
`streamed`, else the table read whole and indexed per batch; an MLP), `images` (a `Dataset`
decoding a PNG with Pillow per access, resized bilinearly and scaled by 1/255; a small CNN)
or `audio` (a `Dataset` reading a WAV with soundfile, mono, cut or padded; a log-mel front
end in torch, `torch.stft` and ONNX's `MelWeightMatrix` filterbank, then a 1-D CNN). The rows
listed in `held` validate, the others train. Per epoch: the training batches in a seeded
order, mean loss and accuracy from every step, validation under `no_grad`, one JSON line in
metrics.jsonl (with the samples trained); at the end a checkpoint. Prints {"seconds",
"cpu_seconds", "last"} of the loop on stdout, as `dnnspec train --json` does. Imports
nothing from dnnspec, so the process costs what a PyTorch user's would.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_models import net_from_config
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
VAL_BATCH = 1024


# parquet ---------------------------------------------------------------------------------
class RowGroups(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batches of a Parquet file's rows where `keep` is set, read one row group at a time
    with pyarrow: with `shuffle`, the row groups in a seeded order and the rows permuted
    within each (what is left of one joins the next); workers share out the row groups."""

    def __init__(self, path: str, keep: np.ndarray, batch: int, seed: int, shuffle: bool):
        self.path, self.keep, self.batch, self.seed, self.shuffle = path, keep, batch, seed, shuffle

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import pyarrow.parquet as pq

        file = pq.ParquetFile(self.path)
        sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        features = [name for name in file.schema_arrow.names if name != "label"]
        rng = np.random.default_rng(self.seed)
        groups = rng.permutation(len(sizes)) if self.shuffle else np.arange(len(sizes))
        worker = get_worker_info()
        if worker is not None:
            groups = groups[worker.id :: worker.num_workers]
        x_left = np.zeros((0, len(features)), np.float32)
        y_left = np.zeros(0, np.int64)
        for g in groups:
            table = file.read_row_group(int(g))
            keep = self.keep[starts[g] : starts[g + 1]]
            x = np.stack([table.column(f).to_numpy() for f in features], axis=1)[keep]
            y = table.column("label").to_numpy()[keep]
            if self.shuffle:
                order = rng.permutation(len(y))
                x, y = x[order], y[order]
            x, y = np.concatenate([x_left, x]), np.concatenate([y_left, y])
            whole = len(y) - len(y) % self.batch
            for start in range(0, whole, self.batch):
                end = start + self.batch
                yield torch.from_numpy(x[start:end]), torch.from_numpy(y[start:end])
            x_left, y_left = x[whole:], y[whole:]
        if len(y_left):
            yield torch.from_numpy(x_left), torch.from_numpy(y_left)


def parquet_data(
    config: dict[str, Any], keep: np.ndarray
) -> tuple[Callable[[int], Batches], Batches]:
    batch, seed, workers = config["batch"], config["seed"], config["workers"]
    if config["streamed"]:

        def stream(epoch: int) -> Batches:
            rows = RowGroups(config["path"], keep, batch, seed + epoch, shuffle=True)
            return DataLoader(rows, batch_size=None, num_workers=workers)

        held = RowGroups(config["path"], ~keep, VAL_BATCH, seed, shuffle=False)
        return stream, DataLoader(held, batch_size=None, num_workers=workers)
    import pyarrow.parquet as pq

    table = pq.read_table(config["path"])
    features = [name for name in table.column_names if name != "label"]
    x = torch.from_numpy(np.stack([table.column(f).to_numpy() for f in features], axis=1))
    y = torch.from_numpy(table.column("label").to_numpy())
    del table
    mask = torch.from_numpy(keep)
    x_train, y_train, x_val, y_val = x[mask], y[mask], x[~mask], y[~mask]
    del x, y

    def indexed(epoch: int) -> Batches:
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(y_train)))
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            yield x_train[index], y_train[index]

    val = [
        (x_val[s : s + VAL_BATCH], y_val[s : s + VAL_BATCH])
        for s in range(0, len(y_val), VAL_BATCH)
    ]
    return indexed, val


def mlp(config: dict[str, Any]) -> torch.nn.Module:
    """The Parquet rows' network, as `bench_models` describes it for both sides."""
    module: torch.nn.Module = net_from_config(config["net"]).module()
    return module


# images ----------------------------------------------------------------------------------
class ImageFiles(Dataset[tuple[torch.Tensor, int]]):
    """PNG files decoded by Pillow on every access: RGB, resized bilinearly to `size`
    (height, width) where they differ, float32 [3, H, W] of pixel / 255."""

    def __init__(self, items: list[tuple[str, int]], size: tuple[int, int]):
        self.items, self.size = items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (self.size[1], self.size[0]):
                rgb = rgb.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, np.float32).transpose(2, 0, 1) * np.float32(1 / 255)
        return torch.from_numpy(np.ascontiguousarray(pixels)), label


def cnn(config: dict[str, Any]) -> torch.nn.Module:
    height, width = config["size"]
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding="same"),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding="same"),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * (height // 4) * (width // 4), 1 + max(c for _, c in config["items"])),
    )


# audio -----------------------------------------------------------------------------------
class Clips(Dataset[tuple[torch.Tensor, int]]):
    """WAV files read by soundfile on every access: float32, channels averaged to mono,
    cut or zero-padded to `samples`; another sample rate is an error."""

    def __init__(self, items: list[tuple[str, int]], rate: int, samples: int):
        self.items, self.rate, self.samples = items, rate, samples

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import soundfile

        path, label = self.items[i]
        wave, rate = soundfile.read(path, frames=self.samples, dtype="float32", always_2d=True)
        if rate != self.rate:
            raise ValueError(f"{path} is sampled at {rate} Hz, not {self.rate}")
        mono = wave.mean(axis=1, dtype=np.float32)
        mono = np.pad(mono, (0, self.samples - len(mono)))
        return torch.from_numpy(mono), label


def mel_matrix(mels: int, n_fft: int, rate: int) -> np.ndarray:
    """[n_fft // 2 + 1, mels]: ONNX `MelWeightMatrix` from 0 Hz to rate / 2, triangles
    between mel-spaced FFT bins."""
    top = 2595.0 * math.log10(1.0 + rate / 2 / 700.0)
    hertz = 700.0 * (np.power(10.0, np.arange(mels + 2) * top / (mels + 2) / 2595.0) - 1.0)
    bins = ((n_fft + 1) * hertz // rate).astype(np.int64)
    out = np.zeros((n_fft // 2 + 1, mels), np.float32)
    for i in range(mels):
        left, centre, right = (int(v) for v in bins[i : i + 3])
        if centre == left:
            out[centre, i] = 1.0
        else:
            out[left : centre + 1, i] = (np.arange(left, centre + 1) - left) / (centre - left)
        if right > centre:
            out[centre:right, i] = (right - np.arange(centre, right)) / (right - centre)
    return out


class LogMel(torch.nn.Module):
    """[N, samples] -> [N, mels, frames]: log(|STFT|^2 (periodic Hann, no centring) summed
    into mel bands + 1e-6)."""

    def __init__(self, n_fft: int, hop: int, mels: int, rate: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))
        self.register_buffer("mel", torch.from_numpy(mel_matrix(mels, n_fft, rate)).T)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(
            wave, self.n_fft, self.hop, window=self.window, center=False, return_complex=True
        )
        return torch.log(self.mel @ spectrum.abs().square() + 1e-6)


class Pooled(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)


def keywords(config: dict[str, Any]) -> torch.nn.Module:
    mels = config["mels"]
    return torch.nn.Sequential(
        LogMel(config["n_fft"], config["hop"], mels, config["rate"]),
        torch.nn.BatchNorm1d(mels),
        torch.nn.Conv1d(mels, 32, 5, padding="same"),
        torch.nn.ReLU(),
        torch.nn.MaxPool1d(2),
        torch.nn.Conv1d(32, 32, 5, padding="same"),
        torch.nn.ReLU(),
        Pooled(),
        torch.nn.Linear(32, 1 + max(c for _, c in config["items"])),
    )


def folder_data(
    config: dict[str, Any], files: Dataset[tuple[torch.Tensor, int]], keep: np.ndarray
) -> tuple[Callable[[int], Batches], Batches]:
    """A shuffling loader over the kept files and one over the held ones, their worker
    processes kept for every epoch."""
    workers = config["workers"]
    common: dict[str, Any] = {"num_workers": workers, "persistent_workers": workers > 0}
    train = DataLoader(
        torch.utils.data.Subset(files, np.flatnonzero(keep).tolist()),
        batch_size=config["batch"],
        shuffle=True,
        generator=torch.Generator().manual_seed(config["seed"]),
        **common,
    )
    held = torch.utils.data.Subset(files, np.flatnonzero(~keep).tolist())
    return (lambda epoch: train), DataLoader(held, batch_size=VAL_BATCH, **common)


def data(config: dict[str, Any], keep: np.ndarray) -> tuple[Callable[[int], Batches], Batches]:
    if config["kind"] == "parquet":
        return parquet_data(config, keep)
    items = [(path, label) for path, label in config["items"]]
    if config["kind"] == "images":
        return folder_data(config, ImageFiles(items, tuple(config["size"])), keep)
    return folder_data(config, Clips(items, config["rate"], config["samples"]), keep)


MODELS = {"parquet": mlp, "images": cnn, "audio": keywords}


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    device = torch.device(config.get("device", "cpu"))
    held = config["held"]
    rows = len(config["items"]) if "items" in config else None
    held = np.load(held) if isinstance(held, str) else np.asarray(held, np.int64)
    if rows is None:
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(config["path"]).metadata.num_rows
    keep = np.ones(rows, bool)
    keep[held] = False
    model = MODELS[config["kind"]](config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)

    train, val = data(config, keep)  # a table read whole is read here, as dnnspec does
    started, cpu_started = time.perf_counter(), time.process_time()
    with (out / "metrics.jsonl").open("w") as log:
        for epoch in range(config["epochs"]):
            model.train()
            total, correct, n = 0.0, 0, 0
            for xb, yb in train(epoch):
                xb, yb = xb.to(device), yb.to(device)
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = loss_fn(logits, yb)
                loss.backward()
                opt.step()
                total += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                n += len(yb)
            model.eval()
            val_total, val_correct, val_n = 0.0, 0, 0
            with torch.no_grad():
                for xb, yb in val:
                    xb, yb = xb.to(device), yb.to(device)
                    logits = model(xb)
                    val_total += float(loss_fn(logits, yb)) * len(yb)
                    val_correct += int((logits.argmax(1) == yb).sum())
                    val_n += len(yb)
            record = {
                "epoch": epoch + 1,
                "samples": n,
                "loss": total / max(1, n),
                "accuracy": correct / max(1, n),
                "val_loss": val_total / max(1, val_n),
                "val_accuracy": val_correct / max(1, val_n),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, out / "last.pt")
    report = {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "last": record,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
