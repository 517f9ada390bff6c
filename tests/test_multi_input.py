"""Models of several inputs: each input is fed by name from every data format (an .npz
array per input name, a table's columns listed per input), through training, `eval`,
`predict` (command line and API), export and resume; mismatches are located errors
naming the input and the array or column."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SPECS, reference_runner

from dnnspec import api
from dnnspec.errors import DiagnosticError

EXAMPLE = SPECS / "digits_two_inputs.dnn"
TOP = [f"p{i}" for i in range(32)]
BOTTOM = [f"p{i}" for i in range(32, 64)]


def digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(api.__file__).parent / "data" / "digits.npz") as d:
        return (d["x"] / 16.0).astype(np.float32), d["y"].astype(np.int64)


def spec_text(data: str, epochs: int = 3, preprocess: str = "") -> str:
    """The example spec, reading `data` for `epochs` epochs."""
    text = EXAMPLE.read_text()
    text = text.replace("data digits(validation = 0.2)", f"data {data}")
    text = text.replace(
        "epochs 30", f"epochs {epochs}" + (f"\n  {preprocess}" if preprocess else "")
    )
    return text


def columns_text(path: str) -> str:
    listed = ", ".join(f'"{c}"' for c in TOP), ", ".join(f'"{c}"' for c in BOTTOM)
    return f'file(path = "{path}", target = "digit", features = [[{listed[0]}], [{listed[1]}]])'


def write_csv(
    path: Path, x: np.ndarray, y: np.ndarray, drop: str | None = None, reverse: bool = False
) -> None:
    """The digits as a table p0..p63, digit (`reverse`: the pixel columns last to first)."""
    names = [f"p{i}" for i in range(64)]
    keep = [i for i, n in enumerate(names) if n != drop][:: -1 if reverse else 1]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([names[i] for i in keep] + ["digit"])
        for row, label in zip(x, y, strict=True):
            out.writerow([f"{row[i]:.9g}" for i in keep] + [int(label)])


def dnnspec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dnnspec", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-input model trained from an .npz holding arrays top, bottom and y."""
    root = tmp_path_factory.mktemp("two_inputs")
    x, y = digits()
    np.savez(root / "d.npz", top=x[:, :32], bottom=x[:, 32:], y=y)
    (root / "m.dnn").write_text(spec_text('file(path = "d.npz")'))
    api.train(root / "m.dnn", out=root / "run", plot=False)
    return root


def test_the_two_input_example_learns_the_digits_from_both_halves(tmp_path: Path) -> None:
    # a wrong gradient into either branch (or one half fed twice) stays well below this
    result = api.train(EXAMPLE, out=tmp_path / "run", plot=False)
    assert result.metrics["val_accuracy"] >= 0.95


def test_api_predict_takes_a_dict_of_arrays_by_input_name(npz_run: Path) -> None:
    x, _ = digits()
    model = api.load(npz_run / "run", device="cpu")
    got = model.predict({"bottom": x[:20, 32:], "top": x[:20, :32]})
    session = ort.InferenceSession(str(npz_run / "run" / "model.onnx"))
    (expected,) = session.run(None, {"top": x[:20, :32], "bottom": x[:20, 32:]})
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(DiagnosticError, match=r"2 inputs \(top, bottom\): pass a dict"):
        model.predict(x[:20])
    with pytest.raises(DiagnosticError, match="no array given for the model's input 'bottom'"):
        model.predict({"top": x[:20, :32]})
    with pytest.raises(DiagnosticError, match="no input 'botom'") as caught:
        model.predict({"top": x[:20, :32], "botom": x[:20, 32:]})
    assert "did you mean" in str(caught.value.diagnostics[0].help)
    with pytest.raises(DiagnosticError, match="input 'bottom' expects shape"):
        model.predict({"top": x[:20, :32], "bottom": x[:20, 30:]})
    with pytest.raises(DiagnosticError, match="different numbers of rows: 'top' 20, 'bottom' 19"):
        model.predict({"top": x[:20, :32], "bottom": x[:19, 32:]})


