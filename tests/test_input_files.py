"""Every path a user passes is input: FIFOs, devices, directories, empty or overlong names,
and files whose headers declare more than they hold are exit-2 diagnostics, never a hang,
a traceback or an allocation of what a header claims."""

from __future__ import annotations

import io
import os
import signal
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dnnspec.cli import main
from dnnspec.data.datasets import read_inputs
from dnnspec.errors import DiagnosticError
from dnnspec.frontend import MAX_SPEC_BYTES, load_spec, load_spec_text
from dnnspec.resolve.search import MAX_CHOICES
from dnnspec.syntax.parse import MAX_TOKENS

ROOT = Path(__file__).resolve().parent.parent
SPIRALS = (ROOT / "specs" / "spirals.dnn").read_text()

FILE_SPEC = """model m {{
  input x: float32[N, 2]
  dense(3)
}}
train {{
  data file(path = "{path}", validation = 0.25)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 4
  epochs 1
}}
"""


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A read that blocks fails the test instead of stalling the suite."""

    def stuck(signum: int, frame: object) -> None:
        raise TimeoutError("blocked reading a path")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in out + err
    return err


def special_paths(tmp_path: Path) -> dict[str, str]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    return {
        "fifo": str(fifo),
        "device": "/dev/zero",
        "directory": str(tmp_path / "folder"),
        "empty": "",
        "long": str(tmp_path / ("x" * 300)) + ".dnn",
        "longer": "/".join(["y" * 200] * 30),
    }


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "empty", "long", "longer"])
def test_a_spec_path_that_is_no_regular_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    err = cli_error(capsys, "check", special_paths(tmp_path)[kind])
    expected = {
        "fifo": "FIFO",
        "device": "a device",
        "directory": "a directory",
        "empty": "path is empty",
        "long": "too long",
        "longer": "too long",
    }[kind]
    assert expected in err


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "long"])
def test_a_data_path_that_is_no_regular_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = special_paths(tmp_path)[kind]
    link = tmp_path / "data.npz"
    if kind != "long":
        link.symlink_to(target)
        target = str(link)
    spec = tmp_path / "m.dnn"
    spec.write_text(FILE_SPEC.format(path=target))
    err = cli_error(capsys, "train", str(spec), "--out", str(tmp_path / "out"))
    assert {
        "fifo": "FIFO",
        "device": "a device",
        "directory": "is a directory",
        "long": "too long",
    }[kind] in err


def test_an_empty_data_path_is_not_the_current_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "m.dnn"
    spec.write_text(FILE_SPEC.format(path=""))
    assert "path is empty" in cli_error(
        capsys, "compile", str(spec), "--out", str(tmp_path / "out")
    )


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def test_an_npy_header_declaring_a_trillion_elements_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header((10**12,)) + b"\0" * 200)
    with pytest.raises(DiagnosticError, match="over the limit"):
        read_inputs(path)


def test_an_npy_whose_data_is_shorter_than_its_header_declares_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header((1000, 2)) + b"\0" * 160)
    with pytest.raises(DiagnosticError, match=r"declares shape \[1000, 2\]"):
        read_inputs(path)


def test_an_npz_member_declaring_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", npy_header((10**12, 2)) + b"\0" * 64)
        z.writestr("y.npy", npy_header((4,)) + b"\0" * 32)
    spec = tmp_path / "m.dnn"
    spec.write_text(FILE_SPEC.format(path=path))
    with pytest.raises(DiagnosticError, match="over the limit"):
        from dnnspec.runtime.prepare import prepare

        prepare(load_spec(spec))


def test_an_npz_that_inflates_beyond_the_data_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A highly compressible member (the zip-bomb shape) is judged by its declared size."""
    import dnnspec.data.datasets as datasets

    monkeypatch.setattr(datasets, "MAX_DATA_BYTES", 1 << 20)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((1 << 18, 2)))
    path = tmp_path / "bomb.npz"
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < 10_000
    with pytest.raises(DiagnosticError, match="over the limit of 1 MiB"):
        read_inputs(path)


def test_a_small_npz_inflating_to_hundreds_of_mib_is_refused_before_inflating(
    tmp_path: Path,
) -> None:
    """250 KB declaring 256 MiB (within the data limit) made `predict` peak at 1-2 GB: the
    declared size is bounded by the file's before a byte is inflated or allocated."""
    import tracemalloc

    from dnnspec.data.formats.npz import read_npz

    path = tmp_path / "bomb.npz"
    rows = 1 << 25
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w") as f:
        f.write(npy_header((rows, 2), "<f4"))
        for _ in range(rows * 8 >> 22):
            f.write(bytes(1 << 22))
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(DiagnosticError, match=r"would inflate from .* KiB to 256.0 MiB"):
            read_npz(path, 2 << 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_compressed_npz_of_ordinary_data_is_read_whatever_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-hot table compresses 36x: under the bound even past the floor."""
    import dnnspec.npz

    monkeypatch.setattr(dnnspec.npz, "INFLATION_FLOOR", 1 << 20)
    labels = np.random.default_rng(0).integers(0, 10, 50_000)
    one_hot = np.eye(10, dtype=np.float32)[labels]
    np.savez_compressed(tmp_path / "d.npz", x=one_hot)
    np.testing.assert_array_equal(read_inputs(tmp_path / "d.npz"), one_hot)
    np.savez_compressed(tmp_path / "z.npz", x=np.zeros_like(one_hot))
    with pytest.raises(DiagnosticError, match="at most 100x beyond 1 MiB"):
        read_inputs(tmp_path / "z.npz")


def test_an_npz_member_with_a_bad_checksum_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(64.0).reshape(32, 2))
    raw = bytearray(path.read_bytes())
    raw[200] ^= 0xFF  # inside the stored (uncompressed) data
    path.write_bytes(bytes(raw))
    with pytest.raises(DiagnosticError, match="damaged"):
        read_inputs(path)


def test_an_oversized_spec_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.dnn"
    path.write_text("# " + "x" * MAX_SPEC_BYTES + "\n")
    with pytest.raises(DiagnosticError, match="over the limit of 1 MiB"):
        load_spec(path)


def test_a_spec_with_too_many_tokens_is_refused_quickly() -> None:
    line = "param p = " + " + ".join(["1"] * MAX_TOKENS) + "\n"
    with pytest.raises(DiagnosticError, match="longer than 20,000 tokens"):
        load_spec_text(line + SPIRALS, "long.dnn")


def test_a_choice_with_too_many_values_is_refused() -> None:
    text = SPIRALS + (
        "\nsearch grid {\n  width in choice("
        + ", ".join(str(i + 1) for i in range(MAX_CHOICES + 1))
        + ")\n}\n"
    )
    with pytest.raises(DiagnosticError, match=f"at most {MAX_CHOICES} values"):
        load_spec_text(text, "s.dnn")


def test_a_spec_with_old_mac_line_endings_parses() -> None:
    spec = load_spec_text(SPIRALS.replace("\n", "\r"), "cr.dnn")
    assert spec.model.nodes


@pytest.mark.parametrize("kind", ["empty", "longer", "fifo"])
def test_a_run_directory_path_that_cannot_be_one_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = special_paths(tmp_path)[kind]
    if kind == "fifo":
        run = tmp_path / "run"
        run.mkdir()
        (run / "model.onnx").symlink_to(path)
        path = str(run)
    err = cli_error(capsys, "eval", path)
    assert {"empty": "path is empty", "longer": "too long", "fifo": "FIFO"}[kind] in err
