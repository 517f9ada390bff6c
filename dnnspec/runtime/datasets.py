"""Built-in and file datasets; each registered with the arguments a spec may pass."""

from __future__ import annotations

from dataclasses import dataclass

from dnnspec.registry import Registry
from dnnspec.schema import ArgSpec, Signature

VALIDATION = ArgSpec(name="validation", type="float", default=0.2, min=0.0, max=0.9,
                     doc="fraction held out for validation")


@dataclass(frozen=True)
class DatasetDef:
    signature: Signature
    doc: str = ""


DATASETS: Registry[DatasetDef] = Registry("dataset")

DATASETS.add("digits", DatasetDef(Signature(args=(VALIDATION,))))
DATASETS.add("spirals", DatasetDef(Signature(args=(
    ArgSpec(name="samples", type="int", default=2000, min=10),
    ArgSpec(name="classes", type="int", default=2, min=2),
    ArgSpec(name="noise", type="float", default=0.1, min=0.0),
    VALIDATION))))
DATASETS.add("regression", DatasetDef(Signature(args=(
    ArgSpec(name="samples", type="int", default=2000, min=10),
    ArgSpec(name="features", type="int", default=3, min=3),
    ArgSpec(name="noise", type="float", default=0.05, min=0.0),
    VALIDATION))))
DATASETS.add("file", DatasetDef(Signature(args=(
    ArgSpec(name="path", type="str"),
    VALIDATION,
    ArgSpec(name="x", type="str", default="x", doc="array name of the inputs in an .npz"),
    ArgSpec(name="y", type="str", default="y", doc="array name of the targets in an .npz"),
))))
