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


BINARY = """model m {{
  input x: float32[N, 2]
  dense(8) -> relu
  dense(1)
}}
train {{
  data file(path = "cells.csv", target = "diagnosis", validation = 0.25)
  loss binary_cross_entropy{loss_args}
  optimizer adam(lr = 0.05)
  batch 32
  epochs 20
  metrics binary_accuracy, precision, recall, f1(threshold = 0.3), auc, pr_auc
}}
"""


def cells(folder: Path, words: tuple[str, ...] = ("benign", "malignant")) -> Path:
    """A separable CSV whose target column holds words: the sign of size + shape."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    side = (x.sum(axis=1) > 0).astype(int)
    if len(words) > 2:  # a third word for a few rows
        side[::7] = 2
    rows = [f"{a:.4f},{b:.4f},{words[s]}" for (a, b), s in zip(x, side, strict=True)]
    path = folder / "cells.csv"
    path.write_text("size,shape,diagnosis\n" + "\n".join(rows) + "\n")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from dnnspec.cli import main

    capsys.readouterr()
    assert main(list(args)) == 0
    return str(capsys.readouterr().out)


@pytest.mark.slow
def test_a_binary_csv_of_words_trains_logs_binary_metrics_predicts_names_and_shows_its_confusion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = cells(tmp_path)
    spec = tmp_path / "m.dnn"
    spec.write_text(BINARY.format(loss_args=""))
    run = tmp_path / "run"
    cli(capsys, "train", str(spec), "--out", str(run))
    last = [json.loads(line) for line in (run / "metrics.jsonl").open()][-1]
    for key in ("precision", "recall", "f1", "auc", "pr_auc"):
        assert 0.9 < last[f"val_{key}"] <= 1.0
        assert f"val_{key}_per_class" not in last  # one unit: its value is the metric
    model = api.load(run)
    assert model.labels == ["benign", "malignant"]  # sorted: the later word is positive
    # predict: the class by name and the probability of the positive class, so headed
    out = tmp_path / "p.csv"
    cli(capsys, "predict", str(run), str(data), "--drop-target", "--proba", "--out", str(out))
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["class", "p_malignant"]
    truth = [line.rsplit(",", 1)[1] for line in data.read_text().splitlines()[1:]]
    assert np.mean([r[0] == t for r, t in zip(rows[1:], truth, strict=True)]) > 0.95
    assert all((r[0] == "malignant") == (float(r[1]) > 0.5) for r in rows[1:])
    shown = json.loads(cli(capsys, "predict", str(run), str(data), "--drop-target", "--proba"))
    assert shown["labels"][:20] == [r[0] for r in rows[1:21]]
    assert shown["positive"] == "malignant" and shown["class_names"] == ["benign", "malignant"]
    # eval: the confusion of the validation split, by class name, as confusion.csv holds it
    text = cli(capsys, "eval", str(run))
    assert "confusion (rows: true class, columns: predicted)" in text
    assert text.split("predicted)")[1].split()[:2] == ["benign", "malignant"]
    written = list(csv.reader((run / "confusion.csv").open()))
    assert written[0] == ["true \\ predicted", "benign", "malignant"]
    counts = np.array([[int(c) for c in row[1:]] for row in written[1:]])
    assert counts.sum() == 50 and np.trace(counts) / 50 == pytest.approx(
        last["val_binary_accuracy"]
    )
    whole = np.array(model.evaluate(data)["confusion"])  # a data file: its words mapped
    assert whole.sum() == 200 and np.trace(whole) > 190


@pytest.mark.slow
def test_the_loss_names_the_positive_word(tmp_path: Path) -> None:
    cells(tmp_path)
    spec = tmp_path / "m.dnn"
    spec.write_text(BINARY.format(loss_args='(positive = "benign")').replace("20", "3"))
    api.train(spec, out=tmp_path / "run")
    model = api.load(tmp_path / "run")
    assert model.labels == ["malignant", "benign"]  # (negative, positive): benign is 1
    benign = np.array([[-2.0, -2.0]], np.float32)
    assert model.class_ids(np.asarray(model.predict(benign))) == [1]


@pytest.mark.parametrize(
    ("words", "loss_args", "message"),
    [
        (
            ("benign", "malignant", "unknown"),
            "",
            "the targets hold 3 distinct words (benign, malignant, unknown); 0/1 targets need "
            "two, one per class",
        ),
        (
            ("benign", "malignant"),
            '(positive = "Malignant")',
            "positive = 'Malignant' is not one of the targets' words (benign, malignant)",
        ),
    ],
)
def test_binary_words_that_do_not_fit_are_a_located_error(
    tmp_path: Path, words: tuple[str, ...], loss_args: str, message: str
) -> None:
    cells(tmp_path, words)
    spec = tmp_path / "m.dnn"
    spec.write_text(BINARY.format(loss_args=loss_args))
    with pytest.raises(DiagnosticError) as info:
        api.train(spec, out=tmp_path / "run")
    found = info.value.diagnostics[0]
    assert found.message == message
    assert found.span is not None and found.span.line == (8 if loss_args else 7)


@pytest.mark.parametrize(
    ("loss", "metric", "message"),
    [
        (
            "cross_entropy",
            "precision(threshold = 0.3)",
            "a threshold applies to 0/1 targets, but loss 'cross_entropy' trains on class labels",
        ),
        (
            "mse",
            "auc",
            "metric 'auc' needs 0/1 targets or class labels, but loss 'mse' trains on values",
        ),
    ],
)
def test_a_metric_that_cannot_read_the_losss_targets_is_a_located_error(
    loss: str, metric: str, message: str
) -> None:
    text = SPEC.format(data="spirals()").replace("loss cross_entropy", f"loss {loss}")
    text = text.replace(
        "accuracy, f1, precision, recall, top_k_accuracy(k = 2), perplexity", metric
    )
    with pytest.raises(DiagnosticError) as info:
        load_spec_text(text)
    found = info.value.diagnostics[0]
    assert found.message == message
    assert found.span is not None and found.span.line == 12  # the metrics line


def test_binary_metrics_read_the_targets_of_binary_cross_entropy() -> None:
    text = SPEC.format(data="spirals()").replace("dense(3)", "dense(1)")
    text = text.replace("loss cross_entropy", "loss binary_cross_entropy")
    text = text.replace(
        "accuracy, f1, precision, recall, top_k_accuracy(k = 2), perplexity",
        "precision(threshold = 0.3), recall, f1, auc, pr_auc",
    )
    train = load_spec_text(text).train  # resolves: every one reads 0/1 targets
    assert train is not None
    metrics = train.metrics
    assert [m.args.get("threshold") for m in metrics][:2] == [0.3, 0.5]
