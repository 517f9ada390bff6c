"""Regenerate the built-in tables of docs/language.md from the registries.

    .venv/bin/python tools/gen_language_tables.py          # rewrite the tables in place
    .venv/bin/python tools/gen_language_tables.py --check  # exit 1 if they are stale

The tables sit between two marker lines in the document, so the hand-written reference
around them is left alone; the lists cannot drift from what the compiler accepts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import dnnspec.layers  # noqa: F401  (registers every built-in layer)
from dnnspec.data.datasets import DATASETS
from dnnspec.layers.base import LAYERS
from dnnspec.layers.init import INITIALISERS
from dnnspec.registry import Registry
from dnnspec.schema import REQUIRED, ArgSpec, Duration, Signature
from dnnspec.search.methods import SEARCH_METHODS, SPACES
from dnnspec.training.augment import AUGMENTS
from dnnspec.training.clip import CLIPPING
from dnnspec.training.early_stop import EARLY_STOP
from dnnspec.training.losses import LOSSES, TARGET_WORDS
from dnnspec.training.metrics import METRICS, MetricDef
from dnnspec.training.optim import OPTIMIZERS
from dnnspec.training.preprocess import PREPROCESS
from dnnspec.training.regularize import REGULARIZERS
from dnnspec.training.schedules import SCHEDULES

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"
BEGIN = "<!-- BEGIN GENERATED TABLES: tools/gen_language_tables.py -->"
END = "<!-- END GENERATED TABLES -->"


def value_text(value: Any) -> str:
    """A default written the way a spec would write it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Duration):
        unit = value.unit if value.value != 1 else value.unit.removesuffix("s")
        return f"{value.value:g} {unit}"
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def arg_text(arg: ArgSpec) -> str:
    """`rate: float in [0, 1] = 0.5`: an argument's type, bounds, options and default."""
    if arg.type == "tensor":
        return f"`{arg.name}`: tensor (optional)"
    text = f"`{arg.name}`: {arg.type}"
    if arg.choices:
        text += " (" + " \\| ".join(arg.choices) + ")"
    if arg.min is not None and arg.max is not None:
        low, high = "(["[not arg.min_exclusive], ")]"[not arg.max_exclusive]
        text += f" in {low}{arg.min:g}, {arg.max:g}{high}"
    elif arg.min is not None:
        text += f" {'>' if arg.min_exclusive else '>='} {arg.min:g}"
    elif arg.max is not None:
        text += f" {'<' if arg.max_exclusive else '<='} {arg.max:g}"
    if arg.default is not REQUIRED:
        text += f" = `{value_text(arg.default)}`"
    return text


def args_cell(signature: Signature) -> str:
    return "<br>".join(arg_text(a) for a in signature.args) or "—"


def aliases(registry: Registry[Any], name: str) -> str:
    others = [n for n in registry.names() if n != name and registry.canonical(n) == name]
    return f" (also {', '.join(f'`{o}`' for o in others)})" if others else ""


def table(title: str, registry: Registry[Any], extra: str = "") -> list[str]:
    """One markdown table: name (and aliases), arguments, description."""
    head = "| name | arguments | |" if not extra else f"| name | arguments | {extra} | |"
    rule = "|---|---|---|" if not extra else "|---|---|---|---|"
    lines = [f"### {title}", "", head, rule]
    for name in sorted(registry):
        entry = registry.get(name)
        cells = [f"`{name}`{aliases(registry, name)}", args_cell(entry.signature)]
        if extra == "tensor inputs":
            cells.append("2 or more" if entry.arity is None else str(entry.arity))
        elif extra == "targets":
            kinds = entry.targets if isinstance(entry, MetricDef) else (entry.target,)
            cells.append(" or ".join(TARGET_WORDS[t] for t in kinds))
        cells.append(entry.doc.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def tables() -> str:
    """Every generated table, in the order the reference presents them."""
    lines = [BEGIN, ""]
    lines += table("Layers", LAYERS, "tensor inputs")
    lines += ["### Initialisers", "", "| name | draws |", "|---|---|"]
    lines += [f"| `{name}` | {INITIALISERS.get(name).doc} |" for name in sorted(INITIALISERS)]
    lines += [""]
    lines += table("Losses", LOSSES, "targets")
    lines += table("Metrics", METRICS, "targets")
    lines += table("Optimizers", OPTIMIZERS)
    lines += table("Schedules", SCHEDULES)
    lines += table("Regularizers", REGULARIZERS)
    lines += table("Gradient clipping", CLIPPING)
    lines += table("Preprocessing", PREPROCESS)
    lines += table("Augmentations", AUGMENTS)
    lines += table("Datasets", DATASETS)
    lines += ["### Early stopping", "", f"`early_stop(...)`: {args_cell(EARLY_STOP)}", ""]
    lines += table("Search methods", SEARCH_METHODS)
    lines += ["### Search spaces", "", "| space | draws |", "|---|---|"]
    lines += [f"| `{name}(...)` | {what} |" for name, what in SPACES.items()]
    lines += ["", END]
    return "\n".join(lines)


def updated(document: str) -> str:
    start, end = document.index(BEGIN), document.index(END) + len(END)
    return document[:start] + tables() + document[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables")
    args = parser.parse_args()
    document = DOC.read_text(encoding="utf-8")
    fresh = updated(document)
    if args.check:
        if fresh != document:
            print(f"{DOC} is stale: run tools/gen_language_tables.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
