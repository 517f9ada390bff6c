"""MatMul and Gemm.

2-D products use Gemm with transA/transB so no Transpose node is emitted. For the dense
layer on >2-D inputs (A [..., K] @ W [K, N]), dA = MatMul(dy, Transpose(W)) (onnxruntime
fuses the Transpose into the MatMul) and dW = Gemm(Reshape(A, [-1, K]), Reshape(dy,
[-1, N]), transA=1) were the fastest of the forms timed (docs/performance.md). Other
batched cases use MatMul against the swapped operand and sum broadcast batch axes back;
an operand that is a Transpose of its source's last two axes (attention's heads) gets its
gradient built transposed, which that Transpose's rule cancels, so the source's gradient
is one MatMul with no Transpose pass. 1-D operands follow numpy's promotion.
"""

from __future__ import annotations

from typing import Any

import onnx

from dnnspec.autodiff.context import Shape, VjpContext, same_dim, static_dims
from dnnspec.autodiff.rules.base import VJP, single

Grads = list[str | None]


def _swap_last(ctx: VjpContext, x: str, rank: int) -> str:
    perm = [*range(rank - 2), rank - 1, rank - 2]
    return ctx.b.op("Transpose", [x], perm=perm)


def _dims(shape: Shape | None, index: slice) -> Shape | None:
    return None if shape is None else tuple(shape[index])


def _join(*parts: Shape | None) -> Shape | None:
    if any(p is None for p in parts):
        return None
    return tuple(d for p in parts if p is not None for d in p)


@VJP.register("MatMul")
def matmul(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    a, w = node.input
    dy, b = single(dys), ctx.b
    ra, rw = ctx.require_rank(a, "MatMul"), ctx.require_rank(w, "MatMul")
    sa, sw, sy = ctx.shape(a), ctx.shape(w), ctx.shape(node.output[0])
    need_a, need_w = ctx.needs(a), ctx.needs(w)
    da = dw = None
    if ra == 1 and rw == 1:
        da = b.op("Mul", [dy, w]) if need_a else None
        dw = b.op("Mul", [dy, a]) if need_w else None
    elif ra == 2 and rw == 2:
        da = b.op("Gemm", [dy, w], transB=1) if need_a else None
        dw = b.op("Gemm", [a, dy], transA=1) if need_w else None
    elif ra == 1:
        # y[..., N] = a[K] @ W[..., K, N]
        row = b.op("Unsqueeze", [dy, ctx.int_const([-2])])  # [..., 1, N]
        if need_a:
            full = b.op("MatMul", [row, _swap_last(ctx, w, rw)])  # [..., 1, K]
            da = ctx.reduce_to(full, _join(_dims(sy, slice(0, -1)), (1,), sa), a)
        if need_w:
            col = b.op("Unsqueeze", [a, ctx.int_const([1])])  # [K, 1]
            dw = b.op("MatMul", [col, row])
    elif rw == 1:
        # y[..., M] = A[..., M, K] @ w[K]
        if need_a:
            col = b.op("Unsqueeze", [dy, ctx.int_const([-1])])  # [..., M, 1]
            da = b.op("Mul", [col, w])
        if need_w:
            row = b.op("Unsqueeze", [dy, ctx.int_const([-2])])  # [..., 1, M]
            full = b.op("MatMul", [row, a])  # [..., 1, K]
            dw = ctx.reduce_to(full, _join(_dims(sy, slice(0, -1)), (1,), sw), w)
    elif rw == 2 and (static_w := static_dims(sw)) is not None:
        # the dense layer on >2-D inputs: fold the batch axes into Gemm rows for dW
        k, n = static_w
        if need_a:
            da = b.op("MatMul", [dy, b.op("Transpose", [w], perm=[1, 0])])
        if need_w:
            rows_a = b.op("Reshape", [a, ctx.int_const([-1, k])])
            rows_dy = b.op("Reshape", [dy, ctx.int_const([-1, n])])
            dw = b.op("Gemm", [rows_a, rows_dy], transA=1)
    else:
        batch = _dims(sy, slice(0, -2))
        if need_a:
            if _transposed_view(ctx, a) and _unbroadcast(sa, sy):
                # (dy w^T)^T = w dy^T, transposed back: the view's own rule cancels it
                da = _swap_last(ctx, b.op("MatMul", [w, _swap_last(ctx, dy, ra)]), ra)
            else:
                full = b.op("MatMul", [dy, _swap_last(ctx, w, rw)])
                da = ctx.reduce_to(full, _join(batch, _dims(sa, slice(-2, None))), a)
        if need_w:
            if _transposed_view(ctx, w) and _unbroadcast(sw, sy):
                dw = _swap_last(ctx, b.op("MatMul", [_swap_last(ctx, dy, rw), a]), rw)
            else:
                full = b.op("MatMul", [_swap_last(ctx, a, ra), dy])
                dw = ctx.reduce_to(full, _join(batch, _dims(sw, slice(-2, None))), w)
    return [da, dw]


def _transposed_view(ctx: VjpContext, x: str) -> bool:
    """Whether x is a forward Transpose of its source's last two axes (attention reads
    its heads so): its gradient is then built transposed, as the source is laid out, and
    the Transpose's rule cancels the two (no pass over either)."""
    made = next((n for n in ctx.b.nodes if x in n.output), None)
    rank = ctx.rank(x)
    if made is None or made.op_type != "Transpose" or rank is None or rank < 2:
        return False
    return list(ctx.attr(made, "perm", [])) == [*range(rank - 2), rank - 1, rank - 2]


def _unbroadcast(operand: Shape | None, out: Shape | None) -> bool:
    """Whether the operand has the product's batch dims (its gradient sums over none)."""
    if operand is None or out is None or len(operand) != len(out):
        return False
    return all(same_dim(p, q) for p, q in zip(operand[:-2], out[:-2], strict=True))


@VJP.register("Gemm")
def gemm(ctx: VjpContext, node: onnx.NodeProto, dys: Grads) -> Grads:
    """Y = alpha op(A) op(B) + beta C. Every case is one Gemm whose trans flags absorb the
    transposes: e.g. A [M,K], B [K,N]: dA = Gemm(dy, B, transB=1), dB = Gemm(A, dy, transA=1)."""
    a, w = node.input[0], node.input[1]
    c = ctx.input(node, 2)
    dy, b = single(dys), ctx.b
    alpha = float(ctx.attr(node, "alpha", 1.0))
    beta = float(ctx.attr(node, "beta", 1.0))
    ta, tw = int(ctx.attr(node, "transA", 0)), int(ctx.attr(node, "transB", 0))
    scale: dict[str, Any] = {} if alpha == 1.0 else {"alpha": alpha}
    da = dw = dc = None
    if ctx.needs(a):
        if ta:
            da = b.op("Gemm", [w, dy], transA=tw, transB=1, **scale)
        else:
            da = b.op("Gemm", [dy, w], transB=1 - tw, **scale)
    if ctx.needs(w):
        if tw:
            dw = b.op("Gemm", [dy, a], transA=1, transB=ta, **scale)
        else:
            dw = b.op("Gemm", [a, dy], transA=1 - ta, **scale)
    if c is not None and ctx.needs(c):
        dc = ctx.reduce_to(dy, ctx.shape(node.output[0]), c)
        if beta != 1.0:
            dc = b.op("Mul", [dc, ctx.scalar(beta, c)])
    return [da, dw, dc]
