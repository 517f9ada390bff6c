"""Images from files: `image_folder` decodes as Pillow does, model.onnx takes the decoded
uint8 pixels channels last and computes what training read, augmentation in the train
step is a pure function of (seed, step) and absent from eval and model.onnx, and
`predict` names each file's class."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT, assert_train_step_matches_finite_differences

import dnnspec
from dnnspec.assemble.steps import build_inference
from dnnspec.cli import main
from dnnspec.data import datasets
from dnnspec.data.images import to_model
from dnnspec.errors import DiagnosticError, Span
from dnnspec.frontend import load_spec, load_spec_text
from dnnspec.graph.builder import GraphBuilder
from dnnspec.graph.rng import TableRandom
from dnnspec.runtime import checkpoint
from dnnspec.runtime.model_file import read_model
from dnnspec.runtime.prepare import prepare
from dnnspec.training.augment import AUGMENTS, augment

Image = pytest.importorskip("PIL.Image")

SPAN = Span(file="s.dnn", line=3, col=3, end_line=3, end_col=10)
SPEC = ROOT / "tests" / "specs" / "digits_images.dnn"


def digit_images(folder: Path) -> Path:
    """The bundled digits as 16x16 PNGs in `folder/digits16/<class>/` (tools/digit_images.py)."""
    spec = importlib.util.spec_from_file_location(
        "digit_images", ROOT / "tools" / "digit_images.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(folder / "digits16")
    return folder / "digits16"


def load(**args: Any) -> datasets.Dataset:
    definition = datasets.DATASETS.get("image_folder")
    bound = definition.signature.bind(
        "image_folder", [], [(k, v, SPAN) for k, v in args.items()], SPAN
    )
    return definition.load(bound, 0, SPAN)


def write_classes(root: Path) -> dict[str, np.ndarray]:
    """Two classes of RGB images of another size than the model's: PNG and JPEG."""
    rng = np.random.default_rng(0)
    pixels = {}
    for name, suffix in (("cat", ".png"), ("ant", ".jpg")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            image = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
            Image.fromarray(image, "RGB").save(root / name / f"{i}{suffix}")
            pixels[f"{name}/{i}{suffix}"] = image
    return pixels


def test_image_folder_reads_classes_in_name_order_decoded_and_resized_as_pillow_does(
    tmp_path: Path,
) -> None:
    write_classes(tmp_path / "photos")
    data = load(path=str(tmp_path / "photos"), size=[4, 5], channels=1)
    assert data.labels == ("ant", "cat") and data.y.tolist() == [0, 0, 1, 1]
    assert data.x.shape == (4, 1, 4, 5) and data.x.dtype == np.float32
    with Image.open(tmp_path / "photos" / "cat" / "1.png") as image:
        grey = np.asarray(image.convert("L").resize((5, 4), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(data.x[3, 0], grey.astype(np.float32) * np.float32(1 / 255))
    assert data.image is not None and (data.image.size, data.image.channels) == ([4, 5], 1)
    rgb = load(path=str(tmp_path / "photos"), size=[6, 10], channels=3)
    assert rgb.x.shape == (4, 3, 6, 10) and rgb.x.min() >= 0 and rgb.x.max() <= 1


def test_image_folder_reads_a_csv_listing_image_paths_and_class_names(tmp_path: Path) -> None:
    pixels = write_classes(tmp_path / "photos")
    rows = ["file,kind", *(f"photos/{name},{name.split('/')[0]}" for name in pixels)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    listed = load(
        path=str(tmp_path / "list.csv"), size=[6, 10], image_column="file", label_column="kind"
    )
    assert listed.labels == ("ant", "cat") and listed.y.tolist() == [1, 1, 0, 0]
    png = to_model(pixels["cat/0.png"][None])
    np.testing.assert_array_equal(listed.x[0], png[0])
    with pytest.raises(DiagnosticError, match="has no column 'label' \\(its header: file, kind\\)"):
        load(path=str(tmp_path / "list.csv"), size=[6, 10], image_column="file")


def test_image_folder_refuses_a_foreign_file_one_class_and_a_set_over_the_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    write_classes(root)
    monkeypatch.setattr(datasets, "MAX_DATA_BYTES", 4 * 3 * 100 * 100 * 4 - 1)
    with pytest.raises(DiagnosticError, match="4 images, .* over the limit .* held in memory"):
        load(path=str(root), size=[100, 100])
    monkeypatch.undo()
    (root / "ant" / "notes.txt").write_text("x")
    with pytest.raises(DiagnosticError, match="notes.txt' is not an image"):
        load(path=str(root), size=[4, 4])
    shutil.rmtree(root / "ant")
    with pytest.raises(DiagnosticError, match="1 class folder; a classifier needs at least two"):
        load(path=str(root), size=[4, 4])
    (root / "dog").mkdir()
    (root / "dog" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DiagnosticError, match="cannot decode image .*0.png"):
        load(path=str(root), size=[4, 4])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    digit_images(folder)
    shutil.copy(SPEC, folder / SPEC.name)
    run = folder / "run"
    dnnspec.train(folder / SPEC.name, out=run, epochs=10)
    return run


def test_the_digit_images_example_trains_to_0_95_validation_accuracy(image_run: Path) -> None:
    last = json.loads((image_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_accuracy"] >= 0.95


def test_model_onnx_takes_uint8_pixels_channels_last_and_computes_what_training_read(
    image_run: Path,
) -> None:
    model = read_model(image_run / "model.onnx")
    assert (model.input.dtype, model.input.shape) == ("uint8", ("N", 16, 16, 1))
    assert model.meta.image is not None and model.meta.image.layout == "NHWC"
    assert model.meta.class_labels == [str(i) for i in range(10)]
    folder = image_run.parent / "digits16"
    files = [folder / "3" / sorted(p.name for p in (folder / "3").iterdir())[0]]
    files.append(folder / "7" / sorted(p.name for p in (folder / "7").iterdir())[0])
    pixels = np.stack([np.asarray(Image.open(f))[:, :, None] for f in files])
    prep = prepare(load_spec_text(SPEC.read_text(), str(folder.parent / SPEC.name)))
    weights = model.weights()
    floats = prep.program.metadata.model_copy(update={"image": None})
    plain = build_inference(prep.typed, prep.program.model_slots(), weights, floats)
    expected = ort.InferenceSession(plain.SerializeToString()).run(None, {"x": to_model(pixels)})[0]
    got = ort.InferenceSession(model.proto.SerializeToString()).run(None, {"x": pixels})[0]
    np.testing.assert_array_equal(got, expected)


def test_predict_prints_each_image_file_s_class_name_and_probability(
    image_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = image_run.parent / "digits16"
    files = [next(iter(sorted((folder / c).iterdir()))) for c in ("3", "7")]
    assert main(["predict", str(image_run), *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[str(files[0]), "3"], [str(files[1]), "7"]]
    assert all(0.5 < float(line.split()[2]) <= 1 for line in lines)
    assert main(["predict", str(image_run), str(files[0]), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)["predictions"][0]
    assert record["class"] == "3" and 0.5 < record["probability"] <= 1


def augmented(
    x: np.ndarray, calls: list[tuple[str, dict[str, Any]]], seed: int, step: int
) -> np.ndarray:
    b = GraphBuilder("augment", "float32")
    b.add_input("x", "float32", ["N", *x.shape[1:]])
    b.add_input("seed", "int64", [])
    b.add_input("step", "int64", [])
    out = augment(b, "x", x.shape[2:], calls, TableRandom(b, "seed", "step"))
    b.rename(out, "y")
    b.add_output("y", "float32", None)
    session = ort.InferenceSession(b.model({}, "augment").SerializeToString())
    feeds = {"x": x, "seed": np.array(seed, np.int64), "step": np.array(step, np.int64)}
    result: np.ndarray = session.run(None, feeds)[0]
    return result


X = np.arange(64 * 2 * 5 * 6, dtype=np.float32).reshape(64, 2, 5, 6) + 1


AUGMENT_CASES: dict[str, dict[str, Any]] = {
    "crop": {"padding": 2},
    "flip": {"direction": "horizontal"},
    "brightness": {"amount": 0.2},
    "contrast": {"amount": 0.2},
}
"""One case per registered augmentation (the tests below check what each computes)."""


def test_every_augmentation_has_a_case() -> None:
    assert set(AUGMENTS) == set(AUGMENT_CASES)


@pytest.mark.parametrize("name", AUGMENT_CASES)
def test_an_augmentation_is_a_function_of_seed_and_step_that_changes_with_each(
    name: str,
) -> None:
    calls = [(name, AUGMENT_CASES[name])]
    out = augmented(X, calls, seed=3, step=7)
    assert out.shape == X.shape and not np.array_equal(out, X)
    np.testing.assert_array_equal(out, augmented(X, calls, seed=3, step=7))
    assert not np.array_equal(out, augmented(X, calls, seed=3, step=8))
    assert not np.array_equal(out, augmented(X, calls, seed=4, step=7))


def test_a_crop_is_a_window_of_the_zero_padded_image_chosen_by_seed_and_step() -> None:
    crop = [("crop", {"padding": 2})]
    out = augmented(X, crop, seed=3, step=7)
    np.testing.assert_array_equal(out, augmented(X, crop, seed=3, step=7))
    assert not np.array_equal(out, augmented(X, crop, seed=3, step=8))
    assert not np.array_equal(out, augmented(X, crop, seed=4, step=7))
    padded = np.pad(X, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for n in range(len(X)):
        windows = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(out[n], padded[n, :, dy : dy + 5, dx : dx + 6])
        ]
        assert len(windows) == 1
        offsets.add(windows[0])
    assert len(offsets) > 10  # offsets differ between samples


def test_a_flip_mirrors_about_half_the_samples_left_right() -> None:
    out = augmented(X, [("flip", {"direction": "horizontal"})], seed=0, step=1)
    mirrored = [np.array_equal(o, x[:, :, ::-1]) for o, x in zip(out, X, strict=True)]
    kept = [np.array_equal(o, x) for o, x in zip(out, X, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    assert 16 < sum(mirrored) < 48


def test_brightness_and_contrast_scale_each_sample_by_one_factor_within_the_amount() -> None:
    out = augmented(X, [("brightness", {"amount": 0.2})], seed=0, step=1)
    factors = (out / X).reshape(len(X), -1)
    np.testing.assert_allclose(factors, factors[:, :1] * np.ones_like(factors), rtol=1e-6)
    assert (factors >= 0.8).all() and (factors < 1.2).all() and np.ptp(factors[:, 0]) > 0.1
    out = augmented(X, [("contrast", {"amount": 0.2})], seed=0, step=1)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), X.mean(axis=(1, 2, 3)), rtol=1e-5)


AUGMENTED = """
model m {
  input x: float32[N, 1, 8, 8]
  conv2d(4, 3, padding = same) -> relu
  flatten
  dense(2)
}
train {
  data digits_images
  augment crop(padding = 2), flip(horizontal), brightness(0.1), contrast(0.1)
  loss cross_entropy
  optimizer adam(lr = 1e-2)
  batch 64
  epochs 2
  seed 5
}
"""


def spec_text(augment: bool) -> str:
    text = AUGMENTED.replace(
        "data digits_images", 'data image_folder(path = "d/", size = [8, 8], channels = 1)'
    )
    return (
        text
        if augment
        else text.replace(
            "  augment crop(padding = 2), flip(horizontal), brightness(0.1), contrast(0.1)\n", ""
        )
    )


def test_augmentation_is_absent_from_eval_and_model_onnx_and_resumes_bit_identically(
    tmp_path: Path,
) -> None:
    write_classes(tmp_path / "d")
    for i in range(20):  # enough samples for a few steps an epoch
        Image.fromarray(np.full((8, 8), i * 10, np.uint8), "L").save(
            tmp_path / "d" / "ant" / f"g{i}.png"
        )
    with_aug = load_spec_text(spec_text(True), str(tmp_path / "a.dnn"))
    without = load_spec_text(spec_text(False), str(tmp_path / "b.dnn"))
    a, b = prepare(with_aug).program, prepare(without).program
    ops = Counter(n.op_type for n in a.train_step.graph.node)
    ops.subtract(n.op_type for n in b.train_step.graph.node)
    assert ops["Equal"] > 0 or ops["MatMul"] > 0  # the crop's selection
    assert [n.op_type for n in a.eval_step.graph.node] == [
        n.op_type for n in b.eval_step.graph.node
    ]
    whole = tmp_path / "whole"
    dnnspec.train(with_aug, out=whole, epochs=2)
    cut = tmp_path / "cut"
    dnnspec.train(with_aug, out=cut, epochs=1)
    dnnspec.train(with_aug, out=cut, epochs=2, resume=True)
    first, _ = checkpoint.load(whole / "checkpoint" / "last.npz")
    second, _ = checkpoint.load(cut / "checkpoint" / "last.npz")
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    onnx_ops = {n.op_type for n in read_model(whole / "model.onnx").proto.graph.node}
    assert not {"Equal", "Where", "Pad"} & onnx_ops


def test_augment_of_an_input_that_is_not_an_image_is_a_located_error(tmp_path: Path) -> None:
    text = """model m {
  input x: float32[N, 64]
  dense(10)
}
train {
  data digits
  augment flip(horizontal)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 64
  epochs 1
}
"""
    with pytest.raises(
        DiagnosticError, match=r"augment transforms images .* is float32\[N, 64\]"
    ) as exc:
        prepare(load_spec_text(text, str(tmp_path / "m.dnn")))
    assert exc.value.diagnostics[0].span is not None and exc.value.diagnostics[0].span.line == 7


def test_compiling_an_image_spec_reads_the_data_so_model_onnx_takes_uint8_pixels(
    image_run: Path, tmp_path: Path
) -> None:
    folder = image_run.parent
    text = SPEC.read_text().replace("  schedule cosine(warmup = 1 epoch)\n", "")
    (folder / "constant.dnn").write_text(text)
    assert main(["compile", str(folder / "constant.dnn"), "--out", str(tmp_path / "c")]) == 0
    model = read_model(tmp_path / "c" / "model.onnx")
    assert (model.input.dtype, model.input.shape) == ("uint8", ("N", 16, 16, 1))


def test_eval_reads_a_held_out_image_folder_as_the_spec_s_and_maps_classes_by_name(
    image_run: Path, tmp_path: Path
) -> None:
    for label in ("3", "7"):  # a subset of the classes, in a folder of its own
        shutil.copytree(image_run.parent / "digits16" / label, tmp_path / "held" / label)
    result = dnnspec.load(image_run).evaluate(tmp_path / "held")
    counts = np.asarray(result["confusion"])
    assert counts.sum() == 183 + 179 and counts[[3, 7]].sum() == counts.sum()
    assert result["accuracy"] >= 0.95


def test_check_lists_the_train_section_s_augmentations(
    image_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(image_run.parent / SPEC.name)]) == 0
    rows = [line.split(None, 1) for line in capsys.readouterr().out.splitlines()]
    assert ["augment", "crop(padding = 1)"] in [[r[0], r[1].strip()] for r in rows if len(r) == 2]


def test_the_gradient_of_an_augmented_train_step_matches_finite_differences() -> None:
    """In float64, with every augmentation: the draws are a function of (seed, step), so
    the differenced steps see the same images."""
    text = """model m {
  input x: float32[N, 2, 6, 6]
  conv2d(3, 3, padding = same) -> relu
  flatten
  dense(4)
}
train {
  data digits
  augment crop(padding = 2), flip(horizontal), brightness(0.2), contrast(0.2)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 8
  epochs 1
}
"""
    assert_train_step_matches_finite_differences(load_spec_text(text, "m.dnn"), {"N": 5})


HELD_OUT = """model m {
  input x: float32[N, 3, 4, 4]
  flatten
  dense(2)
}
train {
  data image_folder(path = "photos/", size = [4, 4], validation = 0.0)
  test "held/"
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 2
  epochs 1
}
"""


def test_a_held_out_folder_of_one_class_takes_its_training_id_and_an_unknown_one_is_located(
    tmp_path: Path,
) -> None:
    write_classes(tmp_path / "photos")
    shutil.copytree(tmp_path / "photos" / "cat", tmp_path / "held" / "cat")
    (tmp_path / "m.dnn").write_text(HELD_OUT)
    prep = prepare(load_spec(tmp_path / "m.dnn"))
    assert isinstance(prep.test_data, datasets.Dataset)
    assert prep.test_data.y.tolist() == [1, 1]  # ant is 0
    (tmp_path / "held" / "cat").rename(tmp_path / "held" / "dog")
    with pytest.raises(DiagnosticError, match="class labels the training data lacks: dog") as e:
        prepare(load_spec(tmp_path / "m.dnn"))
    assert e.value.diagnostics[0].span is not None
