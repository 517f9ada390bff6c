"""An image folder over its memory budget (`image_folder(..., memory = ...)`) is decoded
chunk by chunk by the streaming reader while training runs: the split is the in-memory one,
a window covering the training images trains to the in-memory losses, the reader stays in
its budget, a run resumes bit-identically, and a bad image is a located error before the
first step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_images import digit_images

import dnnspec
from dnnspec.data.dataset import Dataset
from dnnspec.data.stream import Streamed
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.runtime import checkpoint
from dnnspec.runtime.prepare import Prepared, prepare
from dnnspec.runtime.trainer import Trainer

pytest.importorskip("PIL.Image")

SPEC = """model m {
  input x: float32[N, 1, 16, 16]
  flatten
  dense(10)
}
train {
  data image_folder(path = "digits16/", size = [16, 16], channels = 1, validation = 0.2%s)
  augment crop(padding = 1)
  loss cross_entropy
  optimizer adam(lr = 3e-3)
  batch 32
  epochs 2
  metrics accuracy
  seed 0
}
"""
BUDGET = ', memory = "512 KiB"'
"""The 1,797 digits take 1.8 MiB as float32: over this budget, so they stream."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("streamed_images")
    digit_images(folder)
    return folder


def prepared(folder: Path, budget: str) -> Prepared:
    return prepare(load_spec_text(SPEC % budget, str(folder / "m.dnn")))


def losses(data: Dataset | Streamed, epochs: range, trainer: Trainer) -> list[float]:
    found: list[float] = []
    for epoch in epochs:
        trainer.run_epoch(data, "x", 32, epoch, lambda c, n: found.extend(c.tolist()))
    return found


def test_an_image_folder_over_its_budget_streams_with_the_in_memory_split_and_losses(
    folder: Path,
) -> None:
    streamed, held = prepared(folder, BUDGET), prepared(folder, "")
    assert streamed.streamed is not None and held.streamed is None
    stream = streamed.streamed.stream
    assert stream.window < len(stream) == len(held.train_data)
    np.testing.assert_array_equal(streamed.train_index, held.train_index)
    np.testing.assert_array_equal(streamed.val_data.x, held.val_data.x)
    np.testing.assert_array_equal(streamed.val_data.y, held.val_data.y)
    assert streamed.program.metadata.image == held.program.metadata.image
    covering = replace(stream, window=len(stream))
    trainer = Trainer(held.program, "cpu", 0, steps_per_call=7)
    expected = losses(held.train_data, range(2), trainer)
    trainer = Trainer(streamed.program, "cpu", 0, steps_per_call=7)
    assert losses(covering, range(2), trainer) == expected
    order = stream.order(0, 1)  # a smaller window still visits each image once an epoch
    assert sorted(order.tolist()) == list(range(len(stream)))


def test_the_image_reader_decodes_within_its_memory_budget(folder: Path) -> None:
    prep, held = prepared(folder, BUDGET), prepared(folder, "")
    assert prep.streamed is not None
    stream = prep.streamed.stream
    feed, order = stream.feed(0, 0), stream.order(0, 0)
    for start in range(0, len(order), 96):
        rows = order[start : start + 96]
        block = feed.gather(rows)
        np.testing.assert_array_equal(block["x"], held.train_data.x[rows])
        np.testing.assert_array_equal(block["y"], held.train_data.y[rows])
    assert 0 < feed.reader.peak <= 512 * 1024
    feed.close()
    assert feed.reader.held == 0


def test_a_streamed_image_run_resumes_bit_identically(folder: Path, tmp_path: Path) -> None:
    spec = load_spec_text(SPEC % BUDGET, str(folder / "m.dnn"))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    dnnspec.train(spec, out=whole, epochs=2)
    dnnspec.train(spec, out=cut, epochs=2, stop_after=1)
    dnnspec.train(spec, out=cut, epochs=2, resume=True)
    first, _ = checkpoint.load(whole / "checkpoint" / "last.npz")
    second, _ = checkpoint.load(cut / "checkpoint" / "last.npz")
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_a_bad_image_in_a_streamed_folder_is_a_located_error_before_training(
    tmp_path: Path,
) -> None:
    digit_images(tmp_path)
    (tmp_path / "digits16" / "3" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(DiagnosticError, match="cannot decode image .*zz.png") as caught:
        prepared(tmp_path, BUDGET)
    assert caught.value.diagnostics[0].span is not None
