"""`dnnspec export --web`: a static site that trains a spec (or continues a run) in the
browser with onnxruntime-web, following docs/training-graph.md's driver step for step.

The site holds the checked train and eval steps, the carried state and the data split as
raw little-endian arrays described by `site.json`, each epoch's sample order (numpy's
`default_rng([seed, epoch]).permutation`, computed here so the page needs no port of
numpy's generator), `model.onnx` with the byte offset of every trained initialiser (the
page writes the trained values there: same length, so the protobuf stays valid), the page
itself (dnnspec/tools/web_site/) and onnxruntime-web, copied from web/node_modules (pinned
by web/package-lock.json, installed with `npm ci`; the page fetches nothing else).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from dnnspec.assemble.compile import train_section
from dnnspec.check.shapes import check_spec
from dnnspec.data.dataset import Dataset
from dnnspec.errors import error
from dnnspec.files import is_regular, read_bytes, write_bytes, write_text
from dnnspec.frontend import load_spec
from dnnspec.ir import TrainSpec
from dnnspec.resolve import read_lock
from dnnspec.runtime import checkpoint
from dnnspec.runtime.model_file import MAX_MODEL_BYTES
from dnnspec.runtime.prepare import load_parts
from dnnspec.tools.export import Exported, export
from dnnspec.training.early_stop import EarlyStop, higher_is_better
from dnnspec.training.schedules import Plateau

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
"""The folder holding package.json, its lock and (once installed) node_modules."""
RUNTIME_FILES = (
    "ort.min.js",
    "ort-wasm-simd-threaded.jsep.mjs",
    "ort-wasm-simd-threaded.jsep.wasm",
)
"""onnxruntime-web's WebAssembly and WebGPU runtime: one script, its loader and its binary."""
RUNTIME_LIMIT = 1 << 30
"""Bytes a runtime file may have (the WebAssembly binary is about 30 MB)."""
PAGE_FILES = ("index.html", "app.js")
EVAL_BATCH = 1024
"""Samples per eval-step call, as `dnnspec train`'s validation."""
DTYPES = {"float32": np.float32, "int64": np.int64, "int32": np.int32, "uint8": np.uint8}
"""The input and target dtypes the page reads (typed arrays)."""


def runtime_dir(web_dir: Path = WEB_DIR) -> Path:
    """onnxruntime-web's dist folder, installed from web/package-lock.json with `npm ci`
    when it is missing."""
    dist = web_dir / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / name).is_file() for name in RUNTIME_FILES):
        return dist
    if not (web_dir / "package-lock.json").is_file():
        raise error(
            f"--web needs onnxruntime-web, pinned by '{web_dir}/package-lock.json': it is missing",
            help="export the site from a source checkout of dnnspec (its web/ folder)",
        )
    npm = shutil.which("npm")
    if npm is None:
        raise error(
            "--web needs onnxruntime-web from the npm registry, and npm is not installed",
            help="install Node.js and npm (e.g. `apt-get install nodejs npm`), then run `make web`",
        )
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=web_dir, capture_output=True, text=True
    )
    if done.returncode != 0 or not all((dist / name).is_file() for name in RUNTIME_FILES):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise error(
            f"`npm ci` in '{web_dir}' did not install onnxruntime-web: " + " / ".join(tail),
            help="run `make web` to see npm's full output",
        )
    return dist


