"""specs/padded_digits.dnn: strings of several lengths padded with random digits, read
through a `lengths` input that masks attention's keys and the lstm's steps. The label (a
string's last digit) is learned only with the masks, predictions do not depend on what the
padding holds, and the masked train step matches finite differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS, assert_train_step_matches_finite_differences, reference_runner

from dnnspec import api
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec, load_spec_text

EXAMPLE = SPECS / "padded_digits.dnn"
UNMASKED = (
    EXAMPLE.read_text()
    .replace("attention(2, lengths = lengths)", "attention(2)")
    .replace("lstm(32, lengths = lengths)", "lstm(32)")
)


def strings(rng: np.random.Generator, n: int = 64) -> dict[str, np.ndarray]:
    return {
        "digits": rng.integers(0, 10, (n, 12), dtype=np.int64),
        "lengths": rng.integers(3, 13, n, dtype=np.int64),
    }


def test_the_masked_model_learns_the_last_digit_that_an_unmasked_one_cannot(
    tmp_path: Path,
) -> None:
    masked = api.train(EXAMPLE, out=tmp_path / "masked", plot=False)
    assert masked.best["val_accuracy"] >= 0.9  # measured 1.0
    unmasked_spec = load_spec_text(UNMASKED, str(EXAMPLE))
    unmasked = api.train(unmasked_spec, out=tmp_path / "unmasked", plot=False)
    assert unmasked.best["val_accuracy"] < 0.5  # measured 0.28: digits and padding look alike

    model = api.load(tmp_path / "masked")
    feeds = strings(np.random.default_rng(1))
    scores = model.predict(feeds)
    assert isinstance(scores, np.ndarray)
    last = feeds["digits"][np.arange(64), feeds["lengths"] - 1]
    assert (scores.argmax(-1) == last).mean() >= 0.9

    repadded = feeds["digits"].copy()
    padding = np.arange(12)[None, :] >= feeds["lengths"][:, None]
    repadded[padding] = (repadded[padding] + 3) % 10
    again = model.predict({**feeds, "digits": repadded})
    np.testing.assert_array_equal(again, scores)

    reference = reference_runner(model.onnx)({**feeds})
    np.testing.assert_allclose(next(iter(reference.values())), scores, rtol=1e-4, atol=1e-4)


def test_the_masked_train_step_matches_finite_differences() -> None:
    spec = load_spec(EXAMPLE, {"d": "4"})
    feeds = strings(np.random.default_rng(2), 3)
    assert_train_step_matches_finite_differences(spec, {"N": 3}, inputs=feeds)


def test_padded_strings_refuse_per_position_tasks_and_a_min_length_past_length() -> None:
    load = DATASETS.get("digit_strings").load
    args = {"task": "sort", "length": 5, "samples": 20, "validation": 0.1, "min_length": 2}
    with pytest.raises(DiagnosticError, match="task = sort labels every position"):
        load(args, 0, None)
    with pytest.raises(DiagnosticError, match="min_length = 6 is longer than length = 5"):
        load({**args, "task": "last", "min_length": 6}, 0, None)
    data = load({**args, "task": "last"}, 0, None)
    assert data.y.shape == (20,)
