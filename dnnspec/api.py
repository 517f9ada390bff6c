"""The Python API: the same pipeline as the CLI, as functions.

import dnnspec
program = dnnspec.compile("specs/digits_mlp.dnn")
result = dnnspec.train("specs/digits_mlp.dnn", hidden=64, out="runs/h64")
model = dnnspec.load(result.run_dir)
probabilities = model.predict(x)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from dnnspec.assemble.steps import OUTPUT, Program
from dnnspec.errors import error
from dnnspec.frontend import load_spec
from dnnspec.ir import Spec
from dnnspec.resolve import read_lock
from dnnspec.runtime.data import fits_shape
from dnnspec.runtime.run import RunResult, new_run_dir, prepare, run_training
from dnnspec.runtime.session import Device, make_session
from dnnspec.runtime.trainer import Trainer


def _spec(path: str | Path, overrides: dict[str, Any]) -> Spec:
    return load_spec(
        path, {k: json.dumps(v) if not isinstance(v, str) else v for k, v in overrides.items()}
    )


def compile(path: str | Path, **overrides: Any) -> Program:  # noqa: A001 - the public verb
    """Check a spec and assemble its train-step and eval-step graphs (loads its data)."""
    return prepare(_spec(path, overrides)).program


def train(
    path: str | Path,
    out: str | Path | None = None,
    device: Device = "auto",
    epochs: int | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> RunResult:
    """Train a spec into `out` (default: a new runs/<spec name>[-n]); keyword arguments
    override its params (`hidden=64`)."""
    spec = _spec(path, overrides)
    run_dir = Path(out) if out is not None else new_run_dir(Path(path))
    return run_training(spec, run_dir, device, epochs, overwrite=overwrite)


class Model:
    """A trained run: its deployable model.onnx plus what is needed to evaluate it."""

    def __init__(self, run_dir: Path, device: Device = "auto") -> None:
        self.run_dir, self.device = run_dir, device
        path = run_dir / "model.onnx"
        if not path.exists():
            raise error(
                f"'{run_dir}' holds no model.onnx",
                help="pass a directory written by `dnnspec train`",
            )
        try:
            self.onnx = onnx.load(path)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
            raise error(f"'{path}' is not a readable ONNX model: {exc}") from None
        meta = {p.key: p.value for p in self.onnx.metadata_props}
        self.inputs = json.loads(meta.get("dnnspec.inputs", "[]"))
        labels = meta.get("dnnspec.class_labels")
        self.classes = len(json.loads(labels)) if labels else None
        self.session = make_session(self.onnx, device)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model outputs for a batch; shapes and dtypes are checked against the spec."""
        decl = self.inputs[0]
        x = np.asarray(x)
        if not fits_shape(tuple(decl["shape"]), x.shape, {}):
            raise error(
                f"input '{decl['name']}' expects shape [{', '.join(map(str, decl['shape']))}], "
                f"got [{', '.join(map(str, x.shape))}]"
            )
        if x.dtype.kind not in "biuf":
            raise error(f"input '{decl['name']}' expects {decl['dtype']} data, got {x.dtype}")
        return self.session.run([OUTPUT], {decl["name"]: x.astype(decl["dtype"])})[0]

    def evaluate(self) -> dict[str, float]:
        """Loss and metrics of model.onnx's weights on the run's validation split."""
        spec = read_lock(self.run_dir / "spec.lock.json")
        prep = prepare(spec)
        trainer = Trainer(prep.program, self.device, prep.train.seed)
        weights = {t.name: numpy_helper.to_array(t) for t in self.onnx.graph.initializer}
        values = trainer.values()
        values.update({s.name: weights[s.name] for s in prep.program.model_slots()})
        trainer.load_values(values)
        data = prep.val_data if len(prep.val_data) else prep.train_data
        return trainer.evaluate(data, spec.model.inputs[0].name)


def load(run_dir: str | Path, device: Device = "auto") -> Model:
    """Open a trained run directory for prediction and evaluation."""
    return Model(Path(run_dir), device)
