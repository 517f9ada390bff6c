"""The `dnnspec check` report: a layer table (shapes, parameters, FLOPs) and a summary of
the train and search sections, as rich text or as JSON for `--json`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import TypeAdapter
from rich.console import Console, JustifyMethod
from rich.measure import Measurement
from rich.table import Table

from dnnspec.check.shapes import LayerInfo, TypedModel
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError
from dnnspec.ir import ArgValue, Call, TrainSpec
from dnnspec.layers.base import LAYERS
from dnnspec.layers.common import shape_text
from dnnspec.schema import Duration, arg_float
from dnnspec.training.accumulate import update_timing
from dnnspec.training.schedules import Timing, curve_summary, factor_curve


def value_text(value: ArgValue) -> str:
    """A value written the way a spec would write it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Duration):
        unit = value.unit.removesuffix("s") if value.value == 1 else value.unit
        return f"{value.value:g} {unit}"
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def human(count: float) -> str:
    """12, 12.3K, 1.2M, 3.4G, 5.6T: FLOPs at a glance."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(int(count))


def layer_call(info: LayerInfo) -> str:
    """`dense(128)`, `dropout(0.2)`, `concat(axis = 1)`: required arguments positionally,
    optional ones only where they differ from their default."""
    node = info.node
    shown = []
    for arg in LAYERS.get(node.layer).signature.args:
        value = node.args[arg.name]
        if arg.required:
            shown.append(value_text(value))
        elif value != arg.default:
            shown.append(f"{arg.name} = {value_text(value)}")
    return f"{node.layer}({', '.join(shown)})" if shown else node.layer


def call_text(call: Call, shown: dict[str, ArgValue] | None = None) -> str:
    """`name(arg = value, ...)`, with the arguments `shown` (default: all of them)."""
    args = ", ".join(
        f"{k} = {value_text(v)}" for k, v in (call.args if shown is None else shown).items()
    )
    return f"{call.name}({args})" if args else call.name


SEQUENCE_MARK = "seq"
SEQUENCE_NOTE = (
    f"{SEQUENCE_MARK}: a sequence [N, T, features]; conv1d, the 1-D and global pools and "
    "batchnorm work over its time axis"
)

_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("name", "left"),
    ("layer", "left"),
    ("output", "left"),
    ("params", "right"),
    ("FLOPs/sample", "right"),
)


def columns_text(columns: dict[str, Any]) -> str:
    """`4 raw columns (a, color, size, b) -> 8 features of input x: a, color=blue, ...`:
    with one_hot the data is narrower than the model's input."""
    if "error" in columns:
        return f"not computed: {columns['error']}"
    names = [
        c["name"] if c["name"] is not None else str(i) for i, c in enumerate(columns["columns"])
    ]
    features = columns["features"]
    shown = ", ".join(features[:12]) + (", ..." if len(features) > 12 else "")
    return (
        f"{columns['width']} raw columns ({', '.join(names)}) -> {len(features)} features "
        f"of input {columns['input']}: {shown}"
    )


