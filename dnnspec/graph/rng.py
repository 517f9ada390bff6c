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
tensors), and the last axis is combined with the prefix by the bilinear form
A(prefix) * B(col) + C(prefix) + D(col) mod p: two distinct elements then get independent
values whenever their prefix or column hashes are independent, at four full-size integer
ops per field. No shape is computed by Range and Reshape, so runtimes that reason about
symbolic dims (tract, shape inference) see the result has the shape of its input.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from dnnspec.graph.builder import GraphBuilder

P, Q = 4091, 4079
ROUNDS = 2
# round constants (any values in the fields; distinct so rounds differ)
_KEYS = ((1709, 2963), (3251, 557), (2029, 3797), (887, 1423))
_SALT, _COLUMN = (2557, 1861), (1303, 3371)


class HashRandom:
    """A `RandomSource` keyed by the train step's `seed` and `step` inputs (int64 scalars,
    used exactly when below 2^24: 16.7 million steps)."""

    def __init__(self, b: GraphBuilder, seed: str, step: str) -> None:
        seed_x, seed_y = _split(b, seed)
        wraps = b.op("Div", [step, _c(b, P * Q)])  # steps past p * q still change the key
        state = _rounds(b, (b.op("Mod", [b.op("Add", [seed_x, wraps]), _c(b, P)]), seed_y), 1)
        self._key = _absorb(b, _split(b, step), state)

    def uniform_like(self, b: GraphBuilder, like: str, rank: int, salt: int) -> str:
        """Uniform [0, 1) values shaped like `like` (of rank `rank`), a distinct stream per
        `salt`; each element's value depends only on its coordinates and the key."""
        # the salt is a constant: added to the key, it is mixed by the absorbs that follow
        key = _offset(b, self._key, *(k * (salt + 1) for k in _SALT))
        shape = b.op("Shape", [like])
        prefix = key
        for axis in range(rank - 1):
            others = [a for a in range(rank) if a != axis]
            coords = b.op(
                "Unsqueeze", [_coords(b, shape, axis), b.const(others, "int64")], hint="coords"
            )
            prefix = _absorb(b, _split(b, coords), prefix)
        # A, C from the prefix and B, D from the last coordinate (its own stream)
        a = prefix
        c = _rounds(b, a, 1)
        last = _absorb(b, _offset(b, _split(b, _coords(b, shape, rank - 1)), *_COLUMN), key)
        d = _rounds(b, last, 1)
        fields = []
        for i, modulus in enumerate((P, Q)):
            ai, bi, ci, di = (_int32(b, v[i]) for v in (a, last, c, d))
            mixed = b.op("Add", [b.op("Add", [b.op("Mul", [ai, bi]), ci]), di])
            fields.append(b.op("Mod", [mixed, b.const(modulus, "int32")]))
        combined = b.op("Add", [b.op("Mul", [fields[0], b.const(Q, "int32")]), fields[1]])
        u = b.op("Cast", [combined], to=b.float_elem)
        return b.op("Mul", [u, b.const(1.0 / (P * Q))], hint="uniform")


State = tuple[str, str]


def _offset(b: GraphBuilder, state: State, kx: int, ky: int) -> State:
    """The state plus constants: starts a distinct stream."""
    return b.op("Add", [state[0], _c(b, kx % P)]), b.op("Add", [state[1], _c(b, ky % Q)])


def _c(b: GraphBuilder, value: int) -> str:
    return b.const(value, "int64")


def _int32(b: GraphBuilder, value: str) -> str:
    return b.op("Cast", [value], to=TensorProto.INT32)


def _coords(b: GraphBuilder, shape: str, axis: int) -> str:
    """0, 1, ..., dim - 1 along `axis` (int64, rank 1), as a CumSum of ones rather than a
    Range: shape inference then knows its length is the (symbolic) dim, so the gradient of
    the masked value needs no run-time broadcast reduction (which OpenVINO cannot load)."""
    dim = b.op("Slice", [shape, b.const([axis], "int64"), b.const([axis + 1], "int64")])
    one = numpy_helper.from_array(np.ones(1, np.int64))
    ones = b.op("ConstantOfShape", [dim], value=one)
    return b.op("Sub", [b.op("CumSum", [ones, _c(b, 0)]), _c(b, 1)])


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
