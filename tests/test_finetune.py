"""Fine-tuning: `init from(...)` starts from earlier weights matched by name, `freeze`
keeps parameters as they start (no gradient, optimizer state or decay), and the example
pair in specs/ trains a CNN on digits 0-4 and reuses its convolutions for 5-9."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SPECS, assert_train_step_matches_finite_differences
from onnx import helper, numpy_helper

import dnnspec
from dnnspec import api
from dnnspec.check.report import check_json
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.run import run_training
from dnnspec.runtime.trainer import initial_values

BASE = SPECS / "digits_0_to_4.dnn"
FINETUNE = SPECS / "finetune" / "digits_5_to_9.dnn"

SMALL = """
model m {{
  input x: float32[N, 64]
  dense(8) -> relu
  dense({units})
}}
train {{
  data digits(validation = 0.2)
  loss cross_entropy
  optimizer adam(lr = 1e-2)
  regularize l2(1e-2)
  batch 64
  epochs 1
{extra}
}}
"""


def small(tmp_path: Path, extra: str = "", units: int = 10, name: str = "m.dnn") -> Path:
    """The small spec with `extra` train lines; `units` classes (digits 0 to units - 1)."""
    path = tmp_path / name
    text = SMALL.format(extra=extra, units=units)
    if units < 10:
        text = text.replace("validation = 0.2", f"keep = {list(range(units))}")
    path.write_text(text)
    return path


def weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's base: a CNN trained on digits 0 to 4."""
    out = tmp_path_factory.mktemp("base")
    result = dnnspec.train(BASE, out=out, device="cpu")
    assert result.metrics["val_accuracy"] >= 0.97
    return out


def test_fine_tuning_keeps_the_frozen_convolutions_bit_equal_and_learns_digits_5_to_9(
    base_run: Path, tmp_path: Path
) -> None:
    result = dnnspec.train(FINETUNE, out=tmp_path, device="cpu", base=str(base_run))
    before, after = weights(base_run / "model.onnx"), weights(tmp_path / "model.onnx")
    for name in ("conv2d_1.weight", "conv2d_1.bias", "conv2d_2.weight", "conv2d_2.bias"):
        assert after[name].tobytes() == before[name].tobytes(), name
    assert not np.array_equal(after["dense_1.weight"], before["dense_1.weight"])
    # five classes: chance is 0.2, and the convolutions frozen at their random start
    # (init left out) reach about 0.87: the base's features are what get it past 0.9
    assert result.metrics["val_accuracy"] >= 0.9


def test_a_fine_tuning_run_resumes_from_its_checkpoint_not_from_init(
    base_run: Path, tmp_path: Path
) -> None:
    spec = dnnspec.load_spec(FINETUNE, base=str(base_run))
    whole = run_training(spec, tmp_path / "whole")
    run_training(spec, tmp_path / "paused", stop_after=1)
    resumed = run_training(spec, tmp_path / "paused", resume=True)
    assert resumed.steps == whole.steps
    same = weights(whole.paths["model"])
    for name, value in weights(resumed.paths["model"]).items():
        assert value.tobytes() == same[name].tobytes(), name


def test_frozen_parameters_get_no_gradient_optimizer_state_or_decay(tmp_path: Path) -> None:
    program = dnnspec.compile(small(tmp_path, "  freeze [dense_1]"))
    assert [s.name for s in program.slots] == ["dense_2.weight", "dense_2.bias"]
    inputs = {i.name for i in program.train_step.graph.input}
    outputs = {o.name for o in program.train_step.graph.output}
    assert "dense_1.weight" in inputs and "dense_1.weight.next" in outputs
    assert not any(n.startswith("dense_1.weight.") and n != "dense_1.weight.next" for n in inputs)
    carried = {c["name"]: c["kind"] for c in json.loads(_meta(program.train_step)["carried"])}
    assert carried["dense_1.weight"] == "frozen" and carried["dense_2.weight"] == "parameter"
    # the step hands the frozen weight on unchanged, through the whole update
    frozen_next = next(
        n for n in program.train_step.graph.node if "dense_1.weight.next" in n.output
    )
    assert frozen_next.op_type == "Identity" and list(frozen_next.input) == ["dense_1.weight"]


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key.removeprefix("dnnspec."): p.value for p in model.metadata_props}


def test_the_train_step_with_frozen_layers_matches_finite_differences() -> None:
    assert_train_step_matches_finite_differences(dnnspec.load_spec(FINETUNE), {"N": 6})


