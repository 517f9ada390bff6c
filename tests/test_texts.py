"""Texts from files: `text_folder` reads one folder of .txt files per class (or a CSV's text
and label columns) and tokenizes them with a BPE or WordPiece tokenizer learned from the
training texts, saved beside model.onnx as a standard tokenizer.json; the sentiment example
trains on generated reviews and `predict --text` classifies raw text."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT

from dnnspec import api
from dnnspec.cli import main
from dnnspec.data import texts as text_folder
from dnnspec.data import tokenizer
from dnnspec.data.datasets import DATASETS, Dataset
from dnnspec.data.texts import read_folder
from dnnspec.errors import DiagnosticError, Span
from dnnspec.frontend import load_spec
from dnnspec.metadata import ModelMetadata
from dnnspec.runtime.prepare import prepare

pytest.importorskip("tokenizers")
sys.path.insert(0, str(ROOT / "tools"))
import review_texts  # noqa: E402

SPAN = Span(file="s.dnn", line=3, col=3, end_line=3, end_col=10)
SENTIMENT = ROOT / "tests" / "specs" / "reviews_sentiment.dnn"
TEXTS = [
    "The movie was great!",
    "A terrible, boring film.",
    "great acting and a great story",
    "what a dull meal",
] * 10


def load(path: Path, **args: Any) -> Dataset:
    d = DATASETS.get("text_folder")
    given = [(k, v, SPAN) for k, v in {"path": str(path), **args}.items()]
    return d.load(d.signature.bind("text_folder", [], given, SPAN), 0, SPAN)


def write_folder(root: Path, classes: dict[str, list[str]]) -> Path:
    for name, texts in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (root / name / f"{i}.txt").write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("kind", tokenizer.KINDS)
def test_tokenizer_round_trip_and_saved_file_gives_the_same_ids(kind: str, tmp_path: Path) -> None:
    tok = tokenizer.train(TEXTS, kind, 200, 8)
    ids, lengths = tokenizer.encode(tok, ["the movie was great", "", "great " * 20])
    assert ids.dtype == np.int64 and ids.shape == (3, 8)
    assert ids[1].tolist() == [0] * 8 and lengths.tolist()[1] == 1  # an empty text: all pads
    assert lengths.tolist()[2] == 8 and (ids[0, lengths[0] :] == 0).all()
    assert tok.decode(ids[0].tolist()) == "the movie was great"
    tokenizer.write(tok, tmp_path / "tokenizer.json")
    again = tokenizer.load(tmp_path / "tokenizer.json")
    reread, _ = tokenizer.encode(again, ["the movie was great", "", "great " * 20])
    np.testing.assert_array_equal(reread, ids)
    # the standard library reads the file as written, padding and truncation included
    lib = tokenizer.tokenizers().Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert lib.encode("the movie was great").ids == ids[0].tolist()


@pytest.mark.parametrize("kind", tokenizer.KINDS)
def test_learning_a_tokenizer_twice_gives_the_same_file(kind: str) -> None:
    # a resumed run re-learns it: it must make the same ids
    files = {tokenizer.save(tokenizer.train(TEXTS, kind, 60, 8)) for _ in range(5)}
    assert len(files) == 1


def test_a_damaged_tokenizer_file_is_a_diagnostic_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DiagnosticError, match="cannot read tokenizer '.*tokenizer.json'"):
        tokenizer.load(bad)


def test_text_folder_reads_one_text_per_file_with_classes_in_folder_order(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "t", {"pos": ["good film\n", "fine book"], "neg": ["bad film", "dull"]}
    )
    data = load(root, vocab=50, length=6, validation=0.0)
    assert data.labels == ("neg", "pos") and data.y.tolist() == [0, 0, 1, 1]
    assert data.x.dtype == np.int64 and data.x.shape == (4, 6)
    assert data.text is not None and data.text.length == 6 and data.text.kind == "bpe"
    tok = tokenizer.tokenizers().Tokenizer.from_str(data.files["tokenizer.json"].decode())
    assert tok.encode("good film").ids == data.x[2].tolist()  # the whitespace around is cut


def test_text_folder_learns_its_tokenizer_from_the_training_part_only(tmp_path: Path) -> None:
    words = {"pos": [f"good w{i}" for i in range(10)], "neg": [f"bad v{i}" for i in range(10)]}
    data = load(write_folder(tmp_path / "t", words), vocab=200, length=4, validation=0.5)
    vocab = json.loads(data.files["tokenizer.json"])["model"]["vocab"]
    seen = [f"w{i}" for i in range(10) if f"▁w{i}" in vocab]
    assert 3 <= len(seen) <= 7  # the held-out half's words are not in the vocabulary


def test_text_folder_reads_a_csv_text_column(tmp_path: Path) -> None:
    table = tmp_path / "reviews.csv"
    table.write_text('review,sentiment\n"good, fine film",pos\nbad film,neg\n', encoding="utf-8")
    data = load(table, text_column="review", label_column="sentiment", validation=0.0)
    assert data.labels == ("neg", "pos") and data.y.tolist() == [1, 0]
    with pytest.raises(DiagnosticError, match="has no column 'text'") as info:
        load(table, validation=0.0)
    assert info.value.diagnostics[0].span == SPAN


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"a": ["x"], "b": []}, "class folder '.*b' holds no texts"),
        ({"a": ["x"]}, "holds 1 class folder; a classifier needs at least two"),
    ],
)
def test_a_bad_class_folder_is_a_located_diagnostic(
    tmp_path: Path, layout: dict[str, list[str]], message: str
) -> None:
    root = write_folder(tmp_path / "t", layout)
    with pytest.raises(DiagnosticError, match=message) as info:
        load(root)
    assert info.value.diagnostics[0].span == SPAN


def test_a_file_other_than_txt_in_a_class_folder_is_refused(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "t", {"a": ["x"], "b": ["y"]})
    (root / "b" / "notes.md").write_text("z", encoding="utf-8")
    with pytest.raises(DiagnosticError, match=r"notes.md' is not a \.txt file"):
        load(root)
    (root / "b" / "notes.md").write_bytes(b"")
    (root / "b" / "notes.md").unlink()
    (root / "b" / "1.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DiagnosticError, match="is not UTF-8 text"):
        load(root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The sentiment example trained on 400 generated reviews per class: (run dir, result)."""
    folder = tmp_path_factory.mktemp("reviews")
    review_texts.write(folder / "reviews", per_class=400)
    spec = folder / "reviews_sentiment.dnn"
    shutil.copy(SENTIMENT, spec)
    return folder / "run", api.train(spec, out=folder / "run", plot=False)


