"""Compiling a spec: its checked model and its graphs, from the declarations alone where
they suffice.

The graphs need the data only through fitted preprocessing and the schedule's step
counts. The train step is first assembled with an `UnknownTiming`, whose step counts
raise `NeedsSamples` when a schedule reads them; only then, or with preprocessing, is the
data read, by the `with_data` the caller hands in (`runtime/prepare.py` loads, splits and
fits it: that is the runtime's, so this stage takes it as a function and never imports
it), and the reason is attached to any error the data gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dnnspec.assemble.steps import Program, build_train_step
from dnnspec.check.shapes import check_spec
from dnnspec.data.datasets import DATASETS
from dnnspec.errors import DiagnosticError, Note, error
from dnnspec.ir import Spec, TrainSpec
from dnnspec.layers.base import LAYERS
from dnnspec.training.losses import LOSSES
from dnnspec.training.schedules import NeedsSamples, UnknownTiming

WithData = Callable[[Spec], Program]
"""Assembles a spec's program from its data (loaded, split and fitted)."""


@dataclass
class Compiled:
    """A spec's program assembled for `compile`/`export`: from its declarations alone
    where they suffice. `read_data` says why the data had to be read (None: it was not);
    `from_data` lists what only the data tells and the program therefore lacks."""

    program: Program
    read_data: str | None
    from_data: list[str] = field(default_factory=list)


def train_section(spec: Spec) -> TrainSpec:
    """The spec's train section; compiling and training need one."""
    if spec.train is None:
        raise error(
            f"spec '{spec.source}' has no train section",
            spec.model.span,
            help="add a `train { data ... loss ... optimizer ... batch ... epochs ... }`",
        )
    return spec.train


def compile_spec(spec: Spec, with_data: WithData) -> Compiled:
    """The graphs of `spec` without loading its data when the spec declares every shape
    (the model's inputs and output fix them, and the number of classes is the output's
    width). The data is read (`with_data`) only when the graphs depend on it: fitted
    preprocessing (its shift and scale are constants of model.onnx) or a schedule
    measured in epochs or spanning the run (its step counts are constants of the train
    step), or data its dataset says model.onnx depends on (`DatasetDef.compile_reads`:
    images, which model.onnx takes as decoded; texts, whose tokenizer is learned from
    them and saved beside model.onnx)."""
    train = train_section(spec)
    typed = check_spec(spec)
    loss = LOSSES.get(train.trained()[0].loss.name)  # named outputs count their own classes
    classes = int(typed.output.dims[-1]) if loss.target == "class" and not train.heads else None
    reason = None
    if train.preprocess:
        reason = f"its preprocessing ({train.preprocess[0].name}) is fitted on the training data"
    elif DATASETS.get(train.data.name).compile_reads:
        reason = DATASETS.get(train.data.name).compile_reads
    elif train.accumulate > 1:
        reason = f"`accumulate {train.accumulate}` ends a group of batches at each epoch's end"
    else:
        try:
            program = build_train_step(typed, train, classes, UnknownTiming(0, 0))
        except NeedsSamples:
            reason = (
                f"the schedule `{train.schedule.name}` is measured in epochs or over the "
                "whole run, so its step counts depend on the number of training samples"
            )
    if reason is not None:
        try:
            return Compiled(with_data(spec), reason)
        except DiagnosticError as exc:
            why = Note(message=f"the data is read because {reason}", span=train.data.span)
            first = exc.diagnostics[0]
            raise DiagnosticError(
                [first.model_copy(update={"notes": (*first.notes, why)}), *exc.diagnostics[1:]],
                exc.sources,
            ) from None
    declares = DATASETS.get(train.data.name).declares
    if declares is not None:  # as training records it from the data
        declares(train.data.args, program.metadata)
    from_data = []
    if classes is not None:
        from_data.append(
            "class names (model.onnx names the classes 0.."
            f"{classes - 1}; `dnnspec train` records the data's names)"
        )
    if any(LAYERS.get(n.layer).token_ids for n in spec.model.nodes):
        from_data.append("the vocabulary of text data (recorded by `dnnspec train`)")
    return Compiled(program, None, from_data)
