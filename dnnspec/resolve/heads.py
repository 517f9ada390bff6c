"""Losses and metrics of a model with named outputs: `loss digit: cross_entropy, size:
mse(weight = 0.5)` and `metrics digit: [accuracy, f1], size: rmse`, one `ir.Head` each.

Each output needs exactly one loss; `weight` (default 1, > 0) is the loss's share of the
total the optimizer minimises, as Keras' `loss_weights`. Metrics name their output, so
every record key is the output's name, `_`, and the metric (`digit_accuracy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnnspec import ir
from dnnspec.errors import Note, Span, did_you_mean
from dnnspec.resolve.values import POISON, Poison, Scope, describe
from dnnspec.syntax import ast
from dnnspec.training.losses import LOSSES
from dnnspec.training.metrics import METRICS

if TYPE_CHECKING:
    from dnnspec.resolve.train import TrainResolver

WEIGHT = "weight"
"""The argument of a labelled loss that is its weight, not an argument of the loss."""

RUN_KEYS = ("epoch", "step", "seconds", "lr_factor", "loss")
"""Keys every epoch record has besides the outputs' (`runtime/run.py` writes them)."""

SPLITS = {"": "training", "val_": "validation", "test_": "test"}
"""The prefixes of training, validation and test values in the records."""


def record_keys(head: ir.Head) -> list[str]:
    """The keys one output's values take in a training record: `digit_loss`,
    `digit_accuracy`, `digit_f1_per_class`."""
    keys = [f"{head.prefix}loss"]
    for metric in head.metrics:
        keys.append(head.prefix + metric.name)
        if METRICS.get(metric.name).per_class is not None:
            keys.append(f"{head.prefix}{metric.name}_per_class")
    return keys


