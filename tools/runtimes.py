"""Every ONNX runtime tools/portability.py compares, each opened through dnnspec's
`Inference` interface (`runtime/backend.py`): onnxruntime (dnnspec's own backend, the
baseline), onnx.reference (with dnnspec's vectorised ConvTranspose), OpenVINO (float32
inference precision), tract and onnx2torch (at opset 17), whichever are installed. Every
graph runs on the CPU and returns its outputs as onnxruntime's `run` does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from dnnspec.runtime.backend import Device, Graph, Inference, load_backend

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class _Runtime:
    """A runtime as dnnspec's `Inference` interface (`runtime/backend.py`) from a function
    of (model, threads): these run on the CPU, and whether weights are fed or constant
    makes no difference to them."""

    opens: Callable[[onnx.ModelProto, int | None], Graph]

    def open(
        self,
        model: onnx.ModelProto,
        device: Device = "cpu",
        threads: int | None = None,
        weights_as_inputs: bool = False,
    ) -> Graph:
        if device != "cpu":
            raise ValueError(f"the portability table runs on the CPU, not {device}")
        return self.opens(model, threads)


class _Outputs:
    """A graph of a runtime that computes every output at once, in the graph's order;
    `run` hands back those asked for, as onnxruntime's does."""

    def __init__(self, model: onnx.ModelProto, compute: Callable[[Feeds], list[Any]]) -> None:
        self.names = [o.name for o in model.graph.output]
        self.compute = compute

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, Any], /) -> list[Any]:
        values = self.compute(feeds)
        if output_names is None:
            return values
        found = dict(zip(self.names, values, strict=True))
        return [found[name] for name in output_names]


def _onnxruntime(model: onnx.ModelProto, threads: int | None) -> Graph:
    """dnnspec's own backend, as `dnnspec train` and `predict` open graphs."""
    return load_backend("onnxruntime").open(model, "cpu", threads)


def _reference(model: onnx.ModelProto, threads: int | None) -> Graph:
    """With dnnspec's vectorised ConvTranspose: onnx.reference's own scatters pixel by
    pixel in Python (minutes per CNN train step)."""
    from onnx.reference import ReferenceEvaluator

    from dnnspec.tools.reference import ConvTranspose

    evaluator = ReferenceEvaluator(model, new_ops=[ConvTranspose])
    return _Outputs(model, lambda feeds: list(evaluator.run(None, feeds)))


def _openvino(model: onnx.ModelProto, threads: int | None) -> Graph:
    """dnnspec's openvino backend, as `--runtime openvino` opens graphs (float32 inference
    precision: without the hint OpenVINO may compute float32 graphs in bf16)."""
    return load_backend("openvino").open(model, "cpu", threads)


def _tract(model: onnx.ModelProto, threads: int | None) -> Graph:
    import tract

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path)
        runnable = tract.onnx().load(path).into_model().into_runnable()
    order = _feed_order(model)

    def compute(feeds: Feeds) -> list[Any]:
        outputs = runnable.run([np.require(feeds[n], requirements="C") for n in order])
        return [t.to_numpy() for t in outputs]

    return _Outputs(model, compute)


def _onnx2torch(model: onnx.ModelProto, threads: int | None) -> Graph:
    """At opset 17 (as `dnnspec export --opset 17` writes it): onnx2torch 1.5 converts
    no Reshape, Shape or Transpose of opset 21."""
    import torch
    from onnx2torch import convert

    from dnnspec.tools.opset import convert as at_opset

    module = convert(at_opset(model, 17)).eval()  # a torch module trains by default
    order = _feed_order(model)

    def compute(feeds: Feeds) -> list[Any]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.asarray(feeds[n])) for n in order))
        values = out if isinstance(out, tuple | list) else (out,)
        return [v.numpy() for v in values]

    return _Outputs(model, compute)


def _feed_order(model: onnx.ModelProto) -> list[str]:
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


RUNTIMES: dict[str, tuple[str, Inference]] = {
    "onnxruntime": ("onnxruntime", _Runtime(_onnxruntime)),
    "onnx.reference": ("onnx", _Runtime(_reference)),
    "OpenVINO": ("openvino", _Runtime(_openvino)),
    "tract": ("tract", _Runtime(_tract)),
    "onnx2torch": ("onnx2torch", _Runtime(_onnx2torch)),
}
"""Runtime name -> (the module that must be installed, the runtime); onnxruntime, dnnspec's
own backend, is the baseline. Each runs a graph on one thread."""
DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "onnx2torch": ("onnx2torch",)}


def installed() -> list[str]:
    return [name for name, (module, _) in RUNTIMES.items() if importlib.util.find_spec(module)]


def version(runtime: str) -> str:
    for dist in DISTRIBUTIONS.get(runtime, (RUNTIMES[runtime][0],)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "?"
