"""Fold a plain gradient-descent update into the GEMM that computes the gradient.

`W - lr * Gemm(A, B)` costs two elementwise passes over the weight matrix after the
GEMM (a Mul and a Sub, each reading and writing every element). Gemm computes
`alpha * A' B' + beta * C`, so the same update is `Gemm(A * -lr, B, C = W, beta = 1)`:
the scale moves onto the smaller operand (batch rows times the smaller weight side) and
the subtraction happens inside the GEMM, which only copies W into its output first, and
the step is faster (docs/performance.md). The pass only rewrites when the
gradient and the scaled gradient have no other consumer, so emitted gradients and
optimizers with state (whose updates read the gradient elsewhere) are left as they are.
A learning rate fixed at compile time (no schedule) becomes the Gemm's `alpha` instead,
which saves the Mul as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dnnspec.graph.builder import Dim, GraphBuilder


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def fold_gemm_updates(b: GraphBuilder, scale: str, params: Mapping[str, Sequence[Dim]]) -> int:
    """Rewrite every `Sub(param, Mul(Gemm(A, B), scale))` with a scalar `scale` and a 2-D
    `param` into one Gemm accumulating onto the parameter; returns how many were folded.
    `prune`, the next pass (`assemble/passes.py`), drops the Mul and Gemm left unused."""
    producer = {out: node for node in b.nodes for out in node.output}
    uses = Counter(name for node in b.nodes for name in node.input)
    uses.update(o.name for o in b.outputs)
    negated: str | None = None
    # Gemm's alpha is a float32 attribute: exact only for a float32 graph
    fixed = _constant_scalar(b, producer, scale) if b.float_dtype == np.float32 else None
    folded = 0
    nodes: list[onnx.NodeProto] = []
    for sub in list(b.nodes):
        gemm = _foldable(sub, producer, uses, scale, params)
        if gemm is None:
            nodes.append(sub)
            continue
        param = sub.input[0]
        rows, cols = params[param]
        attrs = {k: v for k, v in _attrs(gemm).items() if k != "beta"}
        a, bb = gemm.input
        if fixed is not None:
            attrs["alpha"] = -fixed * attrs.get("alpha", 1.0)
        else:
            emitted = len(b.nodes)
            negated = negated or b.op("Neg", [scale], hint="neg_lr")
            # A' contributes the rows of the result and B' its columns; scale the smaller.
            if isinstance(rows, int) and isinstance(cols, int) and rows > cols:
                bb = b.op("Mul", [bb, negated], hint="scaled")
            else:
                a = b.op("Mul", [a, negated], hint="scaled")
            nodes += b.nodes[emitted:]
            del b.nodes[emitted:]
        folded += 1
        nodes.append(
            helper.make_node(
                "Gemm", [a, bb, param], list(sub.output), name=b.fresh("n_Gemm"), beta=1.0, **attrs
            )
        )
    b.nodes = nodes
    return folded


def _constant_scalar(
    b: GraphBuilder, producer: Mapping[str, onnx.NodeProto], name: str
) -> float | None:
    """The value of `name` when it is a scalar initializer or a product of such (the
    learning rate without a schedule), else None."""
    if name in b.initializers:
        value = numpy_helper.to_array(b.initializers[name])
        return float(value) if value.size == 1 else None
    node = producer.get(name)
    if node is None or node.op_type != "Mul":
        return None
    factors = [_constant_scalar(b, producer, i) for i in node.input]
    if any(f is None for f in factors):
        return None
    return float(np.prod(np.array(factors, b.float_dtype)))


def _foldable(
    sub: onnx.NodeProto,
    producer: Mapping[str, onnx.NodeProto],
    uses: Counter[str],
    scale: str,
    params: Mapping[str, Sequence[Dim]],
) -> onnx.NodeProto | None:
    """The Gemm behind `sub` if it is `param - Gemm(A, B) * scale` and nothing else reads
    the gradient or its scaled copy (the unused Mul and Gemm are then left for `prune`)."""
    if sub.op_type != "Sub" or len(params.get(sub.input[0], ())) != 2:
        return None
    mul = producer.get(sub.input[1])
    if mul is None or mul.op_type != "Mul" or uses[mul.output[0]] != 1 or scale not in mul.input:
        return None
    grad = mul.input[1] if mul.input[0] == scale else mul.input[0]
    gemm = producer.get(grad)
    if gemm is None or gemm.op_type != "Gemm" or len(gemm.input) != 2 or uses[grad] != 1:
        return None
    return gemm