class HeadsResolver:
    """Collects the labelled loss and metrics items and binds them per output."""

    def __init__(
        self, owner: TrainResolver, outputs: tuple[ir.Output, ...] | None, scope: Scope
    ) -> None:
        self.owner, self.problems, self.scope = owner, owner.problems, scope
        self.outputs = outputs
        self.items: dict[str, ast.TrainItem] = {}

    @property
    def used(self) -> bool:
        return bool(self.items) or bool(self.outputs)

    def named(self, item: ast.TrainItem) -> bool:
        """Whether this loss or metrics item is read per output: the model has named
        outputs, or the item names one."""
        return bool(self.outputs) or any(isinstance(v, ast.Labelled) for v in item.values)

    def take(self, item: ast.TrainItem) -> None:
        self.items[item.key.id] = item

    def labelled(self, item: ast.TrainItem) -> list[ast.Labelled]:
        """The item's values, each of which must name an output."""
        found = []
        for value in item.values:
            if isinstance(value, ast.Labelled):
                found.append(value)
                continue
            names = ", ".join(o.name for o in self.outputs or ())
            what = "loss" if item.key.id == "loss" else "metric"
            first = (self.outputs or (ir.Output(name="out", value="", span=item.span),))[0].name
            self.problems.fail(
                f"the model has named outputs ({names}): say which one this {what} is for",
                value.span,
                self.scope,
                help=f"write {item.key.id} {first}: ...",
            )
        return found

    def output(self, label: ast.Name) -> bool:
        """Whether `label` names an output of the model (reported when not)."""
        if self.outputs is None:
            return True
        names = [o.name for o in self.outputs]
        if not names:
            self.problems.fail(
                f"'{label.id}:' names an output, but the model has one unnamed output",
                label.span,
                self.scope,
                help=f"drop '{label.id}:', or name the model's outputs: "
                f"return {label.id}: ..., other: ...",
            )
            return False
        if label.id not in names:
            self.problems.fail(
                f"the model has no output named '{label.id}'",
                label.span,
                self.scope,
                help=did_you_mean(label.id, names) or f"its outputs: {', '.join(names)}",
            )
            return False
        return True

    def weighted(self, value: ast.Expr) -> tuple[ast.Expr, float | Poison]:
        """A loss call without its `weight` argument, and the weight (1 when none)."""
        if not isinstance(value, ast.Call):
            return value, 1.0
        given = [a for a in value.args if a.name is not None and a.name.id == WEIGHT]
        if not given:
            return value, 1.0
        rest = tuple(a for a in value.args if a not in given)
        weight = self.owner.expr.scalar(given[-1].value, self.scope, "a loss weight")
        if weight is POISON:
            return value.model_copy(update={"args": rest}), POISON
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            return value.model_copy(update={"args": rest}), self.problems.fail(
                f"a loss weight must be a number above 0, got {describe(weight)}",
                given[-1].value.span,
                self.scope,
                help="weights scale each output's loss in the total; drop an output's weight for 1",
            )
        if len(given) > 1:
            self.problems.fail("the loss weight is given twice", given[1].span, self.scope)
        return value.model_copy(update={"args": rest}), float(weight)

    def losses(self, span: Span) -> dict[str, tuple[ir.Call, float, Span]] | Poison:
        item = self.items.get("loss")
        if item is None:
            return POISON  # reported as a missing 'loss'
        found: dict[str, tuple[ir.Call, float, Span]] = {}
        broken = False
        for value in self.labelled(item):
            if not self.output(value.label):
                broken = True
                continue
            name = value.label.id
            if name in found:
                self.problems.fail(
                    f"output '{name}' has two losses",
                    value.label.span,
                    self.scope,
                    notes=[Note(message="its first loss", span=found[name][2])],
                    help="give each output one loss; weights balance outputs against each other",
                )
                broken = True
                continue
            expr, weight = self.weighted(value.value)
            call = self.owner.train_call(expr, LOSSES, self.scope)
            if isinstance(call, ir.Call) and not isinstance(weight, Poison):
                found[name] = (call, weight, value.span)
            else:
                broken = True
        broken = broken or len(found) < len(item.values)
        for out in self.outputs or ():
            if out.name not in found and not broken:
                self.problems.fail(
                    f"output '{out.name}' has no loss",
                    item.span,
                    self.scope,
                    notes=[Note(message=f"output '{out.name}' is named here", span=out.span)],
                    help=f"add one for it: loss ..., {out.name}: mse",
                )
                broken = True
        return POISON if broken else found

    def metrics(self) -> dict[str, list[ir.Call]] | Poison:
        item = self.items.get("metrics")
        found: dict[str, list[ir.Call]] = {}
        if item is None:
            return found
        if not item.values:
            return self.problems.fail("'metrics' needs at least one metric", item.key.span)
        labelled = self.labelled(item)
        broken = len(labelled) < len(item.values)
        for value in labelled if not broken else ():
            if not self.output(value.label):
                broken = True
                continue
            exprs = value.value.items if isinstance(value.value, ast.ListExpr) else (value.value,)
            listed = found.setdefault(value.label.id, [])
            for expr in exprs:
                call = self.owner.train_call(expr, METRICS, self.scope)
                if not isinstance(call, ir.Call):
                    broken = True
                    continue
                twice = next((c for c in listed if c.name == call.name), None)
                if twice is not None:
                    self.problems.fail(
                        f"metric '{call.name}' is listed twice for output '{value.label.id}'",
                        call.span,
                        self.scope,
                        notes=[Note(message="first listed here", span=twice.span)],
                    )
                    broken = True
                listed.append(call)
        return POISON if broken else found

    def resolve(self, items: dict[str, ast.TrainItem], span: Span) -> tuple[ir.Head, ...] | Poison:
        """One head per output, in the order the model returns them."""
        losses, metrics = self.losses(span), self.metrics()
        if isinstance(losses, Poison) or isinstance(metrics, Poison):
            return POISON
        heads = []
        order = [o.name for o in self.outputs] if self.outputs else list(losses)
        for name in order:
            loss, weight, where = losses[name]
            chosen = tuple(metrics.get(name, ()))
            self.owner.check_targets(loss, chosen)
            heads.append(ir.Head(output=name, loss=loss, weight=weight, metrics=chosen, span=where))
        return POISON if self.collide(heads) else tuple(heads)

    def collide(self, heads: list[ir.Head]) -> bool:
        """Report an output whose record keys are another value's (an output `val` would
        log its training loss as `val_loss`, the validation total early stopping reads)."""
        owner = {
            f"{split}{key}": f"the {word} {key.replace('_', ' ')}"
            for split, word in SPLITS.items()
            for key in RUN_KEYS
        }
        spans = {o.name: o.span for o in self.outputs or ()}
        clash = False
        for head in heads:
            keys = [split + key for split in SPLITS for key in record_keys(head)]
            taken = next((key for key in keys if key in owner), None)
            if taken is not None:
                self.problems.fail(
                    f"output '{head.output}' would log a value as '{taken}', which the "
                    f"training records use for {owner[taken]}",
                    spans.get(head.output, head.span),
                    self.scope,
                    help="rename the output: names starting with 'val' or 'test' (and one "
                    "output's name plus '_' starting another's) make the records ambiguous",
                )
                clash = True
            owner |= {key: f"output '{head.output}'" for key in keys if key not in owner}
        return clash
