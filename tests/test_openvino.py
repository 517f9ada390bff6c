"""OpenVINO as a second runtime: it trains to onnxruntime's losses (the portability tool's
tolerance over 50 steps), a run checkpointed in one runtime continues in the other, a graph
it cannot compile runs in onnxruntime with a warning naming the node, `auto` measures both
and caches its choice, and the spec's `runtime` is checked against the registered names.
(The backend contract itself is `tests/test_backends.py`'s.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import SPECS
from onnx import helper

from dnnspec.api import load, train
from dnnspec.cli import main
from dnnspec.errors import Diagnostic, DiagnosticError
from dnnspec.frontend import load_spec
from dnnspec.runtime.backend import SETS, CannotCompile, load_backend
from dnnspec.runtime.fallback import open_graph
from dnnspec.runtime.prepare import prepare
from dnnspec.runtime.trainer import Trainer, initial_values, train_graphs

ov = pytest.importorskip("openvino")
from dnnspec.runtime.backends import openvino as backend  # noqa: E402

TOLERANCE = 1e-4
"""tools/portability.py's: the largest difference, relative above magnitude 1."""

TINY = """\
model tiny {{
  input x: float32[N, 64]
  dense(16) -> relu -> dropout(0.1)
  dense(10)
}}
train {{
  data digits(validation = 0.2)
  loss cross_entropy
  optimizer adam(lr = 1e-2)
  schedule cosine(warmup = 1 epoch)
  batch 32
  epochs 3
  metrics accuracy
{extra}}}
"""


def tiny(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "tiny.dnn"
    path.write_text(TINY.format(extra=extra))
    return path


class Collect:
    """A reporter that keeps the warnings and notes it is given."""

    def __init__(self) -> None:
        self.said: list[Diagnostic] = []

    def warn(self, warnings: Any) -> None:
        self.said.extend(warnings)

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...
    def advance(self, epoch: int, steps: int, samples: int, loss: float) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, message: str) -> None: ...


def records(run: Path) -> list[dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(b))


def test_fifty_openvino_steps_give_onnxruntimes_losses(tmp_path: Path) -> None:
    prep = prepare(load_spec(tiny(tmp_path)))
    data, batch = prep.train_data, prep.train.batch
    shuffle = np.random.default_rng(0).permutation
    order = np.concatenate([shuffle(len(data)), shuffle(len(data))])
    rows = order[: 50 * batch].reshape(5, 10, batch)  # two epochs' orders: across the boundary
    losses = {}
    for name in ("onnxruntime", "openvino"):
        trainer = Trainer(prep.program, "cpu", 0, backend=name)
        assert trainer.runtime == name
        trainer._bind_data(data, "x")
        losses[name] = np.concatenate([trainer.run_steps(call)[0] for call in rows])
    assert len(losses["openvino"]) == 50
    assert all(map(close, losses["openvino"], losses["onnxruntime"]))
    assert losses["openvino"][-1] < losses["openvino"][0]  # it trains


@pytest.mark.parametrize("first,then", [("onnxruntime", "openvino"), ("openvino", "onnxruntime")])
def test_a_run_checkpointed_in_one_runtime_continues_in_the_other(
    tmp_path: Path, first: str, then: str
) -> None:
    spec = tiny(tmp_path)
    whole = train(spec, out=tmp_path / "whole", plot=False, runtime="onnxruntime")
    train(spec, out=tmp_path / "cut", plot=False, runtime=first, stop_after=1)
    resumed = train(spec, out=tmp_path / "cut", plot=False, runtime=then, resume=True)
    assert resumed.steps == whole.steps
    got, want = records(tmp_path / "cut"), records(tmp_path / "whole")
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(got, want, strict=True):
        assert all(close(a[k], b[k]) for k in b), (a, b)


def test_a_training_graph_openvino_cannot_compile_runs_in_onnxruntime_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny(tmp_path)
    want = train(spec, out=tmp_path / "ort", plot=False, runtime="onnxruntime")

    class Refusing:
        """OpenVINO's core, failing to compile as it does on an op it lacks."""

        def read_model(self, *args: Any) -> Any:
            return ov.Core().read_model(*args)

        def compile_model(self, *args: Any) -> Any:
            raise RuntimeError(
                "Exception from src/inference/src/cpp/core.cpp:105:\nModel wasn't fully "
                "converted.\n-- No conversion rule found for operations: Gemm-13\n"
            )

    monkeypatch.setattr(backend, "_CORE", Refusing())
    said = Collect()
    got = train(spec, out=tmp_path / "ov", plot=False, runtime="openvino", reporter=said)
    (warning,) = [d for d in said.said if "cannot compile" in d.message]
    assert warning.severity == "warning"
    assert warning.message.startswith("openvino cannot compile the graph '")
    assert "(Gemm)" in warning.message and "node '" in warning.message
    assert "running it in onnxruntime instead" in warning.message
    assert records(tmp_path / "ov") == records(tmp_path / "ort")  # onnxruntime's, exactly
    assert got.metrics == want.metrics


