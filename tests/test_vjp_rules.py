"""Every VJP rule against float64 finite differences, in onnxruntime and onnx.reference.

Each case builds a small forward graph, appends its backward pass with `gradients`, and
checks <g, v> = d/dt <dy, f(x + t v)> for random dy and v (fourth-order central
differences, so float64 agrees to ~1e-10). Cases run in three modes: static shapes,
a symbolic batch dim ("N"), and "dynamic" (every dim hidden from the rules, ranks kept) so
the Shape-based fallbacks are exercised too. onnx.reference gets a float64 Erf (its own
rounds through float32); ops without float64 kernels in onnxruntime run there in float32.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from conftest import Run, ort_runner, reference_runner
from onnx.reference import ReferenceEvaluator

from dnnspec.autodiff import VJP, AutodiffError, gradients
from dnnspec.autodiff.rules import conv as conv_rules
from dnnspec.graph.builder import GraphBuilder

SYMBOLS = {"N": 3, "B": 1, "T": 4}  # run-time sizes of the symbolic dims used below
INT_MAX = int(np.iinfo(np.int64).max)
H = 1e-3
GRID = {"grid0": 0.05, "grid1": 0.2, "grid2": 0.1}  # offsets on a 0.3 grid: no ties in Max/Min

Build = Callable[..., str]


@dataclass(frozen=True)
class In:
    """One graph input: shape (ints or symbol names), how to sample it, whether it is a wrt."""

    shape: tuple[int | str, ...]
    kind: str = "normal"  # normal | positive | away (|x| >= 0.2, off kinks) | grid* | int
    wrt: bool = True
    value: tuple[int, ...] = ()  # the fixed value of an int input


@dataclass(frozen=True)
class Case:
    id: str
    op: str  # the rule this case exercises
    build: Build  # (builder, *input names) -> output name
    inputs: tuple[In, ...]
    modes: tuple[str, ...] = ("static", "symbolic", "dynamic")
    rtol: float = 1e-6


def c(b: GraphBuilder, values: float | Sequence[float]) -> str:
    return b.const(values, "int64")


def fc(b: GraphBuilder, values: float | Sequence[float]) -> str:
    """A constant in the builder's float type."""
    return b.const(values)


def op(op_type: str, **attrs: object) -> Build:
    return lambda b, *xs: b.op(op_type, list(xs), **attrs)


def unary(
    op_type: str, kind: str = "normal", shape: tuple[int | str, ...] = ("N", 4), **attrs: object
) -> Case:
    return Case(op_type.lower(), op_type, op(op_type, **attrs), (In(shape, kind),))


def of_views(ranks: tuple[int, int]) -> Build:
    """MatMul(Transpose(a), Transpose(b)), each Transpose swapping the last two axes of an
    input of the given rank."""

    def build(b: GraphBuilder, *xs: str) -> str:
        swaps = [[*range(r - 2), r - 1, r - 2] for r in ranks]
        return b.op(
            "MatMul", [b.op("Transpose", [x], perm=p) for x, p in zip(xs, swaps, strict=True)]
        )

    return build


F64 = onnx.TensorProto.DOUBLE
F32 = onnx.TensorProto.FLOAT


def scan_rnn(output: str) -> Build:
    """A Scan over xs [T, N, 2] with states h [N, 3] (h' = tanh(x Wx + h Wh)) and c
    (c' = c + h' * h'), reading the weights from the outer graph; `output` picks what the
    case differentiates: the per-step outputs, the final state, or both combined."""

    def build(b: GraphBuilder, h0: str, c0: str, xs: str, wx: str, wh: str) -> str:
        body = b.subgraph("rnn_body")
        h = body.fresh_input("h", b.float_dtype, ["N", 3])
        cell = body.fresh_input("c", b.float_dtype, ["N", 3])
        x = body.fresh_input("x", b.float_dtype, ["N", 2])
        pre = body.op("Add", [body.op("MatMul", [x, wx]), body.op("MatMul", [h, wh])])
        h_next = body.op("Tanh", [pre])
        c_next = body.op("Add", [cell, body.op("Mul", [h_next, h_next])])
        y = body.op("Mul", [h_next, body.op("Sigmoid", [cell])])
        for name in (h_next, c_next, y):
            body.add_output(name, b.float_dtype, ["N", 3])
        h_last, c_last, ys = b.op_multi(
            "Scan", [h0, c0, xs], 3, body=body.graph(), num_scan_inputs=1
        )
        if output == "steps":
            return ys
        if output == "final":
            return h_last
        total = b.op("ReduceSum", [ys, c(b, [0])], keepdims=0)
        return b.op("Add", [b.op("Mul", [total, c_last]), h_last])

    return build


SCAN_INPUTS = (In(("N", 3)), In(("N", 3)), In(("T", "N", 2)), In((2, 3)), In((3, 3)))