def test_check_counts_trainable_and_frozen_parameters_apart(tmp_path: Path) -> None:
    typed = dnnspec.check_spec(small(tmp_path, '  freeze dense_1, "dense_2.bias"'))
    report = check_json(typed)
    assert report["total_params"] == 64 * 8 + 8 + 8 * 10 + 10
    assert report["frozen_params"] == 64 * 8 + 8 + 10
    assert [layer["frozen_count"] for layer in report["layers"]] == [520, 0, 10]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  freeze [dense_9]", "no parameter of the model is called 'dense_9'"),
        ("  freeze [dense_1, dense_2]", "freeze leaves no parameter of the model to train"),
        ("  freeze [1]", "'freeze' takes layer names"),
        ('  init "runs/base"', "init takes from"),
        ("  init from()", "needs the path of a run directory or a model.onnx"),
        ('  init from("a", rename = [conv_1])', "a rename is the file's name, an arrow"),
        ('  init from("a", keep = [x])', "from(...) takes no argument 'keep'"),
    ],
)
def test_freeze_and_init_mistakes_are_located(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(DiagnosticError) as caught:
        dnnspec.check_spec(small(tmp_path, extra))
    assert message in str(caught.value)
    assert caught.value.diagnostics[0].span is not None


def test_trainable_false_on_a_layer_freezes_it_as_freeze_in_the_train_section_does(
    tmp_path: Path,
) -> None:
    written = small(tmp_path).read_text().replace("dense(8)", "dense(8, trainable = false)")
    (tmp_path / "t.dnn").write_text(written)
    program = dnnspec.compile(tmp_path / "t.dnn")
    assert [s.name for s in program.slots] == ["dense_2.weight", "dense_2.bias"]
    frozen = dnnspec.compile(small(tmp_path, "  freeze [dense_1]", name="f.dnn"))
    assert program.metadata.spec_hash == frozen.metadata.spec_hash  # one meaning, one hash
    kept = (
        small(tmp_path, name="k.dnn").read_text().replace("dense(8)", "dense(8, trainable = true)")
    )
    (tmp_path / "k.dnn").write_text(kept)
    assert len(dnnspec.compile(tmp_path / "k.dnn").slots) == 4
    for wrong, message in (
        ("dense(8, trainable = 0)", "trainable is true or false"),
        ("dense(8) -> relu(trainable = false)", "no parameter of the model is called 'relu_1'"),
    ):
        (tmp_path / "w.dnn").write_text(
            written.replace("dense(8, trainable = false) -> relu", wrong)
        )
        with pytest.raises(DiagnosticError, match=message) as caught:
            dnnspec.check_spec(tmp_path / "w.dnn")
        assert caught.value.diagnostics[0].span is not None


def _train_base(tmp_path: Path) -> Path:
    out = tmp_path / "base"
    dnnspec.train(small(tmp_path, name="base.dnn"), out=out, device="cpu")
    return out


def test_init_starts_from_a_run_and_renames_map_the_file_s_names(tmp_path: Path) -> None:
    base = _train_base(tmp_path)
    start = weights(base / "model.onnx")
    extra = f'  init from("{base}", rename = [dense_2 -> dense_3])'
    text = SMALL.format(extra=extra, units=10).replace("relu", "relu -> dense(8) -> relu")
    path = tmp_path / "deeper.dnn"
    path.write_text(text)
    program = prepare(dnnspec.load_spec(path)).program
    # the file's head is the deeper model's dense_3; its dense_2 keeps its initialiser
    assert set(program.start) == {
        "dense_1.weight",
        "dense_1.bias",
        "dense_3.weight",
        "dense_3.bias",
    }
    assert np.array_equal(program.start["dense_3.weight"], start["dense_2.weight"])
    drawn = initial_values(program, 0)
    assert np.array_equal(drawn["dense_1.weight"], start["dense_1.weight"])


def test_compile_and_export_of_a_spec_start_from_its_init_weights_without_reading_data(
    tmp_path: Path,
) -> None:
    base = _train_base(tmp_path)
    path = small(tmp_path, f'  init from("{base}", exclude = [dense_2])', name="tuned.dnn")
    compiled = api.compile_details(path)
    assert compiled.read_data is None
    assert set(compiled.program.start) == {"dense_1.weight", "dense_1.bias"}
    dnnspec.export(path, out=tmp_path / "tuned.onnx")
    exported = weights(tmp_path / "tuned.onnx")["dense_1.weight"]
    assert np.array_equal(exported, weights(base / "model.onnx")["dense_1.weight"])


def test_a_shape_mismatch_lists_what_the_model_expects_and_what_the_file_has(
    tmp_path: Path,
) -> None:
    base = _train_base(tmp_path)
    path = small(tmp_path, f'  init from("{base}")', units=5, name="five.dnn")
    with pytest.raises(DiagnosticError) as caught:
        dnnspec.train(path, out=tmp_path / "five", device="cpu")
    text = str(caught.value)
    assert (
        "holds dense_2.weight as float32[8, 10], but the model's dense_2.weight is float[8, 5]"
        in text
    )
    notes = [note.message for note in caught.value.diagnostics[0].notes]
    assert notes[0].startswith("the file has dense_1.bias, dense_1.weight, dense_2.bias")
    assert notes[1].startswith("the model has dense_1.bias, dense_1.weight, dense_2.bias")
    assert caught.value.diagnostics[0].span is not None
    # excluded, the new head keeps its initialiser
    path = small(tmp_path, f'  init from("{base}", exclude = [dense_2])', units=5, name="five.dnn")
    dnnspec.train(path, out=tmp_path / "five", device="cpu")


def test_a_foreign_model_onnx_starts_a_run_through_renames(tmp_path: Path) -> None:
    """A model.onnx another tool wrote (PyTorch-style names, a constant beside the weights)."""
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(64, 8)).astype(np.float32)
    tensors = [
        numpy_helper.from_array(hidden, "features.0.weight"),
        numpy_helper.from_array(np.zeros(8, np.float32), "features.0.bias"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape_const"),
    ]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "features.0.weight"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])],
        tensors,
    )
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(helper.make_model(graph).SerializeToString())
    path = small(tmp_path, '  init from("foreign.onnx", rename = ["features.0" -> dense_1])')
    program = prepare(dnnspec.load_spec(path)).program
    assert set(program.start) == {"dense_1.weight", "dense_1.bias"}
    assert np.array_equal(program.start["dense_1.weight"], hidden)
    with pytest.raises(DiagnosticError, match="but '.*foreign.onnx' has no tensor of that name"):
        prepare(
            dnnspec.load_spec(
                small(tmp_path, '  init from("foreign.onnx", rename = [conv -> dense_1])')
            )
        )
    with pytest.raises(DiagnosticError, match="no tensor of '.*foreign.onnx' is named like"):
        prepare(dnnspec.load_spec(small(tmp_path, '  init from("foreign.onnx")')))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no tensor of"),
        (b"\xff\xfe not protobuf at all", "it is not an ONNX file"),
    ],
)
def test_a_corrupt_or_missing_weights_file_is_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "bad.onnx").write_bytes(content)
    with pytest.raises(DiagnosticError, match=message):
        prepare(dnnspec.load_spec(small(tmp_path, '  init from("bad.onnx")')))
    with pytest.raises(DiagnosticError, match="does not exist"):
        prepare(dnnspec.load_spec(small(tmp_path, '  init from("missing/run")')))