def test_a_model_with_an_op_openvino_lacks_is_opened_in_onnxruntime_with_a_warning() -> None:
    node = helper.make_node(
        "Scaler", ["x"], ["y"], "scale_it", domain="ai.onnx.ml", offset=[1.0, 0.0], scale=[2.0, 3.0]
    )
    graph = helper.make_graph(
        [node],
        "model",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 2])],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    opened = open_graph("openvino", model, "cpu")
    (warning,) = opened.warnings
    assert "node 'scale_it' (Scaler)" in warning.message
    x = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)
    (y,) = opened.graph.run(None, {"x": x})
    assert np.array_equal(y, (x - [1.0, 0.0]) * [2.0, 3.0])


def test_openvino_computes_in_f32_unless_bf16_is_asked_for() -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 21)],
        ir_version=10,
    )
    for precision, kind in (("f32", ov.Type.f32), ("bf16", ov.Type.bf16)):
        compiled = backend.Compiled(model, precision, 1).model
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == kind
    assert isinstance(backend.BACKEND, backend.OpenVino) and isinstance(
        backend.BF16, backend.OpenVino
    )
    assert backend.BACKEND.precision == "f32" and backend.BF16.precision == "bf16"


def test_auto_measures_both_runtimes_once_and_says_which_it_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = tiny(tmp_path)
    notes = []
    for run in ("a", "b"):
        said = Collect()
        train(spec, out=tmp_path / run, plot=False, runtime="auto", reporter=said)
        notes += [d.message for d in said.said if d.severity == "note"]
    first, second = notes
    cache = json.loads((tmp_path / "cache" / "dnnspec" / "runtimes.json").read_text())
    ((key, entry),) = cache.items()
    assert sorted(entry["seconds"]) == ["onnxruntime", "openvino"]
    assert first.startswith(f"runtime auto: {entry['runtime']} (per step: ")
    assert "measured now" in first and "cached in" in second
    assert load(tmp_path / "a", runtime="auto").runtime == entry["runtime"]


def test_the_specs_runtime_trains_and_leaves_the_spec_hash_as_it_was(tmp_path: Path) -> None:
    plain = prepare(load_spec(tiny(tmp_path)))
    chosen = load_spec(tiny(tmp_path, "  runtime openvino\n"))
    assert chosen.train is not None and chosen.train.runtime is not None
    assert chosen.train.runtime.name == "openvino"
    assert prepare(chosen).program.metadata.spec_hash == plain.program.metadata.spec_hash
    assert '"runtime"' not in chosen.model_dump_json()


def test_an_unknown_runtime_in_the_spec_is_a_located_error_listing_the_runtimes(
    tmp_path: Path,
) -> None:
    spec = tiny(tmp_path, "  runtime openvin\n")
    with pytest.raises(DiagnosticError) as caught:
        train(spec, out=tmp_path / "run", plot=False)
    (found,) = caught.value.diagnostics
    assert found.message == "unknown runtime 'openvin'"
    assert found.span is not None and found.span.line == 14
    assert "did you mean 'openvino'?" in (found.help or "")
    assert "auto, onnxruntime, openvino, openvino_bf16" in (found.help or "")


def test_the_runtime_option_of_train_eval_and_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, run = tiny(tmp_path), tmp_path / "run"
    argv = ["train", str(spec), "--out", str(run), "--runtime", "openvino", "--no-plot"]
    assert main([*argv, "--json"]) == 0
    assert main(["eval", str(run), "--runtime", "openvino", "--json"]) == 0
    capsys.readouterr()
    np.save(tmp_path / "x.npy", np.zeros((3, 64), np.float32))
    assert main(["predict", str(run), str(tmp_path / "x.npy"), "--runtime", "openvino"]) == 0
    assert main(["predict", str(run), str(tmp_path / "x.npy"), "--runtime", "ovn"]) == 2
    _, err = capsys.readouterr()
    assert "unknown runtime 'ovn'" in err and "the runtimes are auto, onnxruntime" in err


