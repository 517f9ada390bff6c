"""The run directory is input too: nothing a run rewrites can be lost to a kill, a planted
symlink or a second Ctrl-C, a forged checkpoint or edited lock file is refused, and the
files a run writes are what `eval`, `predict` and `--resume` later trust."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dnnspec import files
from dnnspec.cli import main
from dnnspec.runtime import checkpoint

SPEC = """model m {{
  input x: float32[N, 4]
  dense(8) -> relu
  dense(3)
}}
train {{
  data file(path = "{path}", validation = 0.25)
  loss cross_entropy
  optimizer sgd(lr = 0.1)
  batch 8
  epochs {epochs}
  metrics accuracy
  {extra}
}}
"""


def write_run_spec(
    folder: Path, epochs: int = 3, extra: str = "", data: str = "data.npz", n: int = 48
) -> Path:
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.normal(size=(n, 4)), y=rng.integers(0, 3, n))
    spec = folder / "m.dnn"
    spec.write_text(SPEC.format(path=data, epochs=epochs, extra=extra))
    return spec


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def train(capsys: pytest.CaptureFixture[str], spec: Path, run: Path, *extra: str) -> None:
    code, out, err = cli(capsys, "train", str(spec), "--out", str(run), "--json", *extra)
    assert code == 0, out + err


def records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.fixture
def trained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    spec = write_run_spec(tmp_path)
    run = tmp_path / "run"
    train(capsys, spec, run, "--epochs", "2", "--checkpoint-every", "1")
    return spec, run


def test_a_kill_while_resume_rewrites_metrics_loses_no_epoch(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, run = trained
    before = (run / "metrics.jsonl").read_text()

    def killed(fd: int) -> None:
        raise KeyboardInterrupt  # stands for the kill: the rewrite stops half way

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        from dnnspec.api import train as api_train

        api_train(spec, out=run, resume=True, epochs=3)
    assert (run / "metrics.jsonl").read_text() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_resume_rebuilds_a_damaged_metrics_log_from_the_checkpoint(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, run = trained
    kept = records(run)
    (run / "metrics.jsonl").write_bytes(b"\x00\xff garbage")
    train(capsys, spec, run, "--epochs", "3", "--resume")
    assert records(run)[:2] == kept and len(records(run)) == 3


def test_a_symlink_planted_where_the_checkpoint_is_written_is_never_followed(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec, run = trained
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "checkpoint" / "last.npz.tmp").symlink_to(victim)
    (run / "metrics.jsonl.tmp").symlink_to(victim)
    train(capsys, spec, run, "--epochs", "3", "--resume", "--checkpoint-every", "1")
    assert victim.read_text() == "precious"


def test_a_directory_where_a_temporary_file_was_is_harmless(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, run = trained
    (run / "checkpoint" / "last.npz.tmp").mkdir()
    train(capsys, spec, run, "--epochs", "3", "--resume")
    assert len(records(run)) == 3


def forge(path: Path, change: Any) -> None:
    """Rewrite a checkpoint with `change(arrays, header)` applied and a valid checksum."""
    arrays, header = checkpoint.load(path)
    change(arrays, header)
    checkpoint.save(path, arrays, header)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a, h: a.update({"dense_1.weight": np.zeros((5, 8), np.float32)}), "tensor"),
        (lambda a, h: a.update({"extra": np.zeros(3, np.float32)}), "does not carry"),
        (lambda a, h: a.pop("dense_1.weight"), "lacks the tensor"),
        (lambda a, h: a.update({"dense_1.weight": np.zeros((4, 8))}), "float64"),
        (lambda a, h: h.update(step=-1), "step"),
        (lambda a, h: h.update(step=5), "inconsistent"),
        (lambda a, h: h.update(epoch=1.5), "epoch"),
        (lambda a, h: h.update(seed=7), "seed 7"),
        (lambda a, h: h.update(stopped=3), "stopped"),
        (lambda a, h: h.update(surprise=1), "surprise"),
        (lambda a, h: h.pop("history"), "history"),
        (lambda a, h: h.update(history=[]), "inconsistent"),
        (lambda a, h: h.update(early_stop=[1.0, 0]), "early"),
        (lambda a, h: h.update(record="x"), "record"),
        (lambda a, h: h.update(data_sha256="0" * 64), "data changed"),
    ],
)
def test_a_forged_checkpoint_with_a_valid_checksum_is_refused(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], change: Any, message: str
) -> None:
    spec, run = trained
    forge(run / "checkpoint" / "last.npz", change)
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--epochs", "3", "--resume")
    assert code == 2 and message in err


def test_a_checkpoint_of_an_older_adam_state_layout_is_refused_with_a_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Adam's moments were once stored as `.m` / `.v`; now they are `.m_sum` / `.v_sum`
    spec = write_run_spec(tmp_path)
    spec.write_text(spec.read_text().replace("sgd(lr = 0.1)", "adam(lr = 0.01)"))
    run = tmp_path / "run"
    train(capsys, spec, run, "--epochs", "2")

    def older(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
        for name in [n for n in arrays if n.endswith((".m_sum", ".v_sum"))]:
            arrays[name.removesuffix("_sum")] = arrays.pop(name)

    forge(run / "checkpoint" / "last.npz", older)
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--epochs", "3", "--resume")
    assert code == 2 and "lacks the tensor" in err and "another version of dnnspec" in err


def test_resuming_after_the_data_changed_is_refused(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, run = trained
    rng = np.random.default_rng(1)
    np.savez(spec.parent / "data.npz", x=rng.normal(size=(48, 4)), y=rng.integers(0, 3, 48))
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--epochs", "3", "--resume")
    assert code == 2 and "the data changed since the run" in err


def test_the_lock_file_pins_data_paths_so_eval_works_from_any_directory(
    trained: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, run = trained
    lock = json.loads((run / "spec.lock.json").read_text())
    assert lock["train"]["data"]["args"]["path"] == str(spec.parent / "data.npz")
    code, out, _ = cli(capsys, "eval", str(run), "--json")
    expected = json.loads(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    np.savez(elsewhere / "data.npz", x=np.zeros((48, 4)), y=np.zeros(48, np.int64))
    monkeypatch.chdir(elsewhere)
    code, out, _ = cli(capsys, "eval", str(run), "--json")
    assert code == 0 and json.loads(out) == expected


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["train"]["data"]["args"].update(validation=-3), "validation"),
        (lambda s: s["train"].update(batch=0), "batch"),
        (lambda s: s["model"]["nodes"][0].update(name="renamed"), "nothing defines"),
        (lambda s: s["model"]["nodes"][0].update(layer="no_such_layer"), "no_such_layer"),
        (lambda s: s["model"]["nodes"][0]["args"].update(units=-2), "units"),
        (lambda s: s["train"]["optimizer"]["args"].update(lr="fast"), "lr"),
        (lambda s: s["model"].update(output="nowhere"), "nowhere"),
    ],
)
def test_an_edited_lock_file_is_validated_as_a_spec_is(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], edit: Any, message: str
) -> None:
    _, run = trained
    lock = json.loads((run / "spec.lock.json").read_text())
    edit(lock)
    (run / "spec.lock.json").write_text(json.dumps(lock))
    code, _, err = cli(capsys, "eval", str(run))
    assert code == 2 and message in err


def test_run_files_get_the_permissions_of_plain_files(trained: tuple[Path, Path]) -> None:
    _, run = trained
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("spec.lock.json", "model.onnx", "metrics.jsonl", "checkpoint/last.npz"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_run_directory_in_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_run_spec(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    with files.DirectoryLock(run):
        code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--overwrite")
    assert code == 2 and "in use by another dnnspec command" in err
    train(capsys, spec, run, "--overwrite")  # free again once the holder is done


def test_two_concurrent_overwrites_leave_one_clean_run(tmp_path: Path) -> None:
    spec = write_run_spec(tmp_path, epochs=2)
    run = tmp_path / "run"
    argv = ["python", "-m", "dnnspec", "train", str(spec), "--out", str(run), "--overwrite"]
    argv[0] = os.environ.get("PYTHON", "") or __import__("sys").executable
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert all("Traceback" not in out + err for _, out, err in results)
    assert sorted(code for code, _, _ in results) in ([0, 0], [0, 2])
    assert len(records(run)) == 2


def test_resume_and_overwrite_together_are_refused(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, run = trained
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--resume", "--overwrite")
    assert code == 2 and "contradict" in err


def test_overwrite_clears_the_replaced_runs_checkpoint(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else an interrupted replacement would later resume the run it replaced."""
    spec, run = trained
    from dnnspec.runtime import run as run_module

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module._Run, "train_epoch", interrupt)
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--overwrite")
    assert code == 130 and "nothing was saved to resume from" in err
    assert "--overwrite" in err.splitlines()[-1]
    assert not (run / "checkpoint" / "last.npz").exists()


