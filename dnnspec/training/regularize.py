"""Parameter penalties added to the loss (and, analytically, to the gradients) in-graph."""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature


@dataclass(frozen=True)
class RegularizerDef:
    signature: Signature
    doc: str = ""


REGULARIZERS: Registry[RegularizerDef] = Registry("regularizer")

REGULARIZERS.add("l1", RegularizerDef(Signature(args=(
    ArgSpec(name="strength", type="float", min=0.0),)), doc="strength * sum |w| over weights"))
REGULARIZERS.add("l2", RegularizerDef(Signature(args=(
    ArgSpec(name="strength", type="float", min=0.0),)), doc="strength * sum w^2 over weights"))
