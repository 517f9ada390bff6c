"""What several test modules share: the repository's paths, a span for bound arguments,
runners for onnxruntime and onnx.reference (float64-exact), and the whole-train-step
finite-difference check (used by the example specs and by every layer's case)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops._op import OpRunUnaryNum
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NotImplementedError_

from dnnspec.assemble.steps import LOSS, SEED, STEP, build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.errors import Span
from dnnspec.ir import Dim, Spec
from dnnspec.layers.init import initial_value
from dnnspec.schema import Signature
from dnnspec.tools.reference import ConvTranspose
from dnnspec.training.losses import LOSSES
from dnnspec.training.schedules import Timing

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
EXAMPLES = sorted(SPECS.glob("*.dnn"))
"""Every example spec: each is parsed, resolved, checked, differentiated and trained."""

IRIS_CSV = """sepal,petal,species,weight
1.0,0.5,setosa,3
1.1,0.4,setosa,3.5
3.0,2.5,virginica,5
3.2,2.4,virginica,5.5
2.0,1.5,versicolor,4
2.1,1.4,versicolor,4.2
"""
"""A small CSV with a header, a column of class words and a value column."""

SPAN = Span(file="t.dnn", line=1, col=1, end_line=1, end_col=2)


TARGETS: dict[str, Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]] = {
    "class": lambda rng, shape: rng.integers(0, shape[-1], shape[:-1]),
    "value": lambda rng, shape: rng.normal(size=shape),
    "binary": lambda rng, shape: rng.integers(0, 2, shape).astype(np.float64),
}
"""How a target of each kind (a loss's or metric's `target`) is drawn for a model output
of the given shape: class ids index its last axis, values have its shape."""


def bind(signature: Signature, what: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """`args` completed with the signature's defaults, as resolve binds a spec's call."""
    return signature.bind(what, [], [(k, v, SPAN) for k, v in args.items()], SPAN)


def dim_size(dim: Dim, sizes: Mapping[str, int]) -> int:
    """A symbolic dim's run-time size: names from `sizes`, `T*64` and `T+S` computed."""
    if isinstance(dim, int):
        return dim
    text = dim.replace("(", "").replace(")", "")
    return sum(
        int(np.prod([sizes[f] if f in sizes else int(f) for f in term.split("*")]))
        for term in text.split("+")
    )


Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


_erf = np.vectorize(math.erf, otypes=[np.float64])


class Erf(OpRunUnaryNum):
    """onnx.reference's Erf rounds through float32; float64 finite differences need more."""

    def _run(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (_erf(x).astype(x.dtype),)


class Gelu(OpRun):
    """onnx.reference runs Gelu as its function body, with the float32 Erf above."""

    def _run(self, x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray]:
        if approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
            return ((0.5 * x * (1 + np.tanh(inner))).astype(x.dtype),)
        return ((0.5 * x * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype),)


def reference_runner(model: onnx.ModelProto) -> Run:
    evaluator = ReferenceEvaluator(model, new_ops=[Erf, Gelu, ConvTranspose])
    names = [o.name for o in model.graph.output]
    return lambda feeds: dict(zip(names, evaluator.run(None, feeds), strict=True))


def ort_runner(model: onnx.ModelProto) -> Run | None:
    """An onnxruntime CPU session, or None when it has no kernel for some op in this float
    type (Elu, Erf, LeakyRelu and Softplus have no float64 kernels in onnxruntime 1.31)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except NotImplementedError_:
        return None
    names = [o.name for o in model.graph.output]
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def assert_train_step_matches_finite_differences(
    spec: Spec,
    sizes: Mapping[str, int],
    inputs: Mapping[str, np.ndarray] | None = None,
    probes: int = 4,
    seed: int = 0,
    ids: int = 3,
) -> None:
    """The float64 train step's gradient of every parameter (`grad.<name>`) agrees with
    central differences of its `loss` at `probes` random elements; symbolic dims take
    `sizes`, dropout is on (its mask is a function of the seed and step inputs), float
    inputs are standard normal and integer inputs (token ids) uniform in [0, ids), unless
    given in `inputs`."""
    assert spec.train is not None
    typed = check_spec(spec)
    first = spec.train.trained()[0]
    target_kind = LOSSES.get(first.loss.name).target
    out_dims = [dim_size(d, sizes) for d in typed.outputs[first.output].dims]
    classes = out_dims[-1] if target_kind == "class" else None
    program = build_train_step(
        typed, spec.train, classes, Timing(10, 100), "float64", emit_grads=True
    )
    run = ort_runner(program.train_step) or reference_runner(program.train_step)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {STEP: np.array(3, np.int64), SEED: np.array(5, np.int64)}
    for decl in spec.model.inputs:
        shape = [dim_size(d, sizes) for d in decl.dims]
        if decl.dtype.startswith("int"):
            feeds[decl.name] = rng.integers(0, ids, shape).astype(decl.dtype)
        else:
            feeds[decl.name] = rng.normal(size=shape)
    feeds |= dict(inputs or {})
    for out in program.outputs:  # one target per trained output (`target` when unnamed)
        drawn = TARGETS[LOSSES.get(out.head.loss.name).target]
        feeds[out.target] = drawn(rng, tuple(dim_size(d, sizes) for d in out.type.dims))
    for slot in program.slots:
        # perturbed away from the initialiser so that no ReLU input sits at its kink
        feeds[slot.name] = initial_value(slot.spec, rng, np.dtype("float64")) + rng.normal(
            0, 0.05, slot.spec.shape
        )
        for kind in slot.state:
            feeds[slot.state_name(kind)] = np.zeros(slot.spec.shape)
    for buffer in program.buffers:
        feeds[buffer.name] = initial_value(buffer.spec, rng, np.dtype("float64"))
    for graph_input in program.train_step.graph.input:  # other carried state: zeros
        if graph_input.name not in feeds:
            dims = graph_input.type.tensor_type.shape.dim
            shape = [d.dim_value or sizes[d.dim_param] for d in dims]
            elem = onnx.helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type)
            feeds[graph_input.name] = np.zeros(shape, elem)
    outs = run(feeds)

    def loss_at(name: str, index: tuple[int, ...], delta: float) -> float:
        moved = feeds[name].copy()
        moved[index] += delta
        return float(run({**feeds, name: moved})[LOSS])

    eps = 1e-6
    for slot in program.slots:
        grad = outs[f"grad.{slot.name}"]
        assert grad.shape == slot.spec.shape
        for _ in range(probes):
            index = tuple(int(rng.integers(0, d)) for d in slot.spec.shape)
            fd = (loss_at(slot.name, index, eps) - loss_at(slot.name, index, -eps)) / (2 * eps)
            assert grad[index] == pytest.approx(fd, rel=1e-4, abs=1e-7), (slot.name, index)
