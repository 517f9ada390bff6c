"""dnnspec: declarative neural-network specs compiled to ONNX, trained with ONNX Runtime.

The API functions are imported lazily so that importing one pipeline stage (say
`dnnspec.errors`) does not load onnxruntime and every other stage.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see: the API functions, not the subpackages
    from dnnspec.api import check_spec, compile, export, load, load_spec, save, train, tune

__all__ = ["check_spec", "compile", "export", "load", "load_spec", "save", "train", "tune"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dnnspec import api

        return getattr(api, name)
    raise AttributeError(f"module 'dnnspec' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The `dnnspec` module, keeping each API name the API function: importing the
    `dnnspec.tune` subpackage would otherwise bind `dnnspec.tune` to the subpackage (the
    import system sets a loaded submodule on its parent), hiding `api.tune`. Import from
    the subpackage with `from dnnspec.tune.tuner import ...`, not `import ... as`."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return  # the subpackage stays reachable as sys.modules["dnnspec.tune"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
