"""`preprocess scale_target(method)`: the targets of the outputs trained on values scaled
by a scaling step fitted on the training split, per output unit.

The data keeps the targets in their own units: the step graphs scale the target before
the loss and unscale the output before the metrics (so metrics are in the targets'
units), and model.onnx unscales its output (`assemble/steps.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dnnspec.data.datasets import Dataset
from dnnspec.errors import error
from dnnspec.ir import TrainSpec
from dnnspec.runtime.data import head_targets
from dnnspec.training.losses import LOSSES
from dnnspec.training.preprocess import PREPROCESS, Affine

Scaled = Callable[[str, str], tuple[np.ndarray, np.ndarray] | str]
"""(method, output name) -> the method fitted on that output's training targets."""


def fit_targets(train: TrainSpec, data: Dataset, scaled: Scaled | None = None) -> dict[str, Affine]:
    """Each value output's fitted scaling, by output name, from the training split `data`
    (a scaling per unit: the target's last axis), or from `scaled` with `data` a sample."""
    call = next((c for c in train.preprocess if c.name == "scale_target"), None)
    if call is None:
        return {}
    method = str(call.args["method"])
    fit = PREPROCESS.get(method).fit
    assert fit is not None
    given = head_targets(data)
    fitted: dict[str, Affine] = {}
    for head in train.trained():
        if LOSSES.get(head.loss.name).target != "value":
            continue
        y = np.asarray(given[head.output], np.float64)
        units = y.shape[-1] if y.ndim > 1 else 1
        found = fit(y.reshape(-1, units)) if scaled is None else scaled(method, head.output)
        which = f"output '{head.output}'" if head.output else "the target"
        if isinstance(found, str):
            unit = found.removeprefix("feature column ").split(" ", 1)[0]
            raise error(
                f"scale_target: unit {unit} of {which} is constant on the training split, "
                f"so it cannot be scaled",
                call.span,
            )
        shift, scale = found
        fitted[head.output] = Affine(method, shift, scale, tuple(range(units)))
    if not fitted:
        raise error(
            "scale_target scales the targets of outputs trained on values (mse, mae, "
            "huber, ...), and this model trains none",
            call.span,
            help="class labels and 0/1 targets are not scaled: drop scale_target",
        )
    return fitted
