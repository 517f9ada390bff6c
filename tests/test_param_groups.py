"""Which parameters weight decay touches: weights by default, never biases, normalisation
or position tables, and the train section's `decay` / `no_decay` override that per layer
or per parameter (both for an optimizer's weight_decay and for regularize l1/l2)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from dnnspec import api
from dnnspec.assemble.steps import SEED, STEP, TARGET, next_name
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.runtime.trainer import initial_values

SPEC = """model m {{
  input x: float32[N, 2]
  dense(4) -> relu
  dense(2)
}}
train {{
  data spirals(samples = 40)
  loss cross_entropy
  optimizer {optimizer}
  batch 8
  epochs 1
  {extra}
}}
"""


def decays(extra: str = "") -> dict[str, bool]:
    spec = load_spec_text(SPEC.format(optimizer="adamw", extra=extra))
    typed = api.check_spec(spec)
    return {f"{i.node.name}.{p.name}": p.decay for i in typed.layers for p in i.params}


def test_weights_decay_and_biases_do_not_by_default() -> None:
    flags = decays()
    assert [k for k, v in flags.items() if v] == ["dense_1.weight", "dense_2.weight"]


def test_decay_and_no_decay_override_per_layer_and_per_parameter() -> None:
    flags = decays('no_decay dense_2\n  decay "dense_1.bias"')
    assert flags == {
        "dense_1.weight": True,
        "dense_1.bias": True,
        "dense_2.weight": False,
        "dense_2.bias": False,
    }


def test_an_unknown_name_in_no_decay_is_a_located_error() -> None:
    with pytest.raises(DiagnosticError) as info:
        decays("no_decay dense_3")
    diagnostic = info.value.diagnostics[0]
    assert "no parameter of the model is called 'dense_3'" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 12
    assert "dense_2" in (diagnostic.help or "")


def one_step(optimizer: str, extra: str = "") -> dict[str, np.ndarray]:
    program = api.compile(load_spec_text(SPEC.format(optimizer=optimizer, extra=extra)))
    values = initial_values(program, 0)
    rng = np.random.default_rng(0)
    feed = {
        **values,
        STEP: np.array(0, np.int64),
        SEED: np.array(0, np.int64),
        "x": rng.normal(size=(8, 2)).astype(np.float32),
        TARGET: rng.integers(0, 2, 8),
    }
    session = ort.InferenceSession(
        program.train_step.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(None, feed), strict=True))
    return {k: outs[next_name(k)] for k in values} | {f"{k}.0": v for k, v in values.items()}


def test_adamw_shrinks_weights_by_lr_times_decay_and_leaves_biases_alone() -> None:
    plain = one_step("adam(lr = 0.1)")
    decayed = one_step("adamw(lr = 0.1, weight_decay = 0.5)")
    for name in ("dense_1.weight", "dense_2.weight"):
        np.testing.assert_allclose(
            decayed[name], plain[name] - 0.1 * 0.5 * plain[f"{name}.0"], rtol=1e-5, atol=1e-6
        )
    for name in ("dense_1.bias", "dense_2.bias"):
        np.testing.assert_array_equal(decayed[name], plain[name])
    forced = one_step("adamw(lr = 0.1, weight_decay = 0.5)", "decay dense_2\n  no_decay dense_1")
    np.testing.assert_array_equal(forced["dense_1.weight"], plain["dense_1.weight"])
    np.testing.assert_array_equal(forced["dense_2.weight"], decayed["dense_2.weight"])


def test_clip_value_bounds_the_sgd_step_of_every_parameter() -> None:
    """With plain SGD the update is lr * clipped gradient: at most lr * limit per element."""
    free = one_step("sgd(lr = 1)")
    clipped = one_step("sgd(lr = 1)", "clip value(1e-3)")
    for name in ("dense_1.weight", "dense_2.weight", "dense_2.bias"):
        moved = np.abs(clipped[name] - clipped[f"{name}.0"])
        assert moved.max() <= 1e-3 + 1e-7
        assert np.abs(free[name] - free[f"{name}.0"]).max() > 1e-2
