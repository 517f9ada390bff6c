"""Fuzzing the run directory: every file `eval`, `predict` and `train --resume` read is
truncated, flipped, deleted, replaced by a directory, a FIFO or a symlink, or forged with a
valid checksum, and every command that reads it answers with exit 0 (the damage did not
matter, e.g. metrics.jsonl is rebuilt) or 2 and a message: never a traceback or a hang.
Seeded and bounded so that it stays a few seconds of CI."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from dnnspec.cli import main
from dnnspec.runtime import checkpoint

SPEC = """model m {
  input x: float32[N, 4]
  dense(8) -> relu
  dense(3)
}
train {
  data file(path = "data.npz", validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 8
  epochs 3
  metrics accuracy
  early_stop(monitor = val_loss, patience = 5)
}
"""

READERS: dict[str, tuple[str, ...]] = {
    "model.onnx": ("eval", "predict"),
    "spec.lock.json": ("eval",),
    "checkpoint/last.npz": ("resume",),
    "metrics.jsonl": ("resume",),
}
"""Each run file and the commands that read it."""

MUST_FAIL = {"delete", "empty", "directory", "fifo", "dangling", "device"}
"""Mutations after which a reader cannot succeed (metrics.jsonl excepted: it is rebuilt)."""

CASES_PER_FILE = 9
SEED = 12


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.normal(size=(32, 4)), y=rng.integers(0, 3, 32))
    np.save(folder / "x.npy", rng.normal(size=(5, 4)).astype(np.float32))
    (folder / "m.dnn").write_text(SPEC)
    code = main(["train", str(folder / "m.dnn"), "--out", str(folder / "run"), "--json",
                 "--epochs", "2", "--checkpoint-every", "1"])  # fmt: skip
    assert code == 0
    return folder


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    def stuck(signum: int, frame: object) -> None:
        raise TimeoutError("a command blocked on a damaged run directory")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _forge_checkpoint(path: Path, rng: random.Random) -> None:
    arrays, header = checkpoint.load(path)
    choice = rng.randrange(6)
    name = rng.choice(sorted(arrays))
    if choice == 0:
        arrays[name] = np.zeros((10**3, 7), np.float32)
    elif choice == 1:
        arrays[name] = arrays[name].astype(np.float64)
    elif choice == 2:
        del arrays[name]
    elif choice == 3:
        header[rng.choice(sorted(header))] = rng.choice([None, -1, "x", 1e30, [], {}])
    elif choice == 4:
        header["step"] = header["step"] + rng.choice([-1, 1, 1000])
    else:
        arrays[name + ".extra"] = arrays[name]
    checkpoint.save(path, arrays, header)


def _forge_json(path: Path, rng: random.Random) -> None:
    """A lock file edited by hand: one value somewhere replaced by another kind."""
    data = json.loads(path.read_text())
    node = data
    for _ in range(rng.randrange(1, 6)):
        if isinstance(node, dict) and node:
            key = rng.choice(sorted(node))
            if not isinstance(node[key], dict | list) or rng.random() < 0.3:
                node[key] = rng.choice([None, -3, 0, "renamed", 1e300, [], {"a": 1}])
                break
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[rng.randrange(len(node))]
    path.write_text(json.dumps(data))


def _forge_model(path: Path, rng: random.Random) -> None:
    """model.onnx with one metadata entry replaced, or an initializer's dims inflated."""
    import onnx

    model = onnx.load(path)
    if rng.random() < 0.5 and model.metadata_props:
        prop = rng.choice(list(model.metadata_props))
        prop.value = rng.choice(["", "not json", "[]", '[{"name": 3}]', '["x"]', "{}"])
    else:
        tensor = rng.choice(list(model.graph.initializer))
        tensor.dims[0] = 10**9
    path.write_bytes(model.SerializeToString())


def mutate(path: Path, kind: str, rng: random.Random) -> None:
    data = path.read_bytes() if path.is_file() else b""
    if kind in ("delete", "directory", "fifo", "dangling", "device", "symlink"):
        path.unlink()
    if kind == "truncate":
        path.write_bytes(data[: rng.randrange(1, max(2, len(data)))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "flip":
        raw = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere")
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "symlink":
        path.symlink_to(path.parent.parent / "x.npy")
    elif kind == "forge":
        forgers: dict[str, Callable[[Path, random.Random], None]] = {
            ".npz": _forge_checkpoint,
            ".json": _forge_json,
            ".onnx": _forge_model,
        }
        if path.suffix in forgers:
            forgers[path.suffix](path, rng)
        else:
            path.write_text('{"epoch": "x"}\n')


KINDS = ("truncate", "empty", "flip", "delete", "directory", "fifo", "dangling", "device",
         "symlink", "forge")  # fmt: skip


def cases() -> list[tuple[str, str, int]]:
    rng = random.Random(SEED)
    out = []
    for name in READERS:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        out += [(name, kind, rng.randrange(10**6)) for kind in kinds[:CASES_PER_FILE]]
    return out


def command(kind: str, folder: Path, run: Path) -> list[str]:
    if kind == "eval":
        return ["eval", str(run), "--json"]
    if kind == "predict":
        return ["predict", str(run), str(folder / "x.npy")]
    return ["train", str(folder / "m.dnn"), "--out", str(run), "--resume", "--epochs", "3",
            "--json"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kind", "seed"), cases())
def test_a_damaged_run_file_is_an_error_or_harmless_never_a_traceback(
    pristine: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    kind: str,
    seed: int,
) -> None:
    folder = tmp_path / "case"
    shutil.copytree(pristine, folder, symlinks=True)
    run = folder / "run"
    mutate(run / name, kind, random.Random(seed))
    for reader in READERS[name]:
        code = main(command(reader, folder, run))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert code in (0, 2), out + err
        if code == 2:
            assert "error" in err or "message" in out
        if kind in MUST_FAIL and name != "metrics.jsonl":
            assert code == 2, f"{reader} accepted {name} after '{kind}'"