def test_cli_predict_reads_an_npz_with_one_array_per_input(npz_run: Path) -> None:
    x, _ = digits()
    np.savez(npz_run / "batch.npz", top=x[:7, :32], bottom=x[:7, 32:])
    shown = dnnspec("predict", str(npz_run / "run"), str(npz_run / "batch.npz"))
    assert shown.returncode == 0, shown.stderr
    expected = np.asarray(
        api.load(npz_run / "run", device="cpu").predict({"top": x[:7, :32], "bottom": x[:7, 32:]})
    )
    np.testing.assert_allclose(json.loads(shown.stdout)["predictions"], expected, rtol=1e-6)
    np.savez(npz_run / "half.npz", top=x[:7, :32])
    refused = dnnspec("predict", str(npz_run / "run"), str(npz_run / "half.npz"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "no array named 'bottom' for the model's input 'bottom'" in refused.stderr


def test_eval_of_a_data_file_reads_every_input(npz_run: Path) -> None:
    x, y = digits()
    model = api.load(npz_run / "run", device="cpu")
    result = model.evaluate(npz_run / "d.npz")
    predicted = np.asarray(model.predict({"top": x[:, :32], "bottom": x[:, 32:]}))
    assert result["accuracy"] == pytest.approx(float((predicted.argmax(1) == y).mean()))
    shown = dnnspec("eval", str(npz_run / "run"), str(npz_run / "d.npz"))
    assert shown.returncode == 0, shown.stderr


def test_exported_model_takes_every_input_and_runs_alike_in_the_reference(
    npz_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.onnx"
    api.export(npz_run / "run", out=out)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["top", "bottom"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert [i["name"] for i in json.loads(meta["dnnspec.inputs"])] == ["top", "bottom"]
    rng = np.random.default_rng(0)
    feeds = {n: rng.random((5, 32), dtype=np.float32) for n in ("top", "bottom")}
    (ours,) = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    np.testing.assert_allclose(ours, reference_runner(model)(feeds)["output"], rtol=1e-5, atol=1e-5)


def test_a_paused_two_input_run_resumes_bit_identically(npz_run: Path, tmp_path: Path) -> None:
    (tmp_path / "m.dnn").write_text(spec_text(f'file(path = "{npz_run / "d.npz"}")', epochs=4))
    whole = api.train(tmp_path / "m.dnn", out=tmp_path / "whole", plot=False)
    api.train(tmp_path / "m.dnn", out=tmp_path / "part", stop_after=2, plot=False)
    resumed = api.train(tmp_path / "m.dnn", out=tmp_path / "part", resume=True, plot=False)
    assert resumed.metrics == whole.metrics
    a = onnx.load(tmp_path / "whole" / "model.onnx").graph.initializer
    b = onnx.load(tmp_path / "part" / "model.onnx").graph.initializer
    assert [t.raw_data for t in a] == [t.raw_data for t in b]


def test_a_table_feeds_each_input_the_columns_listed_for_it(npz_run: Path, tmp_path: Path) -> None:
    x, y = digits()
    write_csv(tmp_path / "d.csv", x, y)
    (tmp_path / "m.dnn").write_text(spec_text(columns_text("d.csv")))
    api.train(tmp_path / "m.dnn", out=tmp_path / "run", plot=False)
    # the same samples as the .npz, columns for arrays: the same run
    from_arrays = json.loads((npz_run / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    from_table = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert from_table["loss"] == pytest.approx(from_arrays["loss"], rel=1e-6)
    meta = json.loads(
        {p.key: p.value for p in onnx.load(tmp_path / "run" / "model.onnx").metadata_props}[
            "dnnspec.inputs"
        ]
    )
    assert [i["columns"] for i in meta] == [TOP, BOTTOM]
    model = api.load(tmp_path / "run", device="cpu")
    expected = np.asarray(model.predict({"top": x[:9, :32], "bottom": x[:9, 32:]}))
    write_csv(tmp_path / "rows.csv", x[:9], y[:9], reverse=True)  # found by name
    np.testing.assert_allclose(
        np.asarray(model.predict(tmp_path / "rows.csv")), expected, rtol=1e-6
    )
    shown = dnnspec("predict", str(tmp_path / "run"), str(tmp_path / "rows.csv"))
    assert shown.returncode == 0, shown.stderr
    np.testing.assert_allclose(json.loads(shown.stdout)["predictions"], expected, rtol=1e-6)
    write_csv(tmp_path / "short.csv", x[:9], y[:9], drop="p40")
    refused = dnnspec("predict", str(tmp_path / "run"), str(tmp_path / "short.csv"))
    assert refused.returncode == 2
    assert "has no column 'p40', which the model's input 'bottom' reads" in refused.stderr


def test_a_parquet_file_feeds_each_input_by_its_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x, y = digits()
    table = {f"p{i}": x[:, i] for i in range(64)} | {"digit": y}
    pq.write_table(pa.table(table), tmp_path / "d.parquet")
    (tmp_path / "m.dnn").write_text(spec_text(columns_text("d.parquet"), epochs=1))
    api.train(tmp_path / "m.dnn", out=tmp_path / "run", plot=False)
    model = api.load(tmp_path / "run", device="cpu")
    expected = np.asarray(model.predict({"top": x[:5, :32], "bottom": x[:5, 32:]}))
    pq.write_table(pa.table({k: v[:5] for k, v in table.items()}), tmp_path / "rows.parquet")
    np.testing.assert_allclose(
        np.asarray(model.predict(tmp_path / "rows.parquet")), expected, rtol=1e-6
    )


BAD_ARRAYS = {
    "missing": (
        lambda x, y: {"top": x[:, :32], "y": y},
        [
            "has no array named 'bottom' for the model's input 'bottom'",
            "arrays in the file: top, y",
        ],
    ),
    "too_wide": (
        lambda x, y: {"top": x[:, :32], "bottom": x[:, 30:], "y": y},
        ["input 'bottom' is declared [N, 32] but the data has shape [N, 34]"],
    ),
    "one_row_short": (
        lambda x, y: {"top": x[:, :32], "bottom": x[1:, 32:], "y": y},
        ["array 'bottom' (input 'bottom') has 1796 rows, but array 'y' (the targets) has 1797"],
    ),
}


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=str)
def test_an_npz_that_does_not_fit_the_inputs_is_refused_naming_the_arrays(
    tmp_path: Path, case: str
) -> None:
    arrays, expected = BAD_ARRAYS[case]
    np.savez(tmp_path / "d.npz", **arrays(*digits()))
    (tmp_path / "m.dnn").write_text(spec_text('file(path = "d.npz")'))
    shown = dnnspec("train", str(tmp_path / "m.dnn"), "--out", str(tmp_path / "run"))
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert "m.dnn:" in shown.stderr
    for text in expected:
        assert text in shown.stderr
    assert not (tmp_path / "run" / "model.onnx").exists()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            "spirals()",
            "dataset 'spirals' provides one input array, but the model's inputs top, "
            "bottom need one each",
        ),
        (
            'file(path = "d.csv", target = "digit")',
            "the model has 2 inputs (top, bottom), so "
            "features lists the columns of each, one list per input (none given)",
        ),
        (
            'file(path = "d.csv", target = "digit", features = ["p1", "p2"])',
            "(one list of columns given)",
        ),
        ('file(path = "d.csv", target = "digit", features = [["p1"]])', "(1 lists given)"),
    ],
)
def test_data_without_an_array_per_input_is_a_located_error(
    tmp_path: Path, data: str, expected: str
) -> None:
    x, y = digits()
    write_csv(tmp_path / "d.csv", x[:50], y[:50])
    (tmp_path / "m.dnn").write_text(spec_text(data))
    shown = dnnspec("train", str(tmp_path / "m.dnn"), "--out", str(tmp_path / "run"))
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert expected in shown.stderr and "m.dnn:18:" in shown.stderr


def test_column_preprocessing_of_a_model_of_several_inputs_is_refused_where_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "m.dnn").write_text(spec_text("digits()", preprocess="preprocess standardize"))
    shown = dnnspec("train", str(tmp_path / "m.dnn"), "--out", str(tmp_path / "run"))
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert (
        "preprocess standardize reads the columns of a model's one input, but the model "
        "has 2 inputs (top, bottom)" in shown.stderr
    )
    assert "m.dnn:23:" in shown.stderr


def test_a_table_column_of_words_or_gaps_for_one_of_several_inputs_is_named(
    tmp_path: Path,
) -> None:
    x, y = digits()
    write_csv(tmp_path / "d.csv", x[:60], y[:60])
    lines = (tmp_path / "d.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    words = [lines[0]] + [",".join([f"w{i % 3}", *r[1:]]) for i, r in enumerate(rows)]
    (tmp_path / "w.csv").write_text("\n".join(words) + "\n")
    gaps = [lines[0], lines[1], ",".join(["", *rows[1][1:]]), *lines[3:]]
    (tmp_path / "g.csv").write_text("\n".join(gaps) + "\n")
    for name, expected in (
        ("w.csv", "column 'p0' of input 'top' holds words"),
        ("g.csv", "g.csv' line 3, column 1 (p0) is empty"),
    ):
        (tmp_path / "m.dnn").write_text(spec_text(columns_text(name)))
        shown = dnnspec("train", str(tmp_path / "m.dnn"), "--out", str(tmp_path / "run"))
        assert shown.returncode == 2 and "Traceback" not in shown.stderr
        assert expected in shown.stderr, shown.stderr


def test_the_array_name_of_a_one_input_model_is_refused_for_several(tmp_path: Path) -> None:
    x, y = digits()
    np.savez(tmp_path / "d.npz", top=x[:, :32], bottom=x[:, 32:], y=y)
    (tmp_path / "m.dnn").write_text(spec_text('file(path = "d.npz", x = "top")'))
    shown = dnnspec("train", str(tmp_path / "m.dnn"), "--out", str(tmp_path / "run"))
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert "'x' names the array of a model's one input" in shown.stderr


def test_a_single_npy_for_a_model_of_several_inputs_names_the_inputs(npz_run: Path) -> None:
    np.save(npz_run / "one.npy", digits()[0][:3])
    shown = dnnspec("predict", str(npz_run / "run"), str(npz_run / "one.npy"))
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert "holds one array, but the model takes inputs top, bottom" in shown.stderr