CASES: list[Case] = [
    # broadcasting arithmetic
    Case("add_same", "Add", op("Add"), (In(("N", 4)), In(("N", 4)))),
    Case("add_bias", "Add", op("Add"), (In(("N", 4)), In((4,)))),
    Case("add_mixed", "Add", op("Add"), (In(("N", 1, 4)), In((3, 1)))),
    Case("add_scalar", "Add", op("Add"), (In(()), In((2, 3)))),
    Case("add_outer", "Add", op("Add"), (In(("N", 1)), In((1, 4)))),
    Case("add_maybe_one", "Add", op("Add"), (In(("N", 4)), In(("B", 4)))),
    Case("sub_bias", "Sub", op("Sub"), (In(("N", 4)), In((4,)))),
    Case("sub_outer", "Sub", op("Sub"), (In(("N", 1, 3)), In((2, 1)))),
    Case("mul_broadcast", "Mul", op("Mul"), (In(("N", 3, 4)), In((3, 1)))),
    Case("mul_square", "Mul", lambda b, x: b.op("Mul", [x, x]), (In(("N", 3)),)),
    # a mean's rule expands dy over the batch; the Mul rule multiplies by its source instead
    Case(
        "mul_under_mean",
        "Mul",
        lambda b, x, w: b.op("ReduceMean", [b.op("Mul", [x, w])], keepdims=0),
        (In(("N", 4)), In(("N", 4))),
    ),
    Case(
        "mul_bias_under_mean",
        "Mul",
        lambda b, x, w: b.op("ReduceMean", [b.op("Mul", [x, w])], keepdims=0),
        (In(("N", 4)), In((4,))),
    ),
    Case("mul_const", "Mul", lambda b, x: b.op("Mul", [x, fc(b, [1.5, -2.0])]), (In(("N", 2)),)),
    Case("div_bias", "Div", op("Div"), (In(("N", 4)), In((4,), "positive"))),
    Case("div_scalar", "Div", op("Div"), (In((2, 3)), In((), "positive"))),
    Case("neg", "Neg", op("Neg"), (In(("N", 3)),)),
    Case("sum3", "Sum", op("Sum"), (In(("N", 4)), In((4,)), In((1, 4)))),
    Case("max2", "Max", op("Max"), (In(("N", 4), "grid0"), In((4,), "grid1"))),
    Case(
        "max3",
        "Max",
        op("Max"),
        (In(("N", 4), "grid0"), In((4,), "grid1", wrt=False), In((1, 4), "grid2")),
    ),
    Case("min2", "Min", op("Min"), (In(("N", 4), "grid0"), In(("N", 1), "grid1"))),
    Case(
        "where",
        "Where",
        lambda b, s, x, y: b.op("Where", [b.op("Greater", [s, fc(b, 0.0)]), x, y]),
        (In(("N", 4), wrt=False), In((4,)), In(("N", 1))),
    ),
    Case("pow_square", "Pow", lambda b, x: b.op("Pow", [x, fc(b, 2.0)]), (In(("N", 3)),)),
    Case(
        "pow_const",
        "Pow",
        lambda b, x: b.op("Pow", [x, fc(b, [1.5, 3.0, -0.5])]),
        (In(("N", 3), "positive"),),
    ),
    Case("pow_int_exp", "Pow", lambda b, x: b.op("Pow", [x, c(b, 3)]), (In(("N", 3)),)),
    Case("pow_both", "Pow", op("Pow"), (In(("N", 3), "positive"), In((3,)))),
    Case(
        "pow_runtime_int_exp",
        "Pow",
        op("Pow"),
        (In(("N", 3)), In((), "int", wrt=False, value=(3,))),
    ),
    unary("Sqrt", "positive"),
    unary("Abs", "away"),
    unary("Exp"),
    unary("Log", "positive"),
    unary("Identity"),
    Case("cast_same", "Cast", op("Cast", to=F64), (In(("N", 3)),)),
    Case(
        "cast_f32_roundtrip",
        "Cast",
        lambda b, x: b.op("Cast", [b.op("Exp", [b.op("Cast", [x], to=F32)])], to=F64),
        (In(("N", 3)),),
        rtol=1e-3,
    ),
    # activations
    unary("Relu", "away"),
    unary("Sigmoid"),
    unary("Tanh"),
    unary("LeakyRelu", "away", alpha=0.1),
    Case("leaky_relu_default", "LeakyRelu", op("LeakyRelu"), (In((2, 3), "away"),)),
    unary("Elu", "away", alpha=0.7),
    unary("Gelu"),
    Case("gelu_tanh", "Gelu", op("Gelu", approximate="tanh"), (In(("N", 4)),)),
    unary("Erf"),
    unary("Softplus"),
    unary("Softmax", shape=("N", 5)),
    Case("softmax_axis1", "Softmax", op("Softmax", axis=1), (In(("N", 3, 4)),)),
    unary("LogSoftmax", shape=("N", 5)),
    Case("log_softmax_axis0", "LogSoftmax", op("LogSoftmax", axis=0), (In(("N", 4)),)),
    # products
    Case("matmul_2d", "MatMul", op("MatMul"), (In(("N", 4)), In((4, 5)))),
    Case("matmul_dense_nd", "MatMul", op("MatMul"), (In((2, "N", 4)), In((4, 5)))),
    Case("matmul_batched", "MatMul", op("MatMul"), (In(("N", 1, 3, 4)), In((2, 4, 5)))),
    Case("matmul_batched_left_2d", "MatMul", op("MatMul"), (In((3, 4)), In((2, 4, 5)))),
    # operands that are transposed views of their sources, as attention reads its heads
    Case("matmul_of_views", "MatMul", of_views((4, 4)), (In(("N", 2, 4, 3)), In(("N", 2, 5, 4)))),
    Case(
        "matmul_of_broadcast_views",
        "MatMul",
        of_views((3, 4)),
        (In((2, 4, 3)), In(("N", 2, 5, 4))),
    ),
    Case("matmul_vec_mat", "MatMul", op("MatMul"), (In((4,)), In((4, 5)))),
    Case("matmul_vec_batched", "MatMul", op("MatMul"), (In((4,)), In(("N", 4, 5)))),
    Case("matmul_mat_vec", "MatMul", op("MatMul"), (In(("N", 3, 4)), In((4,)))),
    Case("matmul_vec_vec", "MatMul", op("MatMul"), (In((4,)), In((4,)))),
    Case("matmul_weight_only", "MatMul", op("MatMul"), (In(("N", 4), wrt=False), In((4, 5)))),
    Case("gemm_bias", "Gemm", op("Gemm"), (In(("N", 4)), In((4, 5)), In((5,)))),
    Case(
        "gemm_trans_a",
        "Gemm",
        op("Gemm", transA=1, alpha=0.5, beta=2.0),
        (In((4, "N")), In((4, 5)), In(("N", 1))),
    ),
    Case(
        "gemm_trans_b", "Gemm", op("Gemm", transB=1, alpha=-1.5), (In(("N", 4)), In((5, 4)), In(()))
    ),
    Case(
        "gemm_trans_ab",
        "Gemm",
        op("Gemm", transA=1, transB=1, beta=0.25),
        (In((4, "N")), In((5, 4)), In(("N", 5))),
    ),
    Case("gemm_no_c", "Gemm", op("Gemm"), (In((3, 4)), In((4, 2)))),
    # data movement
    Case(
        "reshape", "Reshape", lambda b, x: b.op("Reshape", [x, c(b, [-1, 12])]), (In(("N", 2, 6)),)
    ),
    Case(
        "reshape_static", "Reshape", lambda b, x: b.op("Reshape", [x, c(b, [4, 3])]), (In((2, 6)),)
    ),
    Case("flatten", "Flatten", op("Flatten", axis=1), (In(("N", 2, 3)),)),
    Case("flatten_axis2", "Flatten", op("Flatten", axis=2), (In(("N", 2, 3, 2)),)),
    Case("transpose", "Transpose", op("Transpose", perm=[2, 0, 1]), (In(("N", 2, 4)),)),
    Case("transpose_default", "Transpose", op("Transpose"), (In(("N", 2, 4)),)),
    Case("concat", "Concat", op("Concat", axis=1), (In(("N", 2)), In(("N", 3)), In(("N", 1)))),
    Case(
        "concat_one_needed",
        "Concat",
        op("Concat", axis=-1),
        (In(("N", 2), wrt=False), In(("N", 3)), In(("N", 1), wrt=False)),
    ),
    Case("concat_batch_axis", "Concat", op("Concat", axis=0), (In(("N", 2)), In((2, 2)))),
    Case(
        "split_sizes",
        "Split",
        lambda b, x: b.op("Add", b.op_multi("Split", [x, c(b, [1, 3])], 2, axis=1)[:1] * 2),
        (In(("N", 4)),),
    ),
    Case(
        "split_equal_parts",
        "Split",
        lambda b, x: b.op(
            "Mul", b.op_multi("Split", [x], 3, axis=-1, num_outputs=3)[1:], hint="prod"
        ),
        (In(("N", 2, 6)),),
    ),
    Case(
        "slice",
        "Slice",
        lambda b, x: b.op("Slice", [x, c(b, [1]), c(b, [5]), c(b, [1])]),
        (In(("N", 6)),),
    ),
    Case(
        "slice_negative_start",
        "Slice",
        lambda b, x: b.op("Slice", [x, c(b, [-4]), c(b, [INT_MAX]), c(b, [-1])]),
        (In(("N", 6)),),
    ),
    Case(
        "slice_step2",
        "Slice",
        lambda b, x: b.op("Slice", [x, c(b, [1]), c(b, [6]), c(b, [1]), c(b, [2])]),
        (In(("N", 7)),),
        modes=("static", "symbolic"),
    ),
    Case(
        "slice_reverse",
        "Slice",
        lambda b, x: b.op("Slice", [x, c(b, [4]), c(b, [0]), c(b, [1]), c(b, [-1])]),
        (In(("N", 6)),),
        modes=("static", "symbolic"),
    ),
    Case(
        "slice_two_axes",
        "Slice",
        lambda b, x: b.op("Slice", [x, c(b, [0, 1]), c(b, [2, -1]), c(b, [1, 2]), c(b, [1, 3])]),
        (In(("N", 3, 8)),),
        modes=("static", "symbolic"),
    ),
    Case(
        "slice_batch_axis",
        "Slice",
        lambda b, x: b.op("Slice", [x, c(b, [1]), c(b, [INT_MAX]), c(b, [0])]),
        (In(("N", 4)),),
    ),
    Case(
        "slice_default_axes",
        "Slice",
        lambda b, x: b.op("Slice", [x, c(b, [0, 1]), c(b, [2, 3])]),
        (In(("N", 4)),),
    ),
    Case(
        "slice_runtime_starts",
        "Slice",
        lambda b, x, s: b.op("Slice", [x, s, c(b, [5]), c(b, [1])]),
        (In(("N", 6)), In((1,), "int", wrt=False, value=(-5,))),
    ),
    Case("squeeze", "Squeeze", lambda b, x: b.op("Squeeze", [x, c(b, [1])]), (In(("N", 1, 4)),)),
    Case("squeeze_all", "Squeeze", op("Squeeze"), (In((3, 1, 4)),)),
    Case(
        "unsqueeze",
        "Unsqueeze",
        lambda b, x: b.op("Unsqueeze", [x, c(b, [0, -1])]),
        (In(("N", 4)),),
    ),
    Case("expand", "Expand", lambda b, x: b.op("Expand", [x, c(b, [2, 3, 4])]), (In((3, 1)),)),
    Case(
        "expand_symbolic",
        "Expand",
        lambda b, x, s: b.op("Expand", [x, b.op("Shape", [s])]),
        (In((1, 4)), In(("N", 4), wrt=False)),
    ),
    Case(
        "split3",
        "Split",
        lambda b, x: b.op_multi("Split", [x], 3, axis=1, num_outputs=3)[1],
        (In(("N", 6, 2)),),
    ),
    Case(
        "split_sizes_two_used",
        "Split",
        lambda b, x: b.op("Mul", b.op_multi("Split", [x, c(b, [1, 3, 2])], 3, axis=-1)[::2]),
        (In(("N", 6)),),
    ),
    # normalisation
    Case(
        "layer_norm_last",
        "LayerNormalization",
        op("LayerNormalization", axis=-1, epsilon=1e-3),
        (In(("N", 3, 5)), In((5,)), In((5,))),
    ),
    Case(
        "layer_norm_all_no_bias",
        "LayerNormalization",
        op("LayerNormalization", axis=1),
        (In(("N", 3, 4)), In((3, 4))),
    ),
    Case(
        "layer_norm_input_only",
        "LayerNormalization",
        op("LayerNormalization", axis=-1),
        (In(("N", 4)), In((4,), wrt=False), In((4,), wrt=False)),
    ),
    # reductions
    *[
        Case(f"{name.lower()}_{tag}", name, build, (In(shape),))
        for name in ("ReduceSum", "ReduceMean")
        for tag, shape, build in [
            ("axis1_keep", ("N", 3, 4), lambda b, x, n=name: b.op(n, [x, c(b, [1])])),
            ("axis1", ("N", 3, 4), lambda b, x, n=name: b.op(n, [x, c(b, [1])], keepdims=0)),
            ("batch", ("N", 4), lambda b, x, n=name: b.op(n, [x, c(b, [0])], keepdims=0)),
            ("all", ("N", 4), lambda b, x, n=name: b.op(n, [x], keepdims=0)),
            ("all_keep", ("N", 4), lambda b, x, n=name: b.op(n, [x])),
            ("noop", ("N", 4), lambda b, x, n=name: b.op(n, [x], noop_with_empty_axes=1)),
            ("two_axes", (2, "N", 4), lambda b, x, n=name: b.op(n, [x, c(b, [-1, 0])], keepdims=0)),
        ]
    ],
    Case(
        "reducesum_runtime_axes",
        "ReduceSum",
        lambda b, x, a: b.op("ReduceSum", [x, a], keepdims=0),
        (In(("N", 3, 4)), In((1,), "int", wrt=False, value=(1,))),
    ),
    Case(
        "reducemean_runtime_axes",
        "ReduceMean",
        lambda b, x, a: b.op("ReduceMean", [x, a]),
        (In(("N", 3, 4)), In((2,), "int", wrt=False, value=(0, 2))),
    ),
    Case(
        "reducemax_axes",
        "ReduceMax",
        lambda b, x: b.op("ReduceMax", [x, c(b, [2, 3])], keepdims=0),
        (In(("N", 2, 3, 3)),),
    ),
    Case(
        "reducemax_ties_keep",
        "ReduceMax",
        lambda b, x: b.op("ReduceMax", [x, c(b, [1])]),
        (In(("N", 2, 3), "grid0"),),
        modes=("static",),
    ),
    Case("reducemax_all", "ReduceMax", op("ReduceMax", keepdims=0), (In(("N", 4)),)),
    # convolution and pooling
    Case(  # the kernel from the weight's shape: hidden weight shapes need kernel_shape
        "conv2d",
        "Conv",
        op("Conv"),
        (In(("N", 2, 5, 5)), In((3, 2, 3, 3))),
        modes=("static", "symbolic"),
    ),
    Case(
        "conv2d_bias_same",
        "Conv",
        op("Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        (In(("N", 2, 4, 4)), In((3, 2, 3, 3)), In((3,))),
    ),
    Case(
        "conv2d_stride_uneven",
        "Conv",
        op("Conv", kernel_shape=[3, 2], strides=[2, 2], pads=[0, 1, 1, 0]),
        (In(("N", 2, 6, 5)), In((4, 2, 3, 2)), In((4,))),
    ),
    Case(
        "conv2d_dilated_groups",
        "Conv",
        op("Conv", kernel_shape=[2, 3], dilations=[2, 1], group=2, pads=[1, 1, 1, 1]),
        (In(("N", 4, 6, 5)), In((6, 2, 2, 3))),
    ),
    Case(
        "conv1d_stride",
        "Conv",
        op("Conv", kernel_shape=[3], strides=[3], pads=[2, 1]),
        (In(("N", 3, 8)), In((2, 3, 3)), In((2,))),
    ),
    Case(
        "conv2d_weight_only",
        "Conv",
        op("Conv", kernel_shape=[2, 2]),
        (In(("N", 2, 4, 4), wrt=False), In((3, 2, 2, 2))),
    ),
    # channels x positions large enough for the weight gradient read tap by tap
    Case(
        "conv2d_taps",
        "Conv",
        op("Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        (In(("N", 16, 16, 16)), In((2, 16, 3, 3)), In((2,))),
    ),
    Case(
        "maxpool2d",
        "MaxPool",
        op("MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        (In(("N", 2, 5, 4)),),
    ),
    Case(
        "maxpool2d_tiles",
        "MaxPool",
        op("MaxPool", kernel_shape=[2, 3], strides=[2, 3]),
        (In(("N", 2, 4, 6)),),
    ),
    Case(
        "maxpool1d_tiles",
        "MaxPool",
        op("MaxPool", kernel_shape=[3], strides=[3]),
        (In(("N", 2, 6)),),
    ),
    Case(
        "maxpool2d_overlap_pads",
        "MaxPool",
        op("MaxPool", kernel_shape=[3, 3], strides=[2, 1], pads=[1, 0, 1, 1]),
        (In(("N", 2, 5, 4)),),
    ),
    Case("maxpool1d", "MaxPool", op("MaxPool", kernel_shape=[3], strides=[2]), (In(("N", 2, 7)),)),
    Case(
        "avgpool2d",
        "AveragePool",
        op("AveragePool", kernel_shape=[2, 2], strides=[2, 2]),
        (In(("N", 2, 5, 4)),),
    ),
    Case(
        "avgpool2d_pads_excluded",
        "AveragePool",
        op("AveragePool", kernel_shape=[3, 2], strides=[2, 1], pads=[1, 1, 1, 0]),
        (In(("N", 2, 5, 4)),),
        modes=("static", "symbolic"),
    ),
    Case(
        "avgpool1d_pads_included",
        "AveragePool",
        op("AveragePool", kernel_shape=[3], strides=[2], pads=[1, 1], count_include_pad=1),
        (In(("N", 2, 6)),),
    ),
    Case(
        "resize_nearest",
        "Resize",
        lambda b, x: b.op(
            "Resize",
            [x, "", b.const([1.0, 1.0, 2.0, 3.0], "float32")],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        (In(("N", 2, 3, 2)),),
    ),
    # indexing: repeated ids accumulate, negative ids count from the end
    Case(
        "gather_embedding",
        "Gather",
        op("Gather", axis=0),
        (In((5, 4)), In(("N", 3), "int", wrt=False, value=(0, 2, 2, 4, -1, 1, 3, 3, 3))),
    ),
    Case(
        "gather_axis1",
        "Gather",
        op("Gather", axis=1),
        (In(("N", 5, 2)), In((2, 2), "int", wrt=False, value=(4, 0, -5, 2))),
    ),
    Case(
        "gather_scalar_index",
        "Gather",
        op("Gather", axis=-1),
        (In(("N", 3, 4)), In((), "int", wrt=False, value=(2,))),
    ),
    # loops: the body differentiated by the engine, run backwards in time
    Case("scan_steps", "Scan", scan_rnn("steps"), SCAN_INPUTS),
    Case("scan_final_state", "Scan", scan_rnn("final"), SCAN_INPUTS),
    Case("scan_states_and_steps", "Scan", scan_rnn("both"), SCAN_INPUTS),
    Case(
        "scan_weights_only",
        "Scan",
        scan_rnn("both"),
        (In(("N", 3), wrt=False), In(("N", 3), wrt=False), In(("T", "N", 2), wrt=False))
        + SCAN_INPUTS[3:],
    ),
    Case(
        "reverse_sequence_time_major",
        "ReverseSequence",
        op("ReverseSequence", time_axis=0, batch_axis=1),
        (In((4, "N", 2)), In(("N",), "int", wrt=False, value=(4, 4, 4))),
    ),
    Case(
        "reverse_sequence_ragged",
        "ReverseSequence",
        op("ReverseSequence", time_axis=1, batch_axis=0),
        (In(("N", 4, 2)), In(("N",), "int", wrt=False, value=(4, 1, 3))),
    ),
    # training-only ops in inference mode (training mode: see test_dropout_training_mode)
    Case("dropout_inference", "Dropout", op("Dropout"), (In(("N", 4)),)),
]


def _sample(spec: In, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(_draw(spec, rng), np.int64 if spec.kind == "int" else np.float64)


def _draw(spec: In, rng: np.random.Generator) -> np.ndarray | float:
    shape = tuple(SYMBOLS[d] if isinstance(d, str) else d for d in spec.shape)
    if spec.kind == "int":
        return np.array(spec.value, np.int64).reshape(shape)
    if spec.kind == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if spec.kind == "away":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.5, shape)
    if spec.kind in GRID:
        return 0.3 * rng.integers(-4, 5, shape) + GRID[spec.kind]
    return rng.standard_normal(shape)


def _types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple[int | str | None, ...]]]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    out = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        t = info.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in t.shape.dim
        )
        out[info.name] = (t.elem_type, dims)
    return out


@dataclass
class Built:
    model: onnx.ModelProto
    inputs: list[str]
    wrt: list[str]
    y: str
    nodes_before: int
    backward: list[onnx.NodeProto]


def build(case: Case, mode: str, float_dtype: str = "float64") -> Built:
    """Forward graph of `case`, a `dy` input, its backward pass, outputs y and grad.<x>."""
    b = GraphBuilder("vjp_case", float_dtype=float_dtype)
    names = []
    for i, spec in enumerate(case.inputs):
        dims = [SYMBOLS[d] if isinstance(d, str) and mode == "static" else d for d in spec.shape]
        names.append(b.add_input(f"x{i}", "int64" if spec.kind == "int" else float_dtype, dims))
    y = case.build(b, *names)
    wrt = [n for n, spec in zip(names, case.inputs, strict=True) if spec.wrt]
    return attach_backward(b, y, names, wrt, hide_dims=mode == "dynamic")


def attach_backward(
    b: GraphBuilder, y: str, inputs: list[str], wrt: list[str], hide_dims: bool = False
) -> Built:
    """Seed y with a `dy` graph input, differentiate w.r.t. `wrt` and expose y and grad.<x>
    as outputs; `hide_dims` hands the rules ranks only, so Shape-based fallbacks run."""
    types = _types(b.model())
    y_dims = types[y][1]
    b.add_input("dy", b.float_dtype, y_dims)
    value_types: dict[str, tuple[int, tuple[int | str | None, ...]]] | None = None
    if hide_dims:
        value_types = {k: (e, tuple(None for _ in d)) for k, (e, d) in _types(b.model()).items()}
    start = len(b.nodes)
    grads = gradients(b, {y: "dy"}, wrt, value_types=value_types)
    backward = b.nodes[start:]
    b.add_output(y, b.float_dtype, y_dims)
    for x in wrt:
        b.add_output(
            b.op("Identity", [grads[x]], outputs=[f"grad.{x}"]), b.float_dtype, types[x][1]
        )
    model = b.model()
    onnx.checker.check_model(model, full_check=True)
    return Built(model, inputs, wrt, y, start, backward)


def check_against_fd(
    built: Built,
    run: Run,
    feeds: dict[str, np.ndarray],
    seed: int,
    rtol: float = 1e-6,
    atol: float = 1e-8,
) -> dict[str, np.ndarray]:
    """Assert <grad, v> equals the finite-difference directional derivative of <dy, y>
    along a random v for every wrt; return the outputs at `feeds`."""
    rng = np.random.default_rng(seed)
    out = run(feeds)
    for x in built.wrt:
        grad = out[f"grad.{x}"]
        assert grad.shape == feeds[x].shape, x
        assert grad.dtype == np.float64
        direction = np.asarray(rng.standard_normal(feeds[x].shape))

        def f(t: float, x: str = x, direction: np.ndarray = direction) -> float:
            moved = dict(feeds)
            moved[x] = np.asarray(feeds[x] + t * direction)
            return float(np.sum(run(moved)[built.y] * feeds["dy"]))

        fd = (8 * (f(H) - f(-H)) - (f(2 * H) - f(-2 * H))) / (12 * H)
        assert float(np.sum(grad * direction)) == pytest.approx(fd, rel=rtol, abs=atol), x
    return out


def check_both_runtimes(
    built: Built, feeds: dict[str, np.ndarray], case: Case | None = None, mode: str = "static"
) -> dict[str, np.ndarray]:
    """FD-check the float64 graph in onnx.reference and onnxruntime and compare the two.

    Where onnxruntime lacks float64 kernels, the same case built in float32 runs there and
    must match the float64 reference gradients to float32 accuracy."""
    rtol = case.rtol if case else 1e-6
    seed = zlib.crc32(case.id.encode()) if case else 0
    reference = check_against_fd(built, reference_runner(built.model), feeds, seed, rtol)
    run = ort_runner(built.model)
    if run is not None:
        out = check_against_fd(built, run, feeds, seed, rtol)
        for x in built.wrt:
            np.testing.assert_allclose(
                out[f"grad.{x}"], reference[f"grad.{x}"], rtol=1e-9, atol=1e-12
            )
        return out
    assert case is not None
    built32 = build(case, mode, "float32")
    run32 = ort_runner(built32.model)
    assert run32 is not None
    out32 = run32(
        {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in feeds.items()}
    )
    for x in built.wrt:
        np.testing.assert_allclose(out32[f"grad.{x}"], reference[f"grad.{x}"], rtol=1e-4, atol=1e-5)
    return reference


def forward_shape(built: Built, feeds: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The output's run-time shape, from the forward graph alone."""
    model = onnx.ModelProto()
    model.CopyFrom(built.model)
    del model.graph.node[built.nodes_before :]
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(built.y, F64, None))
    del model.graph.input[len(built.inputs) :]
    outputs = ReferenceEvaluator(model).run(None, {k: feeds[k] for k in built.inputs})
    assert isinstance(outputs, list)
    return tuple(outputs[0].shape)


def random_feeds(built: Built, case: Case) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    feeds = {name: _sample(spec, rng) for name, spec in zip(built.inputs, case.inputs, strict=True)}
    feeds["dy"] = np.asarray(rng.standard_normal(forward_shape(built, feeds)))
    return feeds


PARAMS = [pytest.param(case, mode, id=f"{case.id}-{mode}") for case in CASES for mode in case.modes]


@pytest.mark.parametrize(("case", "mode"), PARAMS)
def test_rule_matches_finite_differences(case: Case, mode: str) -> None:
    built = build(case, mode)
    check_both_runtimes(built, random_feeds(built, case), case, mode)


def test_every_rule_has_a_finite_difference_case() -> None:
    assert set(VJP) == {case.op for case in CASES}


NEEDS_RUNTIME_SHAPES = {
    "slice_runtime_starts",
    "reducesum_runtime_axes",
    "reducemean_runtime_axes",
    "squeeze_all",
    # MaxPool scatter-adds into zeros shaped like x (ConstantOfShape, folded by onnxruntime)
    "maxpool2d",
    "maxpool2d_overlap_pads",
    "maxpool1d",
}


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.id not in NEEDS_RUNTIME_SHAPES], ids=lambda c: c.id
)
def test_static_shapes_need_no_shape_nodes(case: Case) -> None:
    built = build(case, "static")
    constants = {t.name for t in built.model.graph.initializer}
    ops = {
        node.op_type
        for node in built.backward
        if not (node.op_type == "ConstantOfShape" and node.input[0] in constants)
    }
    assert not ops & {"Shape", "Size", "NonZero", "ConstantOfShape"}


