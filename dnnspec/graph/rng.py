"""Counter-based random numbers inside the graph, reproducible from (seed, step, salt).

ONNX's random ops take a fixed seed attribute, so a resumed run could not replay them.
Instead each element's index is hashed with a per-(seed, step, salt) key using the
murmur3 32-bit finaliser in uint32 arithmetic (Mul wraps, BitShift, BitwiseXor), all
standard ops: a run is deterministic and the step graph runs in any ONNX runtime.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from dnnspec.graph.builder import GraphBuilder

_GOLDEN = 0x9E3779B1
_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35


def _u32(b: GraphBuilder, value: int) -> str:
    return b.const(np.uint32(value & 0xFFFFFFFF), np.uint32, hint="u32")


def _fmix(b: GraphBuilder, x: str) -> str:
    """murmur3's fmix32: x ^= x >> 16; x *= M1; x ^= x >> 13; x *= M2; x ^= x >> 16."""
    for shift, mult in ((16, _M1), (13, _M2), (16, None)):
        x = b.op("BitwiseXor", [x, b.op("BitShift", [x, _u32(b, shift)], direction="RIGHT")])
        if mult is not None:
            x = b.op("Mul", [x, _u32(b, mult)])
    return x


class HashRandom:
    """A `RandomSource` keyed by the train step's `seed` and `step` inputs (int64 scalars)."""

    def __init__(self, b: GraphBuilder, seed: str, step: str) -> None:
        mixed = b.op("Add", [b.op("Mul", [seed, b.const(_GOLDEN, "int64")]), step])
        self._key = _fmix(b, b.op("Cast", [mixed], to=TensorProto.UINT32))

    def _hash_like(self, b: GraphBuilder, like: str, salt: int) -> tuple[str, str]:
        """One uint32 hash per element of `like` (flat) and `like`'s shape."""
        shape = b.op("Shape", [like])
        count = b.op("ReduceProd", [shape], keepdims=0)
        index = b.op("Range", [b.const(0, "int64"), count, b.const(1, "int64")])
        salted = b.op("BitwiseXor", [self._key, _u32(b, (salt + 1) * _GOLDEN)])
        x = _fmix(b, b.op("Add", [b.op("Cast", [index], to=TensorProto.UINT32), _fmix(b, salted)]))
        return x, shape

    def uniform_like(self, b: GraphBuilder, like: str, salt: int) -> str:
        """Uniform [0, 1) values shaped like `like`, a distinct stream per `salt`: the top
        24 bits of each hash, scaled."""
        x, shape = self._hash_like(b, like, salt)
        top24 = b.op("BitShift", [x, _u32(b, 8)], direction="RIGHT")
        u = b.op("Mul", [b.op("Cast", [top24], to=b.float_elem), b.const(2.0**-24)])
        return b.op("Reshape", [u, shape], hint="uniform")

    def keep_like(self, b: GraphBuilder, like: str, salt: int, p: float) -> str:
        """`uniform_like(...) >= p` without the float uniforms: with p rounded to the graph's
        float type, top24 * 2^-24 >= p holds exactly when top24 >= ceil(p * 2^24), that is
        when the hash is at least that << 8. A shift, a cast and a multiply fewer per
        element (~20% of the mask's time, measured in docs/architecture.md)."""
        threshold = math.ceil(float(np.asarray(p, b.float_dtype)) * 2.0**24)
        if threshold >= 1 << 24:  # p rounds to 1: nothing is kept, as uniforms are < 1
            return b.op("GreaterOrEqual", [self.uniform_like(b, like, salt), b.const(p)])
        x, shape = self._hash_like(b, like, salt)
        keep = b.op("GreaterOrEqual", [x, _u32(b, threshold << 8)])
        return b.op("Reshape", [keep, shape], hint="keep")
