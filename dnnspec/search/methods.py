"""Search methods a spec's `search METHOD(...) { ... }` section may name.

Each entry is the method's argument schema, whether it needs every space to be finite,
and the strategy that proposes its trials; `resolve` binds and checks the section against
it, and `dnnspec tune` runs the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.ir import SpaceKind
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature
from dnnspec.search.strategies import (
    GridStrategy,
    HalvingStrategy,
    RandomStrategy,
    StrategyFactory,
    TpeStrategy,
)

SPACES: dict[SpaceKind, str] = {
    "choice": "one of the listed values",
    "uniform": "a float drawn uniformly from [lo, hi]; `uniform(lo, hi, step)` only on the grid"
    " lo, lo + step, ... <= hi",
    "log_uniform": "a float whose logarithm is uniform in [log lo, log hi] (lo > 0)",
    "int_range": "an integer from lo to hi, both included; `int_range(lo, hi, step)` takes every"
    " step-th",
}
"""The space kinds a search dimension may use, with what each draws."""

FINITE_SPACES: tuple[SpaceKind, ...] = ("choice", "int_range")
"""Spaces a grid can enumerate as written; `uniform` can too when given a step."""

SEED = ArgSpec(name="seed", type="int", default=0, min=0, doc="seed of the draws")
MAX_TRIALS = 100_000
"""Most trials a method may ask for: a halving rung is drawn whole, and a search of more
trials than this would not finish anyway (each trial is a process of a second or more)."""

TRIALS = ArgSpec(name="trials", type="int", min=1, max=MAX_TRIALS, doc="number of trials")


@dataclass(frozen=True)
class SearchMethodDef:
    """A search method: its arguments, whether it needs every space to be finite, and the
    strategy that proposes its trials."""

    signature: Signature
    finite_only: bool
    strategy: StrategyFactory
    doc: str = ""


SEARCH_METHODS: Registry[SearchMethodDef] = Registry("search method")

SEARCH_METHODS.add(
    "grid",
    SearchMethodDef(
        Signature(), True, GridStrategy, "every combination of the (finite) spaces, in order"
    ),
)
SEARCH_METHODS.add(
    "random",
    SearchMethodDef(
        Signature(args=(TRIALS, SEED)),
        False,
        RandomStrategy,
        "independent random draws from every space, reproducible from the seed",
    ),
)
SEARCH_METHODS.add(
    "halving",
    SearchMethodDef(
        Signature(
            args=(
                TRIALS,
                ArgSpec(
                    name="min_epochs",
                    type="int",
                    default=1,
                    min=1,
                    doc="epochs every trial trains before the first cut",
                ),
                ArgSpec(
                    name="eta",
                    type="int",
                    default=3,
                    min=2,
                    doc="keep the best 1/eta of each rung; the next rung trains eta times longer",
                ),
                SEED,
            )
        ),
        False,
        HalvingStrategy,
        "successive halving: random draws, the best 1/eta of each rung trained eta times longer"
        " (resumed from their checkpoints) up to the run's epochs",
    ),
)
SEARCH_METHODS.add(
    "tpe",
    SearchMethodDef(
        Signature(args=(TRIALS, SEED)),
        False,
        TpeStrategy,
        "Tree-structured Parzen Estimator (Optuna; `pip install 'dnnspec[tune]'`)",
    ),
)
