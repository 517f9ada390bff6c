"""The `dnnspec.*` metadata of a graph is one typed record (`dnnspec.metadata`): written as
the previous release wrote it (plus `dnnspec.format_version`), so its files still load;
a file from a newer dnnspec, or with a damaged key, is a clear diagnostic naming the key.

`fixtures/previous_release/` holds model.onnx and train_step.onnx as the release before the
record wrote them (no format version), trained on its `d.csv` by its `tiny.dnn`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import dnnspec
from dnnspec.assemble.describe import spec_hash
from dnnspec.check.shapes import check_spec
from dnnspec.cli import main
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.metadata import (
    FORMAT_VERSION,
    KEYS,
    AudioMeta,
    ImageMeta,
    ModelMetadata,
    OutputRole,
    TensorMeta,
    TextMeta,
)
from dnnspec.resolve import pin_paths
from dnnspec.runtime.model_file import read_model

PREVIOUS = Path(__file__).parent / "fixtures" / "previous_release"


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def forge(path: Path, key: str, value: str) -> None:
    """`path` with metadata `key` set to `value`."""
    model = onnx.load(path)
    entries = [(p.key, p.value) for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    for k, v in [*entries, (key, value)]:
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run directory holding the previous release's graphs."""
    target = tmp_path / "run"
    target.mkdir()
    for name in ("model.onnx", "train_step.onnx"):
        shutil.copy(PREVIOUS / name, target / name)
    return target


@pytest.mark.parametrize("graph", ["model.onnx", "train_step.onnx"])
def test_the_previous_releases_metadata_reads_and_writes_back_unchanged(graph: str) -> None:
    written = props(PREVIOUS / graph)
    assert "dnnspec.format_version" not in written
    record = ModelMetadata.from_props(written, graph)
    assert record.format_version == 1
    again = record.to_props()
    assert again.pop("dnnspec.format_version") == str(FORMAT_VERSION)
    assert again == written and list(again) == list(written)


def test_every_field_survives_a_round_trip() -> None:
    step = props(PREVIOUS / "train_step.onnx")
    carried = {k: step[k] for k in ("dnnspec.carried", "dnnspec.interface")}
    record = ModelMetadata.from_props(props(PREVIOUS / "model.onnx") | carried, "both")
    tensor = TensorMeta(name="x", dtype="float32", shape=["N", 3])
    record.vocab, record.context, record.spec = ["a", "b"], 7, {"model": {"name": "tiny"}}
    record.trained, record.precision, record.opset = True, "float16", 17
    record.graph_inputs, record.graph_outputs = [tensor], [tensor]
    record.output_roles = [OutputRole(name="labels", output="output", role="labels")]
    record.audio = AudioMeta(input="x", sample_rate=16000, samples=16000)
    record.image = ImageMeta(input="x", size=[16, 16], channels=1, scale=1 / 255)
    record.text = TextMeta(input="x", tokenizer="tokenizer.json", kind="bpe", length=64)
    assert set(record.to_props()) == KEYS - {"dnnspec.outputs"}
    assert ModelMetadata.from_props(record.to_props(), "p") == record


def test_a_model_written_by_the_previous_release_still_loads_and_predicts(run: Path) -> None:
    model = dnnspec.load(run)
    assert model.labels == ["no", "yes"] and model.loss == "cross_entropy"
    assert model.file.expects is not None and model.file.expects["csv"]["target"] == 3
    rows = np.array([[10.0, 0.0, 0.0], [14.0, 2.0, 0.01]], np.float32)  # a, color, b
    scores = model.predict(rows)
    assert isinstance(scores, np.ndarray) and scores.shape == (2, 2)


def test_a_model_trained_now_carries_the_previous_releases_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("tiny.dnn", "d.csv"):
        shutil.copy(PREVIOUS / name, tmp_path / name)
    code, err = cli(capsys, "train", str(tmp_path / "tiny.dnn"), "--out", str(tmp_path / "now"))
    assert code == 0, err
    for graph in ("model.onnx", "train_step.onnx"):
        now = props(tmp_path / "now" / graph)
        assert now.pop("dnnspec.format_version") == str(FORMAT_VERSION)
        assert now == props(PREVIOUS / graph)


def test_an_exported_model_records_its_spec_as_the_previous_release_wrote_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("tiny.dnn", "d.csv"):
        shutil.copy(PREVIOUS / name, tmp_path / name)
    out = tmp_path / "tiny.onnx"
    code, err = cli(capsys, "export", str(tmp_path / "tiny.dnn"), "--out", str(out))
    assert code == 0, err
    spec = pin_paths(load_spec(tmp_path / "tiny.dnn", {}), missing_ok=True)
    assert props(out)["dnnspec.spec"] == spec.model_dump_json()  # compact, adam's eps as 1e-8


