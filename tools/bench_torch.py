"""The PyTorch side of `tools/bench.py`'s end-to-end suite, as a process of its own.

    python tools/bench_torch.py CONFIG.json

The network is the config's `bench_models` description; the data is the .npz dnnspec
reads (`x`, `y`), split by the training and validation indices dnnspec drew (`split`).
Two loops (`loop`):

- **same**: an idiomatic eager loop doing the work `dnnspec train` does. Per epoch: a
  pass over the training split in a seeded order (the same order dnnspec uses), mean loss
  and accuracy accumulated from every step (`loss.item()` per step), evaluation of the
  validation split without dropout in batches of 1024, one JSON line appended to
  metrics.jsonl; at the end a checkpoint (model and optimizer state).
- **minimal**: the loop a PyTorch user writes: train steps in a shuffled order, then the
  validation accuracy, each epoch; nothing else.

Prints {"seconds", "cpu_seconds", "last"} of the loop on stdout, as `dnnspec train
--json` does. Imports nothing from dnnspec, so the process costs what a PyTorch user's
would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_models import net_from_config

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def same_work(
    config: dict[str, Any], model: Any, opt: torch.optim.Optimizer, data: Tensors
) -> dict[str, Any]:
    """dnnspec's loop in PyTorch; returns the last epoch's metrics."""
    x, y, vx, vy = data
    loss_fn = torch.nn.CrossEntropyLoss()
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    batch, n, device = config["batch"], len(x), x.device
    record: dict[str, Any] = {}
    with (out / "metrics.jsonl").open("w") as log:
        for epoch in range(config["epochs"]):
            model.train()
            order = np.random.default_rng([config["seed"], epoch]).permutation(n)
            order = torch.from_numpy(order).to(device)
            total, correct, targets = 0.0, 0, 0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                xb, yb = x[idx], y[idx].reshape(-1)  # a class per position: flattened
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = loss_fn(logits, yb)
                loss.backward()
                opt.step()
                total += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                targets += len(yb)
            model.eval()
            val_total, val_correct = 0.0, 0
            with torch.no_grad():
                for start in range(0, len(vx), 1024):
                    logits = model(vx[start : start + 1024])
                    target = vy[start : start + 1024].reshape(-1)
                    val_total += float(loss_fn(logits, target)) * len(logits)
                    val_correct += int((logits.argmax(1) == target).sum())
            val_targets = max(1, vy.numel())
            record = {
                "epoch": epoch + 1,
                "loss": total / targets,
                "accuracy": correct / targets,
                "val_loss": val_total / val_targets,
                "val_accuracy": val_correct / val_targets,
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, out / "last.pt")
    return record


def minimal(
    config: dict[str, Any], model: Any, opt: torch.optim.Optimizer, data: Tensors
) -> dict[str, Any]:
    """The loop as a PyTorch user writes it; returns the last validation accuracy."""
    x, y, vx, vy = data
    loss_fn = torch.nn.CrossEntropyLoss()
    batch, accuracy = config["batch"], 0.0
    for _ in range(config["epochs"]):
        model.train()
        order = torch.randperm(len(x), device=x.device)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx].reshape(-1)).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(vx).argmax(1) == vy.reshape(-1)).float().mean().item()
    return {"val_accuracy": accuracy}


LOOPS = {"same": same_work, "minimal": minimal}


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    device = torch.device(config.get("device", "cpu"))
    arrays, split = np.load(config["data"]), np.load(config["split"])
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    train, val = torch.from_numpy(split["train"]), torch.from_numpy(split["validation"])
    data = (x[train].to(device), y[train].to(device), x[val].to(device), y[val].to(device))
    model = net_from_config(config["net"]).module().to(device)
    if config["optimizer"] == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config["lr"])

    started, cpu_started = time.perf_counter(), time.process_time()
    last = LOOPS[config["loop"]](config, model, opt, data)
    report = {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "last": last,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
