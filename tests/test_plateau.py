"""reduce_on_plateau: the host lowers the rate factor between epochs when the monitored
value stalls (as torch.optim.lr_scheduler.ReduceLROnPlateau), the train step multiplies its
rate by the fed factor, and a paused run resumes bit-identically (the factor is carried
and checkpointed, the bookkeeping travels in the checkpoint header)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dnnspec import api
from dnnspec.assemble.steps import SEED, STEP, TARGET, next_name
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.runtime.run import run_training
from dnnspec.runtime.trainer import initial_values
from dnnspec.training.schedules import LR_FACTOR, Plateau

VALUES = [1.0, 0.9, 0.95, 0.92, 0.91, 0.8, 0.85, 0.86, 0.87, 0.9, 0.7]


def plateau(**kw: float) -> Plateau:
    args = {"monitor": "val_loss", "patience": 2, "factor": 0.5, "min_factor": 0.1}
    args.update(kw)
    call = type("Call", (), {"name": "reduce_on_plateau", "args": {"min_delta": 0.0, **args}})
    made = Plateau.from_spec(call, lambda m: False)
    assert made is not None
    return made


def test_plateau_factors_match_torch_reduce_lr_on_plateau() -> None:
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, patience=2, factor=0.5, min_lr=0.1, threshold=0.0, threshold_mode="abs"
    )
    ours = plateau()
    for value in VALUES * 3:
        ref.step(value)
        assert ours.update(value) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-15)


def test_plateau_factor_by_hand() -> None:
    ours = plateau()
    got = [ours.update(v) for v in VALUES]
    # no improvement at 0.95, 0.92, 0.91 (3 > patience 2): halve; again after 0.85..0.9
    assert got == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


SPEC = """model m {{
  input x: float32[N, 2]
  dense(16) -> relu
  dense(3)
}}
train {{
  data spirals(samples = 150, classes = 3, validation = 0.2)
  loss cross_entropy
  optimizer sgd(lr = 0.5, momentum = 0.9)
  schedule reduce_on_plateau({args})
  batch 30
  epochs 8
}}
"""


def test_the_rate_drops_and_a_paused_run_resumes_bit_identically(tmp_path: Path) -> None:
    spec = load_spec_text(SPEC.format(args="patience = 0, factor = 0.5"))
    whole = run_training(spec, tmp_path / "whole", "cpu")
    cut = run_training(spec, tmp_path / "cut", "cpu", stop_after=3)
    assert cut.stopped.startswith("paused")
    resumed = run_training(spec, tmp_path / "cut", "cpu", resume=True)
    assert resumed.steps == whole.steps
    logs = [(tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in ("whole", "cut")]
    records = [[json.loads(line) for line in log] for log in logs]
    for rec in records:
        for r in rec:
            r.pop("seconds")
    assert records[0] == records[1]
    factors = [r["lr_factor"] for r in records[0]]
    assert factors[0] == 1.0 and min(factors) < 1.0
    a = onnx.load(tmp_path / "whole" / "model.onnx").graph.initializer
    b = onnx.load(tmp_path / "cut" / "model.onnx").graph.initializer
    assert [x.raw_data for x in a] == [y.raw_data for y in b]


def test_the_train_step_scales_its_update_by_the_fed_factor() -> None:
    spec = load_spec_text(
        SPEC.format(args="").replace("sgd(lr = 0.5, momentum = 0.9)", "sgd(lr = 0.5)")
    )
    program = api.compile(spec)
    assert program.controls == [LR_FACTOR]
    session = ort.InferenceSession(
        program.train_step.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    values = initial_values(program, 0)
    rng = np.random.default_rng(0)
    feed = {
        **values,
        STEP: np.array(0, np.int64),
        SEED: np.array(0, np.int64),
        "x": rng.normal(size=(8, 2)).astype(np.float32),
        TARGET: rng.integers(0, 3, 8),
    }
    names = [o.name for o in session.get_outputs()]
    moved = {}
    for factor in (1.0, 0.25):
        feed[LR_FACTOR] = np.array(factor, np.float32)
        outs = dict(zip(names, session.run(None, feed), strict=True))
        assert outs[next_name(LR_FACTOR)] == factor
        w = "dense_2.weight"
        moved[factor] = outs[next_name(w)] - values[w]
    np.testing.assert_allclose(moved[0.25], 0.25 * moved[1.0], rtol=1e-5, atol=1e-7)


def test_monitor_must_be_computed_by_the_run() -> None:
    with pytest.raises(DiagnosticError) as info:
        load_spec_text(SPEC.format(args="monitor = val_accuracy"))
    diagnostic = info.value.diagnostics[0]
    assert "reduce_on_plateau monitors 'val_accuracy'" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 10
