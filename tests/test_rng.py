"""The counter-based RNG that dropout draws from: uniform, reproducible from (seed, step),
and independent across steps, salts (layers) and neighbouring elements."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.rng import TableRandom, noise_tables


def test_table_rng_is_uniform_reproducible_and_distinct_per_step_and_salt() -> None:
    b = GraphBuilder("rng")
    b.add_input("seed", "int64", [])
    b.add_input("step", "int64", [])
    b.add_input("x", "float32", ["N", 256])
    rng = TableRandom(b, "seed", "step")
    for salt in (0, 1):
        b.add_output(rng.uniform_like(b, "x", 2, salt), "float32", None)
    session = ort.InferenceSession(
        b.model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = np.zeros((64, 256), np.float32)

    def draw(seed: int, step: int) -> list[np.ndarray]:
        return session.run(None, {"seed": np.array(seed), "step": np.array(step), "x": x})

    a0, a1 = draw(0, 0)
    assert a0.shape == x.shape
    assert a0.min() >= 0.0 and a0.max() < 1.0
    assert abs(a0.mean() - 0.5) < 0.01 and abs(a0.std() - math.sqrt(1 / 12)) < 0.01
    assert abs(np.corrcoef(a0.ravel(), a1.ravel())[0, 1]) < 0.03
    assert np.array_equal(draw(0, 0)[0], a0)
    assert not np.array_equal(draw(0, 1)[0], a0)
    assert not np.array_equal(draw(1, 0)[0], a0)
    assert abs(np.corrcoef(a0.ravel(), draw(0, 1)[0].ravel())[0, 1]) < 0.03
    # neighbouring elements are not correlated
    assert abs(np.corrcoef(a0.ravel()[:-1], a0.ravel()[1:])[0, 1]) < 0.03
    # no two rows or columns of a mask repeat, within a step or across steps
    tall = np.zeros((2048, 256), np.float32)
    steps = [{"seed": np.array(0), "step": np.array(s), "x": tall} for s in (0, 1)]
    rows = np.concatenate([session.run(None, feed)[0] for feed in steps])
    assert len(np.unique(rows, axis=0)) == len(rows)
    assert len(np.unique(rows.T, axis=0)) == rows.shape[1]


@pytest.mark.parametrize("dims", [(33, 300), (33, 7, 300)], ids=["matrix", "rank 3"])
def test_table_rng_keeps_every_integer_below_2_pow_24_so_every_runtime_is_exact(
    dims: tuple[int, ...],
) -> None:
    # OpenVINO computes integer Mod/Div in float32 and int64 as int32: beyond 2^24 runtimes
    # would disagree, so every intermediate integer of the key must stay below it, and the
    # float32 terms and sums of the last step must be multiples of 2^-12 below 2^12, which
    # float32 holds exactly (so any order of the additions gives the same values)
    b = GraphBuilder("rng")
    b.add_input("seed", "int64", [])
    b.add_input("step", "int64", [])
    b.add_input("x", "float32", ["N", *dims[1:]])
    uniform = TableRandom(b, "seed", "step").uniform_like(b, "x", len(dims), 5)
    b.add_output(uniform, "float32", None)
    model = b.model()
    ints = [
        node.output[0]
        for node in model.graph.node
        if node.op_type in ("Add", "Mul", "Mod", "Div", "Range", "Gemm")
    ]
    for name in ints:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros(dims, np.float32)
    for seed, step in ((0, 0), (2**24 - 1, 2**24 - 1), (123456, 98765)):
        values = session.run(None, {"seed": np.array(seed), "step": np.array(step), "x": x})
        for name, value in zip(ints, values[1:], strict=True):
            assert value.min() >= 0 and value.max() < 2**24, name
            if value.dtype.kind == "f":
                assert value.max() < 2**12, name
                assert np.array_equal(value * 4096, np.floor(value * 4096)), name
        # the values are multiples of 2^-12 in [0, 1), spread evenly
        assert np.array_equal(values[0] * 4096, np.floor(values[0] * 4096))
        counts = np.bincount((values[0] * 32).astype(np.int64).ravel(), minlength=32)
        assert counts.size == 32 and counts.min() > 0.8 * counts.mean()


def test_the_noise_tables_are_the_same_on_every_machine_and_numpy_version() -> None:
    # the masks, and so bit-identical resume, depend on them: a change here changes every
    # dropout run (the raw PCG64 stream is stable across NumPy versions)
    tables = noise_tables()
    assert tables.shape == (4, 65536) and tables.dtype == np.float32
    assert tables[0].max() < 4091 and np.array_equal(tables[0], np.floor(tables[0]))
    digest = hashlib.sha256(tables.tobytes()).hexdigest()
    assert digest == "b0974ba14957fe09eab07d356c283fef2c0b38bde0ee97be3245a504310cc0fc"


@pytest.mark.parametrize(
    ("dims", "digest"),
    [
        ((64, 256), "f54fa06c330793a64e52678ef020ec613735bdd70edf88644025486966453f3e"),
        ((5, 3, 40), "552c55812cb84624407da0e888c6d6b2306fdf5e8103b9f420d90f80cce64c66"),
    ],
    ids=["matrix", "rank 3"],
)
def test_the_draws_are_those_of_the_previous_release(dims: tuple[int, ...], digest: str) -> None:
    # a checkpoint of an earlier run resumes to the bit only if every step draws the same
    # masks: a faster formulation of the terms (the matrix's one Gemm) must keep them
    b = GraphBuilder("rng")
    b.add_input("seed", "int64", [])
    b.add_input("step", "int64", [])
    b.add_input("x", "float32", ["N", *dims[1:]])
    b.add_output(TableRandom(b, "seed", "step").uniform_like(b, "x", len(dims), 3), "float32", None)
    model = b.model().SerializeToString()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    seen = hashlib.sha256()
    for seed, step in ((0, 0), (7, 12345), (2**24 - 1, 2**24 - 1)):
        feed = {"seed": np.array(seed), "step": np.array(step), "x": np.zeros(dims, np.float32)}
        seen.update(session.run(None, feed)[0].tobytes())
    assert seen.hexdigest() == digest
