"""The compile stage (assemble/compile.py): a spec's graphs from its declarations alone,
and the data read through the function the caller hands in only when the graphs depend
on it, with the reason attached to any error the data gives."""

from __future__ import annotations

import pytest

from dnnspec.assemble.compile import compile_spec
from dnnspec.assemble.steps import Program
from dnnspec.errors import DiagnosticError, error
from dnnspec.frontend import load_spec_text
from dnnspec.ir import Spec
from dnnspec.runtime.prepare import program_from_data

SPEC = """model m {{
  input x: float32[N, 3]
  dense(1)
}}

train {{
  data regression(samples = 64, features = 3)
  loss mse
  optimizer sgd(lr = 0.1)
  schedule {schedule}
  batch 16
  epochs 2
}}
"""


def never(spec: Spec) -> Program:
    raise AssertionError("the data was read")


def test_declared_shapes_and_a_fixed_schedule_compile_without_the_data() -> None:
    compiled = compile_spec(load_spec_text(SPEC.format(schedule="constant")), never)
    assert compiled.read_data is None
    assert {i.name for i in compiled.program.train_step.graph.input} >= {"x", "target"}


def test_a_schedule_counted_in_epochs_reads_the_data_and_says_why() -> None:
    spec = load_spec_text(SPEC.format(schedule="cosine(warmup = 1 epoch)"))
    compiled = compile_spec(spec, program_from_data)
    assert compiled.read_data is not None and "schedule `cosine`" in compiled.read_data


def test_an_error_from_the_data_carries_the_reason_it_was_read() -> None:
    spec = load_spec_text(SPEC.format(schedule="cosine(warmup = 1 epoch)"))
    assert spec.train is not None
    span = spec.train.data.span

    def broken(spec: Spec) -> Program:
        raise error("the data is broken", span)

    with pytest.raises(DiagnosticError) as caught:
        compile_spec(spec, broken)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == "the data is broken"
    assert [n.message for n in diagnostic.notes] == [
        "the data is read because the schedule `cosine` is measured in epochs or over the "
        "whole run, so its step counts depend on the number of training samples"
    ]
