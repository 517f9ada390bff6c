"""Earlier weights as a run's starting point: `init from("runs/base", rename = [...])`.

The file's initializers are matched to the model's parameters by name (`<node>.<param>`,
as `check` lists them), after the spec's renames. A parameter the file lacks keeps its
initialiser, a tensor the file has beyond the model is ignored (a foreign model.onnx
holds constants too), but a rename or `exclude` that names nothing, a matched tensor of
another shape, or no match at all is a located error that lists both sides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnnspec.data.files import find
from dnnspec.errors import Note, error
from dnnspec.ir import Init
from dnnspec.layers.base import ParamSpec
from dnnspec.runtime.model_file import read_weights

MODEL_FILE = "model.onnx"
SHOWN = 8
"""Names listed per side in a message: enough to see the pattern, short enough to read."""


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "") or "none"


def _selects(name: str, selector: str) -> bool:
    """`selector` names `name` itself or the node (or block) it belongs to."""
    return name == selector or name.startswith(selector + ".")


def _renamed(name: str, rename: tuple[tuple[str, str], ...]) -> str:
    """The file's `name` as the model calls it: the first rename whose source is the name
    or a node above it replaces that part."""
    for old, new in rename:
        if _selects(name, old):
            return new + name[len(old) :]
    return name


def weights_path(init: Init) -> Path:
    """The model.onnx `init` names: the file itself, or the one in a run directory. A
    relative path is looked up beside the spec first, then in the working directory."""
    path = find(Path(init.path), init.span)
    return path / MODEL_FILE if path.is_dir() else path


def start_values(
    init: Init, params: dict[str, ParamSpec], dtype: np.dtype[np.floating]
) -> dict[str, np.ndarray]:
    """The parameters `init` gives a value, by their graph name, cast to `dtype`;
    `params` are the model's parameters by graph name (`<node>.<param>`)."""
    path = weights_path(init)
    found = read_weights(path, init.span)
    file_names = sorted(found)
    model_names = sorted(params)
    where = [
        Note(message=f"the file has {_listing(file_names)}"),
        Note(message=f"the model has {_listing(model_names)}"),
    ]
    for old, new in init.rename:
        if not any(_selects(n, old) for n in file_names):
            raise error(
                f"init renames '{old}', but '{path}' has no tensor of that name",
                init.span,
                notes=where,
                help="a rename is the file's name -> the model's name",
            )
        if not any(_selects(n, new) for n in model_names):
            raise error(
                f"init renames '{old}' to '{new}', but the model has no parameter of that name",
                init.span,
                notes=where,
                help="a rename is the file's name -> the model's name (`dnnspec check` lists them)",
            )
    for sel in init.exclude:
        if not any(_selects(n, sel.name) for n in model_names):
            raise error(
                f"init excludes '{sel.name}', but the model has no parameter of that name",
                sel.span,
                notes=where[1:],
            )
    values: dict[str, np.ndarray] = {}
    for name, value in found.items():
        target = _renamed(name, init.rename)
        if target not in params or any(_selects(target, s.name) for s in init.exclude):
            continue
        expected = params[target].shape
        if value.shape != expected or not np.issubdtype(value.dtype, np.floating):
            raise error(
                f"'{path}' holds {name} as {value.dtype}{list(value.shape)}, but the model's "
                f"{target} is float{list(expected)}",
                init.span,
                notes=where,
                help=f"rename it to a parameter of that shape, or exclude = [{target}] to "
                "keep its initialiser",
            )
        values[target] = value.astype(dtype)
    if not values:
        raise error(
            f"no tensor of '{path}' is named like a parameter of the model",
            init.span,
            notes=where,
            help="map the file's names to the model's with rename = [file_name -> name]",
        )
    return values
