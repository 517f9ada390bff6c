"""Early stopping: stop when a monitored validation metric stops improving."""

from __future__ import annotations

from dnnspec.schema import ArgSpec, Signature

EARLY_STOP = Signature(
    args=(
        ArgSpec(name="monitor", type="str", default="val_loss"),
        ArgSpec(name="patience", type="int", default=5, min=1),
        ArgSpec(name="min_delta", type="float", default=0.0, min=0.0),
    )
)
