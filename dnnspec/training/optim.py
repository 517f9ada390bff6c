"""Optimizers: signature plus the in-graph update rule over parameters and their state."""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

LR = ArgSpec(name="lr", type="float", default=1e-3, min=0.0, min_exclusive=True, doc="learning rate")


@dataclass(frozen=True)
class OptimizerDef:
    signature: Signature
    doc: str = ""


OPTIMIZERS: Registry[OptimizerDef] = Registry("optimizer")

OPTIMIZERS.add("sgd", OptimizerDef(Signature(args=(
    LR.model_copy(update={"default": 0.01}),
    ArgSpec(name="momentum", type="float", default=0.0, min=0.0, max=1.0),
    ArgSpec(name="nesterov", type="bool", default=False),
))))
OPTIMIZERS.add("adam", OptimizerDef(Signature(args=(
    LR,
    ArgSpec(name="beta1", type="float", default=0.9, min=0.0, max=1.0),
    ArgSpec(name="beta2", type="float", default=0.999, min=0.0, max=1.0),
    ArgSpec(name="eps", type="float", default=1e-8, min=0.0, min_exclusive=True),
))))
OPTIMIZERS.add("rmsprop", OptimizerDef(Signature(args=(
    LR,
    ArgSpec(name="rho", type="float", default=0.9, min=0.0, max=1.0),
    ArgSpec(name="eps", type="float", default=1e-8, min=0.0, min_exclusive=True),
    ArgSpec(name="momentum", type="float", default=0.0, min=0.0, max=1.0),
))))
