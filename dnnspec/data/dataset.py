"""`Dataset`: what a dataset loader returns (inputs, targets and what the data says about
them), and the choice of named targets every loader of named outputs shares."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from dnnspec.data.tables import Layout
from dnnspec.errors import Span, did_you_mean, error
from dnnspec.metadata import AudioMeta, ImageMeta, TextMeta


@dataclass(frozen=True)
class Dataset:
    """Inputs `x` and targets `y` (class ids or float values); `labels` names the classes
    when the data gave them as words (a CSV's string labels, id i named labels[i]); `vocab`:
    for token data, the text of each id (written into model.onnx, read by `dnnspec generate`).
    A CSV's feature columns of words (categories for `one_hot`) hold in `x` the index of
    each cell's word in `words[column]`; `columns` names the feature columns."""

    x: np.ndarray
    y: np.ndarray
    vocab: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    words: dict[int, tuple[str, ...]] = field(default_factory=dict)
    layout: Layout | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    """For a model with named outputs: each output's targets by its name (`y` is then
    the first output's, which a stratified split reads)."""
    target_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Class names of the named targets given as words (a CSV column of labels)."""
    missing: dict[int, str] = field(default_factory=dict)
    """Feature columns read with missing values (NaN, from empty CSV cells): where the first
    one is, for messages (`'d.csv' line 4, column 2 (age)`)."""
    audio: AudioMeta | None = None
    """Audio clips (`x` the float32 [N, samples] waveforms): their sample rate and length,
    for model.onnx (`input` is filled in by data preparation)."""
    image: ImageMeta | None = None
    """Image data (`x` the float32 [N, C, H, W] pixels x scale): how model.onnx takes the
    decoded pixels (`input` is filled in by data preparation)."""
    text: TextMeta | None = None
    """Tokenized texts (`x` the int64 [N, length] ids): the tokenizer model.onnx's ids come
    from (`input` is filled in by data preparation)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Files the run keeps beside model.onnx, by name (a text model's tokenizer.json)."""
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    """For a model with several inputs: each input's arrays by its name (`x` is then the
    first input's). A model's one input reads `x` whatever its name."""
    input_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """For a model with several inputs read from a table with a header: each input's
    column names."""

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Dataset:
        targets = {k: v[index] for k, v in self.targets.items()}
        inputs = {k: v[index] for k, v in self.inputs.items()}
        return replace(self, x=self.x[index], y=self.y[index], targets=targets, inputs=inputs)

    def feeds(self, name: str) -> dict[str, np.ndarray]:
        """The model inputs by name: `inputs`, or `x` as the one input `name`."""
        return dict(self.inputs) if self.inputs else {name: self.x}


def digest_arrays(digest: hashlib._Hash, arrays: Iterable[np.ndarray]) -> None:
    """Add arrays to a data digest, each as its dtype, shape and bytes (hashed in place, not
    copied): a run resumes only on data of the same digest, however it was read (whole,
    streamed from a table, decoded image by image)."""
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)


def named_inputs(
    offered: dict[str, np.ndarray], names: tuple[str, ...], what: str, span: Span | None
) -> dict[str, np.ndarray]:
    """The inputs `names` of those `offered`, in that order (an unknown one is an error that
    lists them)."""
    for name in names:
        if name not in offered:
            raise error(
                f"{what} has no inputs named '{name}' for the model's input '{name}'",
                span,
                help=did_you_mean(name, list(offered))
                or f"name the model's inputs after those of the data: "
                f"{', '.join(offered) or 'none'}",
            )
    return {name: offered[name] for name in names}


def named_targets(
    offered: dict[str, np.ndarray], names: tuple[str, ...], what: str, span: Span | None
) -> dict[str, np.ndarray]:
    """The targets `names` of those `offered`, in that order (an unknown one is an error
    that lists them)."""
    for name in names:
        if name not in offered:
            raise error(
                f"{what} has no target named '{name}' for the model's output '{name}'",
                span,
                help=did_you_mean(name, list(offered))
                or f"name the outputs after its targets: {', '.join(offered) or 'none'}",
            )
    return {name: offered[name] for name in names}
