"""Speech from files: `audio_folder` reads WAV clips as soundfile does (mono, cut or padded,
the sample rate checked), the keyword example trains on generated clips with the log-mel
front end inside model.onnx, and `predict` names each WAV file's class."""

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
from dnnspec.data.datasets import DATASETS, Dataset
from dnnspec.errors import DiagnosticError, Span
from dnnspec.frontend import load_spec
from dnnspec.metadata import ModelMetadata
from dnnspec.runtime.prepare import prepare

sf = pytest.importorskip("soundfile")
sys.path.insert(0, str(ROOT / "tools"))
import tone_clips  # noqa: E402

SPAN = Span(file="s.dnn", line=3, col=3, end_line=3, end_col=10)
KEYWORDS = ROOT / "tests" / "specs" / "keyword_tones.dnn"


def load(path: Path, **args: Any) -> Dataset:
    d = DATASETS.get("audio_folder")
    given = [(k, v, SPAN) for k, v in {"path": str(path), **args}.items()]
    return d.load(d.signature.bind("audio_folder", [], given, SPAN), 0, SPAN)


def write(path: Path, wave: np.ndarray, rate: int = 8000, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype)
    return path


def test_audio_folder_reads_each_clip_as_soundfile_does_mono_cut_or_padded(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    long = write(tmp_path / "yes" / "a.wav", rng.uniform(-1, 1, 9000))
    stereo = write(tmp_path / "no" / "b.wav", rng.uniform(-1, 1, (3000, 2)), subtype="PCM_16")
    short = write(tmp_path / "no" / "c.wav", rng.uniform(-1, 1, 100), subtype="PCM_16")
    data = load(tmp_path, sample_rate=8000, seconds=0.5)
    assert (data.x.shape, str(data.x.dtype), data.labels) == ((3, 4000), "float32", ("no", "yes"))
    np.testing.assert_array_equal(data.y, [0, 0, 1])
    both, _ = sf.read(stereo, dtype="float32")
    np.testing.assert_allclose(data.x[0, :3000], both.mean(axis=1), atol=1e-7)
    assert not data.x[0, 3000:].any()
    padded = np.zeros(4000, np.float32)
    padded[:100] = sf.read(short, dtype="float32")[0]
    np.testing.assert_array_equal(data.x[1], padded)
    np.testing.assert_array_equal(data.x[2], sf.read(long, dtype="float32")[0][:4000])
    assert data.audio is not None
    assert (data.audio.sample_rate, data.audio.samples) == (8000, 4000)


def tone(hz: float, rate: int, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate)).astype(
        np.float32
    )


def test_a_clip_at_another_sample_rate_is_resampled_by_soxr_keeping_its_frequency(
    tmp_path: Path,
) -> None:
    soxr = pytest.importorskip("soxr")
    low, high = tone(440, 8000, 0.5), tone(1000, 44100, 1.0)
    write(tmp_path / "low" / "a.wav", low, rate=8000)
    write(tmp_path / "high" / "b.wav", high, rate=44100)
    data = load(tmp_path, sample_rate=16000, seconds=0.5)
    assert data.x.shape == (2, 8000) and data.audio is not None
    assert data.audio.sample_rate == 16000
    # as the library resamples the whole file, cut to the clip's length
    np.testing.assert_array_equal(data.x[1], soxr.resample(low, 8000, 16000))
    np.testing.assert_allclose(data.x[0], soxr.resample(high, 44100, 16000)[:8000], atol=1e-6)
    for wave, hz in ((data.x[1], 440), (data.x[0], 1000)):  # FFT bins of 2 Hz
        assert np.argmax(np.abs(np.fft.rfft(wave))) * 2 == hz
        assert 0.45 < np.abs(wave[1000:-1000]).max() < 0.55


def test_without_soxr_a_clip_at_another_rate_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "low" / "a.wav", np.zeros(800), rate=8000)
    write(tmp_path / "high" / "b.wav", np.zeros(1600), rate=16000)
    monkeypatch.setitem(sys.modules, "soxr", None)
    with pytest.raises(DiagnosticError, match="resampling audio needs soxr") as caught:
        load(tmp_path, sample_rate=16000, seconds=0.1)
    assert caught.value.diagnostics[0].help == "pip install 'dnnspec[audio]' (or pip install soxr)"


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"yes/a.wav": 1, "notes.txt": 0}, "is a file beside the class folders"),
        ({"yes/a.wav": 1, "no/b.mp3": 0}, "is not a .wav file"),
        ({"yes/a.wav": 1}, "holds 1 class folder; a classifier needs at least two"),
        ({"yes/a.wav": 1, "no/": 0}, "holds no clips"),
        ({"yes/a.wav": 1, "no/b.wav": 0}, "cannot read audio file"),
    ],
)
def test_a_folder_that_is_not_wav_clips_per_class_is_a_located_error(
    tmp_path: Path, layout: dict[str, int], message: str
) -> None:
    for name, is_wav in layout.items():
        path = tmp_path / name
        if name.endswith("/"):
            path.mkdir(parents=True)
        elif is_wav:
            write(path, np.zeros(800))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not audio")
    with pytest.raises(DiagnosticError, match=message) as caught:
        load(tmp_path, sample_rate=8000)
    assert caught.value.diagnostics[0].span == SPAN


