"""Syntax IR -> resolved `dnnspec.ir.Spec`: params, blocks, repeats, arguments, lock file.

Resolution evaluates the spec like a tiny interpreter. Params (with `--set` overrides) are
evaluated in order; the model body is executed statement by statement, expanding block
calls and `repeat` loops into a flat list of layer nodes whose arguments are bound and
defaulted by each layer's `Signature`; the train and search sections are bound against
their registries. Independent mistakes are collected and raised together: a failed
computation yields `POISON`, which later steps pass along without reporting again.

The modules: `values` (what resolution computes with, and `Definitions`: params and blocks),
`problems` (the diagnostics every section reports into), `expressions` (evaluation, shared by
every section), `definitions` (params and blocks), `model`, `train` and `search` (one
section each), `resolver` (all of them in order, each given the state it shares explicitly)
and `lock` (`spec.lock.json`).
"""

from dnnspec.resolve.lock import pin_paths, read_lock, write_lock
from dnnspec.resolve.resolver import resolve
from dnnspec.resolve.values import Scalar

__all__ = ["Scalar", "pin_paths", "read_lock", "resolve", "write_lock"]