def test_openvino_asked_for_cuda_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="the openvino runtime runs on the CPU, not CUDA"):
        train(tiny(tmp_path), out=tmp_path / "run", plot=False, runtime="openvino", device="cuda")


def test_without_the_loop_a_call_runs_its_steps_one_by_one_to_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NoLoop:
        """OpenVINO's core, failing to compile a graph holding a Loop. One core serves
        every call: a compiled model must not outlive the core that compiled it (a
        throw-away core per call left the process to crash at a later signal)."""

        core = ov.Core()

        def read_model(self, *args: Any) -> Any:
            return self.core.read_model(*args)

        def compile_model(self, model: Any, *args: Any) -> Any:
            if any(op.get_type_name() == "Loop" for op in model.get_ops()):
                raise RuntimeError("-- No conversion rule found for operations: Loop-21\n")
            return self.core.compile_model(model, *args)

    monkeypatch.setattr(backend, "_CORE", NoLoop())
    prep = prepare(load_spec(SPECS / "digits_mlp.dnn", {"hidden": "16"}), epochs=1)
    program, data = prep.program, prep.train_data
    arrays = {"x": data.x, **{out.target: data.y for out in program.outputs}}
    looped, stepped = (
        load_backend("openvino").train(train_graphs(program, 0), "cpu", initial_values(program, 0))
        for _ in range(2)
    )
    assert isinstance(looped, backend.OvTrainState) and looped.loop_graph is None
    looped.bind_data(arrays)
    rows = np.arange(5 * 16, dtype=np.int64).reshape(5, 16)[::-1].copy()
    carried = list(program.carried())
    start = looped.read(2, carried)
    losses, *_ = looped.loop(0, 3, rows)
    singles = [
        stepped.step(i % SETS, 3 + i, {k: v[row] for k, v in arrays.items()})[0]
        for i, row in enumerate(rows)
    ]
    assert losses.tolist() == [float(loss) for loss in singles]
    a, b = looped.read(1, carried), stepped.read(len(rows) % SETS, carried)
    assert all(np.array_equal(a[k], b[k]) for k in carried)
    after = looped.read(2, carried)  # the previous call's input, kept for a replay
    assert all(np.array_equal(after[k], start[k]) for k in carried)


def test_a_convolutional_model_runs_its_openvino_steps_one_by_one() -> None:
    """OpenVINO runs convolutions slower inside the Loop's body: such a model's calls go
    step by step through the single-step graph (an MLP's through the Loop), with
    onnxruntime's losses."""
    mlp = prepare(load_spec(SPECS / "digits_mlp.dnn", {"hidden": "16"}), epochs=1).program
    mlp_state = load_backend("openvino").train(train_graphs(mlp, 0), "cpu", initial_values(mlp, 0))
    assert isinstance(mlp_state, backend.OvTrainState) and mlp_state.loop_graph is not None
    prep = prepare(load_spec(SPECS / "digits_cnn.dnn"), epochs=1)
    rows = np.arange(2 * 5 * 64).reshape(2, 5, 64)
    losses = {}
    for name in ("onnxruntime", "openvino"):
        trainer = Trainer(prep.program, "cpu", 0, backend=name)
        trainer._bind_data(prep.train_data, "x")
        losses[name] = np.concatenate([trainer.run_steps(call)[0] for call in rows])
    assert isinstance(trainer.state, backend.OvTrainState) and trainer.state.loop_graph is None
    assert all(map(close, losses["openvino"], losses["onnxruntime"]))


def test_a_float64_run_is_not_given_to_openvino() -> None:
    prep = prepare(load_spec(SPECS / "digits_mlp.dnn", {"hidden": "16"}), epochs=1)
    graphs = replace(train_graphs(prep.program, 0), dtype=np.dtype(np.float64))
    with pytest.raises(CannotCompile, match="float64, which OpenVINO computes in float32"):
        load_backend("openvino").train(graphs, "cpu", initial_values(prep.program, 0))


def test_auto_measures_again_over_an_unreadable_cache_and_predicts_in_onnxruntime_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = tiny(tmp_path)
    train(spec, out=tmp_path / "run", plot=False)
    assert load(tmp_path / "run", runtime="auto").runtime == "onnxruntime"  # nothing cached
    (tmp_path / "cache" / "dnnspec").mkdir(parents=True)
    (tmp_path / "cache" / "dnnspec" / "runtimes.json").write_text("{not json")
    said = Collect()
    train(spec, out=tmp_path / "auto", plot=False, runtime="auto", reporter=said)
    assert any("measured now" in d.message for d in said.said)
