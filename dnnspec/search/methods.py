"""Search methods a spec's `search METHOD(...) { ... }` section may name.

Each entry is the method's argument schema and what spaces it can explore; `resolve`
binds and checks the section against it, and the tuner runs the method later.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.ir import SpaceKind
from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

SPACES: dict[SpaceKind, str] = {
    "choice": "one of the listed values",
    "uniform": "a float drawn uniformly from [lo, hi]",
    "log_uniform": "a float whose logarithm is uniform in [log lo, log hi] (lo > 0)",
    "int_range": "an integer from lo to hi, both included",
}
"""The space kinds a search dimension may use, with what each draws."""

FINITE_SPACES: tuple[SpaceKind, ...] = ("choice", "int_range")


@dataclass(frozen=True)
class SearchMethodDef:
    """A search method: its arguments, and whether it needs every space to be finite."""

    signature: Signature
    finite_only: bool
    doc: str = ""


SEARCH_METHODS: Registry[SearchMethodDef] = Registry("search method")

SEARCH_METHODS.add(
    "grid", SearchMethodDef(Signature(), True, "every combination of the (finite) spaces, in order")
)
SEARCH_METHODS.add(
    "random",
    SearchMethodDef(
        Signature(args=(ArgSpec(name="trials", type="int", min=1, doc="number of trials"),)),
        False,
        "independent random draws from every space",
    ),
)