def test_weights_held_outside_the_file_are_refused(tmp_path: Path) -> None:
    tensor = numpy_helper.from_array(np.zeros((64, 8), np.float32), "dense_1.weight")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    graph = helper.make_graph([], "g", [], [], [tensor])
    (tmp_path / "ext.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(DiagnosticError, match="points at external data"):
        prepare(dnnspec.load_spec(small(tmp_path, '  init from("ext.onnx")')))


TIED = """
model lm {{
  input ids: int64[{dims}]
  embedding(7, 4)
  dense(4) -> tanh
  dense(7, tie = embedding_1{bias})
}}
train {{
  data digits
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 8
  epochs 1
}}
"""


@pytest.mark.parametrize(
    ("dims", "bias", "params"),
    [("N, T", "", 28 + 20 + 7), ("N", "", 28 + 20 + 7), ("N", ", bias = false", 28 + 20)],
)
def test_a_tied_output_projection_counts_the_table_once_and_both_uses_train_it(
    dims: str, bias: str, params: int
) -> None:
    spec = load_spec_text(TIED.format(dims=dims, bias=bias), "tied.dnn")
    typed = dnnspec.check_spec(spec)
    assert typed.param_count() == params
    assert [p.name for p in typed.layers[-1].params] == ([] if bias else ["bias"])
    # the table's gradient is the sum of the lookup's and the projection's
    assert_train_step_matches_finite_differences(spec, {"N": 3, "T": 2}, probes=8, ids=7)


@pytest.mark.parametrize(
    ("tie", "message"),
    [
        ("embeding_1", "ties to 'embeding_1', but no layer before it is called so"),
        ("dense_1", "reads dense_1's weight as [7, 4], but it is [4, 4]"),
    ],
)
def test_a_tie_to_a_missing_or_misshapen_table_is_located(tie: str, message: str) -> None:
    text = TIED.format(dims="N", bias="").replace("tie = embedding_1", f"tie = {tie}")
    with pytest.raises(DiagnosticError) as caught:
        dnnspec.check_spec(load_spec_text(text, "tied.dnn"))
    assert message in caught.value.diagnostics[0].message
    assert caught.value.diagnostics[0].span is not None