def render_check(
    typed: TypedModel, console: Console, columns: dict[str, Any] | None = None
) -> None:
    """Print the layer table, then the train and search summaries when the spec has them;
    `columns` (`api.input_columns`) adds how the data's columns become the model's input."""
    table = Table(title=f"model {typed.spec.model.name}", title_justify="left")
    names = [d.name for d in typed.spec.model.inputs] + [i.node.name for i in typed.layers]
    for header, justify in _COLUMNS:
        # names are never cut: `no_decay` and `decay` take them as written here
        name = header == "name"
        table.add_column(
            header, justify=justify, no_wrap=name, min_width=max(map(len, names)) if name else None
        )
    for decl in typed.spec.model.inputs:
        table.add_row(decl.name, f"input {decl.dtype}", shape_text(decl.dims), "", "")
    for info in typed.layers:
        table.add_row(
            info.node.name,
            layer_call(info),
            shape_text(info.out.dims) + (f" {SEQUENCE_MARK}" if info.out.sequence else ""),
            f"{info.param_count:,}" + (" frozen" if info.frozen_count else ""),
            human(info.flops),
        )
    table.add_section()
    if typed.spec.model.outputs:
        for out in typed.spec.model.outputs:
            table.add_row(out.name, f"output ({out.value})",
                          shape_text(typed.outputs[out.name].dims), "", "")  # fmt: skip
    table.add_row("total", "", "" if typed.spec.model.outputs else shape_text(typed.output.dims),
                  f"{typed.param_count():,}", human(typed.total_flops()), style="bold")  # fmt: skip
    frozen = typed.frozen_count()
    if frozen:  # as Keras' summary: what trains and what `freeze` keeps apart
        table.add_row("trainable", "", "", f"{typed.param_count() - frozen:,}", "")
        table.add_row("frozen", "", "", f"{frozen:,}", "")
    _print_whole(console, table)
    if any(info.out.sequence for info in typed.layers):
        console.print(SEQUENCE_NOTE)
    train_rows = _train_rows(typed)
    if columns is not None:
        train_rows.insert(1, ("input columns", columns_text(columns)))
    for title, rows in (("train", train_rows), ("search", _search_rows(typed))):
        if rows:
            summary = Table(title=title, title_justify="left", show_header=False, box=None)
            summary.add_column(style="bold")
            summary.add_column()
            for key, text in rows:
                summary.add_row(key, text)
            console.print(summary)


def _print_whole(console: Console, table: Table) -> None:
    """Piped or redirected, a table keeps its natural width instead of squeezing its cells
    (a terminal's width is a real limit; a file's 80 columns are not)."""
    natural = Measurement.get(console, console.options.update_width(10**4), table).maximum
    if console.is_terminal or natural <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = natural
    try:
        console.print(table)
    finally:
        console.width = width


SPLIT = (
    "by the train seed: class data stratified in memory; "
    "streamed data by a seeded hash of the row index"
)
"""How the default split draws: a table over its memory budget is split row by row as it is
read (data/stream.py `hash_split`), so it cannot be stratified."""


def _train_rows(typed: TypedModel) -> list[tuple[str, str]]:
    train = typed.spec.train
    if train is None:
        return []
    return [
        ("data", call_text(train.data, DATASETS.get(train.data.name).shown(train.data.args))),
        *_loss_rows(train),
        ("optimizer", call_text(train.optimizer)),
        ("schedule", call_text(train.schedule)),
        ("batch", _batch_text(train)),
        ("epochs", str(train.epochs)),
        ("regularize", ", ".join(call_text(c) for c in train.regularize) or "none"),
        *_metric_rows(train),
        ("preprocess", ", ".join(call_text(c) for c in train.preprocess) or "none"),
        *([("augment", ", ".join(call_text(c) for c in train.augment))] if train.augment else []),
        ("early stop", call_text(train.early_stop) if train.early_stop else "none"),
        ("clip", call_text(train.clip) if train.clip else "none"),
        ("split", call_text(train.split) if train.split else SPLIT),
        ("seed", str(train.seed)),
        ("learning rate", _lr_text(train)),
        *_reuse_rows(train),
    ]


def _reuse_rows(train: TrainSpec) -> list[tuple[str, str]]:
    """`init` and `freeze`, when the spec reuses earlier weights."""
    rows = []
    if train.init is not None:
        renames = ", ".join(f"{a} -> {b}" for a, b in train.init.rename)
        excluded = ", ".join(s.name for s in train.init.exclude)
        rows.append(
            (
                "init",
                f"from {train.init.path}"
                + (f", renaming {renames}" if renames else "")
                + (f", except {excluded}" if excluded else ""),
            )
        )
    if train.freeze:
        rows.append(("freeze", ", ".join(s.name for s in train.freeze)))
    return rows


def _batch_text(train: TrainSpec) -> str:
    """The batch, and under `accumulate` the samples of one update."""
    if train.accumulate == 1:
        return str(train.batch)
    every = train.accumulate
    return f"{train.batch}, accumulate {every}: {train.batch * every} samples per update"


def _loss_rows(train: TrainSpec) -> list[tuple[str, str]]:
    """`loss` of a model's one output, or `loss digit` per named output (with its weight)."""
    rows = []
    for head in train.trained():
        weight = f", weight {head.weight:g}" if head.output else ""
        rows.append((f"loss {head.output}".strip(), call_text(head.loss) + weight))
    return rows