def test_ctrl_c_in_the_first_epoch_says_the_weights_are_untrained_and_how_to_start_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_run_spec(tmp_path)
    from dnnspec.runtime import run as run_module

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module._Run, "train_epoch", interrupt)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--device", "cpu")
    assert code == 130
    assert "untrained weights" in err and "best epoch" not in err
    assert "--resume" not in err and "--device cpu" in err
    assert (run / "model.onnx").exists()


def test_the_resume_hint_keeps_the_device_and_the_cadence(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, run = trained
    from dnnspec.runtime import run as run_module

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module._Run, "train_epoch", interrupt)
    code, _, err = cli(
        capsys, "train", str(spec), "--out", str(run), "--resume", "--epochs", "4",
        "--device", "cpu", "--checkpoint-every", "1",
    )  # fmt: skip
    assert code == 130
    hint = err.splitlines()[-1]
    assert "--resume" in hint and "--device cpu" in hint and "--checkpoint-every 1" in hint
    assert "--epochs 4" in hint and "last finished epoch's weights" in err


def test_a_second_ctrl_c_during_the_export_still_leaves_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_run_spec(tmp_path, epochs=3)
    from dnnspec.runtime import run as run_module

    real_epoch, real_write = run_module._Run.train_epoch, files.write_bytes
    calls = {"epochs": 0}

    def epoch_then_interrupt(self: Any) -> Any:
        calls["epochs"] += 1
        if calls["epochs"] == 2:
            raise KeyboardInterrupt
        return real_epoch(self)

    def write_interrupted(path: Path, data: bytes, what: str | None = None) -> None:
        if path.name == "model.onnx":
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, mid-export
        real_write(path, data, what)

    monkeypatch.setattr(run_module._Run, "train_epoch", epoch_then_interrupt)
    monkeypatch.setattr("dnnspec.runtime.run.write_bytes", write_interrupted)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--checkpoint-every", "1")
    assert code == 130 and "continue with" in err
    assert (run / "model.onnx").stat().st_size > 0
    code, _, _ = cli(capsys, "eval", str(run))
    assert code == 0


