"""dnnspec: declarative neural-network specs compiled to ONNX, trained with ONNX Runtime.

The API functions are imported lazily so that importing one pipeline stage (say
`dnnspec.errors`) does not load onnxruntime and every other stage.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_spec", "compile", "export", "load", "load_spec", "save", "train"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dnnspec import api

        return getattr(api, name)
    raise AttributeError(f"module 'dnnspec' has no attribute {name!r}")