def _metric_rows(train: TrainSpec) -> list[tuple[str, str]]:
    if not train.heads:
        return [("metrics", ", ".join(call_text(c) for c in train.metrics) or "none")]
    return [
        (f"metrics {h.output}", ", ".join(call_text(c) for c in h.metrics) or "none")
        for h in train.heads
    ]


def _lr_text(train: TrainSpec) -> str:
    """The rate over the run, which needs the number of training samples: the data is
    loaded (as training would) to count them."""
    try:
        data = DATASETS.get(train.data.name).load(train.data.args, train.seed, train.data.span)
    except DiagnosticError:
        return "not computed: the data could not be read"
    validation = arg_float(train.data.args, "validation") if "validation" in train.data.args else 0
    n_train = len(data) - int(round(len(data) * validation))
    steps_per_epoch = max(1, math.ceil(n_train / train.batch))
    micro = Timing(steps_per_epoch, steps_per_epoch * train.epochs)
    timing = update_timing(micro, train.accumulate)  # the schedule counts updates
    steps = np.arange(timing.total_steps, dtype=np.float64)
    factors = factor_curve(train.schedule.name, dict(train.schedule.args), timing, steps)
    lr = arg_float(train.optimizer.args, "lr")
    return curve_summary(lr, factors, timing.steps_per_epoch)


def _search_rows(typed: TypedModel) -> list[tuple[str, str]]:
    search = typed.spec.search
    if search is None:
        return []
    rows = [("method", call_text(search.method)),
            ("objective", f"{search.direction} {search.objective}")]  # fmt: skip
    rows += [
        (dim.param, f"{dim.space}({', '.join(value_text(v) for v in dim.values)})")
        for dim in search.dims
    ]
    return rows


_ARGS = TypeAdapter(dict[str, ArgValue])
_CALL = {"span"}
_TRAIN_SPANS: Any = {
    "span": True,
    **dict.fromkeys(
        ("data", "loss", "optimizer", "schedule", "early_stop", "clip", "split"), _CALL
    ),
    **dict.fromkeys(("regularize", "metrics", "decay", "no_decay", "freeze"), {"__all__": _CALL}),
    "init": {"span": True, "exclude": {"__all__": _CALL}},
    "heads": {"__all__": {"span": True, "loss": _CALL, "metrics": {"__all__": _CALL}}},
}
_SEARCH_SPANS: Any = {"span": True, "method": _CALL, "dims": {"__all__": _CALL}}


def check_json(typed: TypedModel, columns: dict[str, Any] | None = None) -> dict[str, Any]:
    """The check report as plain JSON data (shapes as lists, symbolic dims as strings)."""
    spec = typed.spec
    return {
        "input_columns": columns,
        "model": spec.model.name,
        "inputs": [
            {"name": d.name, "dtype": d.dtype, "shape": list(d.dims)} for d in spec.model.inputs
        ],
        "layers": [
            {
                "name": info.node.name,
                "layer": info.node.layer,
                "args": _ARGS.dump_python(info.node.args, mode="json"),
                "dtype": info.out.dtype,
                "shape": list(info.out.dims),
                "sequence": info.out.sequence,
                "params": {p.name: list(p.shape) for p in info.params},
                "param_count": info.param_count,
                "frozen_count": info.frozen_count,
                "flops": info.flops,
            }
            for info in typed.layers
        ],
        "output": {"dtype": typed.output.dtype, "shape": list(typed.output.dims)},
        "outputs": [
            {
                "name": o.name,
                "dtype": typed.outputs[o.name].dtype,
                "shape": list(typed.outputs[o.name].dims),
            }
            for o in spec.model.outputs
        ],  # fmt: skip
        "total_params": typed.param_count(),
        "frozen_params": typed.frozen_count(),
        "total_flops": typed.total_flops(),
        "train": spec.train and spec.train.model_dump(mode="json", exclude=_TRAIN_SPANS),
        "search": spec.search and spec.search.model_dump(mode="json", exclude=_SEARCH_SPANS),
        "warnings": [d.model_dump(mode="json") for d in typed.warnings],
    }