def test_a_full_disk_is_an_error_that_leaves_no_temporary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_run_spec(tmp_path)
    run = tmp_path / "run"
    train(capsys, spec, run, "--epochs", "1")
    model = (run / "model.onnx").read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = cli(capsys, "train", str(spec), "--out", str(run), "--resume", "--epochs", "2")
    assert code == 2 and "no space left on the device" in err
    monkeypatch.undo()
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [] and (run / "model.onnx").read_bytes() == model
    train(capsys, spec, run, "--resume", "--epochs", "2")  # space again: it carries on


def test_a_read_only_out_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_run_spec(tmp_path)
    blocked = tmp_path / "file"
    blocked.write_text("")
    code, _, err = cli(capsys, "train", str(spec), "--out", str(blocked / "run"))
    assert code == 2 and "run directory" in err
    code, _, err = cli(capsys, "compile", str(spec), "--out", str(blocked))
    assert code == 2 and "not a directory" in err


def test_predictions_of_rank_three_are_refused_as_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dnnspec.api import write_predictions
    from dnnspec.errors import DiagnosticError

    with pytest.raises(DiagnosticError, match="only outputs of rank 1 or 2"):
        write_predictions(np.zeros((2, 3, 4), np.float32), tmp_path / "p.csv")
    write_predictions(np.zeros((2, 3), np.float32), tmp_path / "p.csv")
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 2


@pytest.mark.parametrize("dtype", ["float64", "int64", "uint64", "float16"])
def test_predict_casts_numbers_to_the_float_input_refusing_only_values_beyond_its_range(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, dtype: str
) -> None:
    _, run = trained
    np.save(tmp_path / "x.npy", np.ones((2, 4), dtype))
    assert cli(capsys, "predict", str(run), str(tmp_path / "x.npy"))[0] == 0
    np.save(tmp_path / "x.npy", np.ones((2, 4), bool))
    code, _, err = cli(capsys, "predict", str(run), str(tmp_path / "x.npy"))
    assert code == 2 and "expects float32 data, got bool" in err


