"""The train section: data, loss, optimizer and the other settings, bound to their registries."""

from __future__ import annotations

import difflib
from typing import Any

from dnnspec import ir
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError, Note, Span, did_you_mean
from dnnspec.registry import Registry
from dnnspec.resolve.definitions import TRAIN_SETTINGS
from dnnspec.resolve.expressions import Expressions
from dnnspec.resolve.heads import HeadsResolver
from dnnspec.resolve.problems import Problems
from dnnspec.resolve.values import POISON, Poison, Scope, describe
from dnnspec.schema import INT64_MAX, ArgSpec, Signature, arg_str
from dnnspec.syntax import ast
from dnnspec.training.augment import AUGMENTS
from dnnspec.training.clip import CLIPPING
from dnnspec.training.early_stop import EARLY_STOP
from dnnspec.training.losses import LOSSES, TARGET_WORDS
from dnnspec.training.metrics import METRICS
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.preprocess import PREPROCESS
from dnnspec.training.regularize import REGULARIZERS
from dnnspec.training.schedules import SCHEDULES

SPLIT = Signature(
    args=(
        ArgSpec(
            name="seed",
            type="int",
            default=-1,
            min=-1,
            doc="the shuffle of the validation split (-1: the train seed)",
        ),
        ArgSpec(
            name="stratify",
            type="bool",
            default=True,
            doc="class data: hold out the same fraction of every class",
        ),
    )
)

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
    "clip",
    "split",
    "test",
    "runtime",
    "preprocess",
    "decay",
    "no_decay",
    "augment",
    "freeze",
    "init",
    "accumulate",
)
INIT_ARGS = {
    "path": 'its path once, in quotes: from("runs/base")',
    "rename": "renames as a list: rename = [conv_1 -> features_1]",
    "exclude": "layer names as a list: exclude = [head]",
}
"""How each argument of `init from(...)` is written, for the message when it is not."""
REQUIRED_TRAIN_ITEMS = {
    "data": "data digits(validation = 0.2)",
    "loss": "loss cross_entropy",
    "optimizer": "optimizer adam(lr = 1e-3)",
    "batch": "batch 64",
    "epochs": "epochs 10",
}


def plain(item: ast.TrainItem) -> tuple[ast.Expr, ...]:
    """An item's values that name no output (only loss and metrics name one: a label on
    any other item is reported and the item dropped before it is read)."""
    return tuple(v for v in item.values if not isinstance(v, ast.Labelled))


