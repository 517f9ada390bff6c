"""What each loss promises beyond its formula: PyTorch's implementation agrees with it,
its arguments are checked against the model (a located error at the loss), and its
targets (class ids [N] or [N, T], 0/1 per unit) are checked before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_losses import LOSS_CASES, LossCase, draw, loss_graph

from dnnspec import api
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text

TORCH_LOSSES = {"cross_entropy", "nll", "mse", "mae", "huber", "smooth_l1", "binary_cross_entropy"}


def torch_loss(case: LossCase, out: np.ndarray, target: np.ndarray) -> float:
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    x, a = torch.tensor(out), case.args
    weight = (
        torch.tensor(a["class_weights"], dtype=torch.float64) if a.get("class_weights") else None
    )
    if case.loss in ("cross_entropy", "nll"):
        y = torch.tensor(target)
        if x.ndim == 3:  # PyTorch puts the class axis second
            x = x.permute(0, 2, 1)
        kw = {"weight": weight, "ignore_index": a.get("ignore_index", -100)}
        if case.loss == "nll":
            return float(f.nll_loss(x, y, **kw))
        return float(f.cross_entropy(x, y, label_smoothing=a.get("label_smoothing", 0.0), **kw))
    t = torch.tensor(target)
    if case.loss == "mse":
        return float(f.mse_loss(x, t))
    if case.loss == "mae":
        return float(f.l1_loss(x, t))
    if case.loss == "huber":
        return float(f.huber_loss(x, t, delta=a.get("delta", 1.0)))
    if case.loss == "smooth_l1":
        return float(f.smooth_l1_loss(x, t, beta=a.get("beta", 1.0)))
    pos = torch.tensor(a["pos_weight"], dtype=torch.float64) if a.get("pos_weight") else None
    return float(f.binary_cross_entropy_with_logits(x, t, pos_weight=pos))


def torch_comparable(case: LossCase) -> bool:
    """PyTorch weights the smoothing term of cross_entropy by class weight per class, not
    per label; with both set the formulas differ (ours is documented)."""
    smoothing = case.args.get("label_smoothing", 0.0)
    return not (smoothing and case.args.get("class_weights"))


def test_every_loss_is_compared_with_pytorch_or_has_no_counterpart() -> None:
    assert {c.loss for c in LOSS_CASES} <= TORCH_LOSSES


@pytest.mark.parametrize("case", [c for c in LOSS_CASES if torch_comparable(c)], ids=lambda c: c.id)
def test_loss_matches_pytorch(case: LossCase) -> None:
    run, args = loss_graph(case, "float64")
    out, target = draw(case, seed=3)
    got = float(run({"output": out, "target": target})["value"])
    bound = LossCase(case.loss, case.reference, case.output, args)
    assert got == pytest.approx(torch_loss(bound, out, target), rel=1e-10)


SPEC = """model m {{
  input x: float32[N, 2]
  dense(8) -> relu
  dense({width})
}}
train {{
  data spirals(samples = 60, classes = 3)
  loss {loss}
  optimizer sgd(lr = 0.1)
  batch 16
  epochs 1
}}
"""


def check_error(loss: str, width: int = 3) -> DiagnosticError:
    with pytest.raises(DiagnosticError) as info:
        api.check_spec(load_spec_text(SPEC.format(loss=loss, width=width)))
    return info.value


@pytest.mark.parametrize(
    ("loss", "width", "message"),
    [
        ("huber(delta = -1)", 1, "argument 'delta' of huber must be > 0"),
        ("smooth_l1(beta = -0.5)", 1, "argument 'beta' of smooth_l1 must be >= 0"),
        ("cross_entropy(class_weights = [1, 2])", 3, "class_weights has 2 weight(s)"),
        ("cross_entropy(class_weights = [1, -1, 2])", 3, "must not be negative"),
        ("cross_entropy(ignore_index = 3)", 3, "ignore_index 3 is not one of the model's 3"),
        ("nll(ignore_index = -5)", 3, "argument 'ignore_index' of nll must be >= -1"),
        ("binary_cross_entropy(pos_weight = [1, 2])", 3, "pos_weight has 2 weights"),
    ],
)
def test_bad_loss_arguments_are_located_errors(loss: str, width: int, message: str) -> None:
    diagnostic = check_error(loss, width).diagnostics[0]
    assert message in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 8


def test_nll_without_log_softmax_warns() -> None:
    typed = api.check_spec(load_spec_text(SPEC.format(loss="nll", width=3)))
    assert any("log_softmax" in w.message for w in typed.warnings)


SEQUENCE = """model tagger {{
  input x: float32[N, 6, 3]
  dense(16) -> relu
  dense(4)
}}
train {{
  data file(path = "{path}", validation = 0)
  loss cross_entropy(ignore_index = 0)
  metrics accuracy
  optimizer adam(lr = 0.05)
  batch 32
  epochs 30
  seed 1
}}
"""


def test_cross_entropy_trains_a_padded_sequence_of_labels(tmp_path: Path) -> None:
    """Per-position labels [N, T]: the class is the arg-max feature, position 5 is padding
    (class 0, ignored), so only a model that learns per position scores well."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6, 3)).astype(np.float32)
    y = x.argmax(-1) + 1
    y[:, 5] = 0
    np.savez(tmp_path / "seq.npz", x=x, y=y)
    spec = tmp_path / "tagger.dnn"
    spec.write_text(SEQUENCE.format(path="seq.npz"))
    result = api.train(spec, out=tmp_path / "run")
    # chance is log(3) = 1.1 over the counted positions; padding counts in neither
    assert result.metrics["loss"] < 0.1
    assert result.metrics["accuracy"] > 0.97


def test_binary_targets_must_be_zero_or_one(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array([[0, 1], [1, 0.5], [0, 0], [1, 1]]))
    text = SPEC.replace("spirals(samples = 60, classes = 3)", 'file(path = "d.npz")')
    spec = tmp_path / "m.dnn"
    spec.write_text(text.format(loss="binary_cross_entropy", width=2))
    with pytest.raises(DiagnosticError) as info:
        api.train(spec, out=tmp_path / "run")
    assert "the targets hold 0.5 at sample 1, unit (1,)" in info.value.diagnostics[0].message