HASHED = """model m {{
  input x: float32[N, 4]
  dense({units})
}}
train {{
  data file(path = "d.csv", target = "label")
  loss {loss}
  optimizer adam
  batch 8
  epochs 2
  metrics {metrics}
}}
"""


@pytest.mark.parametrize(
    ("units", "loss", "metrics", "previous"),
    [
        (3, "cross_entropy", "accuracy, precision, recall, f1", "d7c17f76fa10b63b"),
        (1, "binary_cross_entropy", "binary_accuracy", "2311e8eee8de3442"),
    ],
)
def test_a_spec_keeps_the_hash_the_previous_release_gave_it(
    tmp_path: Path, units: int, loss: str, metrics: str, previous: str
) -> None:
    """Arguments added since (the metrics' threshold, the loss's positive) are left out at
    their default, so the previous release's checkpoints of these specs still resume."""
    path = tmp_path / "s.dnn"
    path.write_text(HASHED.format(units=units, loss=loss, metrics=metrics), encoding="utf-8")
    assert spec_hash(check_spec(load_spec(path, {}))) == previous


def test_a_model_from_a_newer_dnnspec_is_refused_with_a_clear_message(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forge(run / "model.onnx", "dnnspec.format_version", str(FORMAT_VERSION + 1))
    np.save(run / "x.npy", np.zeros((1, 3), np.float32))
    code, err = cli(capsys, "predict", str(run), str(run / "x.npy"))
    assert code == 2
    assert f"was written by a newer dnnspec (metadata format {FORMAT_VERSION + 1}" in err
    assert "upgrade dnnspec" in err


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("dnnspec.format_version", '"one"', "'dnnspec.format_version' is malformed"),
        ("dnnspec.class_labels", "[]", "'dnnspec.class_labels' is not a list of labels"),
        ("dnnspec.context", "-4", "'dnnspec.context' is not a length"),
        ("dnnspec.vocab", '["a", 3]', "'dnnspec.vocab' is not a list of tokens"),
        (
            "dnnspec.inputs",
            '[{"name": "x", "dtype": "float32", "shape": ["N", 3], "vocab": true}]',
            "'dnnspec.inputs' is malformed",
        ),
        (
            "dnnspec.outputs",
            '[{"name": "output", "weight": "1"}]',
            "'dnnspec.outputs' is malformed",
        ),
        ("dnnspec.preprocess", "{not json", "'dnnspec.preprocess' is missing or not JSON"),
    ],
)
def test_damaged_metadata_is_a_diagnostic_naming_the_key(
    run: Path, key: str, value: str, says: str
) -> None:
    forge(run / "model.onnx", key, value)
    with pytest.raises(DiagnosticError, match="is not a model written by dnnspec") as caught:
        read_model(run / "model.onnx")
    assert says in str(caught.value)


def test_inspect_of_a_carried_record_with_a_list_kind_is_a_clear_error(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    carried = json.loads(props(run / "train_step.onnx")["dnnspec.carried"])
    carried[0]["kind"] = ["parameter"]
    forge(run / "train_step.onnx", "dnnspec.carried", json.dumps(carried))
    code, err = cli(capsys, "inspect", str(run / "train_step.onnx"))
    assert code == 2 and "its metadata 'dnnspec.carried' is malformed" in err


def test_inspect_of_an_input_of_an_undefined_element_type_is_a_clear_error(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx.load(run / "model.onnx")
    model.graph.input[0].type.tensor_type.elem_type = 999
    onnx.save(model, run / "model.onnx")
    code, err = cli(capsys, "inspect", str(run / "model.onnx"))
    assert code == 2 and "'x' has element type 999, which ONNX does not define" in err


def test_a_lock_file_without_arguments_added_since_reads_with_their_defaults(
    tmp_path: Path,
) -> None:
    """A run's spec.lock.json from an older dnnspec lacks the arguments added since (lstm's
    lengths, the text dataset's tokenizer): reading it fills in their defaults, so `eval`,
    `export` and `--resume` of such a run work and its spec hash is unchanged."""
    from dnnspec.resolve import read_lock, write_lock

    spec = load_spec(Path(__file__).parent.parent / "specs" / "sequence_lstm.dnn", {})
    lock = tmp_path / "spec.lock.json"
    write_lock(spec, lock)
    stored = json.loads(lock.read_text())
    lstm = next(n for n in stored["model"]["nodes"] if n["layer"] == "lstm")
    lstm_default = lstm["args"].pop("lengths")
    lock.write_text(json.dumps(stored))
    read = read_lock(lock)
    assert next(n for n in read.model.nodes if n.layer == "lstm").args["lengths"] == lstm_default

    assert spec_hash(check_spec(read)) == spec_hash(check_spec(spec))