class TrainResolver:
    """Resolves the `train { ... }` section."""

    def __init__(self, problems: Problems, expr: Expressions) -> None:
        self.problems = problems
        self.expr = expr

    def resolve_train(
        self, train: ast.TrainDef, outputs: tuple[ir.Output, ...] | None = ()
    ) -> ir.TrainSpec | None:
        """`outputs`: the model's named outputs (empty for one unnamed output; None when
        the model failed to resolve, so labels are not checked against it)."""
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
                    help=f"a dataset is named by the data setting: data {key}(...)"
                    if key in DATASETS
                    else did_you_mean(key, TRAIN_ITEMS),
                )
            elif key in items:
                self.problems.fail(
                    f"'{key}' is given twice",
                    item.key.span,
                    notes=[Note(message="first given here", span=items[key].key.span)],
                )
            else:
                items[key] = item
        for key, item in list(items.items()):
            labelled = [v for v in item.values if isinstance(v, ast.Labelled)]
            if labelled and key not in ("loss", "metrics"):
                self.problems.fail(
                    f"'{key}' is one setting for the whole model; only loss and metrics "
                    "name an output",
                    labelled[0].label.span,
                    help=f"drop '{labelled[0].label.id}:'",
                )
                del items[key]
                misspelt.add(key)
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
            "clip": CLIPPING,
        }
        heads = HeadsResolver(self, outputs, scope)
        for key, item in items.items():
            if key in ("loss", "metrics") and heads.named(item):
                heads.take(item)
            elif key in calls:
                found[key] = self.train_call(self.one_value(item), calls[key], scope)
            elif key in ("batch", "epochs", "seed", "accumulate"):
                found[key] = self.train_int(item, scope, minimum=0 if key == "seed" else 1)
            elif key in ("decay", "no_decay", "freeze"):
                found[key] = self.selectors(item, scope)
            elif key == "init":
                found[key] = self.init_from(item, scope)
            elif key in ("regularize", "metrics", "preprocess", "augment"):
                lists: dict[str, Registry[Any]] = {
                    "regularize": REGULARIZERS,
                    "metrics": METRICS,
                    "preprocess": PREPROCESS,
                    "augment": AUGMENTS,
                }
                registry = lists[key]
                found[key] = self.train_list(item, registry, scope)
            elif key == "test":
                found[key] = self.test_part(item, scope)
            elif key == "runtime":
                found[key] = self.runtime(item, scope)
            elif key == "split":
                found[key] = self.paren_call(item, scope, "split", SPLIT, "split(seed = 0)")
            else:
                found[key] = self.early_stop(item, scope)
        if heads.used:
            found.pop("loss", None)
            found.pop("metrics", None)
            found["heads"] = heads.resolve(items, train.span)
        self.set_settings(found, scope)
        if "schedule" not in items:
            found["schedule"] = ir.Call(
                name="constant",
                args=SCHEDULES.get("constant").signature.bind("constant", [], [], train.span),
                span=train.span,
            )
        if "loss" in found and "metrics" in found:
            self.check_targets(found["loss"], found["metrics"])
        monitored = self.monitorable(found)
        if isinstance(found.get("early_stop"), ir.Call):
            self.check_monitor(found["early_stop"], items["early_stop"], monitored)
        schedule = found.get("schedule")
        if isinstance(schedule, ir.Call) and "schedule" in items:
            if "monitor" in schedule.args:
                self.check_monitor(schedule, items["schedule"], monitored)
            if schedule.name == "multistep":
                self.check_milestones(schedule, items["schedule"])
        if (
            any(v is POISON for v in found.values())
            or not (REQUIRED_TRAIN_ITEMS.keys() - {"loss"}) <= found.keys()
            or not ("loss" in found or "heads" in found)
        ):
            return None
        return ir.TrainSpec(span=train.span, **found)

    def runtime(self, item: ast.TrainItem, scope: Scope) -> ir.Call | Poison:
        """`runtime openvino`: a backend's name, which the runtime checks against the
        registered ones (they live above resolve), pointing here when it is unknown."""
        expr = self.one_value(item)
        if expr is None:
            return POISON
        if not isinstance(expr, ast.Name):
            return self.problems.fail(
                "'runtime' takes the name of a runtime, like runtime openvino",
                expr.span,
                scope,
                help="write runtime onnxruntime, openvino, openvino_bf16 or auto",
            )
        return ir.Call(name=expr.id, args={}, span=expr.span)

    def test_part(self, item: ast.TrainItem, scope: Scope) -> float | str | Poison:
        """`test 0.1` (a fraction held out) or `test "test.csv"` (a file)."""
        expr = self.one_value(item)
        if expr is None:
            return POISON
        if isinstance(expr, ast.String):
            if not expr.value:
                return self.problems.fail("the test file path is empty", expr.span, scope)
            return expr.value
        value = self.expr.scalar(expr, scope, "'test'")
        if value is POISON:
            return POISON
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.9:
            return self.problems.fail(
                f"'test' must be a fraction in (0, 0.9) or a file path in quotes, got "
                f"{describe(value)}",
                expr.span,
                scope,
                help='write test 0.1 or test "data/test.csv"',
            )
        return float(value)

    def set_settings(self, found: dict[str, Any], scope: Scope) -> None:
        """`--set seed=1`: a train setting chosen on the command line, unless a param of
        that name takes the value."""
        for key in TRAIN_SETTINGS:
            given = self.expr.defs.overrides.get(key)
            if given is None or key in self.expr.defs.param_decls:
                continue
            value, span = given
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
                found[key] = self.problems.fail(
                    f"--set {key} must be an integer, zero or more, got {describe(value)}",
                    span,
                    scope,
                )
            else:
                found[key] = value

    def one_value(self, item: ast.TrainItem) -> ast.Expr | None:
        values = plain(item)
        if len(values) == 1:
            return values[0]
        span = values[1].span if values else item.key.span
        self.problems.fail(f"'{item.key.id}' takes one value, got {len(values)}", span)
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
        if not plain(item):
            return self.problems.fail(
                f"'{item.key.id}' needs at least one {registry.kind}", item.key.span, scope
            )
        calls = [self.train_call(v, registry, scope) for v in plain(item)]
        names: dict[str, Span] = {}
        for value, call in zip(plain(item), calls, strict=True):
            if isinstance(call, ir.Call):
                self.check_fill(value, call, scope)
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

    def check_fill(self, value: ast.Expr, call: ir.Call, scope: Scope) -> None:
        """`impute(fill = ...)` is the value of the `constant` strategy: with another
        strategy it would be ignored, so it is an error instead."""
        if call.name != "impute" or call.args.get("strategy") == "constant":
            return
        for arg in value.args if isinstance(value, ast.Call) else ():
            if arg.name is not None and arg.name.id == "fill":
                self.problems.fail(
                    f"impute: `fill` is used only by strategy = constant, not by "
                    f"strategy = {call.args['strategy']}",
                    arg.span,
                    scope,
                    help="drop `fill`, or write strategy = constant",
                )

    def selectors(self, item: ast.TrainItem, scope: Scope) -> tuple[ir.Selector, ...] | Poison:
        """`no_decay embed, "head.bias"` (or `freeze [conv_1, conv_2]`): node names, or
        node.param in quotes."""
        values = plain(item)
        if len(values) == 1 and isinstance(values[0], ast.ListExpr):
            values = values[0].items
        if not values:
            return self.problems.fail(
                f"'{item.key.id}' needs at least one layer name", item.key.span, scope
            )
        return self.names(values, f"'{item.key.id}'", f'{item.key.id} head, "head.bias"', scope)

    def names(
        self, values: tuple[ast.Expr, ...], what: str, example: str, scope: Scope
    ) -> tuple[ir.Selector, ...] | Poison:
        """Bare node names or quoted node.param names, as selectors."""
        found: list[ir.Selector] = []
        for value in values:
            if isinstance(value, ast.Name):
                found.append(ir.Selector(name=value.id, span=value.span))
            elif isinstance(value, ast.String):
                found.append(ir.Selector(name=value.value, span=value.span))
            else:
                return self.problems.fail(
                    f"{what} takes layer names, like {example}", value.span, scope
                )
        return tuple(found)

    def init_from(self, item: ast.TrainItem, scope: Scope) -> ir.Init | Poison:
        """`init from("runs/base", rename = [conv_1 -> features_1], exclude = [head])`:
        read as written, since its names are the file's and the model's, not values."""
        value = self.one_value(item)
        if value is None:
            return POISON
        example = 'init from("runs/base")'
        if not isinstance(value, ast.Call) or value.func.id != "from":
            return self.problems.fail(
                "init takes from(...): a run directory or a model.onnx",
                value.span,
                scope,
                help=f"write {example}",
            )
        path: str | None = None
        rename: list[tuple[str, str]] = []
        exclude: tuple[ir.Selector, ...] | Poison = ()
        for arg in value.args:
            name = arg.name.id if arg.name is not None else "path"
            if name == "path" and path is None:
                given = self.expr.scalar(arg.value, scope, "init's path")
                if given is POISON:
                    return POISON
                path = given if isinstance(given, str) else ""
            elif name == "rename" and isinstance(arg.value, ast.ListExpr):
                pairs = [self.rename_pair(e, scope) for e in arg.value.items]
                rename += [p for p in pairs if p is not None]
                if len(rename) != len(pairs):
                    return POISON
            elif name == "exclude" and isinstance(arg.value, ast.ListExpr):
                exclude = self.names(arg.value.items, "exclude", "exclude = [head]", scope)
            else:
                return self.problems.fail(
                    f"from(...) takes {INIT_ARGS.get(name, 'no argument ' + repr(name))}",
                    arg.span,
                    scope,
                    help='write from("runs/base", rename = [conv_1 -> features_1], '
                    "exclude = [head])",
                )
        if not path:
            return self.problems.fail(
                "from(...) needs the path of a run directory or a model.onnx, in quotes",
                value.span,
                scope,
                help=f"write {example}",
            )
        if exclude is POISON:
            return POISON
        assert isinstance(exclude, tuple)
        return ir.Init(path=path, rename=tuple(rename), exclude=exclude, span=value.span)

    def rename_pair(self, expr: ast.Expr, scope: Scope) -> tuple[str, str] | None:
        """`conv_1 -> features_1` (or quoted names): the file's name, then the model's."""
        steps = expr.steps if isinstance(expr, ast.Chain) else ()
        words = [s.id if isinstance(s, ast.Name) else getattr(s, "value", None) for s in steps]
        if len(words) != 2 or not all(isinstance(w, str) and w for w in words):
            self.problems.fail(
                "a rename is the file's name, an arrow and the model's name",
                expr.span,
                scope,
                help='write conv_1 -> features_1 (quote a name with dots: "features.0" -> conv_1)',
            )
            return None
        return str(words[0]), str(words[1])

    def early_stop(self, item: ast.TrainItem, scope: Scope) -> ir.Call | Poison:
        return self.paren_call(
            item, scope, "early_stop", EARLY_STOP, "early_stop(monitor = val_loss, patience = 5)"
        )

    def paren_call(
        self, item: ast.TrainItem, scope: Scope, what: str, signature: Signature, example: str
    ) -> ir.Call | Poison:
        """`early_stop(...)`, `split(...)`: a setting whose arguments follow in parentheses."""
        args: tuple[ast.Arg, ...] = ()
        values = plain(item)
        if len(values) > 1 or (values and not isinstance(values[0], ast.Paren)):
            return self.problems.fail(
                f"{what} takes its arguments in parentheses",
                values[0].span,
                scope,
                help=f"write {example}",
            )
        if values:
            value = values[0]
            assert isinstance(value, ast.Paren)
            args = value.args
        bound_args = self.expr.bind_args(args, scope)
        if bound_args is None:
            return POISON
        try:
            bound = signature.bind(what, *bound_args, item.span)
        except DiagnosticError as exc:
            return self.expr.absorb(exc, scope)
        return ir.Call(name=what, args=bound, span=item.span)

    def check_targets(self, loss: Any, metrics: Any) -> None:
        """Each metric must read the kind of target (class labels or values) the loss reads;
        a threshold is for 0/1 targets only."""
        if not isinstance(loss, ir.Call) or not isinstance(metrics, tuple):
            return
        target = LOSSES.get(loss.name).target
        for metric in metrics:
            kinds = METRICS.get(metric.name).targets
            if target not in kinds:
                fitting = sorted(m for m in METRICS if target in METRICS.get(m).targets)
                self.problems.fail(
                    f"metric '{metric.name}' needs "
                    f"{' or '.join(TARGET_WORDS[k] for k in kinds)}"
                    f", but loss '{loss.name}' trains on {TARGET_WORDS[target]}",
                    metric.span,
                    notes=[Note(message="the loss", span=loss.span)],
                    help=f"metrics for {TARGET_WORDS[target]}: {', '.join(fitting) or 'none'}",
                )
            elif target != "binary" and metric.args.get("threshold", 0.5) != 0.5:
                self.problems.fail(
                    f"a threshold applies to 0/1 targets, but loss '{loss.name}' trains on "
                    f"{TARGET_WORDS[target]}",
                    metric.span,
                    notes=[Note(message="the loss", span=loss.span)],
                    help="class labels are predicted by the highest score; "
                    f"write {metric.name} without a threshold",
                )

    def monitorable(self, found: dict[str, Any]) -> list[str]:
        """The record keys a monitor may name (without `val_`/`train_`): the loss, each
        output's loss and every metric, prefixed by its output's name."""
        keys = ["loss"]
        heads = found.get("heads")
        if isinstance(heads, tuple):
            for head in heads:
                keys += [f"{head.prefix}loss", *(head.prefix + m.name for m in head.metrics)]
        elif isinstance(found.get("metrics"), tuple):
            keys += [m.name for m in found["metrics"]]
        return keys

    def check_milestones(self, schedule: ir.Call, item: ast.TrainItem) -> None:
        """multistep's milestones: at least one, each a positive epoch, strictly increasing
        (as MultiStepLR reads them; a repeated or unordered list is almost always a typo)."""
        milestones = schedule.args["milestones"]
        assert isinstance(milestones, list)
        span = self.arg_span(item, "milestones", 0) or schedule.span
        problem = None
        if not milestones:
            problem = "multistep needs at least one milestone"
        elif any(not isinstance(m, int) or m < 1 for m in milestones):
            bad = next(m for m in milestones if not isinstance(m, int) or m < 1)
            problem = f"a milestone is an epoch count, 1 or more, got {bad}"
        else:
            ints = [m for m in milestones if isinstance(m, int)]
            pairs = zip(ints, ints[1:], strict=False)
            worse = next(((a, b) for a, b in pairs if b <= a), None)
            if worse is not None:
                problem = f"milestones must increase, but {worse[1]} comes after {worse[0]}"
        if problem is not None:
            self.problems.fail(
                problem,
                span,
                help="list the epochs after which the rate drops, in order, e.g. "
                "multistep(milestones = [30, 60, 90])",
            )

    def check_monitor(self, stop: ir.Call, item: ast.TrainItem, listed: list[str]) -> None:
        """`monitor` of early_stop or a plateau schedule must name a value the run logs."""
        known = {"val_loss", "train_loss"}
        known |= {f"{p}{m}" for m in listed for p in ("", "val_", "train_")}
        monitor = arg_str(stop.args, "monitor")
        if monitor not in known:
            span = self.arg_span(item, "monitor", 0) or stop.span
            self.problems.fail(
                f"{stop.name} monitors '{monitor}', which this run does not compute",
                span,
                help=did_you_mean(monitor, known)
                or "monitor val_loss or val_ plus a metric listed in 'metrics'",
            )

    def arg_span(self, item: ast.TrainItem, name: str, position: int) -> Span | None:
        """Where argument `name` (or the positional argument at `position`) is written."""
        values = plain(item)
        if not values or not isinstance(values[0], ast.Paren | ast.Call):
            return None
        args = values[0].args
        for arg in args:
            if arg.name is not None and arg.name.id == name:
                return arg.value.span
        positional = [a for a in args if a.name is None]
        return positional[position].value.span if len(positional) > position else None