@pytest.mark.slow
def test_sentiment_spec_learns_generated_reviews_and_model_onnx_takes_token_ids(
    trained: tuple[Path, Any],
) -> None:
    run, result = trained
    # chance is 0.5, a bag of words about 0.8 (a fifth of the opinions are negated);
    # measured 0.9875 (160 validation reviews)
    assert result.metrics["val_accuracy"] >= 0.9
    meta = ModelMetadata.from_model(onnx.load(str(run / "model.onnx")), run / "model.onnx")
    assert meta.text is not None
    assert (meta.text.input, meta.text.tokenizer, meta.text.length) == (
        "tokens",
        "tokenizer.json",
        32,
    )
    session = ort.InferenceSession(str(run / "model.onnx"))
    (graph_input,) = session.get_inputs()
    assert (graph_input.type, graph_input.shape) == ("tensor(int64)", ["N", 32])
    # another runtime tokenizes with the saved tokenizer.json and gets the same scores
    lib = tokenizer.tokenizers().Tokenizer.from_file(str(run / "tokenizer.json"))
    ids = np.array([lib.encode("What a wonderful film!").ids], np.int64)
    model = api.load(run)
    predicted = model.predict(model.encode_texts(["What a wonderful film!"]))
    assert isinstance(predicted, np.ndarray)
    np.testing.assert_allclose(predicted, session.run(None, {"tokens": ids})[0], atol=1e-6)


