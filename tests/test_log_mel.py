"""`log_mel`: the spectrogram front end against a NumPy reference (periodic Hann window,
|DFT|^2, ONNX's MelWeightMatrix filterbank, log(x + eps)), in onnxruntime and
onnx.reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from conftest import ort_runner, reference_runner
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec.errors import Span
from dnnspec.graph.builder import GraphBuilder
from dnnspec.ir import Node
from dnnspec.layers.base import LAYERS, LowerCtx, ShapeError, TensorType
from dnnspec.layers.spectral import hann, mel_matrix

SPAN = Span(file="t.dnn", line=1, col=1, end_line=1, end_col=2)


def bound(**args: Any) -> dict[str, Any]:
    keyword = [(k, v, SPAN) for k, v in args.items()]
    return LAYERS.get("log_mel").signature.bind("log_mel", [], keyword, SPAN)


def log_mel_model(samples: int, dtype: str, **args: Any) -> onnx.ModelProto:
    """A graph of one log_mel node on waveforms [N, samples]."""
    definition, bound_args = LAYERS.get("log_mel"), bound(**args)
    x = TensorType(dtype, ("N", samples))
    out = definition.infer([x], bound_args)
    b = GraphBuilder("t", dtype)
    b.add_input("wave", dtype, x.dims)
    node = Node(name="mel", layer="log_mel", inputs=("wave",), args=bound_args, span=SPAN)
    result = definition.lower(LowerCtx(b, "eval", {"wave": x, "mel": out}), node, ["wave"], {})
    b.add_output(b.rename(result, "features"), dtype, out.dims)
    return b.model()


def reference(wave: np.ndarray, n_fft: int, hop: int, mels: int, rate: int) -> np.ndarray:
    """float64 NumPy: frames without centring, periodic Hann, |rfft|^2, the filterbank
    onnx.reference's MelWeightMatrix computes, log(. + 1e-6)."""
    frames = 1 + (wave.shape[1] - n_fft) // hop
    starts = np.arange(frames) * hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    framed = wave[:, starts[:, None] + np.arange(n_fft)] * window
    power = np.abs(np.fft.rfft(framed, axis=-1)) ** 2
    return np.log(power @ onnx_mel_matrix(mels, n_fft, rate, 0.0, rate / 2) + 1e-6)


def onnx_mel_matrix(mels: int, n_fft: int, rate: int, low: float, high: float) -> np.ndarray:
    """ONNX's MelWeightMatrix as onnx.reference evaluates it (float64)."""
    consts = [
        numpy_helper.from_array(np.array(v, dtype), name)
        for name, v, dtype in (
            ("mels", mels, np.int64),
            ("n_fft", n_fft, np.int64),
            ("rate", rate, np.int64),
            ("low", low, np.float32),
            ("high", high, np.float32),
        )
    ]
    node = helper.make_node(
        "MelWeightMatrix",
        [c.name for c in consts],
        ["w"],
        output_datatype=onnx.TensorProto.DOUBLE,
    )
    out = helper.make_tensor_value_info("w", onnx.TensorProto.DOUBLE, None)
    graph = helper.make_graph([node], "mel", [], [out], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    outputs: Any = ReferenceEvaluator(model).run(None, {})
    return np.asarray(outputs[0])


@pytest.mark.parametrize(
    ("mels", "n_fft", "rate", "high"),
    [
        (40, 400, 16000, 8000.0),
        (64, 512, 22050, 11025.0),
        (3, 8, 800, 400.0),
        (10, 256, 8000, 3000.0),
    ],
)
def test_the_filterbank_is_onnx_mel_weight_matrix(
    mels: int, n_fft: int, rate: int, high: float
) -> None:
    np.testing.assert_array_equal(
        mel_matrix(mels, n_fft, rate, 0.0, high), onnx_mel_matrix(mels, n_fft, rate, 0.0, high)
    )


def test_the_window_is_onnx_periodic_hann() -> None:
    size = numpy_helper.from_array(np.array(400, np.int64), "size")
    node = helper.make_node("HannWindow", ["size"], ["w"], output_datatype=11, periodic=1)
    out = helper.make_tensor_value_info("w", onnx.TensorProto.DOUBLE, None)
    graph = helper.make_graph([node], "hann", [], [out], [size])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    outputs: Any = ReferenceEvaluator(model).run(None, {})
    np.testing.assert_allclose(hann(400), outputs[0], atol=1e-15)


def test_log_mel_of_one_second_at_16_khz_matches_numpy_in_both_runtimes() -> None:
    wave = np.random.default_rng(0).normal(0.0, 0.1, (3, 16000))
    expected = reference(wave, 400, 160, 40, 16000)
    assert expected.shape == (3, 98, 40)
    # float64 in onnx.reference (onnxruntime has no float64 Conv kernel)
    exact = reference_runner(log_mel_model(16000, "float64"))({"wave": wave})["features"]
    np.testing.assert_allclose(exact, expected, atol=1e-9)
    single = log_mel_model(16000, "float32")
    ort_out = ort_runner(single)
    assert ort_out is not None
    got = ort_out({"wave": wave.astype(np.float32)})["features"]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    ref = reference_runner(single)({"wave": wave.astype(np.float32)})["features"]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_log_mel_of_a_tone_peaks_in_the_band_of_its_frequency() -> None:
    rate, hz = 16000, 1000.0
    wave = np.sin(2 * np.pi * hz * np.arange(rate) / rate)[None].astype(np.float32)
    run = ort_runner(log_mel_model(rate, "float32"))
    assert run is not None
    band = int(run({"wave": wave})["features"][0].mean(axis=0).argmax())
    weights = mel_matrix(40, 400, rate, 0.0, rate / 2)
    assert weights[round(hz * 400 / rate), band] > 0


def test_log_mel_outputs_a_sequence_of_frames_and_refuses_what_it_cannot_frame() -> None:
    infer = LAYERS.get("log_mel").infer
    out = infer([TensorType("float32", ("N", 16000))], bound())
    assert (str(out), out.sequence) == ("f32[N, 98, 40]", True)
    problems: dict[str, tuple[tuple[int | str, ...], dict[str, int]]] = {
        "known number of samples": (("N", "T"), {}),
        "at least 400 samples": (("N", 300), {}),
        "reads waveforms": (("N", 1, 16000), {}),
        "more bands than the 5 frequency bins": (("N", 100), {"n_fft": 8, "mels": 6}),
    }
    for message, (dims, args) in problems.items():
        with pytest.raises(ShapeError, match=message):
            infer([TensorType("float32", dims)], bound(**args))
