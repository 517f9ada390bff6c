"""A trained run, loaded: `Model` gives its deployable model.onnx's predictions (from
arrays, data files, pandas frames or texts), evaluates it on the run's validation split or
another file, and generates text from a language model. `dnnspec.load` returns one; every
file of the run directory is checked before it is used (`runtime/model_file.py`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dnnspec.assemble.steps import OUTPUT
from dnnspec.data.datasets import MAX_DATA_BYTES, Dataset, read_batch
from dnnspec.data.formats import Feed
from dnnspec.data.formats.npz import read_npz
from dnnspec.data.stream import Chunked
from dnnspec.data.texts import read_texts
from dnnspec.data.tokenizer import encode as encode_with
from dnnspec.data.tokenizer import load as load_tokenizer
from dnnspec.errors import Span, did_you_mean, error
from dnnspec.resolve import read_lock
from dnnspec.runtime.backend import Device
from dnnspec.runtime.choose import for_model
from dnnspec.runtime.columns import pick_columns, transform
from dnnspec.runtime.data import fits_shape, from_text, head_labels
from dnnspec.runtime.generate import DECODER_INPUT, decode, encode, sample
from dnnspec.runtime.model_file import InputInfo, read_model
from dnnspec.runtime.prepare import prepare, read_held_out
from dnnspec.runtime.trainer import Trainer
from dnnspec.training.losses import LOSSES


class Model:
    """A trained run: its deployable model.onnx plus what is needed to evaluate it. Every
    file of the run directory is checked before it is used (see runtime/model_file.py)."""

    def __init__(
        self, run_dir: Path, device: Device = "auto", runtime: str = "onnxruntime"
    ) -> None:
        """`runtime`: the backend that runs the model (`auto`: the one training chose for
        its spec on this machine)."""
        self.run_dir, self.device = run_dir, device
        path = run_dir / "model.onnx"
        try:
            present = path.exists() or path.is_symlink()
        except OSError:  # e.g. a path too long to look up: reading it says so
            present = True
        if not present:
            raise error(
                f"'{run_dir}' holds no model.onnx",
                help="pass a directory written by `dnnspec train`",
            )
        self.file = read_model(path)
        self.onnx = self.file.proto
        self.classes = self.file.classes
        self.runtime = for_model(runtime, self.file.spec_hash, device)
        self.session, self.warnings = self.file.session(device, self.runtime)
        self.labels: list[str] = list(self.file.meta.class_labels or [])
        self.loss = self.file.meta.loss

    def probabilities(self, outputs: np.ndarray, output: str | None = None) -> np.ndarray:
        """The model's outputs (or named `output`'s) as probabilities, the way its loss
        reads them: softmax of the logits (cross_entropy), exp of log-probabilities (nll), a
        sigmoid per unit (binary_cross_entropy)."""
        loss = next(o.loss for o in self.file.outputs if o.name == (output or OUTPUT))
        known = loss is not None and loss in LOSSES
        definition = LOSSES.get(loss) if known and loss is not None else None
        if definition is None or definition.probabilities is None:
            which = f"output '{output}' of " if output is not None else ""
            raise error(
                f"{which}the model in '{self.run_dir}' predicts values"
                + (f" (loss {loss})" if loss else "")
                + ", not classes, so it has no probabilities",
                help="probabilities come from models trained with cross_entropy, nll or "
                "binary_cross_entropy",
            )
        return definition.probabilities(outputs.astype(np.float64))

    def has_probabilities(self, output: str) -> bool:
        """Whether `output` was trained by a loss that reads probabilities."""
        loss = next((o.loss for o in self.file.outputs if o.name == output), None)
        return loss is not None and loss in LOSSES and LOSSES.get(loss).probabilities is not None

    def binary(self, output: str | None = None) -> bool:
        """Whether the output (named `output`) is one 0/1 unit: a binary classifier whose
        logit says how likely the positive class (id 1) is."""
        info = next(o for o in self.file.outputs if o.name == (output or OUTPUT))
        kind = LOSSES.get(info.loss).target if info.loss and info.loss in LOSSES else None
        graph_output = next(o for o in self.onnx.graph.output if o.name == info.name)
        dims = graph_output.type.tensor_type.shape.dim
        return kind == "binary" and len(dims) == 2 and dims[1].dim_value == 1

    def class_names(self, output: str | None = None) -> list[str] | None:
        """The output's class names in id order: those recorded (class ids as text where the
        targets were ids), "0" and "1" for a binary one given numbers; None where it
        predicts values or several 0/1 units."""
        info = next(o for o in self.file.outputs if o.name == (output or OUTPUT))
        if self.binary(output):
            return list(info.labels or ("0", "1"))
        return list(info.labels) if info.labels is not None else None

    def class_ids(self, outputs: np.ndarray, output: str | None = None) -> list[Any]:
        """Each sample's predicted class id: the highest score, or for a binary output 1
        where the logit exceeds 0 (the probability exceeds 0.5, as binary_accuracy and
        precision count); None for a row that is not finite (a diverged model). An output
        of a class per position ([N, T, C]) gives a list of ids per sample."""
        finite = np.isfinite(outputs).all(axis=-1)
        ids = (outputs[..., 0] > 0) if self.binary(output) else outputs.argmax(axis=-1)
        chosen = ids.astype(np.int64).astype(object)
        chosen[~finite] = None
        listed: list[Any] = chosen.tolist()
        return listed

    def predict(
        self,
        x: npt.ArrayLike | Mapping[str, npt.ArrayLike] | str | Path,
        drop_target: bool = False,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Model outputs for a batch: for a model with one (unnamed) output its array, for
        a model with named outputs (`return digit: ..., ink: ...`) a dict of one array per
        output name, in the model's order. The batch is an array (a pandas DataFrame by the
        column names the model records, a Series as one column) or an .npy, .npz (array
        `x`), .csv or .parquet file (or folder); shapes and dtypes are checked against the
        spec: numbers for a float input are cast to its dtype (float64 or int64 to float32,
        as scikit-learn and Keras do; a value beyond float32's range is refused), other
        dtypes are refused, and CSV text is read as the declared dtype. A CSV with a header
        (or a Parquet file) is read by the column names the model records (other columns,
        such as the target, are ignored); `drop_target` takes the inputs out of rows laid
        out as the training CSV (target included). A model of several inputs takes a dict
        of arrays by input name, or an .npz with one array per input name, or a CSV or
        Parquet file read by the columns each input was trained on. A model trained with
        teacher forcing (an input `decoder_in`) given the batch without it decodes it."""
        names = [o.name for o in self.file.outputs]
        decoded = self._decoded(x)
        if decoded is not None:
            return decoded
        values = self.session.run(names, self._feeds(x, drop_target))
        outputs = dict(zip(names, values, strict=True))
        return outputs if self.file.named else outputs[OUTPUT]

    def _decoded(
        self, x: npt.ArrayLike | Mapping[str, npt.ArrayLike] | str | Path
    ) -> np.ndarray | None:
        """The scores of a model trained with teacher forcing when the batch (a dict or an
        .npz) lacks its `decoder_in`: decoded greedily (runtime/generate.py), the start
        token the id one past the classes; None when the batch is fed as it is."""
        decl = next((d for d in self.file.inputs if d.name == DECODER_INPUT), None)
        if decl is None:
            return None
        if isinstance(x, str | Path) and Path(x).suffix == ".npz":
            x = read_npz(Path(x), MAX_DATA_BYTES)
        if not isinstance(x, Mapping) or not x or DECODER_INPUT in x:
            return None
        length = decl.shape[1] if len(decl.shape) == 2 else None
        if not isinstance(length, int) or self.classes is None or self.file.named:
            raise error(
                f"no array given for '{DECODER_INPUT}', and it cannot be decoded: that "
                "needs it declared int64[N, length] with a number for length, and one "
                "output of class scores",
                help=f"pass '{DECODER_INPUT}' with the other inputs",
            )
        rows = len(np.asarray(next(iter(x.values()))))
        feeds = self._feeds({**x, DECODER_INPUT: np.zeros((rows, length), np.int64)}, False)

        def scores(decoder_in: np.ndarray) -> np.ndarray:
            out: np.ndarray = self.session.run([OUTPUT], {**feeds, DECODER_INPUT: decoder_in})[0]
            return out

        return decode(scores, rows, length, self.classes)

    def _feeds(
        self, x: npt.ArrayLike | Mapping[str, npt.ArrayLike] | str | Path, drop_target: bool
    ) -> dict[str, np.ndarray]:
        """Every input of a batch by name, read and checked against its declaration."""
        inputs = self.file.inputs
        if len(inputs) == 1 and not isinstance(x, Mapping):
            return {inputs[0].name: self._x(x, drop_target, inputs[0])}
        names = [decl.name for decl in inputs]
        if drop_target:
            raise error("--drop-target takes the inputs out of rows of a model's one input")
        if isinstance(x, str | Path):
            path = Path(x)
            shapes: dict[str, tuple[int | str, ...] | None] = {d.name: d.shape for d in inputs}
            columns = {d.name: d.columns for d in inputs if d.columns is not None}
            batch = read_batch(path, Feed(shapes, self.file.expects, columns=columns))
            given: dict[str, Any] = dict(batch.arrays)
            if batch.text:
                for decl in inputs:
                    given[decl.name] = from_text(given[decl.name], decl.dtype, f"'{path}'")
        elif isinstance(x, Mapping):
            given = dict(x)
        else:
            raise error(
                f"the model has {len(inputs)} inputs ({', '.join(names)}): pass a dict of "
                "arrays by input name",
                help="or an .npz file with one array per input name",
            )
        for name in given:
            if name not in names:
                raise error(
                    f"the model has no input '{name}'",
                    help=did_you_mean(name, names) or f"its inputs: {', '.join(names)}",
                )
        for name in names:
            if name not in given:
                raise error(f"no array given for the model's input '{name}'")
        feeds = {decl.name: self._x(given[decl.name], False, decl) for decl in inputs}
        rows = {name: len(array) if array.ndim else 0 for name, array in feeds.items()}
        if len(set(rows.values())) > 1:
            shown = ", ".join(f"'{name}' {count}" for name, count in rows.items())
            raise error(f"the inputs hold different numbers of rows: {shown}")
        return feeds

    def _x(self, x: npt.ArrayLike | str | Path, drop_target: bool, decl: InputInfo) -> np.ndarray:
        """A batch of inputs read and checked against the input `decl`."""
        expected = self.file.expects if len(self.file.inputs) == 1 else None
        raw_width = decl.shape[1] if len(decl.shape) == 2 and isinstance(decl.shape[1], int) else -1
        picked = False  # a CSV of rows is read by its columns
        if isinstance(x, str | Path):
            path = Path(x)
            audio = self.file.meta.audio  # a WAV file is read at the model's sample rate
            rate = None if audio is None else audio.sample_rate
            feed = Feed({decl.name: decl.shape}, expected, drop_target, sample_rate=rate)
            batch = read_batch(path, feed)
            x, picked = batch.arrays[decl.name], batch.picked
            if batch.text:
                x = from_text(x, decl.dtype, f"'{path}'")
        x = np.asarray(_from_pandas(x, expected))
        rows = len(decl.shape) == 2 and x.ndim == 2
        if drop_target and not picked:
            if not rows:
                raise error("--drop-target applies to rows of features [N, F]")
            x = x[:, pick_columns(x.shape[1], None, expected, raw_width, True, "the input")]
        if not fits_shape(decl.shape, x.shape, {}):
            csv = expected.get("csv") if expected else None
            extra = rows and (
                x.shape[1] == raw_width + 1 or (csv is not None and x.shape[1] == csv["width"])
            )
            raise error(
                f"input '{decl.name}' expects shape [{', '.join(map(str, decl.shape))}], "
                f"got [{', '.join(map(str, x.shape))}]"
                + (": does it still hold the target column?" if extra else ""),
                help=(
                    "pass --drop-target (drop_target=True) to take the inputs out of rows "
                    "laid out as the training CSV"
                    if extra and csv is not None
                    else None
                ),
            )
        declared = np.dtype(decl.dtype)
        if x.dtype != declared and declared.kind == "f" and x.dtype.kind in "fiu":
            # numbers for a float input: cast, refusing only values beyond its range
            x = from_text(np.asarray(x, np.float64), decl.dtype, f"input '{decl.name}'")
        if x.dtype != np.dtype(decl.dtype):
            raise error(
                f"input '{decl.name}' expects {decl.dtype} data, got {x.dtype}",
                help=f"convert it first, e.g. x.astype(np.{decl.dtype}), checking that "
                "nothing is lost",
            )
        if decl.vocab is not None and x.size:
            bad = np.argwhere((x < 0) | (x >= decl.vocab))
            if len(bad):
                index = tuple(int(i) for i in bad[0])
                raise error(
                    f"input '{decl.name}' holds token id {int(x[index])} at sample "
                    f"{index[0]}, position {index[1:]}, outside the model's vocabulary of "
                    f"{decl.vocab} (0..{decl.vocab - 1})",
                    help="token ids are those the model was trained with, counted from 0",
                )
        return x

    def texts_of(self, path: str | Path, column: str = "text") -> list[str]:
        """The texts of a file for `encode_texts`: a CSV's `column`, else one text per
        non-empty line."""
        return read_texts(Path(path), column)

    def encode_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The inputs of a model trained on texts (`text_folder`) for `texts`: the ids the
        run's tokenizer.json makes (and each text's count of real ids, for a model with a
        lengths input), ready for `predict`."""
        text = self.file.meta.text
        if text is None:
            raise error(
                f"the model in '{self.run_dir}' was not trained on texts",
                help="texts feed a model whose data is text_folder(...)",
            )
        tokenizer = load_tokenizer(self.run_dir / Path(text.tokenizer).name)
        ids, lengths = encode_with(tokenizer, texts)
        return {text.input: ids} | ({text.lengths: lengths} if text.lengths else {})

    def generate(self, prompt: str, tokens: int, temperature: float = 1.0, seed: int = 0) -> str:
        """`tokens` characters (or subwords) sampled after `prompt` from a model trained on
        text (the `text` dataset): softmax(scores / temperature), 0 for the most likely one.
        A model trained with teacher forcing (an input `decoder_in`) reads `prompt` as its
        other input and decodes its first `tokens` positions as `predict` does (greedily,
        so `temperature` and `seed` do not apply)."""
        if any(d.name == DECODER_INPUT for d in self.file.inputs):
            return self._translate(prompt, tokens)
        decl, vocab = self.file.input, self.file.vocab
        if vocab is None or decl.dtype != "int64" or len(decl.shape) != 2:
            raise error(
                f"the model in '{self.run_dir}' was not trained on text",
                help="generate samples from a model whose data is `text(...)`, with one "
                "int64 input of token ids",
            )
        length = decl.shape[1]
        fixed = isinstance(length, int)
        context = length if isinstance(length, int) else self.file.context

        def scores(ids: np.ndarray) -> np.ndarray:
            out: np.ndarray = self.session.run([OUTPUT], {decl.name: ids})[0]
            return out

        new = sample(
            scores, self._prompt_ids(prompt, vocab), tokens, len(vocab), context, fixed,
            temperature, seed,
        )  # fmt: skip
        return "".join(vocab[i] for i in new)

    def _translate(self, prompt: str, tokens: int) -> str:
        """The string an encoder-decoder decodes from `prompt` (see `generate`): each
        character one id of the encoder's input, by the model's vocabulary, else its class
        names, else the digits of the class ids; the output written so too."""
        if tokens < 1:
            raise error(f"--tokens must be at least 1, got {tokens}")
        encoder = [d for d in self.file.inputs if d.name != DECODER_INPUT]
        if len(encoder) != 1 or encoder[0].dtype != "int64" or len(encoder[0].shape) != 2:
            raise error(
                f"generate reads the prompt as the one input beside '{DECODER_INPUT}', an "
                f"int64 [N, length] of ids; the model in '{self.run_dir}' has "
                + ", ".join(f"{d.name}: {d.dtype}{list(d.shape)}" for d in encoder),
                help=f"predict its inputs instead: dnnspec predict {self.run_dir} inputs.npz",
            )
        (decl,) = encoder
        symbols = (
            self.file.vocab or self.labels or [str(i) for i in range(min(self.classes or 0, 10))]
        )
        ids = encode(prompt, symbols)
        length = decl.shape[1]
        if isinstance(length, int) and len(ids) != length:
            raise error(
                f"the prompt has {len(ids)} characters; the model's input '{decl.name}' "
                f"reads {length}",
                help=f"give a prompt of {length} characters",
            )
        decoded = self._decoded({decl.name: np.array([ids], np.int64)})
        assert decoded is not None, "a batch without decoder_in is decoded"
        found = decoded[0, :tokens].argmax(-1).tolist()
        return "".join(symbols[i] if i < len(symbols) else f"<{i}>" for i in found)

    def _prompt_ids(self, prompt: str, vocab: Sequence[str]) -> list[int]:
        """The prompt's ids: by the run's tokenizer.json for a model trained on subwords,
        else one per character."""
        text = self.file.meta.text
        if text is None:
            return encode(prompt, vocab)
        tokenizer = load_tokenizer(self.run_dir / Path(text.tokenizer).name)
        ids: list[int] = tokenizer.encode(prompt).ids
        if not ids:
            raise error("--prompt is empty", help="give at least one word to continue from")
        return ids

    def evaluate(self, data: str | Path | None = None) -> dict[str, Any]:
        """Loss and metrics of model.onnx's weights on the run's validation split, or on a
        data file read as the spec's `file` dataset reads one; a class model's result
        holds its `confusion` matrix ([true, predicted] counts) too."""
        spec = read_lock(self.run_dir / "spec.lock.json")
        prep = prepare(spec)
        program = prep.program
        if self.file.spec_hash != program.metadata.spec_hash:
            raise error(
                f"'{self.file.path}' and '{self.run_dir / 'spec.lock.json'}' come from "
                "different specs",
                help="pass a run directory written by one `dnnspec train`",
            )
        trainer = Trainer(program, self.device, prep.train.seed, backend=self.runtime)
        self.warnings += trainer.warnings
        weights = self.file.weights()
        values = trainer.values()
        params = {}
        for slot in program.model_slots():
            weight = weights.get(slot.name)
            if weight is None or weight.shape != values[slot.name].shape:
                raise error(f"'{self.file.path}' lacks the weight '{slot.name}' of its spec")
            params[slot.name] = weight
        held_out: Dataset | Chunked
        if data is not None:
            steps = prep.program.preprocess

            def fitted(part: Dataset) -> Dataset:
                if steps is not None and part.x.shape[1:] != (steps.width,):
                    raise error(
                        f"'{data}' has {part.x.shape[1]} feature columns; the model reads "
                        f"{steps.width}",
                        help="evaluate a file with the columns of the training data",
                    )
                return transform(part, steps)

            loaded = prep.train_data if prep.streamed is None else prep.streamed.loaded
            held_out = read_held_out(
                prep.train,
                str(Path(data).resolve()),
                prep.typed,
                head_labels(loaded),
                fitted,
                _file_span(Path(data)),
                "data file",
                like=prep.train_data,
            )
        elif len(prep.val_data):
            held_out = prep.val_data
        else:
            raise error(
                f"the run in '{self.run_dir}' has no validation split (validation = 0), so "
                "there is no held-out data to evaluate",
                help=f"evaluate a data file: dnnspec eval {self.run_dir} data.csv",
            )
        stats = trainer.evaluate_stats(held_out, spec.model.inputs[0].name, params=params)
        result: dict[str, Any] = stats.result()
        for output, counts in stats.confusions.items():
            result[f"{output}_confusion" if output else "confusion"] = counts.tolist()
        return result


def _from_pandas(x: Any, expected: dict[str, Any] | None) -> Any:
    """A pandas DataFrame as an array of its columns (those the model records, in its order,
    when it has them all), a Series as one column; anything else as it is. pandas is no
    dependency: an object can only be one when the caller has imported it."""
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return x
    if isinstance(x, pandas.Series):
        return x.to_frame().to_numpy()
    if not isinstance(x, pandas.DataFrame):
        return x
    names = [c["name"] for c in expected["columns"]] if expected else []
    columns = [str(c) for c in x.columns]
    if names and all(n in columns for n in names):
        x = x.iloc[:, [columns.index(n) for n in names]]
    return x.to_numpy()


def _file_span(path: Path) -> Span:
    """Diagnostics about a data file handed on the command line point at the file."""
    return Span(file=str(path), line=1, col=1, end_line=1, end_col=2)
