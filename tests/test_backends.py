"""Every registered backend keeps the contract the Trainer relies on (`runtime/backend.py`):
it opens model.onnx and predicts what onnx.reference computes; K steps in one loop call
give to the bit what single steps give (resume and divergence replay depend on it); a call
reads one buffer set, writes the next and leaves the one it read intact (the divergence
rollback); a call over its own gathered block equals one over the bound dataset (data too
large for the device); evaluation reads a set's weights or weights from the host.

A new backend is one `BACKENDS` entry and one `BACKEND_CASES` row
(`test_every_backend_has_a_case`); its tests skip where its runtime is not installed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from conftest import SPECS, reference_runner

from dnnspec.assemble.steps import build_inference
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.backend import BACKENDS, SETS, BackendDef, TrainState, load_backend
from dnnspec.runtime.prepare import Prepared, prepare
from dnnspec.runtime.trainer import initial_values, train_graphs


@dataclass(frozen=True)
class BackendCase:
    tolerance: float
    """The largest difference from onnx.reference allowed in model.onnx's outputs."""


BACKEND_CASES = {
    "onnxruntime": BackendCase(tolerance=1e-6),
    "openvino": BackendCase(tolerance=1e-5),
    # bf16 arithmetic: about 3 significant digits
    "openvino_bf16": BackendCase(tolerance=1.0),
}

K, B = 5, 16


def test_every_backend_has_a_case() -> None:
    assert sorted(BACKENDS) == sorted(BACKEND_CASES)


@pytest.fixture(scope="module")
def digits() -> Prepared:
    """The digits MLP (dropout, Adam, a schedule): the step counter and seed matter."""
    return prepare(load_spec(SPECS / "digits_mlp.dnn", {"hidden": "16"}), epochs=1)


def installed(name: str) -> str:
    if not BACKENDS.get(name).installed():
        pytest.skip(f"{BACKENDS.get(name).requires} is not installed")
    return name


def fresh(name: str, prep: Prepared) -> TrainState:
    program = prep.program
    return load_backend(installed(name)).train(
        train_graphs(program, 0), "cpu", initial_values(program, 0)
    )


def dataset(prep: Prepared) -> dict[str, np.ndarray]:
    """The model input and each target, by the names the step graph feeds them under."""
    data = prep.train_data
    return {"x": data.x, **{out.target: data.y for out in prep.program.outputs}}


ROWS = np.arange(K * B, dtype=np.int64).reshape(K, B)[::-1].copy()


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_backend_predicts_what_onnx_reference_computes(name: str, digits: Prepared) -> None:
    program = digits.program
    model = build_inference(
        digits.typed, program.model_slots(), initial_values(program, 0), program.metadata
    )
    feeds = {"x": digits.val_data.x[:32]}
    graph = load_backend(installed(name)).open(model, "cpu", threads=1)
    want = reference_runner(model)(feeds)
    got = dict(zip([o.name for o in model.graph.output], graph.run(None, feeds), strict=True))
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert np.abs(got[key] - value).max() <= BACKEND_CASES[name].tolerance
    (only,) = graph.run([model.graph.output[0].name], feeds)
    assert np.array_equal(only, got[model.graph.output[0].name])


@pytest.mark.parametrize("name", list(BACKENDS))
def test_k_steps_in_one_call_give_to_the_bit_what_single_steps_give(
    name: str, digits: Prepared
) -> None:
    looped, stepped = fresh(name, digits), fresh(name, digits)
    arrays = dataset(digits)
    looped.bind_data(arrays)
    losses, *_ = looped.loop(0, 3, ROWS)
    singles = [
        stepped.step(i % SETS, 3 + i, {k: v[row] for k, v in arrays.items()})[0]
        for i, row in enumerate(ROWS)
    ]
    assert losses.tolist() == [float(loss) for loss in singles]
    carried = list(digits.program.carried())
    a, b = looped.read(1, carried), stepped.read(K % SETS, carried)
    assert all(np.array_equal(a[k], b[k]) for k in carried)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_call_writes_the_next_set_and_leaves_the_one_it_read_intact(
    name: str, digits: Prepared
) -> None:
    state = fresh(name, digits)
    state.bind_data(dataset(digits))
    carried = list(digits.program.carried())
    start = state.read(0, carried)
    state.loop(0, 0, ROWS)
    after = [state.read(i, carried) for i in range(SETS)]
    weight = digits.program.slots[0].name
    assert not np.array_equal(after[1][weight], start[weight])
    for untouched in (after[0], after[2]):
        assert all(np.array_equal(untouched[k], start[k]) for k in carried)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_call_over_its_own_gathered_block_equals_one_over_the_bound_data(
    name: str, digits: Prepared
) -> None:
    bound, gathered = fresh(name, digits), fresh(name, digits)
    arrays = dataset(digits)
    bound.bind_data(arrays)
    flat = ROWS.reshape(-1)
    block = {k: np.ascontiguousarray(v[flat]) for k, v in arrays.items()}
    order = np.arange(flat.size, dtype=np.int64).reshape(ROWS.shape)
    a, b = bound.loop(0, 0, ROWS), gathered.loop(0, 0, order, block)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    carried = list(digits.program.carried())
    assert all(np.array_equal(bound.read(1, [k])[k], gathered.read(1, [k])[k]) for k in carried)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_evaluation_reads_a_sets_weights_or_weights_from_the_host(
    name: str, digits: Prepared
) -> None:
    state = fresh(name, digits)
    state.bind_data(dataset(digits))
    state.loop(0, 0, ROWS)
    data = digits.val_data
    feeds = {"x": data.x[:64], **{out.target: data.y[:64] for out in digits.program.outputs}}
    weights = state.read(1, [s.name for s in digits.program.model_slots()])
    trained = state.evaluator(1)(feeds)
    given = state.evaluator(0, weights)(feeds)
    initial = state.evaluator(0)(feeds)
    assert trained.keys() == given.keys() and "loss" in trained
    assert all(np.array_equal(trained[k], given[k]) for k in trained)
    assert trained["loss"] != initial["loss"]


@pytest.mark.parametrize("name", list(BACKENDS))
def test_writing_a_tensor_replaces_it_in_every_set(name: str, digits: Prepared) -> None:
    state = fresh(name, digits)
    weight = digits.program.slots[0].name
    value = np.full(digits.program.slots[0].spec.shape, 0.25, np.float64)
    state.write({weight: value})
    for i in range(SETS):
        got = state.read(i, [weight])[weight]
        assert got.dtype == np.dtype(digits.program.float_dtype)
        assert np.array_equal(got, value)


def test_an_unknown_backend_is_a_clear_error_with_a_suggestion() -> None:
    with pytest.raises(DiagnosticError) as caught:
        load_backend("onnxruntim")
    assert "unknown backend 'onnxruntim'" in str(caught.value)
    assert "onnxruntime" in (caught.value.diagnostics[0].help or "")


def test_a_backend_whose_runtime_is_not_installed_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(BackendDef, "installed", lambda self: False)
    with pytest.raises(DiagnosticError, match="needs the Python package 'onnxruntime'"):
        load_backend("onnxruntime")
