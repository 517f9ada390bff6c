"""Counter-based random numbers inside the graph, reproducible from (seed, step, salt).

ONNX's random ops take a fixed seed attribute, so a resumed run could not replay them.
Instead each element's value is a function of its coordinates and a per-(seed, step,
salt) key, computed with integer Add, Mul and Mod whose operands stay below 2^24 and
float32 arithmetic on whole multiples of 2^-12. Runtimes differ in how they compute
integers beyond that: OpenVINO's CPU plugin runs int64 as int32, computes integer Mod and
Div in float32 and saturates uint32 constants at 2^31 - 1, so a hash in wrapping 32-bit
arithmetic (murmur3) gave other masks there. Below 2^24 every runtime is exact, so the
same step gives the same masks in all of them.

The key is a pair in Z_p x Z_q (p = 4091, q = 4079, primes with p * q < 2^24), mixed by
Feistel rounds: x += y (y + k) mod p, y += x (x + k') mod q, a permutation of the pairs.
An element's value is the fractional part of A(prefix) * B(col) + C(prefix) + D(col),
where A is a whole number below p and B, C and D are whole numbers below p times 2^-12:
the low 12 bits of a whole number below 2^24, as a fraction, so the full-size float32
ops are exact in every runtime, in any order or with a fused multiply-add; for a matrix
the products and sums are one Gemm, [A, C] @ [B; 1] + D, exact for the same reason and
cheaper than a Mul and two Adds over every element (docs/performance.md). B and D, and
for a matrix A and C, are looked up in four fixed tables of random whole numbers below p
at the coordinate plus a shift drawn from the key: a few small nodes per value instead
of hashing every coordinate (about 40 nodes on the rows and columns; docs/performance.md).
For rank 3 and above the leading coordinates are absorbed one axis at a time into the key
by the rounds, on the broadcast prefix. Two elements then get independent values whenever
their prefix or column terms are independent. No shape is computed by Range and Reshape,
so runtimes that reason about symbolic dims (tract, shape inference) see the result has
the shape of its input. Coordinates must be below 2^23; the table terms repeat every
65,536 along an axis.
"""

from __future__ import annotations

import functools

import numpy as np
from onnx import TensorProto, numpy_helper

from dnnspec.graph.builder import GraphBuilder

P, Q = 4091, 4079
ROUNDS = 2
# round constants (any values in the fields; distinct so rounds differ)
_KEYS = ((1709, 2963), (3251, 557), (2029, 3797), (887, 1423))
_SALT = (2557, 1861)
TABLE_SIZE = 2**16
FIRST_ROW = "shard/first_row"
"""The input of a data-parallel worker's train step: the global batch position of its
row 0, where its rows' draws start (`TableRandom`'s `first_row`)."""


@functools.cache
def noise_tables() -> np.ndarray:
    """[4, TABLE_SIZE] float32: random whole numbers below P for A, B, C, D; B, C and D
    scaled by 2^-12 (exact), so that A * B + C + D lands in [0, 2^12) with the value in
    its fraction. Drawn from the raw PCG64 stream, which NumPy keeps stable across
    versions (its distribution methods it does not), so a resumed run gets the same masks
    after an upgrade."""
    raw = np.random.PCG64(P * Q).random_raw(4 * TABLE_SIZE)
    tables = (raw % P).astype(np.float32).reshape(4, TABLE_SIZE)
    tables[1:] *= np.float32(2.0**-12)
    return tables


State = tuple[str, str]