def weight_offsets(model: onnx.ModelProto, names: set[str]) -> tuple[bytes, list[dict[str, Any]]]:
    """The model's serialisation and, for each float32 initialiser in `names`, where its
    raw bytes lie in it: found by serialising with distinct random bytes in their place
    (same lengths, so the same layout), then checked by patching the real values back."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    chosen = [
        i
        for i in model.graph.initializer
        if i.name in names and i.data_type == onnx.TensorProto.FLOAT
    ]
    for init in chosen:  # the page writes raw little-endian float32
        values = onnx.numpy_helper.to_array(init).astype("<f4").tobytes()
        del init.float_data[:]
        init.raw_data = values
    real = model.SerializeToString()
    originals = [bytes(init.raw_data) for init in chosen]
    rng = np.random.default_rng(0)
    for init in chosen:
        init.raw_data = rng.bytes(len(init.raw_data))
    layout = bytearray(model.SerializeToString())
    offsets = []
    for init, value in zip(chosen, originals, strict=True):
        at = layout.find(init.raw_data)
        if at < 0 or layout.find(init.raw_data, at + 1) >= 0:
            raise error(f"model.onnx's initialiser '{init.name}' cannot be located for the site")
        layout[at : at + len(value)] = value
        offsets.append({"name": init.name, "offset": at, "bytes": len(value)})
    if bytes(layout) != real:
        raise error("model.onnx's weights could not be laid out for the site")
    return real, offsets


def _array_file(out: Path, name: str, array: np.ndarray, dtype: str) -> dict[str, Any]:
    data = np.ascontiguousarray(array, np.dtype(DTYPES[dtype]).newbyteorder("<"))
    write_bytes(out / name, data.tobytes(), name)
    return {"file": name, "dtype": dtype, "shape": list(array.shape)}


def _state_file(out: Path, exported: Path) -> dict[str, Any]:
    """state.npz as one little-endian blob and each tensor's place in it."""
    with np.load(exported, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    step = int(arrays.pop("step"))
    tensors, blob, offset = [], bytearray(), 0
    for name, value in arrays.items():
        raw = np.ascontiguousarray(value, "<f4").tobytes()
        tensors.append({"name": name, "shape": list(value.shape), "offset": offset})
        blob += raw
        offset += len(raw)
    write_bytes(out / "state.bin", bytes(blob), "site state")
    return {"file": "state.bin", "step": step, "tensors": tensors}


def export_site(
    source: Path,
    out: Path,
    opset: int | None = None,
    fp16: bool = False,
    outputs: list[str] | None = None,
) -> Exported:
    """Write the site into the directory `out` (see the module's docstring)."""
    if fp16 or outputs is not None:
        raise error(
            "--web trains float32 steps and downloads the model with its own outputs",
            help="drop --fp16 and --outputs",
        )
    if out.suffix == ".onnx":
        raise error(f"--out '{out}': with --web, --out names a directory")
    dist = runtime_dir()
    result = export(source, out, opset, train=True)
    interface = json.loads((out / "interface.json").read_text())
    roles_fed = ("input", "target")
    fed = [i for i in interface["inputs"] if i["role"] in roles_fed]
    floats = [i for i in interface["inputs"] if i["role"] not in ("step", "seed", *roles_fed)]
    if any(i["dtype"] != "float32" for i in floats):
        raise error(
            "the web page trains float32 steps",
            help="drop the spec's float64 setting for the web export",
        )
    for tensor in fed:
        if tensor["dtype"] not in DTYPES:
            raise error(
                f"the web page cannot feed {tensor['role']} '{tensor['name']}' of {tensor['dtype']}"
            )
    model_out = out / "model.onnx"
    model = export(source, model_out, opset)
    state = _state_file(out, result.files["state"])
    proto = onnx.load_from_string(read_bytes(model_out, "exported model", MAX_MODEL_BYTES))
    serialised, offsets = weight_offsets(proto, {t["name"] for t in state["tensors"]})
    write_bytes(model_out, serialised, "exported model")

    train, data, orders = _data(out, source, interface, fed, state["step"])
    manifest = {
        "format": 1,
        "feeds": [{"name": t["name"], "role": t["role"]} for t in fed],
        "epochs": train.epochs,
        "eval_batch": EVAL_BATCH,
        "state": state,
        "data": data,
        "orders": orders,
        "model": {"file": "model.onnx", "weights": offsets},
        "plateau": _plateau(train),
        "early_stop": _early_stop(train),
        "progress": _progress(source),
    }
    write_text(out / "site.json", json.dumps(manifest, indent=1) + "\n", "site manifest")
    for name in RUNTIME_FILES:
        write_bytes(out / name, read_bytes(dist / name, name, RUNTIME_LIMIT), name)
    page = resources.files("dnnspec.tools") / "web_site"
    for name in PAGE_FILES:
        write_bytes(out / name, page.joinpath(name).read_bytes(), name)
    result.files |= {"model": model_out, "site": out / "index.html"}
    result.checks += model.checks
    return result


def _data(
    out: Path, source: Path, interface: dict[str, Any], fed: list[dict[str, Any]], step: int
) -> tuple[TrainSpec, dict[str, Any], dict[str, Any]]:
    """The training and validation split as `dnnspec train` makes it, one file per input
    and target, and the sample order of each epoch from the one `step` is in."""
    spec = read_lock(source / "spec.lock.json") if source.is_dir() else load_spec(source, {})
    train = train_section(spec)
    parts = load_parts(train, check_spec(spec))
    data = {
        part: {
            t["name"]: _array_file(out, f"{part}_{k}.bin", _column(dataset, t), t["dtype"])
            for k, t in enumerate(fed)
        }
        for part, dataset in (("train", parts.train_data), ("validation", parts.val_data))
    }
    samples = len(parts.train_data)
    first = step // -(-samples // interface["batch"])
    # docs/training-graph.md's order of epoch e, as `dnnspec train` visits the samples
    seed, epochs = interface["seed"], range(first, train.epochs)
    orders = [np.random.default_rng([seed, e]).permutation(samples) for e in epochs]
    order_array = np.stack(orders) if orders else np.zeros((0, samples), np.int64)
    entry = _array_file(out, "orders.bin", order_array, "int32") | {"first_epoch": first}
    return train, data, entry


def _column(dataset: Dataset, tensor: dict[str, Any]) -> np.ndarray:
    """The data a train-step input or target is fed, by its name (docs/training-graph.md)."""
    if tensor["role"] == "input":
        return dataset.feeds(tensor["name"])[tensor["name"]]
    output = tensor.get("output")
    return dataset.targets[output] if output else dataset.y


def _progress(source: Path) -> dict[str, Any] | None:
    """Where a run's checkpoint left the host's bookkeeping (its epochs' records, early
    stopping's and reduce_on_plateau's counts), so the page continues the run as
    `dnnspec train --resume` would."""
    path = source / "checkpoint" / "last.npz"
    if not source.is_dir() or not is_regular(path):
        return None
    _, raw = checkpoint.load(path)
    header = checkpoint.header_of(path, raw)
    return {
        "history": header.history,
        "stopped": header.stopped,
        "early_stop": header.early_stop,
        "plateau": header.plateau,
    }


def _plateau(train: TrainSpec) -> dict[str, Any] | None:
    schedule = train.schedule
    plateau = schedule and Plateau.from_spec(schedule, lambda m: higher_is_better(train, m))
    if not plateau:
        return None
    return {
        "key": plateau.key,
        "mode": plateau.mode,
        "patience": plateau.patience,
        "factor": plateau.factor,
        "min_factor": plateau.min_factor,
        "min_delta": plateau.min_delta,
    }


def _early_stop(train: TrainSpec) -> dict[str, Any] | None:
    stop = EarlyStop.from_spec(train)
    if stop is None:
        return None
    return {
        "key": stop.key,
        "mode": stop.mode,
        "patience": stop.patience,
        "min_delta": stop.min_delta,
    }