def backward_ops(case_id: str, mode: str = "symbolic") -> list[str]:
    case = next(c for c in CASES if c.id == case_id)
    return [node.op_type for node in build(case, mode).backward]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.op == "Conv" and c.inputs[1].wrt], ids=lambda c: c.id
)
def test_conv_weight_gradient_tap_by_tap_in_every_geometry(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the per-tap form at every size: strides, uneven pads, dilations, groups, 1-D
    monkeypatch.setattr(conv_rules, "TAP_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_rules, "TAP_MIN_WORK", 1)
    built = build(case, "symbolic")
    assert not [n for n in built.backward if n.op_type == "Conv"]
    check_both_runtimes(built, random_feeds(built, case), case, "symbolic")


def test_large_conv_weight_gradient_reads_x_tap_by_tap() -> None:
    # no one-hot patch Conv: one strided Slice and one MatMul per kernel tap
    ops = backward_ops("conv2d_taps")
    assert ops.count("Conv") == 0 and ops.count("Slice") == ops.count("MatMul") == 9
    assert backward_ops("conv2d_bias_same").count("Conv") == 1  # small: one-hot patches


def test_lean_backward_forms() -> None:
    # bias [4] added to [N, 4]: the axes are known statically despite the symbolic batch
    assert backward_ops("add_bias") == ["ReduceSum"]
    assert backward_ops("relu") == ["Greater", "Cast", "Mul"]
    assert backward_ops("sigmoid") == ["Sub", "Mul", "Mul"]
    assert backward_ops("mul_square") == ["Mul", "Add"]
    # the Expand of the mean's gradient is read by nothing once the products use its source
    # (with a [4] operand, only the [N, 4] one's product can: a [4] product would be short)
    for case_id, readers in (("mul_under_mean", 0), ("mul_bias_under_mean", 1)):
        nodes = build(next(c for c in CASES if c.id == case_id), "symbolic").backward
        expanded = {n.output[0] for n in nodes if n.op_type == "Expand"}
        assert len(expanded) == 1
        assert sum(bool(set(n.input) & expanded) for n in nodes) == readers
    # a batch mean to a scalar: 1 / size(x) without Size(y)
    assert backward_ops("reducemean_all").count("Size") == 1
    assert backward_ops("tanh") == ["Mul", "Sub", "Mul"]
    assert backward_ops("exp") == ["Mul"]
    assert backward_ops("gemm_bias") == ["Gemm", "Gemm", "ReduceSum"]
    assert backward_ops("gemm_trans_ab") == ["Gemm", "Gemm", "Mul"]
    assert backward_ops("matmul_2d") == ["Gemm", "Gemm"]
    assert backward_ops("matmul_weight_only") == ["Gemm"]
    assert backward_ops("reshape") == ["Reshape"]  # constant target [-1, 2, 6]
    assert backward_ops("concat_one_needed") == ["Slice"]
    assert backward_ops("slice") == ["Pad"]
    assert backward_ops("reducemean_axis1", "static") == ["Mul", "Unsqueeze", "Expand"]
    assert backward_ops("reducesum_batch", "static") == ["Expand"]
    # a symbolic operand dim that may be 1 is decided at run time
    assert "NonZero" in backward_ops("add_maybe_one")


def test_a_product_of_transposed_views_differentiates_their_sources_without_transposes() -> None:
    """MatMul(Transpose(a), Transpose(b)) (attention's heads): each source's gradient is one
    MatMul, the view's Transpose undoing the product's transposed layout; a view that is
    broadcast keeps the generic form (a sum over the broadcast axes)."""
    for case_id, direct in (
        ("matmul_of_views", [True, True]),
        ("matmul_of_broadcast_views", [False, True]),
    ):
        for mode in ("static", "symbolic"):
            built = build(next(c for c in CASES if c.id == case_id), mode)
            made = {o: n for n in built.model.graph.node for o in n.output}
            for x, expected in zip(built.wrt, direct, strict=True):
                grad = made[f"grad.{x}"].input[0]
                assert (made[grad].op_type == "MatMul") == expected, (case_id, mode, x)


def _graph(*inputs: tuple[str, tuple[int | str, ...]]) -> tuple[GraphBuilder, list[str]]:
    b = GraphBuilder("engine_case", float_dtype="float64")
    return b, [b.add_input(name, "float64", dims) for name, dims in inputs]


def _feeds(built: Built, rng: np.random.Generator, **fixed: np.ndarray) -> dict[str, np.ndarray]:
    """Random values for the graph inputs (symbolic dims = SYMBOLS), then dy."""
    feeds = dict(fixed)
    for info in built.model.graph.input[: len(built.inputs)]:
        if info.name not in feeds:
            dims = [d.dim_value or SYMBOLS[d.dim_param] for d in info.type.tensor_type.shape.dim]
            feeds[info.name] = np.asarray(rng.standard_normal(dims))
    feeds["dy"] = np.asarray(rng.standard_normal(forward_shape(built, feeds)))
    return feeds


def test_pruning_skips_unrelated_branches_and_non_wrt_inputs() -> None:
    b, (x, w, u) = _graph(("x", ("N", 4)), ("w", (4,)), ("u", ("N", 4)))
    b.op("Sigmoid", [w])  # feeds nothing the seed depends on
    count = b.op("Cast", [b.op("Size", [x])], to=onnx.TensorProto.DOUBLE)  # integer path
    scaled = b.op("Mul", [b.op("Mul", [x, w]), count])
    y = b.op("Add", [scaled, b.op("Tanh", [u])])  # u is not a wrt: Tanh is never differentiated
    built = attach_backward(b, y, ["x", "w", "u"], ["w"])
    assert [n.op_type for n in built.backward] == ["Mul", "Mul", "ReduceSum"]
    check_both_runtimes(built, _feeds(built, np.random.default_rng(1)))


def test_gradients_accumulate_over_consumers() -> None:
    b, (x,) = _graph(("x", ("N", 3)))
    built = attach_backward(b, b.op("Add", [x, x]), ["x"], ["x"])
    assert [n.op_type for n in built.backward] == ["Add"]
    feeds = _feeds(built, np.random.default_rng(2))
    out = check_both_runtimes(built, feeds)
    np.testing.assert_allclose(out["grad.x"], 2 * feeds["dy"], rtol=1e-12)

    b, (x,) = _graph(("x", ("N", 3)))
    y = b.op("Add", [b.op("Sub", [x, b.op("Neg", [x])]), b.op("Exp", [x])])
    built = attach_backward(b, y, ["x"], ["x"])
    assert [n.op_type for n in built.backward].count("Sum") == 1
    feeds = _feeds(built, np.random.default_rng(3))
    out = check_both_runtimes(built, feeds)
    expected = (2 + np.exp(feeds["x"])) * feeds["dy"]
    np.testing.assert_allclose(out["grad.x"], expected, rtol=1e-12)


def test_a_weight_shared_by_products_sums_its_gradients_through_gemm_c() -> None:
    # an unrolled recurrence: one weight, one product per step
    b, (w, *xs) = _graph(("w", (4, 3)), *((f"x{i}", ("N", 4)) for i in range(3)))
    y = b.op("Sum", [b.op("MatMul", [x, w]) for x in xs])
    built = attach_backward(b, b.op("Tanh", [y]), ["w", *xs], ["w"])
    ops = [n.op_type for n in built.backward]
    assert "Sum" not in ops and ops.count("Gemm") == 3
    assert sorted(len(n.input) for n in built.backward if n.op_type == "Gemm") == [2, 3, 3]
    check_both_runtimes(built, _feeds(built, np.random.default_rng(4)))


def test_lowering_patterns_silu_masked_residual() -> None:
    """What layer lowering emits: silu = x * Sigmoid(x), dropout = h * mask (a float mask
    computed from non-wrt values), a residual Add and a Concat."""
    b, (x, noise) = _graph(("x", ("N", 4)), ("noise", ("N", 4)))
    mask = b.op("Cast", [b.op("Greater", [noise, b.const(0.0)])], to=onnx.TensorProto.DOUBLE)
    silu = b.op("Mul", [x, b.op("Sigmoid", [x])])
    dropped = b.op("Mul", [silu, mask])
    y = b.op("Concat", [b.op("Add", [x, dropped]), silu], axis=1)
    built = attach_backward(b, y, ["x", "noise"], ["x"])
    assert not {"Greater", "Cast"} & {n.op_type for n in built.backward}  # the mask is data
    check_both_runtimes(built, _feeds(built, np.random.default_rng(9)))


def test_disconnected_wrt_gets_zeros() -> None:
    b, (x, v, s) = _graph(("x", ("N", 4)), ("v", (2, 3)), ("s", ("N", 3)))
    built = attach_backward(b, b.op("Tanh", [x]), ["x", "v", "s"], ["x", "v", "s"])
    ops = [n.op_type for n in built.backward]
    assert ops.count("ConstantOfShape") == 2 and ops.count("Shape") == 1  # only s is symbolic
    out = check_both_runtimes(built, _feeds(built, np.random.default_rng(4)))
    assert out["grad.v"].shape == (2, 3) and not out["grad.v"].any()
    assert out["grad.s"].shape == (SYMBOLS["N"], 3) and not out["grad.s"].any()


def test_missing_rule_is_a_clear_error() -> None:
    b, (x,) = _graph(("x", (3,)))
    y = b.op("Floor", [x])
    b.add_input("dy", "float64", [3])
    with pytest.raises(AutodiffError, match="no VJP rule for ai.onnx::Floor"):
        gradients(b, {y: "dy"}, [x])


def _mlp(batch: int | str) -> tuple[GraphBuilder, list[str], str, str]:
    """Gemm -> Relu -> Gemm -> LogSoftmax -> mean negative log-likelihood."""
    b, inputs = _graph(
        ("x", (batch, 6)),
        ("target", (batch, 3)),
        ("W1", (6, 8)),
        ("b1", (8,)),
        ("W2", (8, 3)),
        ("b2", (3,)),
    )
    x, target, w1, b1, w2, b2 = inputs
    hidden = b.op("Relu", [b.op("Gemm", [x, w1, b1])])
    logits = b.op("Gemm", [hidden, w2, b2], hint="logits")
    logp = b.op("LogSoftmax", [logits], axis=-1)
    picked = b.op("ReduceSum", [b.op("Mul", [target, logp]), b.const([1], "int64")], keepdims=0)
    loss = b.op("Neg", [b.op("ReduceMean", [picked], keepdims=0)], hint="loss")
    return b, inputs, logits, loss


def _mlp_feeds(built: Built, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = SYMBOLS["N"]
    target = np.eye(3)[rng.integers(0, 3, n)]
    return _feeds(built, rng, x=rng.standard_normal((n, 6)), target=target)


PARAMS_MLP = ["W1", "b1", "W2", "b2"]


@pytest.mark.parametrize("batch", [SYMBOLS["N"], "N"])
def test_mlp_gradients_match_finite_differences(batch: int | str) -> None:
    b, inputs, _, loss = _mlp(batch)
    built = attach_backward(b, loss, inputs, PARAMS_MLP)
    ops = [n.op_type for n in built.backward]
    assert "Transpose" not in ops
    if isinstance(batch, int):
        assert not {"Shape", "Size"} & set(ops)
    check_both_runtimes(built, _mlp_feeds(built, 5))


def test_mlp_seeded_at_logits_skips_the_loss_nodes() -> None:
    """A seed inside the graph differentiates only what lies before it: seeded at the
    logits, the loss nodes after them emit nothing."""
    b, inputs, logits, _ = _mlp("N")
    built = attach_backward(b, logits, inputs, PARAMS_MLP)
    assert sorted(n.op_type for n in built.backward) == [
        "Cast",
        "Gemm",
        "Gemm",
        "Gemm",
        "Greater",
        "Mul",
        "ReduceSum",
        "ReduceSum",
    ]
    check_both_runtimes(built, _mlp_feeds(built, 6))


def test_dropout_training_mode_uses_the_mask() -> None:
    """A Dropout without a mask output gets one; dx = dy * mask / (1 - ratio)."""
    b, (x,) = _graph(("x", ("N", 64)))
    y = b.op("Dropout", [x, b.const(0.25), b.const(True, "bool")], seed=7)
    node = b.nodes[-1]
    built = attach_backward(b, y, ["x"], ["x"])
    assert len(node.output) == 2
    mask = node.output[1]
    b_model = built.model
    b_model.graph.output.append(
        onnx.helper.make_tensor_value_info(mask, onnx.TensorProto.BOOL, None)
    )
    rng = np.random.default_rng(7)
    feeds = {
        "x": rng.standard_normal((SYMBOLS["N"], 64)),
        "dy": rng.standard_normal((SYMBOLS["N"], 64)),
    }
    run = ort_runner(b_model)
    assert run is not None
    for out in (run(feeds), reference_runner(b_model)(feeds)):
        keep = out[mask]
        assert 0 < keep.sum() < keep.size
        np.testing.assert_allclose(out[y], feeds["x"] * keep / 0.75, rtol=1e-12)
        np.testing.assert_allclose(out["grad.x"], feeds["dy"] * keep / 0.75, rtol=1e-12)


def test_dropout_runtime_ratio_and_training_flag() -> None:
    b, (x, ratio) = _graph(("x", (2, 32)), ("ratio", ()))
    training = b.add_input("training", "bool", [])
    y, mask = b.op_multi("Dropout", [x, ratio, training], 2, seed=3)
    built = attach_backward(b, y, ["x", "ratio", "training"], ["x"])
    built.model.graph.output.append(
        onnx.helper.make_tensor_value_info(mask, onnx.TensorProto.BOOL, None)
    )
    rng = np.random.default_rng(8)
    base = {
        "x": rng.standard_normal((2, 32)),
        "dy": rng.standard_normal((2, 32)),
        "ratio": np.asarray(0.5),
    }
    run = ort_runner(built.model)
    assert run is not None
    for runner in (run, reference_runner(built.model)):
        out = runner(base | {"training": np.asarray(True)})
        np.testing.assert_allclose(out["grad.x"], base["dy"] * out[mask] / 0.5, rtol=1e-12)
        out = runner(base | {"training": np.asarray(False)})
        np.testing.assert_allclose(out["grad.x"], base["dy"], rtol=1e-12)


@pytest.mark.parametrize("case_id", ["layer_norm_last", "layer_norm_all_no_bias"])
def test_layer_norm_float32_rule_reads_the_fused_statistics(case_id: str) -> None:
    """In float32 the rule takes Mean and InvStdDev from the forward node instead of
    recomputing them; its gradients match the float64 (recomputing) rule's."""
    case = next(c for c in CASES if c.id == case_id)
    built64, built32 = build(case, "symbolic"), build(case, "symbolic", "float32")
    forward = next(n for n in built32.model.graph.node if n.op_type == "LayerNormalization")
    assert len([o for o in forward.output if o]) == 3
    means = [[n.op_type for n in b.backward].count("ReduceMean") for b in (built32, built64)]
    assert means == [2, 4]
    feeds = random_feeds(built64, case)
    reference = reference_runner(built64.model)(feeds)
    run32 = ort_runner(built32.model)
    assert run32 is not None
    out32 = run32({k: v.astype(np.float32) for k, v in feeds.items()})
    for x in built64.wrt:
        np.testing.assert_allclose(out32[f"grad.{x}"], reference[f"grad.{x}"], rtol=1e-4, atol=1e-5)
