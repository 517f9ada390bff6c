"""Strategies: what each search method proposes to train, given what has finished.

A strategy is driven by the tuner through `ask`/`tell` and never runs anything itself, so
the same strategy serves local processes and Ray, and a resumed search replays recorded
results into a fresh strategy to reach the same state. Every strategy is deterministic
given its seed and the order of the results it is told.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dnnspec.errors import error
from dnnspec.ir import SearchSpec
from dnnspec.search.space import Params, draws, grid


@dataclass(frozen=True)
class Plan:
    """Train trial `trial` with `params` up to epoch `until` (None: the run's full length).
    A trial planned again with a larger `until` continues from its checkpoint."""

    trial: int
    params: Params
    until: int | None = None


class Strategy(Protocol):
    def ask(self, free: int) -> list[Plan]:
        """Plans that can start now, at most `free` of them (a halving rung comes whole);
        each plan is handed out once."""
        ...

    def tell(self, plan: Plan, value: float | None) -> None:
        """The objective a plan reached (None: the trial failed)."""
        ...


StrategyFactory = Callable[[SearchSpec, Mapping[str, Any], int, int | None], Strategy]
"""(search section, method arguments, run epochs, trial cap) -> a fresh strategy."""


class _Fixed:
    """Trials fixed up front (grid, random), handed out as workers free up so that a huge
    grid is never held in memory."""

    def __init__(self, params: Iterable[Params]) -> None:
        self.plans = (Plan(k, p) for k, p in enumerate(params))

    def ask(self, free: int) -> list[Plan]:
        return list(itertools.islice(self.plans, max(free, 0)))

    def tell(self, plan: Plan, value: float | None) -> None:
        pass


def GridStrategy(  # noqa: N802 - a factory standing where a class would
    search: SearchSpec, args: Mapping[str, Any], epochs: int, cap: int | None
) -> Strategy:
    return _Fixed(itertools.islice(grid(search.dims), cap))


def RandomStrategy(  # noqa: N802
    search: SearchSpec, args: Mapping[str, Any], epochs: int, cap: int | None
) -> Strategy:
    return _Fixed(draws(search.dims, min(args["trials"], cap or args["trials"]), args["seed"]))


def _better(search: SearchSpec) -> Callable[[float], float]:
    """A sort key that puts the best objective first."""
    return (lambda v: -v) if search.direction == "max" else (lambda v: v)


class HalvingStrategy:
    """Synchronous successive halving over epochs: every configuration trains `min_epochs`,
    the best 1/eta of a rung train eta times as long (continuing from their checkpoints),
    until the run's epochs. Rungs wait for each other, so the promotions do not depend on
    which worker finished first and a resumed search makes the same ones."""

    def __init__(
        self, search: SearchSpec, args: Mapping[str, Any], epochs: int, cap: int | None
    ) -> None:
        count = min(args["trials"], cap or args["trials"])
        self.key = _better(search)
        self.eta: int = args["eta"]
        self.epochs = epochs
        self.budget = min(args["min_epochs"], epochs)
        configs = list(draws(search.dims, count, args["seed"]))
        self.rung = [Plan(k, p, self._until()) for k, p in enumerate(configs)]
        self.fresh = list(self.rung)
        self.results: dict[int, float | None] = {}

    def _until(self) -> int | None:
        return None if self.budget >= self.epochs else self.budget

    def ask(self, free: int) -> list[Plan]:
        plans, self.fresh = self.fresh, []
        return plans

    def tell(self, plan: Plan, value: float | None) -> None:
        self.results[plan.trial] = value
        if len(self.results) < len(self.rung) or self.budget >= self.epochs:
            return
        ranked = sorted(
            (p for p in self.rung if self.results[p.trial] is not None),
            key=lambda p: (self.key(self.results[p.trial] or 0.0), p.trial),
        )
        keep = ranked[: max(1, len(self.rung) // self.eta)]
        self.budget = min(self.budget * self.eta, self.epochs)
        self.rung = [Plan(p.trial, p.params, self._until()) for p in keep]
        self.fresh = list(self.rung)
        self.results = {}


class TpeStrategy:
    """Optuna's TPE sampler through its ask/tell interface: each trial is asked when a
    worker is free, so with one worker the search is a pure function of the seed."""

    def __init__(
        self, search: SearchSpec, args: Mapping[str, Any], epochs: int, cap: int | None
    ) -> None:
        try:
            import optuna
        except ImportError:
            raise error(
                "the tpe search method needs Optuna, which is not installed",
                search.method.span,
                help="install it with: pip install 'dnnspec[tune]'",
            ) from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.left = min(args["trials"], cap or args["trials"])
        self.study = optuna.create_study(
            direction="maximize" if search.direction == "max" else "minimize",
            sampler=optuna.samplers.TPESampler(seed=args["seed"]),
        )
        self.space = {d.param: _distribution(optuna, d.space, d.values) for d in search.dims}
        self.asked: dict[int, Any] = {}

    def ask(self, free: int) -> list[Plan]:
        plans: list[Plan] = []
        while free > len(plans) and self.left > 0:
            trial = self.study.ask(self.space)
            self.asked[trial.number] = trial
            self.left -= 1
            plans.append(Plan(trial.number, dict(trial.params)))
        return plans

    def tell(self, plan: Plan, value: float | None) -> None:
        trial = self.asked.pop(plan.trial)
        if value is None or not math.isfinite(value):
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)


def _distribution(optuna: Any, space: str, values: tuple[Any, ...]) -> Any:
    dist = optuna.distributions
    step = values[2] if len(values) == 3 else None
    if space == "choice":
        return dist.CategoricalDistribution(list(values))
    if space == "int_range":
        return dist.IntDistribution(int(values[0]), int(values[1]), step=int(step or 1))
    if space == "log_uniform":
        return dist.FloatDistribution(float(values[0]), float(values[1]), log=True)
    return dist.FloatDistribution(float(values[0]), float(values[1]), step=step)
