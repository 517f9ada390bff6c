"""Gradient accumulation (`accumulate N`): one optimizer update per N micro-batches,
equal to one step on their union (the same samples as one batch of N x `batch`).

The train step stays one call per micro-batch, so the K-step Loop, drivers, checkpoints
and resume need nothing new: it carries, beside each parameter, the sum of its
micro-batch gradients weighted by their sample counts (`<param>.grad_sum`) and the
samples summed so far (`accumulate/samples`). A micro-batch's mean-loss gradient times
its samples, summed and divided by the samples summed, is the gradient of the mean loss
over the group, whatever the micro-batches' sizes. `step` counts micro-batches; the
update count that the schedule, the optimizer (Adam's bias correction, SGD's first step)
and the clipping read is derived from it. Groups never span epochs: the last micro-batch
of an epoch ends its group, as a batch of N x `batch` ends there too, so an epoch of M
micro-batches makes ceil(M / N) updates. On every other micro-batch the step hands on
the parameters and optimizer state unchanged (`Where`), and the sums grow.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.graph.builder import GraphBuilder
from dnnspec.training.schedules import Timing

GRAD_SUM = "grad_sum"
"""The state kind of a parameter's summed micro-batch gradients (times their samples)."""
SAMPLES = "accumulate/samples"
"""The carried scalar: samples whose gradients the sums hold (0 after each update)."""


def state_kinds(every: int) -> tuple[str, ...]:
    """What accumulation adds to each parameter's carried state."""
    return (GRAD_SUM,) if every > 1 else ()


def update_timing(micro: Timing, every: int) -> Timing:
    """The schedule's timing in updates, from `micro`'s counts of micro-batches."""
    if every == 1:
        return micro
    per_epoch = -(-micro.steps_per_epoch // every)
    epochs = micro.total_steps // max(1, micro.steps_per_epoch)
    return Timing(per_epoch, per_epoch * epochs)


@dataclass(frozen=True)
class Accumulated:
    """The accumulation of one micro-step: `grads` the mean gradient of each parameter over
    its group so far, `sums` and `samples` the new sums, `apply` (bool scalar) whether
    this micro-batch ends its group, `updates` (int64 scalar) the updates done before."""

    grads: dict[str, str]
    sums: dict[str, str]
    samples: str
    apply: str
    updates: str

    def keep_unless_applied(self, b: GraphBuilder, new: str, old: str) -> str:
        """`new` on a group's last micro-batch, `old` (unchanged) on the others."""
        return b.op("Where", [self.apply, new, old], hint="accumulated")

    def reset_when_applied(self, b: GraphBuilder, value: str) -> str:
        """A carried sum for the next micro-step: zero once the update used it."""
        return b.op("Where", [self.apply, b.const(0.0), value], hint="accumulator")


def accumulate(
    b: GraphBuilder,
    grads: dict[str, str],
    sums: dict[str, str],
    batch_input: str,
    step: str,
    every: int,
    per_epoch: int,
) -> Accumulated:
    """Add this micro-batch's `grads` (of its mean loss) times its samples, the batch axis
    of `batch_input`, to `sums` (input name by parameter); `step` counts micro-batches and
    an epoch has `per_epoch` of them."""
    size = b.op("Shape", [batch_input], hint="micro_batch", start=0, end=1)
    n = b.op("Cast", [b.op("Squeeze", [size])], hint="micro_samples", to=b.float_elem)
    samples = b.op("Add", [SAMPLES, n], hint="samples")
    new_sums = {
        name: b.op("Add", [sums[name], b.op("Mul", [grad, n])], hint="grad_sum")
        for name, grad in grads.items()
    }
    means = {
        name: b.op("Div", [total, samples], hint="accumulated_grad")
        for name, total in new_sums.items()
    }
    per_epoch_c = b.const(per_epoch, "int64")
    position = b.op("Mod", [step, per_epoch_c], hint="micro_in_epoch")
    epoch = b.op("Div", [step, per_epoch_c], hint="micro_epoch")
    after = b.op("Add", [position, b.const(1, "int64")])
    group_full = b.op("Equal", [b.op("Mod", [after, b.const(every, "int64")]), b.const(0, "int64")])
    epoch_end = b.op("Equal", [after, per_epoch_c])
    apply = b.op("Or", [group_full, epoch_end], hint="apply_update")
    per_epoch_updates = b.const(-(-per_epoch // every), "int64")
    updates = b.op(
        "Add",
        [
            b.op("Mul", [epoch, per_epoch_updates]),
            b.op("Div", [position, b.const(every, "int64")]),
        ],
        hint="updates",
    )
    return Accumulated(means, new_sums, samples, apply, updates)
