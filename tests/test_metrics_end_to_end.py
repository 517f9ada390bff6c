"""Metrics in a real run: logged per epoch from statistics summed over the whole
validation split, the confusion matrix written at the end and shown by `dnnspec eval`,
which also evaluates a data file and says when a run has no validation split."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dnnspec import api
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text

SPEC = """model m {{
  input x: float32[N, 2]
  dense(32) -> relu
  dense(3)
}}
train {{
  data {data}
  loss cross_entropy
  optimizer adam(lr = 0.02)
  batch 32
  epochs 4
  metrics accuracy, f1, precision, recall, top_k_accuracy(k = 2), perplexity
}}
"""


@pytest.mark.slow
def test_run_logs_whole_split_metrics_and_writes_the_confusion(tmp_path: Path) -> None:
    spec = load_spec_text(SPEC.format(data="spirals(samples = 300, classes = 3, validation = 0.3)"))
    result = api.train(spec, out=tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    last = records[-1]
    for key in ("val_f1", "val_precision", "val_recall", "val_top_k_accuracy", "val_perplexity"):
        assert key in last
    assert len(last["val_f1_per_class"]) == 3
    assert last["val_f1"] == pytest.approx(np.mean(last["val_f1_per_class"]))
    assert last["val_top_k_accuracy"] >= last["val_accuracy"]
    rows = list(csv.reader((tmp_path / "run" / "confusion.csv").open()))
    assert rows[0] == ["true \\ predicted", "0", "1", "2"]
    counts = np.array([[int(c) for c in row[1:]] for row in rows[1:]])
    assert counts.sum() == 90  # the validation split
    # model.onnx holds the last epoch here (no early stop): its accuracy is the diagonal
    assert np.trace(counts) / 90 == pytest.approx(last["val_accuracy"])
    shown = api.load(tmp_path / "run").evaluate()
    assert shown["confusion"] == counts.tolist()
    assert shown["accuracy"] == pytest.approx(result.metrics["val_accuracy"])
    cli = subprocess.run(
        [sys.executable, "-m", "dnnspec", "eval", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "confusion (rows: true class, columns: predicted)" in cli.stdout


@pytest.mark.slow
def test_the_confusion_of_an_early_stopped_run_is_that_of_its_best_epoch(tmp_path: Path) -> None:
    # the last validation's counts are reused only when model.onnx holds that epoch
    text = SPEC.format(data="spirals(samples = 300, classes = 3, validation = 0.3)")
    text = text.replace("epochs 4", "epochs 30\n  early_stop(monitor = val_loss, patience = 3)")
    text = text.replace("lr = 0.02", "lr = 0.2")
    result = api.train(load_spec_text(text), out=tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    best = min(records, key=lambda r: r["val_loss"])
    assert best["epoch"] < records[-1]["epoch"]  # the best epoch is not the last one
    rows = list(csv.reader((tmp_path / "run" / "confusion.csv").open()))
    counts = np.array([[int(c) for c in row[1:]] for row in rows[1:]])
    assert np.trace(counts) / 90 == pytest.approx(best["val_accuracy"])
    assert api.load(tmp_path / "run").evaluate()["confusion"] == counts.tolist()
    assert result.stopped.startswith("early stop")


@pytest.mark.slow
def test_eval_without_a_validation_split_says_so_or_evaluates_a_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "held.npz", x=x[:30], y=y[:30])
    spec = tmp_path / "m.dnn"
    spec.write_text(SPEC.format(data='file(path = "train.npz", validation = 0)'))
    api.train(spec, out=tmp_path / "run")
    with pytest.raises(DiagnosticError) as info:
        api.load(tmp_path / "run").evaluate()
    assert "has no validation split (validation = 0)" in info.value.diagnostics[0].message
    assert "dnnspec eval" in (info.value.diagnostics[0].help or "")
    held = api.load(tmp_path / "run").evaluate(tmp_path / "held.npz")
    assert np.sum(held["confusion"]) == 30
