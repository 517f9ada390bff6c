"""onnx.reference with a vectorised ConvTranspose, for checks of exported graphs.

onnx.reference 1.23's ConvTranspose scatters pixel by pixel in Python (minutes for a small
CNN's train step, whose input gradients are ConvTransposes) and slices a grouped weight by
output channels; this one adds each kernel tap's product into a strided view, per group.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops.op_conv_transpose import ConvTranspose as PixelConvTranspose


class ConvTranspose(PixelConvTranspose):
    """Strided-view ConvTranspose; what it does not cover (`auto_pad`, `output_shape`,
    which dnnspec's graphs never set) goes to onnx.reference's own."""

    def _run(  # noqa: PLR0913 - the op's attributes
        self,
        x: np.ndarray,
        w: np.ndarray,
        bias: np.ndarray | None = None,
        auto_pad: object = None,
        dilations: list[int] | None = None,
        group: int | None = None,
        kernel_shape: list[int] | None = None,
        output_padding: list[int] | None = None,
        output_shape: list[int] | None = None,
        pads: list[int] | None = None,
        strides: list[int] | None = None,
    ) -> tuple[np.ndarray]:
        if auto_pad not in (None, "NOTSET", b"NOTSET") or output_shape is not None:
            slow: tuple[np.ndarray] = super()._run(  # type: ignore[no-untyped-call]
                x, w, bias, auto_pad, dilations, group, kernel_shape, output_padding,
                output_shape, pads, strides,
            )  # fmt: skip
            return slow
        spatial, groups = x.ndim - 2, group or 1
        size, kernel = x.shape[2:], w.shape[2:]
        d, s = dilations or [1] * spatial, strides or [1] * spatial
        extra, p = output_padding or [0] * spatial, pads or [0] * (2 * spatial)
        full = [
            s[a] * (size[a] - 1) + d[a] * (kernel[a] - 1) + 1 + extra[a] for a in range(spatial)
        ]
        c_in, c_out = x.shape[1] // groups, w.shape[1]
        out = np.zeros((x.shape[0], c_out * groups, *full), x.dtype)
        for g in range(groups):
            xg, wg = x[:, g * c_in : (g + 1) * c_in], w[g * c_in : (g + 1) * c_in]
            for tap in np.ndindex(*kernel):
                view = tuple(
                    slice(t * d[a], t * d[a] + s[a] * (size[a] - 1) + 1, s[a])
                    for a, t in enumerate(tap)
                )
                product = np.einsum("nc...,co->no...", xg, wg[(..., *tap)])
                out[(slice(None), slice(g * c_out, (g + 1) * c_out), *view)] += product
        crop = tuple(slice(p[a], full[a] - p[a + spatial]) for a in range(spatial))
        out = out[(slice(None), slice(None), *crop)]
        if bias is not None:
            out = out + bias.reshape(1, -1, *([1] * spatial))
        return (out.astype(x.dtype),)


def run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every output of `model` on `feeds`, by onnx.reference."""
    evaluator = ReferenceEvaluator(model, new_ops=[ConvTranspose])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, evaluator.run(None, feeds), strict=True))
