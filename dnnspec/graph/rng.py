"""Counter-based random numbers inside the graph, reproducible from (seed, step, salt).

ONNX's random ops take a fixed seed attribute, so a resumed run could not replay them.
Instead each element's coordinates are hashed with a per-(seed, step, salt) key, using
only integer Add, Mul and Mod whose operands stay below 2^24. Runtimes differ in how
they compute integers beyond that: OpenVINO's CPU plugin runs int64 as int32, computes
integer Mod and Div in float32 and saturates uint32 constants at 2^31 - 1, so a hash in
wrapping 32-bit arithmetic (murmur3) gave other masks there. Below 2^24 every runtime is
exact, so the same step gives the same masks in all of them.

The state is a pair in Z_p x Z_q (p = 4091, q = 4079, primes with p * q < 2^24); a round
is two Feistel half-rounds x += y (y + k) mod p, y += x (x + k') mod q, a permutation of
the pairs. Coordinates are absorbed one axis at a time on the broadcast prefix (small
tensors; a matrix's rows and columns as one vector), and the last axis is combined with
the prefix by the bilinear form A(prefix) * B(col) + C(prefix) + D(col), whose low 12
bits are the value: two distinct elements then get independent values whenever their
prefix or column hashes are independent. That sum stays below 2^24, so the six
full-size ops run in float32, exact in every runtime (integer Mod on a full-size tensor
cost ten times a float op in onnxruntime). No shape is computed by Range and Reshape, so
runtimes that reason about symbolic dims (tract, shape inference) see the result has the
shape of its input. Each coordinate must be below 2^23.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from dnnspec.graph.builder import GraphBuilder

P, Q = 4091, 4079
ROUNDS = 2
# round constants (any values in the fields; distinct so rounds differ)
_KEYS = ((1709, 2963), (3251, 557), (2029, 3797), (887, 1423))
_SALT = (2557, 1861)
_COLUMNS = 2**23  # added to last-axis coordinates: a stream apart from the leading axes


class HashRandom:
    """A `RandomSource` keyed by the train step's `seed` and `step` inputs (int64 scalars,
    used exactly when below 2^24: 16.7 million steps)."""

    def __init__(self, b: GraphBuilder, seed: str, step: str) -> None:
        seed_x, seed_y = _split(b, seed)
        wraps = b.op("Div", [step, _c(b, P * Q)])  # steps past p * q still change the key
        state = _rounds(b, (b.op("Mod", [b.op("Add", [seed_x, wraps]), _c(b, P)]), seed_y), 1)
        self._key = _absorb(b, _split(b, step), state)

    def uniform_like(self, b: GraphBuilder, like: str, rank: int, salt: int) -> str:
        """Uniform values in [0, 1) in steps of 2^-12, shaped like `like` (of rank `rank`),
        a distinct stream per `salt`; each element's value depends only on its
        coordinates and the key."""
        # the salt is a constant: added to the key, it is mixed by the absorbs that follow
        key = _offset(b, self._key, *(k * (salt + 1) for k in _SALT))
        shape = b.op("Shape", [like])
        terms = _stacked_terms(b, shape, key) if rank == 2 else _axis_terms(b, shape, rank, key)
        # A B + C + D < 4091^2 + 2 * 4091 < 2^24: exact in float32, whatever the order of
        # the additions or a fused multiply-add; its low 12 bits are the value
        f32 = TensorProto.FLOAT
        a, bb, c, d = (b.op("Cast", [v], to=f32) for v in terms)
        mixed = b.op("Add", [b.op("Add", [b.op("Mul", [a, bb]), c]), d])
        scaled = b.op("Mul", [mixed, b.const(2.0**-12, "float32")], hint="scaled")
        u = b.op("Sub", [scaled, b.op("Floor", [scaled])], hint="uniform")
        return u if b.float_elem == f32 else b.op("Cast", [u], to=b.float_elem)


State = tuple[str, str]
Terms = tuple[str, str, str, str]  # A, B, C, D: the first halves of four states


def _stacked_terms(b: GraphBuilder, shape: str, key: State) -> Terms:
    """A, B, C, D of a matrix [rows, cols]: the row and column coordinates are absorbed as
    one vector, the columns offset by 2^23 so the two streams differ (fewer, larger
    nodes: a node costs about as much for 64 values as for one)."""
    rows, cols = _coords(b, shape, 0), _coords(b, shape, 1)
    both = b.op("Concat", [rows, b.op("Add", [cols, _c(b, _COLUMNS)])], axis=0)
    first = _absorb(b, _split(b, both), key)
    second = _rounds(b, first, 1)
    # gathered back by index rather than sliced: shape inference then knows the parts are
    # [rows] and [cols], so the gradient of the masked value needs no run-time reduction
    row_index = b.op("Sub", [rows, _c(b, 1)])
    n = b.op("Slice", [shape, b.const([0], "int64"), b.const([1], "int64")])
    col_index = b.op("Add", [cols, b.op("Sub", [n, _c(b, 1)])])
    column = b.const([1], "int64")
    a, c = (b.op("Unsqueeze", [b.op("Gather", [v[0], row_index]), column]) for v in (first, second))
    bb, d = (b.op("Gather", [v[0], col_index]) for v in (first, second))
    return a, bb, c, d


def _axis_terms(b: GraphBuilder, shape: str, rank: int, key: State) -> Terms:
    """A, C from the leading axes (absorbed one axis at a time on the broadcast prefix)
    and B, D from the last axis (its own stream)."""
    prefix = key
    for axis in range(rank - 1):
        others = [a for a in range(rank) if a != axis]
        coords = b.op(
            "Unsqueeze", [_coords(b, shape, axis), b.const(others, "int64")], hint="coords"
        )
        prefix = _absorb(b, _split(b, coords), prefix)
    last = _absorb(b, _split(b, b.op("Add", [_coords(b, shape, rank - 1), _c(b, _COLUMNS)])), key)
    return prefix[0], last[0], _rounds(b, prefix, 1)[0], _rounds(b, last, 1)[0]


def _offset(b: GraphBuilder, state: State, kx: int, ky: int) -> State:
    """The state plus constants: starts a distinct stream."""
    return b.op("Add", [state[0], _c(b, kx % P)]), b.op("Add", [state[1], _c(b, ky % Q)])


def _c(b: GraphBuilder, value: int) -> str:
    return b.const(value, "int64")


def _coords(b: GraphBuilder, shape: str, axis: int) -> str:
    """1, 2, ..., dim along `axis` (int64, rank 1), as a CumSum of ones rather than a
    Range: shape inference then knows its length is the (symbolic) dim, so the gradient of
    the masked value needs no run-time broadcast reduction (which OpenVINO cannot load)."""
    dim = b.op("Slice", [shape, b.const([axis], "int64"), b.const([axis + 1], "int64")])
    one = numpy_helper.from_array(np.ones(1, np.int64))
    return b.op("CumSum", [b.op("ConstantOfShape", [dim], value=one), _c(b, 0)])


def _split(b: GraphBuilder, value: str) -> State:
    """A non-negative integer below p * q as a pair (value mod p, value div p mod q)."""
    return (
        b.op("Mod", [value, _c(b, P)]),
        b.op("Mod", [b.op("Div", [value, _c(b, P)]), _c(b, Q)]),
    )


def _half_round(b: GraphBuilder, x: str, y: str, key: int, modulus: int) -> str:
    """x + y * ((y + key) mod m) mod m, the Feistel half-round: invertible in x for a fixed
    y, nonlinear in y. Written with y and y + key (not y * y) so the product stays below
    2^24 and no runtime rewrites it as an integer Square (tract has none for int64)."""
    m = _c(b, modulus)
    shifted = b.op("Mod", [b.op("Add", [y, _c(b, key)]), m])
    return b.op("Mod", [b.op("Add", [x, b.op("Mul", [y, shifted])]), m])


def _rounds(b: GraphBuilder, state: State, count: int = ROUNDS) -> State:
    x, y = state
    for r in range(count):
        kx, ky = _KEYS[r % len(_KEYS)]
        x = _half_round(b, x, y, kx, P)
        y = _half_round(b, y, x, ky, Q)
    return x, y


def _absorb(b: GraphBuilder, value: State, state: State) -> State:
    """Mix a split value into the state: ((x + v0) mod p, (y + v1) mod q), then the rounds
    (which need reduced halves to keep their products below 2^24)."""
    x = b.op("Mod", [b.op("Add", [state[0], value[0]]), _c(b, P)])
    y = b.op("Mod", [b.op("Add", [state[1], value[1]]), _c(b, Q)])
    return _rounds(b, (x, y))