class TableRandom:
    """A `RandomSource` that looks its values up in `noise_tables` at each coordinate plus
    a shift drawn from a key mixed from the train step's `seed` and `step` inputs (int64
    scalars, used exactly when below 2^24: 16.7 million steps) and the salt. `first_row`
    (an int64 scalar input) shifts the row coordinates: a data-parallel worker's rows then
    draw the values of their positions in the global batch."""

    def __init__(self, b: GraphBuilder, seed: str, step: str, first_row: str | None = None) -> None:
        self._first = first_row
        seed_x, seed_y = _split(b, seed)
        wraps = b.op("Div", [step, _c(b, P * Q)])  # steps past p * q still change the key
        state = _rounds(b, (b.op("Mod", [b.op("Add", [seed_x, wraps]), _c(b, P)]), seed_y), 1)
        self._key = _absorb(b, _split(b, step), state)

    def uniform_like(self, b: GraphBuilder, like: str, rank: int, salt: int) -> str:
        """Uniform values in [0, 1) in steps of 2^-12, shaped like `like` (of rank `rank`),
        a distinct stream per `salt`; each element's value depends only on its
        coordinates and the key."""
        # the salt is a constant: added to the key, it is mixed by the round that follows
        salt_x, salt_y = (_c(b, k * (salt + 1) % m) for k, m in zip(_SALT, (P, Q), strict=True))
        x, y = _add(b, self._key, (salt_x, salt_y))
        mixed_x, mixed_y = _rounds(b, (x, y), 1)
        shape = b.op("Shape", [like])
        col = _coords(b, shape, rank - 1, self._first)
        d = _lookup(b, 3, col, y)
        if rank == 2:
            # [A, C] @ [B; 1] + D: one Gemm for the Mul and two Adds over the matrix
            row = b.op("Unsqueeze", [_coords(b, shape, 0, self._first), b.const([1], "int64")])
            a, c = _lookup(b, 0, row, mixed_y), _lookup(b, 2, row, x)
            index = b.op("Mod", [b.op("Add", [col, mixed_x]), _c(b, TABLE_SIZE)])
            ones = np.stack([noise_tables()[1], np.ones(TABLE_SIZE, np.float32)])
            bb = b.op("Gather", [b.const(ones, "float32"), index], axis=1)
            terms = b.op("Concat", [a, c], axis=1)
            total = b.op("Gemm", [terms, bb, d], hint="scaled")
        else:
            bb = _lookup(b, 1, col, mixed_x)
            a, c = _prefix_terms(b, shape, rank, (x, y), self._first)
            total = b.op("Add", [b.op("Add", [b.op("Mul", [a, bb]), c]), d], hint="scaled")
        u = b.op("Sub", [total, b.op("Floor", [total])], hint="uniform")
        f32 = TensorProto.FLOAT
        return u if b.float_elem == f32 else b.op("Cast", [u], to=b.float_elem)


def _lookup(b: GraphBuilder, table: int, coords: str, shift: str) -> str:
    """Table `table` at (coords + shift) mod TABLE_SIZE: float32 shaped like `coords`."""
    index = b.op("Mod", [b.op("Add", [coords, shift]), _c(b, TABLE_SIZE)])
    return b.op("Gather", [b.const(noise_tables()[table], "float32"), index])


def _prefix_terms(
    b: GraphBuilder, shape: str, rank: int, key: State, first: str | None
) -> tuple[str, str]:
    """A and C (C scaled by 2^-12) from the leading axes, absorbed one axis at a time on
    the broadcast prefix."""
    prefix = key
    for axis in range(rank - 1):
        others = [a for a in range(rank) if a != axis]
        coords = b.op(
            "Unsqueeze", [_coords(b, shape, axis, first), b.const(others, "int64")], hint="coords"
        )
        prefix = _absorb(b, _split(b, coords), prefix)
    f32 = TensorProto.FLOAT
    a = b.op("Cast", [prefix[0]], to=f32)
    c = b.op("Cast", [_rounds(b, prefix, 1)[0]], to=f32)
    return a, b.op("Mul", [c, b.const(2.0**-12, "float32")])


def _c(b: GraphBuilder, value: int) -> str:
    return b.const(value, "int64")


def _coords(b: GraphBuilder, shape: str, axis: int, first: str | None = None) -> str:
    """1, 2, ..., dim along `axis` (int64, rank 1), as a CumSum of ones rather than a
    Range: shape inference then knows its length is the (symbolic) dim, so the gradient of
    the masked value needs no run-time broadcast reduction (which OpenVINO cannot load).
    Rows (axis 0) start after `first` rows when it is given."""
    dim = b.op("Slice", [shape, b.const([axis], "int64"), b.const([axis + 1], "int64")])
    one = numpy_helper.from_array(np.ones(1, np.int64))
    coords = b.op("CumSum", [b.op("ConstantOfShape", [dim], value=one), _c(b, 0)])
    return b.op("Add", [coords, first]) if first is not None and axis == 0 else coords


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


def _add(b: GraphBuilder, state: State, value: State) -> State:
    """((x + v0) mod p, (y + v1) mod q): the halves reduced, as the rounds need them to
    keep their products below 2^24."""
    x = b.op("Mod", [b.op("Add", [state[0], value[0]]), _c(b, P)])
    y = b.op("Mod", [b.op("Add", [state[1], value[1]]), _c(b, Q)])
    return x, y


def _absorb(b: GraphBuilder, value: State, state: State) -> State:
    """Mix a split value into the state: `_add`, then the rounds."""
    return _rounds(b, _add(b, state, value))
