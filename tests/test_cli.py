"""The command line: exit codes, rendered errors without tracebacks, JSON output, and
clear errors for bad data, out-of-range labels and a diverging loss."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS

from dnnspec.cli import main

DIGITS = str(SPECS / "digits_mlp.dnn")

FILE_SPEC = """model m {{
  input x: float32[N, 4]
  dense(8) -> relu
  dense(3)
}}
train {{
  data file(path = "{path}", validation = 0.25)
  loss cross_entropy
  optimizer sgd(lr = {lr})
  batch 8
  epochs 2
  metrics accuracy
}}
"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def write_file_spec(tmp_path: Path, x: np.ndarray, y: np.ndarray, lr: float = 0.1) -> Path:
    np.savez(tmp_path / "data.npz", x=x, y=y)
    spec = tmp_path / "m.dnn"
    spec.write_text(FILE_SPEC.format(path=tmp_path / "data.npz", lr=lr))
    return spec


def test_check_prints_layer_table_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "check", DIGITS)
    assert code == 0
    assert "dense" in out and "26,122" in out


def test_check_json_reports_parameter_total(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "check", DIGITS, "--json")
    assert code == 0
    assert "26122" in out


def test_spec_error_is_rendered_with_location_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.dnn"
    bad.write_text("model m {\n  input x: float32[N, 4]\n  dense(8) -> rleu\n}\n")
    code, _, err = run_cli(capsys, "check", str(bad))
    assert code == 2
    assert f"{bad}:3:15: error" in err
    assert "did you mean 'relu'?" in err


def test_missing_spec_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "check", "no/such/spec.dnn")
    assert code == 2 and "no/such/spec.dnn" in err


def test_data_with_wrong_shape_is_reported_at_the_input_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_file_spec(tmp_path, np.zeros((20, 5), np.float32), np.zeros(20, np.int64))
    code, _, err = run_cli(capsys, "train", str(spec), "--out", str(tmp_path / "run"))
    assert code == 2
    assert f"{spec}:2:3: error: input 'x' is declared [N, 4] but the data has shape [N, 5]" in err


def test_labels_outside_class_range_are_rejected_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    y = np.array([0, 1, 2, 7] * 5, np.int64)
    spec = write_file_spec(tmp_path, np.zeros((20, 4), np.float32), y)
    code, _, err = run_cli(capsys, "train", str(spec), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "label 7 of sample 3 is outside the model's 3 classes (0..2)" in err


def test_diverging_loss_stops_names_the_step_and_keeps_good_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e3, (40, 4)).astype(np.float32)
    spec = write_file_spec(tmp_path, x, rng.integers(0, 3, 40), lr=1e30)
    code, _, err = run_cli(capsys, "train", str(spec), "--out", str(tmp_path / "run"))
    assert code == 2
    assert re.search(r"training diverged: .* became (nan|inf|-inf) (at|by) step \d+", err), err
    import onnx
    from onnx import numpy_helper

    model = onnx.load(tmp_path / "run" / "model.onnx")
    for init in model.graph.initializer:
        assert np.isfinite(numpy_helper.to_array(init)).all()


@pytest.mark.slow
def test_train_json_then_eval_and_predict_on_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, out, _ = run_cli(
        capsys, "train", DIGITS, "--out", str(run), "--epochs", "3", "--device", "cpu", "--json"
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["epochs"] == 3 and 0.5 < summary["metrics"]["val_accuracy"] <= 1.0
    code, out, _ = run_cli(capsys, "eval", str(run), "--json")
    assert code == 0
    assert json.loads(out)["accuracy"] == pytest.approx(summary["best"]["val_accuracy"])
    np.save(tmp_path / "x.npy", np.zeros((5, 64), np.float32))
    code, out, _ = run_cli(capsys, "predict", str(run), str(tmp_path / "x.npy"))
    assert code == 0
    assert len(json.loads(out)["classes"]) == 5
    np.save(tmp_path / "bad.npy", np.zeros((5, 63), np.float32))
    code, _, err = run_cli(capsys, "predict", str(run), str(tmp_path / "bad.npy"))
    assert code == 2 and "expects shape" in err


def test_python_dash_m_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dnnspec", "check", DIGITS, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)


def test_compile_writes_three_loadable_graphs_and_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    import onnxruntime as ort

    code, out, _ = run_cli(capsys, "compile", DIGITS, "--out", str(tmp_path), "--json")
    assert code == 0
    paths = json.loads(out)
    assert set(paths) == {
        "train_step",
        "eval_step",
        "model",
        "lock",
        "warnings",
        "read_data",
        "from_data",
    }
    assert paths["warnings"] == []
    for name in ("train_step", "eval_step", "model"):
        model = onnx.load(paths[name])
        onnx.checker.check_model(model, full_check=True)
        ort.InferenceSession(paths[name], providers=["CPUExecutionProvider"])
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(paths["train_step"]).graph.node)


def test_zero_epochs_is_rejected(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "train", DIGITS, "--epochs", "0", "--out", str(tmp_path))
    assert code == 2 and "--epochs must be at least 1" in err


def test_predict_rejects_unknown_output_format_and_writes_null_for_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_file_spec(tmp_path, np.zeros((20, 4), np.float32), np.arange(20) % 3)
    run = tmp_path / "run"
    assert run_cli(capsys, "train", str(spec), "--out", str(run))[0] == 0
    x = np.zeros((2, 4), np.float32)
    x[1, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    code, _, err = run_cli(capsys, "predict", str(run), str(tmp_path / "x.npy"), "--out", "p.txt")
    assert code == 2 and "written as .npy or .csv" in err
    code, out, _ = run_cli(capsys, "predict", str(run), str(tmp_path / "x.npy"))
    payload = json.loads(out)
    assert payload["classes"][1] is None and payload["predictions"][1] == [None] * 3
    assert isinstance(payload["classes"][0], int)


def test_schedule_period_of_zero_is_a_located_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (SPECS / "spirals.dnn").read_text()
    bad = tmp_path / "s.dnn"
    bad.write_text(text.replace("every = 100 epochs", "every = 0 epochs"))
    code, _, err = run_cli(capsys, "check", str(bad))
    assert code == 2 and "must be > 0 epochs" in err


def test_check_shows_warnings_on_stderr_and_still_exits_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = tmp_path / "soft.dnn"
    spec.write_text(
        (SPECS / "digits_mlp.dnn").read_text().replace("dense(10)", "dense(10) -> softmax")
    )
    code, out, err = run_cli(capsys, "check", str(spec))
    assert code == 0 and "softmax_1" in out
    assert f"{spec}:" in err and "warning: the model ends in softmax" in err
    code, out, err = run_cli(capsys, "check", str(spec), "--json")
    assert code == 0 and "warning: the model ends in softmax" in err  # stderr is for people
    assert json.loads(out)["warnings"][0]["severity"] == "warning"


def test_train_and_compile_json_carry_the_warnings_and_stderr_shows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "soft.dnn"
    text = (SPECS / "spirals.dnn").read_text().replace("dense(2)", "dense(2) -> softmax")
    spec.write_text(
        text.replace("epochs 150", "epochs 1").replace("samples = 2000", "samples = 64")
    )
    for argv in (
        ["train", str(spec), "--out", str(tmp_path / "run"), "--json"],
        ["compile", str(spec), "--out", str(tmp_path / "compiled"), "--json"],
    ):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0 and "warning: the model ends in softmax" in err
        assert json.loads(out)["warnings"][0]["message"].startswith("the model ends in softmax")
