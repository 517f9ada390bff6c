"""The validation split: stratified for class data by default, its shuffle seeded apart
from initialisation with split(seed = ...), its indices recorded in the run; `--set seed`
varies the run's seed without a param."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dnnspec.data.datasets import Dataset, split_indices
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.run import run_training

SPEC = """model m {{
  input x: float32[N, 2]
  dense(8) -> relu
  dense(3)
}}
train {{
  data spirals(samples = 120, classes = 3, validation = 0.25)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 16
  epochs 1
  seed {seed}
  {extra}
}}
"""


def test_stratified_split_holds_out_the_same_fraction_of_every_class() -> None:
    y = np.array([0] * 80 + [1] * 16 + [2] * 4)
    data = Dataset(np.zeros((100, 1)), y)
    kept, held = split_indices(data, 0.25, 0, stratify=True)
    assert np.bincount(y[held]).tolist() == [20, 4, 1]
    assert sorted([*kept, *held]) == list(range(100))
    _, plain = split_indices(data, 0.25, 0)
    assert len(plain) == 25


def val_index(seed: int, extra: str = "") -> np.ndarray:
    return prepare(load_spec_text(SPEC.format(seed=seed, extra=extra))).val_index


def test_split_seed_fixes_the_split_while_the_seed_varies() -> None:
    assert not np.array_equal(val_index(0), val_index(1))
    fixed = "split(seed = 7)"
    assert np.array_equal(val_index(0, fixed), val_index(1, fixed))
    loose = "split(seed = 7, stratify = false)"
    assert not np.array_equal(val_index(0, fixed), val_index(0, loose))


def test_the_run_records_its_split(tmp_path: Path) -> None:
    spec = load_spec_text(SPEC.format(seed=0, extra=""))
    run_training(spec, tmp_path, "cpu")
    with np.load(tmp_path / "split.npz") as recorded:
        assert recorded["validation"].tolist() == val_index(0).tolist()
        assert len(recorded["train"]) + len(recorded["validation"]) == 120


def test_set_seed_is_accepted_without_a_param() -> None:
    spec = load_spec_text(SPEC.format(seed=0, extra=""), overrides={"seed": "5"})
    assert spec.train is not None and spec.train.seed == 5


def test_a_test_fraction_is_held_out_of_training_and_validation_and_scored_once(
    tmp_path: Path,
) -> None:
    spec = load_spec_text(SPEC.format(seed=0, extra="test 0.25\n  metrics accuracy"))
    prep = prepare(spec)
    assert prep.test_data is not None and len(prep.test_data) == 30
    assert len(prep.train_index) + len(prep.val_index) == 90
    result = run_training(spec, tmp_path, "cpu")
    assert 0 <= result.metrics["test_accuracy"] <= 1
    assert "test_loss" in json.loads((tmp_path / "test.json").read_text())
    records = (tmp_path / "metrics.jsonl").read_text()
    assert "test_" not in records  # never seen by the epochs (nor early stopping)


def test_a_test_file_is_read_like_the_data_and_scored_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = np.where(x[:, 0] > 0, "pos", "neg")
    lines = ["a,b,label", *(f"{p},{q},{c}" for (p, q), c in zip(x, y, strict=True))]
    (tmp_path / "train.csv").write_text("\n".join(lines[:31]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *lines[31:]]) + "\n")
    text = (
        SPEC.format(seed=0, extra='test "test.csv"')
        .replace(
            "spirals(samples = 120, classes = 3, validation = 0.25)",
            'file(path = "train.csv", validation = 0.2)',
        )
        .replace("dense(3)", "dense(2)")
    )
    spec = tmp_path / "m.dnn"
    spec.write_text(text)
    result = run_training(load_spec_text(text, str(spec)), tmp_path / "run", "cpu")
    assert "test_loss" in result.metrics


def test_test_must_be_a_fraction_or_a_path() -> None:
    with pytest.raises(DiagnosticError) as info:
        load_spec_text(SPEC.format(seed=0, extra="test 2"))
    assert (
        "'test' must be a fraction in (0, 0.9) or a file path" in info.value.diagnostics[0].message
    )
