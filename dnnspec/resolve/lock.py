"""`spec.lock.json`: the resolved spec written to disk and read back.

A lock file is input like any other: `eval` and `predict` may be handed an edited or
foreign one. Reading it validates it as a spec is validated: the JSON against the IR's
types, every call's arguments against its registry signature, the graph's references and
the train section's counts, before any later stage sees it. Data paths are pinned to the
absolute file the run read, so a run evaluates on its own data from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dnnspec import ir
from dnnspec.data.datasets import DATASETS, locate_file
from dnnspec.errors import DiagnosticError, error
from dnnspec.files import MiB, read_bytes, write_text
from dnnspec.layers.base import LAYERS
from dnnspec.registry import Registry
from dnnspec.schema import Signature
from dnnspec.search.methods import SEARCH_METHODS
from dnnspec.training.early_stop import EARLY_STOP
from dnnspec.training.losses import LOSSES
from dnnspec.training.metrics import METRICS
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.regularize import REGULARIZERS
from dnnspec.training.schedules import SCHEDULES

MAX_LOCK_BYTES = 64 * MiB
"""Largest spec.lock.json read (a resolved spec with every repeat expanded)."""


def pin_paths(spec: ir.Spec, missing_ok: bool = False) -> ir.Spec:
    """`spec` with its data file paths made absolute, as the run found them. `missing_ok`
    (compiling, which need not read the data) pins a file that does not exist (yet) where
    a run would look first: beside the spec."""
    if spec.train is None:
        return spec
    data = spec.train.data
    names = DATASETS.get(data.name).paths
    if not names:
        return spec
    args = dict(data.args)
    for name in names:
        text = str(args[name])
        try:
            args[name] = str(locate_file(text, data.span))
        except DiagnosticError:
            if not missing_ok or not text or len(text) > 1024:
                raise
            base = Path(data.span.file).parent if data.span is not None else Path()
            args[name] = os.path.abspath(base / text)
    train = spec.train.model_copy(update={"data": data.model_copy(update={"args": args})})
    return spec.model_copy(update={"train": train})


def write_lock(spec: ir.Spec, path: str | Path) -> None:
    """Write `spec.lock.json` atomically: every default visible, spans included."""
    write_text(Path(path), spec.model_dump_json(indent=2) + "\n")


def read_lock(path: str | Path) -> ir.Spec:
    """The resolved spec stored in a lock file; a missing or invalid file is a diagnostic."""
    data = read_bytes(path, "lock file", MAX_LOCK_BYTES)
    try:
        spec = ir.Spec.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise error(
            f"'{path}' is not a valid spec.lock.json: {where}: {first['msg']}",
            help="regenerate it from the spec",
        ) from None
    try:
        validate(spec)
    except DiagnosticError as exc:
        raise error(
            f"'{path}' is not a valid spec.lock.json: {exc.diagnostics[0].message}",
            help="regenerate it from the spec",
        ) from None
    return spec


def _bind(signature: Signature, what: str, call: ir.Call | ir.Node) -> None:
    """Raise the problems of `call`'s stored arguments against `signature`, and fill in
    the defaults of arguments added since the file was written (a lock file of an older
    dnnspec lacks them). A value equal to the argument's default is the registry's own
    (some defaults are sentinels, such as a pool's `stride = kernel`), so only the others
    are checked."""
    keyword = []
    for name, value in call.args.items():
        spec = signature.get(name)
        if spec is None or spec.required or spec.default != value:
            keyword.append((name, value, call.span))
    bound = signature.bind(what, [], keyword, call.span)
    for name, value in bound.items():
        call.args.setdefault(name, value)


def _call(registry: Registry[Any], call: ir.Call, where: str) -> None:
    _bind(registry.get(call.name, call.span).signature, f"{where} '{call.name}'", call)


def validate(spec: ir.Spec) -> None:
    """What resolve guarantees of a spec, checked again on one read from a file."""
    graph = spec.model
    known: set[str] = set()
    for decl in graph.inputs:
        if decl.name in known or decl.name in ir.GRAPH_NAMES:
            raise error(f"input '{decl.name}' is declared twice or takes a reserved name")
        if not decl.dims or not isinstance(decl.dims[0], str):
            raise error(f"input '{decl.name}' needs a named batch dimension")
        for dim in decl.dims:
            if isinstance(dim, int) and dim < 1:
                raise error(f"input '{decl.name}' has a dimension {dim} below 1")
        known.add(decl.name)
    for node in graph.nodes:
        if node.name in known or node.name in ir.GRAPH_NAMES:
            raise error(f"node '{node.name}' is defined twice or takes a reserved name")
        for name in node.inputs:
            if name not in known:
                raise error(f"node '{node.name}' reads '{name}', which nothing defines before it")
        _bind(LAYERS.get(node.layer, node.span).signature, node.layer, node)
        known.add(node.name)
    if graph.output not in known:
        raise error(f"the model returns '{graph.output}', which nothing defines")
    names = [o.name for o in graph.outputs]
    if len(set(names)) != len(names) or any(
        o.value not in known or o.name in ir.GRAPH_NAMES for o in graph.outputs
    ):
        raise error("the model's named outputs repeat a name or read a value nothing defines")
    train = spec.train
    if train is not None:
        if train.batch < 1 or train.epochs < 1:
            raise error(f"batch ({train.batch}) and epochs ({train.epochs}) must be at least 1")
        if not -(2**63) <= train.seed < 2**63:
            raise error(f"seed {train.seed} does not fit in 64 bits")
        _call(DATASETS, train.data, "dataset")
        names = [o.name for o in graph.outputs]
        if (train.loss is None) == (not train.heads) or [h.output for h in train.heads] != names:
            raise error("the train section's losses do not match the model's outputs")
        for head in train.trained():
            _call(LOSSES, head.loss, "loss")
            if not head.weight > 0:
                raise error(f"output '{head.output}' has a loss weight {head.weight} below 0")
            for call in head.metrics:
                _call(METRICS, call, "metric")
        _call(OPTIMIZERS, train.optimizer, "optimizer")
        _call(SCHEDULES, train.schedule, "schedule")
        for call in train.regularize:
            _call(REGULARIZERS, call, "regularizer")
        for call in train.metrics:
            _call(METRICS, call, "metric")
        if train.early_stop is not None:
            _bind(EARLY_STOP, "early_stop", train.early_stop)
    if spec.search is not None:
        _call(SEARCH_METHODS, spec.search.method, "search method")
