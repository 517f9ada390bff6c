"""The search section: the method, the objective and the space of each searched param."""

from __future__ import annotations

from typing import Any

from dnnspec import ir
from dnnspec.errors import DiagnosticError, did_you_mean
from dnnspec.resolve.expressions import Expressions
from dnnspec.resolve.problems import Problems
from dnnspec.resolve.values import (
    POISON,
    Definitions,
    Poison,
    Scope,
    article,
    compatible,
    describe,
    kind_of,
    word_in,
)
from dnnspec.search.methods import FINITE_SPACES, SEARCH_METHODS, SPACES, SearchMethodDef
from dnnspec.syntax import ast
from dnnspec.training.early_stop import higher_is_better
from dnnspec.training.metrics import METRICS

MAX_CHOICES = 256
"""Most values one choice(...) may list: each is resolved with the whole spec when checked."""

MAX_POINTS = 10**15
"""Most values a stepped space (`int_range`, `uniform(lo, hi, step)`) may hold: a grid and
a draw index them lazily, but an index must stay exact (below 2**53) and fit a machine
integer, and a finer step is a continuous space in all but name."""

DIRECTIONS: tuple[ir.Direction, ...] = ("min", "max")


class SearchResolver:
    """Resolves the `search method(...) { ... }` section against the declared params."""

    def __init__(self, problems: Problems, defs: Definitions, expr: Expressions) -> None:
        self.problems = problems
        self.defs = defs
        self.expr = expr

    def resolve_search(
        self, search: ast.SearchDef, train: ir.TrainSpec | None
    ) -> ir.SearchSpec | None:
        scope = Scope(tensors=False)
        method = self.expr.get(SEARCH_METHODS, search.method)
        objective: str = "val_loss"
        direction: ir.Direction = "min"
        rest: list[ast.Arg] = []
        given: ast.Arg | None = None
        for arg in search.args:
            if arg.name is None or arg.name.id != "objective":
                rest.append(arg)
            elif given is not None:
                self.problems.fail("the objective is given twice", arg.span)
            else:
                given = arg
                found = self.objective(arg, train)
                objective, direction = found if found is not None else ("", direction)
        bound_args = self.expr.bind_args(rest, scope)
        call: ir.Call | Poison = POISON
        if method is not POISON and bound_args is not None:
            name = SEARCH_METHODS.canonical(search.method.id) or search.method.id
            try:
                call = ir.Call(
                    name=name,
                    span=search.head,
                    args=method.signature.bind(name, *bound_args, search.head),
                )
            except DiagnosticError as exc:
                self.expr.absorb(exc)
        dims: list[ir.SearchDim] = []
        for dim in search.dims:
            resolved = self.search_dim(dim, method, [d.param for d in dims])
            if resolved is not None:
                dims.append(resolved)
        if not search.dims:
            self.problems.fail(
                "the search section declares no dimensions",
                search.span,
                help="add lines like: hidden in choice(32, 64, 128)",
            )
        if call is POISON or objective == "" or len(dims) != len(search.dims):
            return None
        assert isinstance(call, ir.Call)
        return ir.SearchSpec(
            method=call,
            objective=objective,
            direction=direction,
            dims=tuple(dims),
            span=search.span,
        )

    def objective(
        self, arg: ast.Arg, train: ir.TrainSpec | None
    ) -> tuple[str, ir.Direction] | None:
        """`max val_accuracy` -> ("val_accuracy", "max"); None when it is wrong."""
        expr = arg.value
        if isinstance(expr, ast.WithUnit) and isinstance(expr.value, ast.Name):
            direction, metric = expr.value, expr.unit
        elif isinstance(expr, ast.Name):
            direction, metric = None, expr
        else:
            self.problems.fail(
                "the objective is written like max val_accuracy or min val_loss", expr.span
            )
            return None
        chosen = None if direction is None else word_in(direction.id, DIRECTIONS)
        if direction is not None and chosen is None:
            self.problems.fail(
                f"unknown direction '{direction.id}'",
                direction.span,
                help=did_you_mean(direction.id, DIRECTIONS),
            )
            return None
        name = metric.id
        base = name.removeprefix("val_").removeprefix("train_")
        if train is not None and train.heads:
            return self.output_objective(metric, base, chosen, train)
        listed = [m.name for m in train.metrics] if train else list(METRICS)
        if base != "loss" and (base == name or base not in METRICS):
            options = ["val_loss", *(f"val_{m}" for m in listed)]
            self.problems.fail(
                f"unknown objective '{name}'",
                metric.span,
                help=did_you_mean(name, options) or "expected one of: " + ", ".join(options),
            )
            return None
        if base != "loss" and base not in listed:
            self.problems.fail(
                f"the objective '{name}' is not computed by this run",
                metric.span,
                help=f"add it to the train section: metrics {base}",
            )
            return None
        if chosen is None:
            better = base != "loss" and METRICS.get(base).higher_is_better
            return name, "max" if better else "min"
        return name, chosen

    def output_objective(
        self, metric: ast.Name, base: str, chosen: ir.Direction | None, train: ir.TrainSpec
    ) -> tuple[str, ir.Direction] | None:
        """The objective of a model with named outputs: the loss, an output's loss
        (`val_digit_loss`) or one of its metrics (`val_digit_accuracy`)."""
        keys = ["loss"]
        for head in train.heads:
            keys += [f"{head.prefix}loss", *(head.prefix + m.name for m in head.metrics)]
        if base == metric.id or base not in keys:
            options = [f"val_{k}" for k in keys]
            self.problems.fail(
                f"unknown objective '{metric.id}'",
                metric.span,
                help=did_you_mean(metric.id, options) or "expected one of: " + ", ".join(options),
            )
            return None
        if chosen is None:
            return metric.id, "max" if higher_is_better(train, base) else "min"
        return metric.id, chosen

    def search_dim(
        self, dim: ast.SearchDim, method: SearchMethodDef | Poison, earlier: list[str]
    ) -> ir.SearchDim | None:
        param = dim.param.id
        if param not in self.defs.param_decls:
            self.problems.fail(
                f"there is no param '{param}' to search",
                dim.param.span,
                help=did_you_mean(param, self.defs.param_decls)
                or f"declare it first: param {param} = ...",
            )
            return None
        if param in earlier:
            self.problems.fail(f"param '{param}' is searched twice", dim.param.span)
            return None
        space = dim.space
        if not isinstance(space, ast.Call) or space.func.id not in SPACES:
            name = space.func if isinstance(space, ast.Call) else space
            word = name.id if isinstance(name, ast.Name) else ""
            self.problems.fail(
                f"unknown search space '{word}'" if word else "expected a search space",
                name.span,
                help=did_you_mean(word, SPACES)
                if word
                else "write one of: " + ", ".join(f"{k}(...)" for k in SPACES),
            )
            return None
        kind = space.func.id
        scope = Scope(tensors=False)
        values: list[Any] = []
        for arg in space.args:
            if arg.name is not None:
                self.problems.fail(f"{kind} takes its values by position", arg.span)
                return None
            value = self.expr.scalar(arg.value, scope, "a search value")
            if value is POISON:
                return None
            values.append(value)
        if not self.check_space_values(space, values, dim.param, method):
            return None
        return ir.SearchDim(param=param, space=kind, values=tuple(values), span=dim.span)

    def check_space_values(
        self,
        space: ast.Call,
        values: list[Any],
        param_name: ast.Name,
        method: SearchMethodDef | Poison,
    ) -> bool:
        """Whether a space's values fit its kind, the searched param and the method."""
        kind, span, param = space.func.id, space.span, param_name.id
        current = self.defs.params.get(param, POISON)
        declared = None if current is POISON else kind_of(current)
        stepped = kind == "uniform" and len(values) == 3
        if (
            method is not POISON
            and method.finite_only
            and kind not in FINITE_SPACES
            and not stepped
        ):
            self.problems.fail(
                f"{kind} is a continuous space, which this search cannot enumerate",
                span,
                help="use choice(...), int_range(lo, hi) or uniform(lo, hi, step)",
            )
            return False
        if kind == "choice":
            if not values:
                self.problems.fail("choice needs at least one value", span)
                return False
            if len(values) > MAX_CHOICES:
                self.problems.fail(
                    f"choice takes at most {MAX_CHOICES} values, got {len(values)}",
                    span,
                    help="search a range with int_range, uniform or log_uniform",
                )
                return False
            for arg, value in zip(space.args, values, strict=True):
                if declared is not None and not compatible(declared, value):
                    self.problems.fail(
                        f"param '{param}' holds {article(declared)}, not {describe(value)}",
                        arg.span,
                    )
                    return False
            return True
        takes_step = kind in ("int_range", "uniform")
        if len(values) not in ((2, 3) if takes_step else (2,)) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            self.problems.fail(
                f"{kind} takes two numbers and an optional step: {kind}(lo, hi, step)"
                if takes_step
                else f"{kind} takes two numbers: {kind}(lo, hi)",
                span,
            )
            return False
        lo, hi = values[0], values[1]
        if len(values) == 3 and (
            values[2] <= 0 or (kind == "int_range" and not isinstance(values[2], int))
        ):
            what = "a positive integer" if kind == "int_range" else "positive"
            self.problems.fail(
                f"the step of {kind} must be {what}, got {values[2]!r}", space.args[2].span
            )
            return False
        if kind == "int_range":
            if not (isinstance(lo, int) and isinstance(hi, int)) or lo > hi:
                self.problems.fail(
                    f"int_range takes two integers with lo <= hi, got {lo!r} and {hi!r}", span
                )
                return False
        elif lo >= hi or (kind == "log_uniform" and lo <= 0):
            need = "0 < lo < hi" if kind == "log_uniform" else "lo < hi"
            self.problems.fail(f"{kind} needs {need}, got {lo!r} and {hi!r}", span)
            return False
        if takes_step and not (
            (hi - lo) / (values[2] if len(values) == 3 else 1) < MAX_POINTS  # False for inf
        ):
            self.problems.fail(
                f"{kind} holds more than {MAX_POINTS:,} values",
                span,
                help="take a larger step"
                + (", or draw floats with uniform(lo, hi)" if kind == "uniform" else ""),
            )
            return False
        if declared is not None and declared not in ("int", "float"):
            self.problems.fail(f"param '{param}' holds {article(declared)}, not a number", span)
            return False
        if declared == "int" and kind != "int_range":
            self.problems.fail(
                f"param '{param}' holds an int but {kind} draws floats",
                span,
                help="use int_range(lo, hi) or choice(...)",
            )
            return False
        return True
