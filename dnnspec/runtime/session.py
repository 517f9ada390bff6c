"""onnxruntime sessions: provider choice, quiet CUDA probing and session options (for the
onnxruntime backend, `runtime/backends/onnxruntime.py`, and onnxruntime's own checks).

`--device auto` must pick CUDA only when it really loads: onnxruntime-gpu lists the CUDA
provider even on machines without CUDA libraries and logs an error when asked for it,
so the probe runs once, silenced, on a tiny graph.
"""

from __future__ import annotations

import functools

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from dnnspec.errors import error
from dnnspec.graph.builder import IR_VERSION, OPSET
from dnnspec.runtime.backend import Device, threads

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


@functools.cache
def cuda_available() -> bool:
    """True when a CUDA session really initialises on this machine."""
    if CUDA not in ort.get_available_providers():
        return False
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)  # provider-load errors go to the default logger
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[CUDA])
        return CUDA in session.get_providers()
    except Exception:  # noqa: BLE001 - any failure here just means "no usable CUDA"
        return False
    finally:
        ort.set_default_logger_severity(3)


def providers_for(device: Device) -> list[str]:
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if not cuda_available():
            raise error(
                "--device cuda was asked for, but CUDA does not load on this machine",
                help="install onnxruntime-gpu with matching CUDA/cuDNN libraries, "
                "or use --device cpu / auto",
            )
        return [CUDA, CPU]
    return [CUDA, CPU] if cuda_available() else [CPU]


def session_options(intra_op: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op
    options.inter_op_num_threads = 1
    # Spinning workers keep a core busy between kernels; with the eval session's pool
    # beside the train session's, or any other process, on two cores they starve the
    # threads doing the work (docs/performance.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def make_session(
    model: onnx.ModelProto,
    device: Device = "cpu",
    weights_as_inputs: bool = False,
    intra_op: int | None = None,
) -> ort.InferenceSession:
    """A session for `model`. `weights_as_inputs` (the train and eval steps): the NCHWc
    layout transform is left out, since it only applies to convolutions with constant
    weights, and in a step graph those are the autodiff's helper convolutions (the one-hot
    kernel that lays out patches), whose NCHWc output reorder costs more than the whole
    convolution (docs/performance.md).
    `intra_op`: threads, where None the default of `runtime.backend.threads`."""
    disabled = ["NchwcTransformer"] if weights_as_inputs else []
    return ort.InferenceSession(
        model.SerializeToString(),
        session_options(threads() if intra_op is None else intra_op),
        providers=providers_for(device),
        disabled_optimizers=disabled,
    )
