"""The train section: data, loss, optimizer and the other settings, bound to their registries."""

from __future__ import annotations

import difflib
from typing import Any

from dnnspec import ir
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError, Note, Span, did_you_mean
from dnnspec.registry import Registry
from dnnspec.resolve.expressions import Expressions
from dnnspec.resolve.problems import Problems
from dnnspec.resolve.values import POISON, Poison, Scope, describe
from dnnspec.schema import INT64_MAX, arg_str
from dnnspec.syntax import ast
from dnnspec.training.early_stop import EARLY_STOP
from dnnspec.training.losses import LOSSES
from dnnspec.training.metrics import METRICS
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.regularize import REGULARIZERS
from dnnspec.training.schedules import SCHEDULES

TRAIN_ITEMS = (
    "data",
    "loss",
    "optimizer",
    "schedule",
    "batch",
    "epochs",
    "regularize",
    "metrics",
    "early_stop",
    "seed",
)
REQUIRED_TRAIN_ITEMS = {
    "data": "data digits(validation = 0.2)",
    "loss": "loss cross_entropy",
    "optimizer": "optimizer adam(lr = 1e-3)",
    "batch": "batch 64",
    "epochs": "epochs 10",
}


class TrainResolver:
    """Resolves the `train { ... }` section."""

    def __init__(self, problems: Problems, expr: Expressions) -> None:
        self.problems = problems
        self.expr = expr

    def resolve_train(self, train: ast.TrainDef) -> ir.TrainSpec | None:
        scope = Scope(tensors=False)
        items: dict[str, ast.TrainItem] = {}
        misspelt: set[str] = set()
        for item in train.items:
            key = item.key.id
            if key not in TRAIN_ITEMS:
                close = difflib.get_close_matches(key, TRAIN_ITEMS, n=1, cutoff=0.6)
                misspelt.update(close)
                self.problems.fail(
                    f"unknown train setting '{key}'",
                    item.key.span,
                    help=did_you_mean(key, TRAIN_ITEMS),
                )
            elif key in items:
                self.problems.fail(
                    f"'{key}' is given twice",
                    item.key.span,
                    notes=[Note(message="first given here", span=items[key].key.span)],
                )
            else:
                items[key] = item
        for key, example in REQUIRED_TRAIN_ITEMS.items():
            if key not in items and key not in misspelt:
                self.problems.fail(
                    f"the train section needs '{key}'",
                    train.span,
                    help=f"add a line like: {example}",
                )
        found: dict[str, Any] = {}
        calls: dict[str, Registry[Any]] = {
            "data": DATASETS,
            "loss": LOSSES,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
        }
        for key, item in items.items():
            if key in calls:
                found[key] = self.train_call(self.one_value(item), calls[key], scope)
            elif key in ("batch", "epochs", "seed"):
                found[key] = self.train_int(item, scope, minimum=0 if key == "seed" else 1)
            elif key in ("regularize", "metrics"):
                registry = REGULARIZERS if key == "regularize" else METRICS
                found[key] = self.train_list(item, registry, scope)
            else:
                found[key] = self.early_stop(item, scope)
        if "schedule" not in items:
            found["schedule"] = ir.Call(
                name="constant",
                args=SCHEDULES.get("constant").signature.bind("constant", [], [], train.span),
                span=train.span,
            )
        if "loss" in items and "metrics" in items:
            self.check_targets(found["loss"], found["metrics"])
        if isinstance(found.get("early_stop"), ir.Call):
            self.check_monitor(found["early_stop"], items["early_stop"], found.get("metrics", ()))
        if (
            any(v is POISON for v in found.values())
            or not REQUIRED_TRAIN_ITEMS.keys() <= found.keys()
        ):
            return None
        return ir.TrainSpec(span=train.span, **found)

    def one_value(self, item: ast.TrainItem) -> ast.Expr | None:
        if len(item.values) == 1:
            return item.values[0]
        span = item.values[1].span if item.values else item.key.span
        self.problems.fail(f"'{item.key.id}' takes one value, got {len(item.values)}", span)
        return None

    def train_call(
        self, expr: ast.Expr | None, registry: Registry[Any], scope: Scope
    ) -> ir.Call | Poison:
        """`adam(lr = 1e-3)` or `cross_entropy`: a registry entry with its bound arguments."""
        if expr is None:
            return POISON
        args: tuple[ast.Arg, ...] = ()
        if isinstance(expr, ast.Name):
            func = expr
        elif isinstance(expr, ast.Call):
            func, args = expr.func, expr.args
        else:
            return self.problems.fail(
                f"expected the name of a {registry.kind}, like {next(iter(registry), 'name')}",
                expr.span,
                scope,
            )
        func = self.expr.named(func, registry.__contains__)
        entry = self.expr.get(registry, func, scope)
        bound_args = self.expr.bind_args(args, scope)
        if entry is POISON or bound_args is None:
            return POISON
        canonical = registry.canonical(func.id) or func.id
        try:
            bound = entry.signature.bind(canonical, *bound_args, expr.span)
        except DiagnosticError as exc:
            return self.expr.absorb(exc, scope)
        return ir.Call(name=canonical, args=bound, span=expr.span)

    def train_int(self, item: ast.TrainItem, scope: Scope, minimum: int) -> int | Poison:
        expr = self.one_value(item)
        if expr is None:
            return POISON
        value = self.expr.scalar(expr, scope, f"'{item.key.id}'")
        if value is POISON:
            return POISON
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            least = "an integer, zero or more" if minimum == 0 else "a positive integer"
            return self.problems.fail(
                f"'{item.key.id}' must be {least}, got {describe(value)}", expr.span, scope
            )
        if value > INT64_MAX:
            return self.problems.fail(f"'{item.key.id}' does not fit in 64 bits", expr.span, scope)
        return value

    def train_list(
        self, item: ast.TrainItem, registry: Registry[Any], scope: Scope
    ) -> tuple[ir.Call, ...] | Poison:
        if not item.values:
            return self.problems.fail(
                f"'{item.key.id}' needs at least one {registry.kind}", item.key.span, scope
            )
        calls = [self.train_call(v, registry, scope) for v in item.values]
        names: dict[str, Span] = {}
        for call in calls:
            if isinstance(call, ir.Call):
                if call.name in names:
                    self.problems.fail(
                        f"{registry.kind} '{call.name}' is listed twice",
                        call.span,
                        scope,
                        notes=[Note(message="first listed here", span=names[call.name])],
                    )
                names.setdefault(call.name, call.span)
        resolved = tuple(c for c in calls if isinstance(c, ir.Call))
        return resolved if len(resolved) == len(calls) else POISON

    def early_stop(self, item: ast.TrainItem, scope: Scope) -> ir.Call | Poison:
        args: tuple[ast.Arg, ...] = ()
        if len(item.values) > 1 or (item.values and not isinstance(item.values[0], ast.Paren)):
            return self.problems.fail(
                "early_stop takes its arguments in parentheses",
                item.values[0].span,
                scope,
                help="write early_stop(monitor = val_loss, patience = 5)",
            )
        if item.values:
            value = item.values[0]
            assert isinstance(value, ast.Paren)
            args = value.args
        bound_args = self.expr.bind_args(args, scope)
        if bound_args is None:
            return POISON
        try:
            bound = EARLY_STOP.bind("early_stop", *bound_args, item.span)
        except DiagnosticError as exc:
            return self.expr.absorb(exc, scope)
        return ir.Call(name="early_stop", args=bound, span=item.span)

    def check_targets(self, loss: Any, metrics: Any) -> None:
        """Each metric must read the same kind of target (class labels or values) as the loss."""
        if not isinstance(loss, ir.Call) or not isinstance(metrics, tuple):
            return
        target = LOSSES.get(loss.name).target
        for metric in metrics:
            if METRICS.get(metric.name).target != target:
                fitting = sorted(m for m in METRICS if METRICS.get(m).target == target)
                kinds = {"class": "class labels", "value": "values"}
                self.problems.fail(
                    f"metric '{metric.name}' needs {kinds[METRICS.get(metric.name).target]}"
                    f", but loss '{loss.name}' trains on {kinds[target]}",
                    metric.span,
                    notes=[Note(message="the loss", span=loss.span)],
                    help=f"metrics for {kinds[target]}: {', '.join(fitting) or 'none'}",
                )

    def check_monitor(self, stop: ir.Call, item: ast.TrainItem, metrics: Any) -> None:
        listed = [m.name for m in metrics] if isinstance(metrics, tuple) else []
        known = {"loss", "val_loss", "train_loss"}
        known |= {f"{p}{m}" for m in listed for p in ("", "val_", "train_")}
        monitor = arg_str(stop.args, "monitor")
        if monitor not in known:
            span = self.arg_span(item, "monitor", 0) or stop.span
            self.problems.fail(
                f"early_stop monitors '{monitor}', which this run does not compute",
                span,
                help=did_you_mean(monitor, known)
                or "monitor val_loss or val_ plus a metric listed in 'metrics'",
            )

    def arg_span(self, item: ast.TrainItem, name: str, position: int) -> Span | None:
        """Where argument `name` (or the positional argument at `position`) is written."""
        if not item.values or not isinstance(item.values[0], ast.Paren):
            return None
        args = item.values[0].args
        for arg in args:
            if arg.name is not None and arg.name.id == name:
                return arg.value.span
        positional = [a for a in args if a.name is None]
        return positional[position].value.span if len(positional) > position else None