def test_without_soundfile_reading_wav_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "yes" / "a.wav", np.zeros(800))
    write(tmp_path / "no" / "b.wav", np.zeros(800))
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(DiagnosticError, match="needs soundfile") as caught:
        load(tmp_path, sample_rate=8000)
    assert caught.value.diagnostics[0].help == (
        "pip install 'dnnspec[audio]' (or pip install soundfile)"
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The keyword example trained on 50 generated clips per class: (run dir, result)."""
    folder = tmp_path_factory.mktemp("keywords")
    tone_clips.write(folder / "clips", per_class=50)
    spec = folder / "keyword_tones.dnn"
    shutil.copy(KEYWORDS, spec)
    return folder / "run", api.train(spec, out=folder / "run", plot=False)


@pytest.mark.slow
def test_keyword_spec_learns_tones_from_wav_files_and_model_onnx_takes_the_waveform(
    trained: tuple[Path, Any], tmp_path: Path
) -> None:
    run, result = trained
    # chance is 0.25; measured 0.975 (40 validation clips)
    assert result.metrics["val_accuracy"] >= 0.9
    model = api.load(run)
    assert model.file.meta.audio is not None
    assert (model.file.meta.audio.sample_rate, model.file.meta.audio.samples) == (16000, 16000)
    # model.onnx takes the raw waveform: the features are computed inside the graph
    session = ort.InferenceSession(str(run / "model.onnx"))
    (graph_input,) = session.get_inputs()
    assert (graph_input.type, graph_input.shape) == ("tensor(float)", ["N", 16000])
    tone_clips.write(tmp_path, per_class=1, seed=1)
    path = next(tmp_path.glob("rise/*.wav"))
    clip = sf.read(path, dtype="float32")[0]
    clip = clip.mean(axis=1) if clip.ndim == 2 else clip
    wave = np.pad(clip, (0, max(0, 16000 - len(clip))))[None, :16000]
    predicted = model.predict(path)
    assert isinstance(predicted, np.ndarray)
    np.testing.assert_allclose(predicted, session.run(None, {"wave": wave})[0], atol=1e-6)
    half = clip[::2]  # the clip at 8 kHz, which predict resamples to the model's 16 kHz
    slow = write(tmp_path / "slow.wav", half, rate=8000)
    resampled = pytest.importorskip("soxr").resample(half, 8000, 16000)[:16000]
    wave = np.pad(resampled, (0, 16000 - len(resampled)))[None]
    from_8k = model.predict(slow)
    assert isinstance(from_8k, np.ndarray)
    np.testing.assert_allclose(from_8k, session.run(None, {"wave": wave})[0], atol=1e-6)


@pytest.mark.slow
def test_predict_prints_the_class_and_probability_of_each_wav_file(
    trained: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = trained
    tone_clips.write(tmp_path, per_class=3, seed=1)
    files = sorted(tmp_path.glob("*/*.wav"))
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, files), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)["predictions"]
    assert [r["file"] for r in records] == [str(f) for f in files]
    right = sum(r["class"] == Path(r["file"]).parent.name for r in records)
    assert right >= 10 and all(0.25 < r["probability"] <= 1 for r in records)
    assert main(["predict", str(run), str(files[0])]) == 0
    line = capsys.readouterr().out.split()
    assert line[0] == str(files[0]) and line[1] in tone_clips.CLASSES and float(line[2]) > 0.25


def test_a_held_out_clip_folder_is_read_as_the_spec_s_with_classes_matched_by_name(
    tmp_path: Path,
) -> None:
    tone_clips.write(tmp_path / "clips", per_class=3)
    classes = sorted(tone_clips.CLASSES)
    for name in classes[-2:]:  # the last two classes, in a folder of their own
        shutil.copytree(tmp_path / "clips" / name, tmp_path / "held" / name)
    text = KEYWORDS.read_text(encoding="utf-8").replace("seed 0", 'seed 0\n  test "held/"')
    (tmp_path / "k.dnn").write_text(text, encoding="utf-8")
    prep = prepare(load_spec(tmp_path / "k.dnn"))
    held = load(tmp_path / "held")
    assert isinstance(prep.test_data, Dataset)
    np.testing.assert_array_equal(prep.test_data.x, held.x)
    assert prep.test_data.y.tolist() == [len(classes) - 2] * 3 + [len(classes) - 1] * 3


def test_compile_and_export_of_an_audio_spec_record_the_waveforms_as_training_does(
    tmp_path: Path,
) -> None:
    tone_clips.write(tmp_path / "clips", per_class=2)
    spec = tmp_path / "k.dnn"
    shutil.copy(KEYWORDS, spec)
    trained = prepare(load_spec(spec)).program.metadata.audio
    assert trained is not None and trained.input == "wave"
    compiled = api.compile(spec)
    assert compiled.metadata.audio == trained
    written = api.save(compiled, tmp_path / "compiled")["model"]
    api.export(spec, out=tmp_path / "exported.onnx")
    for path in (written, tmp_path / "exported.onnx"):
        assert ModelMetadata.from_model(onnx.load(path), path).audio == trained
