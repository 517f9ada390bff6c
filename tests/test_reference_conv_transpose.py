"""dnnspec/tools/reference.py's vectorised ConvTranspose computes what onnx.reference's
own does, and hands it the attributes it does not cover."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from dnnspec.tools.reference import run_reference


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "pads": [1, 0, 0, 1], "dilations": [1, 2]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"output_shape": [10, 7], "strides": [2, 2]},
    ],
    ids=["strided view", "auto_pad", "output_shape"],
)
def test_conv_transpose_matches_onnx_reference(attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    w = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", f32, None),
            helper.make_tensor_value_info("w", f32, None),
        ],
        [helper.make_tensor_value_info("y", f32, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    feeds = {"x": x, "w": w}
    expected = dict(zip(["y"], ReferenceEvaluator(model).run(None, feeds), strict=True))["y"]
    got = run_reference(model, feeds)["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
