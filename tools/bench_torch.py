"""The PyTorch side of `tools/bench.py`'s end-to-end suite: an idiomatic eager training loop
doing the work `dnnspec train` does, as a process of its own.

    python tools/bench_torch.py CONFIG.json

Per epoch: a pass over the training split in a seeded order (the same order dnnspec uses),
mean loss and accuracy accumulated from every step, evaluation of the validation split
without dropout in batches of 1024, one JSON line appended to metrics.jsonl; at the end a
checkpoint (model and optimizer state). Prints {"seconds", "cpu_seconds", "last"} of the
loop on stdout, as `dnnspec train --json` does. Imports
nothing from dnnspec, so the process costs what a PyTorch user's would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    device = torch.device(config.get("device", "cpu"))
    data = np.load(config["data"])
    x, y = (torch.from_numpy(data[k]).to(device) for k in ("x", "y"))
    vx, vy = (torch.from_numpy(data[k]).to(device) for k in ("val_x", "val_y"))
    widths, p = config["widths"], config["dropout"]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-2], widths[1:-1], strict=True)):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        if p and i == 0:
            layers.append(torch.nn.Dropout(p))
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-2], widths[-1])).to(device)
    if config["optimizer"] == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    batch, n = config["batch"], len(x)

    started, cpu_started = time.perf_counter(), time.process_time()
    with (out / "metrics.jsonl").open("w") as log:
        for epoch in range(config["epochs"]):
            model.train()
            order = np.random.default_rng([config["seed"], epoch]).permutation(n)
            order = torch.from_numpy(order).to(device)
            total, correct = 0.0, 0
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                xb, yb = x[idx], y[idx]
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = loss_fn(logits, yb)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
            model.eval()
            val_total, val_correct = 0.0, 0
            with torch.no_grad():
                for start in range(0, len(vx), 1024):
                    logits = model(vx[start : start + 1024])
                    target = vy[start : start + 1024]
                    val_total += float(loss_fn(logits, target)) * len(target)
                    val_correct += int((logits.argmax(1) == target).sum())
            record = {
                "epoch": epoch + 1,
                "loss": total / n,
                "accuracy": correct / n,
                "val_loss": val_total / max(1, len(vx)),
                "val_accuracy": val_correct / max(1, len(vx)),
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