def test_predict_reads_csv_text_as_the_declared_dtype_and_refuses_overflow(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, run = trained
    (tmp_path / "x.csv").write_text("1,2,3,4\n0.5,0,0,1\n")
    assert cli(capsys, "predict", str(run), str(tmp_path / "x.csv"))[0] == 0
    (tmp_path / "x.csv").write_text("1,2,3,1e39\n")
    code, _, err = cli(capsys, "predict", str(run), str(tmp_path / "x.csv"))
    assert code == 2 and "beyond float32's range" in err


@pytest.mark.parametrize(("name", "big"), [("data.npz", 1e300), ("data.csv", 1e39)])
def test_training_data_beyond_float32_is_named_not_reported_as_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, big: float
) -> None:
    x = np.ones((16, 4))
    x[5, 2] = big
    y = np.arange(16) % 3
    if name.endswith(".npz"):
        np.savez(tmp_path / name, x=x, y=y)
    else:
        np.savetxt(tmp_path / name, np.column_stack([x, y]), delimiter=",")
    spec = tmp_path / "m.dnn"
    spec.write_text(SPEC.format(path=name, epochs=1, extra=""))
    code, _, err = cli(capsys, "train", str(spec), "--out", str(tmp_path / "run"))
    assert code == 2 and "beyond float32's range" in err and "sample 5" in err
    assert "diverged" not in err


def test_eval_json_is_valid_json_when_a_metric_is_nan(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run = trained
    from dnnspec import api

    monkeypatch.setattr(api.Model, "evaluate", lambda self, data=None: {"loss": float("nan")})
    code, out, _ = cli(capsys, "eval", str(run), "--json")
    assert code == 0 and json.loads(out) == {"loss": None}


@pytest.mark.parametrize("case", ["custom_op", "huge_dims", "external", "no_metadata"])
def test_a_model_that_cannot_run_or_lies_about_its_weights_is_a_clear_error(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    import onnx
    from onnx import TensorProto

    _, run = trained
    model = onnx.load(run / "model.onnx")
    if case == "custom_op":
        model.graph.node[0].op_type, model.graph.node[0].domain = "Mystery", "com.example"
        model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    elif case == "huge_dims":
        model.graph.initializer[0].dims[0] = 10**12
    elif case == "external":
        tensor = model.graph.initializer[0]
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value="../../etc/passwd")
    else:
        del model.metadata_props[:]
    (run / "model.onnx").write_bytes(model.SerializeToString())
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    for argv in (["eval", str(run)], ["predict", str(run), str(tmp_path / "x.npy")]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "error" in err


def test_a_run_with_non_trained_state_and_best_weights_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batchnorm's running statistics travel in the checkpoint beside the parameters, and
    in its best-epoch copy: the checkpoint check must expect exactly those."""
    spec = write_run_spec(tmp_path, epochs=3, extra="early_stop(monitor = val_loss, patience = 9)")
    spec.write_text(spec.read_text().replace("dense(8) -> relu", "dense(8) -> batchnorm -> relu"))
    run = tmp_path / "run"
    train(capsys, spec, run, "--epochs", "1")
    arrays, _ = checkpoint.load(run / "checkpoint" / "last.npz")
    assert any(k.startswith("best:") and "batchnorm" in k for k in arrays)
    train(capsys, spec, run, "--resume")
    assert len(records(run)) == 3


@pytest.fixture
def mounted(tmp_path: Path) -> Any:
    """A fresh tmpfs of a given size and mode (root only: elsewhere the test is skipped)."""
    mounts: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt{len(mounts)}"
        target.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
        )
        if result.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounts.append(target)
        return target

    yield mount
    for target in mounts:
        subprocess.run(["umount", str(target)], capture_output=True)


def test_training_onto_a_full_disk_stops_with_a_message_and_leaves_no_temporary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mounted: Any
) -> None:
    """The disk is filled by measurement, not by a guessed size: a first run on an empty
    file system shows how many blocks a whole run takes, and a second file system is
    filled until only half of that is free, so the run overflows part way through."""
    spec = write_run_spec(tmp_path, epochs=50)
    roomy = mounted("size=16m")
    code, out, err = cli(capsys, "train", str(spec), "--out", str(roomy / "run"))
    assert code == 0, out + err
    block = os.statvfs(roomy).f_frsize
    needed = sum(-(-p.stat().st_size // block) * block for p in roomy.rglob("*") if p.is_file())
    disk = mounted("size=16m")
    stats = os.statvfs(disk)
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * (stats.f_bavail * stats.f_frsize - needed // 2))
    code, out, err = cli(capsys, "train", str(spec), "--out", str(disk / "run"))
    assert code == 2 and "no space left on the device" in err, out + err
    assert [p for p in disk.rglob("*") if p.name.endswith(".tmp")] == []


def test_a_read_only_file_system_as_out_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mounted: Any
) -> None:
    spec = write_run_spec(tmp_path)
    disk = mounted("ro,size=64k")
    for out in (disk, disk / "run"):
        code, _, err = cli(capsys, "train", str(spec), "--out", str(out))
        assert code == 2 and ("read-only" in err or "not writable" in err), err
