"""The VJP rule registry: one entry per forward ONNX op type (standard domain).

A rule maps the gradients of a node's outputs to gradients of its inputs, emitting
standard ONNX nodes through `ctx.b`. It returns one entry per input, None where no
gradient is needed (`ctx.needs(name)` is false) or none exists (integer inputs).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from dnnspec.autodiff.context import VjpContext
from dnnspec.registry import Registry

VjpRule = Callable[[VjpContext, onnx.NodeProto, list[str | None]], list[str | None]]

VJP: Registry[VjpRule] = Registry("VJP rule")


def single(out_grads: list[str | None]) -> str:
    """The output gradient of a single-output node (the engine only calls a rule when one of
    its outputs has a gradient)."""
    dy = out_grads[0]
    assert dy is not None
    return dy
