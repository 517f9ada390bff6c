"""specs/seq2seq.dnn, an encoder-decoder transformer with cross-attention trained with
teacher forcing (its `decoder_in` is the sorted string shifted right behind a start
token), learns to sort digit strings to a validation exact match of at least 0.9, and
decoded autoregressively by predict (given the digits alone) as well; its model.onnx is
valid and agrees between onnxruntime and onnx.reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SPECS
from onnx.reference import ReferenceEvaluator

from dnnspec import api
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.generate import decode
from dnnspec.runtime.run import run_training


def test_decoder_in_is_the_target_shifted_right_behind_the_start_token() -> None:
    loader = DATASETS.get("digit_strings").inputs
    assert loader is not None
    args = {"task": "sort", "length": 5, "samples": 20, "validation": 0.1, "min_length": 0}
    data = loader(args, ("digits", "decoder_in"), (), 0, None)
    assert (data.inputs["decoder_in"][:, 0] == 10).all()
    np.testing.assert_array_equal(data.inputs["decoder_in"][:, 1:], data.y[:, :-1])
    np.testing.assert_array_equal(data.y, np.sort(data.inputs["digits"], axis=1))


def test_decode_feeds_back_the_most_likely_class_one_position_at_a_time() -> None:
    seen: list[np.ndarray] = []

    def scores(decoder_in: np.ndarray) -> np.ndarray:
        """A causal model that predicts its input at each position plus one."""
        seen.append(decoder_in.copy())
        return np.eye(12)[(decoder_in + 1) % 12]

    out = decode(scores, 2, 4, 10)
    np.testing.assert_array_equal(out.argmax(-1), [[11, 0, 1, 2]] * 2)
    np.testing.assert_array_equal(seen[-1], [[10, 11, 0, 1]] * 2)
    assert len(seen) == 4


def test_seq2seq_sorts_digit_strings_to_90_percent_exact_match(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "seq2seq.dnn")
    cross = [n for n in spec.model.nodes if n.layer == "attention" and n.args["memory"]]
    assert cross, "the decoder attends to the encoder"
    result = run_training(spec, tmp_path, "cpu")
    # measured 0.99 (teacher forced)
    assert result.best["val_exact_match"] >= 0.9
    model = onnx.load(tmp_path / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    digits = np.random.default_rng(1).integers(0, 10, (64, 8))

    decoded = api.load(tmp_path).predict({"digits": digits})
    assert isinstance(decoded, np.ndarray)
    assert (decoded.argmax(-1) == np.sort(digits, axis=1)).all(axis=1).mean() >= 0.9

    feeds = {"digits": digits, "decoder_in": np.full((64, 8), 10)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, feeds)[0]
    reference = ReferenceEvaluator(model).run(None, feeds)
    assert isinstance(reference, list)
    np.testing.assert_allclose(ours, reference[0], rtol=1e-4, atol=1e-4)

    np.savez(tmp_path / "digits.npz", digits=digits)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dnnspec",
            "predict",
            str(tmp_path),
            str(tmp_path / "digits.npz"),
            "--out",
            str(tmp_path / "sorted.npy"),
        ],
        check=True,
        capture_output=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "sorted.npy"), decoded)
    first = "".join(str(i) for i in decoded[0].argmax(-1))  # generate decodes as predict
    assert api.load(tmp_path).generate("".join(map(str, digits[0])), 8) == first


def test_generate_decodes_the_prompt_step_by_step_as_predict_does(tmp_path: Path) -> None:
    text = (SPECS / "seq2seq.dnn").read_text()
    spec = tmp_path / "seq2seq.dnn"
    spec.write_text(text.replace("samples = 4000", "samples = 300").replace("epochs 6", "epochs 1"))
    run_training(load_spec(spec), tmp_path / "run", "cpu")
    model = api.load(tmp_path / "run")
    decoded = model.predict({"digits": np.array([[3, 1, 4, 1, 5, 9, 2, 6]])})
    assert isinstance(decoded, np.ndarray)
    expected = "".join(str(i) for i in decoded[0].argmax(-1))
    assert model.generate("31415926", 8) == expected
    assert model.generate("31415926", 3) == expected[:3]
    argv = [sys.executable, "-m", "dnnspec", "generate", str(tmp_path / "run")]
    proc = subprocess.run(
        [*argv, "--prompt", "31415926", "--tokens", "8", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and f'"text": "{expected}"' in proc.stdout, proc.stderr
    with pytest.raises(DiagnosticError, match="the prompt has 3 characters; .* reads 8"):
        model.generate("314", 8)
    with pytest.raises(DiagnosticError, match="characters the model never saw: 'x'"):
        model.generate("3141592x", 8)