@pytest.mark.slow
def test_predict_text_prints_the_class_and_probability_of_each_text(
    trained: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = trained
    lines = tmp_path / "reviews.txt"
    lines.write_text("the book was excellent.\n\nwhat a dreadful dinner!\n", encoding="utf-8")
    table = tmp_path / "reviews.csv"
    table.write_text("id,review\n1,overall the show felt charming.\n", encoding="utf-8")
    capsys.readouterr()
    argv = ["predict", str(run), str(lines), str(table), "--text-column", "review"]
    assert (
        main([*argv, "--text", "The movie was not boring.", "--text", "A bland meal.", "--json"])
        == 0
    )
    records = json.loads(capsys.readouterr().out)["predictions"]
    assert [r["text"] for r in records] == [
        "The movie was not boring.",
        "A bland meal.",
        f"{lines}:1",
        f"{lines}:2",
        f"{table}:1",
    ]
    assert [r["class"] for r in records] == [
        "positive",
        "negative",
        "positive",
        "negative",
        "positive",
    ]
    assert all(0.5 < r["probability"] <= 1 for r in records)
    assert main(["predict", str(run), "--text", "a lovely novel"]) == 0
    words = capsys.readouterr().out.split()
    assert words[:4] == ["a", "lovely", "novel", "positive"] and 0.5 < float(words[4]) <= 1


@pytest.mark.slow
def test_a_resumed_text_run_learns_the_same_tokenizer_and_ends_bit_identical(
    trained: tuple[Path, Any], tmp_path: Path
) -> None:
    run, result = trained
    spec = run.parent / "reviews_sentiment.dnn"
    api.train(spec, out=tmp_path / "paused", stop_after=4, plot=False)
    resumed = api.train(spec, out=tmp_path / "paused", resume=True, plot=False)
    assert (tmp_path / "paused" / "tokenizer.json").read_bytes() == (
        run / "tokenizer.json"
    ).read_bytes()
    assert resumed.metrics == result.metrics


TWO_INPUTS = """
model lengths_gru {
  input tokens: int64[N, 12]
  input lengths: int64[N]
  tokens -> embedding(vocab = 120, dim = 16) -> gru(16, lengths = lengths)
  dense(2)
}

train {
  data text_folder(path = "reviews/", vocab = 120, length = 12, tokenizer = wordpiece)
  loss cross_entropy
  optimizer adam(lr = 1e-2)
  batch 32
  epochs 2
  seed 0
}
"""


@pytest.mark.slow
def test_a_model_of_two_inputs_reads_each_texts_lengths_and_predict_feeds_both(
    tmp_path: Path,
) -> None:
    review_texts.write(tmp_path / "reviews", per_class=40)
    spec = tmp_path / "lengths.dnn"
    spec.write_text(TWO_INPUTS, encoding="utf-8")
    api.train(spec, out=tmp_path / "run", plot=False)
    model = api.load(tmp_path / "run")
    meta = model.file.meta.text
    assert meta is not None and (meta.input, meta.lengths, meta.kind) == (
        "tokens",
        "lengths",
        "wordpiece",
    )
    texts = ["a dull film.", "the dinner was great. it lasted two hours."]
    feeds = model.encode_texts(texts)
    tok = tokenizer.load(tmp_path / "run" / "tokenizer.json")
    pieces = [len(tok.encode(t).tokens) - tok.encode(t).tokens.count("[PAD]") for t in texts]
    assert feeds["lengths"].tolist() == pieces and pieces[0] < pieces[1] <= 12
    assert (feeds["tokens"][0, pieces[0] :] == 0).all()
    predicted = model.predict(feeds)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (2, 2)


@pytest.mark.slow
def test_a_language_model_on_bpe_subwords_learns_and_generates_words(tmp_path: Path) -> None:
    spec = (ROOT / "specs" / "char_transformer.dnn").read_text(encoding="utf-8")
    for old, new in (
        ("param context = 64", "param context = 32"),
        ("param vocab = 29", "param vocab = 300"),
        ("validation = 0.1)", "validation = 0.1, tokenizer = bpe, vocab = vocab)"),
        ("epochs 12", "epochs 3"),
    ):
        assert old in spec
        spec = spec.replace(old, new)
    (tmp_path / "lm.dnn").write_text(spec, encoding="utf-8")
    result = api.train(tmp_path / "lm.dnn", out=tmp_path / "run", plot=False)
    # the most frequent next subword is right 0.14 of the time; measured 0.487
    assert result.metrics["val_accuracy"] >= 0.4
    model = api.load(tmp_path / "run")
    assert model.file.meta.text is not None and (tmp_path / "run" / "tokenizer.json").exists()
    vocab = model.file.vocab
    assert vocab is not None and len(vocab) == 300 and " the" in vocab  # "▁the" as " the"
    text = model.generate("the fox", 12, temperature=0)
    assert text == model.generate("the fox", 12, temperature=0) and text.strip()
    assert set(text) <= set("".join(vocab))


def test_predict_text_on_a_model_not_trained_on_texts_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ROOT / "specs" / "spirals.dnn"
    run = tmp_path / "run"
    api.train(spec, out=run, plot=False, epochs=1)
    assert main(["predict", str(run), "--text", "hello"]) == 2
    assert "was not trained on texts" in capsys.readouterr().err


TINY = """
model tiny {
  input tokens: int64[N, 8]
  embedding(vocab = 80, dim = 8)
  conv1d(8, 3, padding = same) -> relu
  global_max_pool
  dense(2)
}

train {
  data text_folder(path = "t/", vocab = 80, length = 8, validation = 0.25)
  split(seed = 5)
  test 0.2
  loss cross_entropy
  optimizer adam(lr = 1e-2)
  batch 8
  epochs 1
  seed 0
}
"""


def write_tiny(folder: Path, spec: str = TINY) -> Path:
    """A folder of texts where each text holds a word of its own, and a spec on it."""
    words = {"pos": [f"good w{i}x" for i in range(20)], "neg": [f"bad v{i}x" for i in range(20)]}
    write_folder(folder / "t", words)
    (folder / "tiny.dnn").write_text(spec, encoding="utf-8")
    return folder / "tiny.dnn"


def test_the_tokenizer_learns_from_exactly_the_rows_the_run_trains_on(tmp_path: Path) -> None:
    # split(seed = 5) and test 0.2 choose other rows than the loader's default split
    prep = prepare(load_spec(write_tiny(tmp_path)))
    texts, _, _ = read_folder(tmp_path / "t", 1 << 20, None)  # in the data's order
    trained_on = [texts[i] for i in prep.train_index]
    expected = tokenizer.save(tokenizer.train(trained_on, "bpe", 80, 8))
    assert prep.program.files["tokenizer.json"] == expected
    vocab = json.loads(prep.program.files["tokenizer.json"])["model"]["vocab"]
    unseen = set(range(40)) - set(prep.train_index.tolist())
    assert not [i for i in unseen if "▁" + texts[i].split()[1] in vocab]


def test_data_preparation_reads_the_texts_and_learns_the_tokenizer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def counted(name: str) -> Any:
        original = getattr(text_folder, name)

        def call(*args: Any) -> Any:
            calls.append(name)
            return original(*args)

        return call

    for name in ("train", "_read"):
        monkeypatch.setattr(text_folder, name, counted(name))
    prepare(load_spec(write_tiny(tmp_path)))
    assert sorted(calls) == ["_read", "train"]


def test_a_held_out_text_folder_is_tokenized_by_the_run_s_tokenizer_classes_by_name(
    tmp_path: Path,
) -> None:
    spec = write_tiny(tmp_path, TINY.replace("test 0.2", 'test "held/"'))
    held = {"pos": ["good w3x and w4x", "good news"], "neg": ["bad news"]}
    write_folder(tmp_path / "held", held)
    prep = prepare(load_spec(spec))
    assert isinstance(prep.test_data, Dataset)
    assert prep.test_data.y.tolist() == [0, 1, 1]  # neg is 0
    tok = tokenizer.parse(prep.program.files["tokenizer.json"], "the run's")
    ids, _ = tokenizer.encode(tok, ["bad news", *held["pos"]])
    np.testing.assert_array_equal(prep.test_data.x, ids)


def test_a_held_out_text_folder_or_listing_of_one_class_takes_its_training_id(
    tmp_path: Path,
) -> None:
    spec = write_tiny(tmp_path, TINY.replace("test 0.2", 'test "held/"'))
    write_folder(tmp_path / "held", {"pos": ["good w3x", "good news"]})
    prep = prepare(load_spec(spec))
    assert isinstance(prep.test_data, Dataset) and prep.test_data.y.tolist() == [1, 1]
    (tmp_path / "held.csv").write_text("text,label\nbad news,neg\n", encoding="utf-8")
    spec.write_text(spec.read_text().replace('"held/"', '"held.csv"'))
    prep = prepare(load_spec(spec))
    assert isinstance(prep.test_data, Dataset) and prep.test_data.y.tolist() == [0]


def test_eval_reads_a_held_out_text_folder_as_the_spec_s(tmp_path: Path) -> None:
    spec = write_tiny(tmp_path)
    api.train(spec, out=tmp_path / "run", plot=False)
    write_folder(tmp_path / "held", {"pos": ["good w1x", "good"], "neg": ["bad v1x"]})
    result = api.load(tmp_path / "run").evaluate(tmp_path / "held")
    counts = np.asarray(result["confusion"])
    assert counts.shape == (2, 2) and counts.sum(axis=1).tolist() == [1, 2]


def test_compile_of_a_text_spec_saves_its_tokenizer_beside_model_onnx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_tiny(tmp_path)
    assert main(["compile", str(spec), "--out", str(tmp_path / "c")]) == 0
    assert f"wrote {tmp_path / 'c' / 'tokenizer.json'} (tokenizer)" in capsys.readouterr().out
    saved = (tmp_path / "c" / "tokenizer.json").read_bytes()
    assert saved == prepare(load_spec(spec)).program.files["tokenizer.json"]
    meta = ModelMetadata.from_model(onnx.load(str(tmp_path / "c" / "model.onnx")), "model.onnx")
    assert meta.text is not None and meta.text.tokenizer == "tokenizer.json"
