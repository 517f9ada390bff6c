"""`dnnspec tune` against a hostile or careless world: links planted in the search
directory, a second tuner on the same directory, a killed tuner, an edited spec, damaged
state files, and options or spaces no search can use. Each is refused with a message
(exit 2), never a traceback, and nothing outside the search directory is touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnnspec.errors import DiagnosticError
from dnnspec.files import DirectoryLock
from dnnspec.frontend import load_spec_text, parse_override
from dnnspec.tune.best_spec import render_value
from dnnspec.tune.results import objective_of
from dnnspec.tune.tuner import spec_digest

SPEC = """param width = 4
param epochs = {epochs}

model tiny {{
  input p: float32[N, 2]
  dense(width) -> tanh
  dense(2)
}}

train {{
  data spirals(samples = {samples}, classes = 2, noise = 0.1, validation = 0.25)
  loss cross_entropy
  optimizer adam(lr = 0.01)
  batch 50
  epochs epochs
  metrics accuracy
  seed 0
}}

search {search} {{
  {dims}
}}
"""


def write_spec(
    folder: Path,
    search: str = "grid",
    dims: str = "width in choice(4)",
    epochs: int = 1,
    samples: int = 100,
) -> Path:
    spec = folder / "s.dnn"
    spec.write_text(SPEC.format(search=search, dims=dims, epochs=epochs, samples=samples))
    return spec


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "dnnspec", "tune", *map(str, args)]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DNNSPEC_THREADS": "1"}
    return subprocess.run(command(*args), capture_output=True, text=True, env=env, timeout=300)


def refused(done: subprocess.CompletedProcess[str], words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def trial_processes(out: Path) -> list[int]:
    """Ids of the running processes training into `out`'s trials (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"train" in argv and any(str(out).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


@pytest.fixture
def stray_trials(tmp_path: Path) -> Iterator[Path]:
    """The search directory of a test that may leave trials running; they are ended."""
    out = tmp_path / "search"
    yield out
    for pid in trial_processes(out):
        os.kill(pid, signal.SIGKILL)


# -- the search directory -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["logs", "trials", "results.jsonl"])
def test_a_symbolic_link_in_the_search_directory_is_refused_not_written_through(
    tmp_path: Path, name: str
) -> None:
    spec = write_spec(tmp_path)
    outside = tmp_path / "outside"
    if name == "results.jsonl":
        outside.write_text("precious\n")
    else:
        outside.mkdir()
    out = tmp_path / "search"
    out.mkdir()
    (out / name).symlink_to(outside)
    refused(run(spec, "--out", out), "is a symbolic link")
    if name == "results.jsonl":
        assert outside.read_text() == "precious\n"
    else:
        assert list(outside.iterdir()) == []


def test_a_second_tune_on_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "search"
    out.mkdir()
    with DirectoryLock(out):  # as a running tune holds it
        refused(run(spec, "--out", out), "is in use by another dnnspec command")
    assert not (out / "search.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel ends orphans on Linux")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_trials_die_with_the_tuner(tmp_path: Path, stray_trials: Path, sig: int) -> None:
    spec = write_spec(tmp_path, epochs=100000)
    tuner = subprocess.Popen(
        command(spec, "--out", stray_trials, "--workers", "1", "--json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "DNNSPEC_THREADS": "1"},
    )
    deadline = time.monotonic() + 60
    while not (stray_trials / "trials" / "0" / "metrics.jsonl").exists():
        assert tuner.poll() is None and time.monotonic() < deadline, "no trial started"
        time.sleep(0.1)
    assert trial_processes(stray_trials)
    tuner.send_signal(sig)
    tuner.wait(timeout=60)
    deadline = time.monotonic() + 30
    while trial_processes(stray_trials) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trial_processes(stray_trials) == []
    if sig == signal.SIGTERM:  # stopped as Ctrl-C stops it: the resume command is shown
        assert tuner.returncode == 130
        assert tuner.stderr is not None and b"--resume" in tuner.stderr.read()


def test_a_trial_that_found_its_directory_busy_runs_again_on_resume(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "search"
    (out / "trials" / "0").mkdir(parents=True)
    with DirectoryLock(out / "trials" / "0"):  # an orphan of an earlier tune holds it
        first = run(spec, "--out", out, "--json")
    assert first.returncode == 0, first.stderr
    (trial,) = json.loads(first.stdout)["trials"]
    assert trial["status"] == "failed" and trial["retry"], trial
    again = run(spec, "--out", out, "--json", "--resume")
    assert again.returncode == 0, again.stderr
    (trial,) = json.loads(again.stdout)["trials"]
    assert trial["status"] == "ok", trial


def test_a_spec_edited_during_the_search_stops_it(tmp_path: Path, stray_trials: Path) -> None:
    spec = write_spec(tmp_path, dims="width in choice(4, 5, 6)", epochs=40, samples=400)
    tuner = subprocess.Popen(
        command(spec, "--out", stray_trials, "--workers", "1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DNNSPEC_THREADS": "1"},
    )
    deadline = time.monotonic() + 60
    while not (stray_trials / "logs" / "0-end.log").exists():
        assert tuner.poll() is None and time.monotonic() < deadline, "no trial started"
        time.sleep(0.05)
    spec.write_text(spec.read_text().replace("lr = 0.01", "lr = 0.5"))
    _, stderr = tuner.communicate(timeout=120)
    assert tuner.returncode == 2, stderr
    assert "changed during the search" in stderr
    recorded = (stray_trials / "results.jsonl").read_text().splitlines()
    assert len(recorded) < 3


def test_the_spec_digest_covers_the_files_the_spec_imports(tmp_path: Path) -> None:
    (tmp_path / "lib.dnn").write_text("block act(n: int) (x) {\n  return x -> dense(n)\n}\n")
    text = SPEC.format(search="grid", dims="width in choice(4)", epochs=1, samples=100)
    spec = tmp_path / "s.dnn"
    spec.write_text('import "lib.dnn"\n' + text.replace("-> tanh", "-> act(3)"))
    before = spec_digest(spec)
    edited = "block act(n: int) (x) {\n  return x -> dense(n) -> relu\n}\n"
    (tmp_path / "lib.dnn").write_text(edited)
    assert spec_digest(spec) != before


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("finished")
    spec = write_spec(folder)
    done = run(spec, "--out", folder / "search")
    assert done.returncode == 0, done.stderr
    return spec, folder / "search"


DAMAGE = {
    "search.json not UTF-8": ("search.json", b"\xff\xfe{}"),
    "search.json a list": ("search.json", b"[1, 2]"),
    "results.jsonl not UTF-8": ("results.jsonl", b"\xff\n"),
    "an objective that is no number": (
        "results.jsonl",
        b'{"trial": 0, "params": {"width": 4}, "until": null, "status": "ok",'
        b' "objective": "high", "epochs": 1, "seconds": 1.0}\n',
    ),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_resume_of_a_damaged_search_directory_says_what_is_damaged(
    finished_search: tuple[Path, Path], tmp_path: Path, case: str
) -> None:
    spec, search = finished_search
    out = tmp_path / "search"
    shutil.copytree(search, out)
    name, data = DAMAGE[case]
    (out / name).write_bytes(data)
    refused(run(spec, "--out", out, "--resume"), name)


def test_a_metrics_line_that_is_no_epoch_record_fails_the_trial_with_a_message(
    tmp_path: Path,
) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 0.5}\n[1]\n')
    with pytest.raises(DiagnosticError, match="line 2 is not an epoch record"):
        objective_of(tmp_path, "val_loss", "min")


# -- what a search may ask for ------------------------------------------------------------


@pytest.mark.parametrize("value", ["café", "naïve ünïcode", 'say "hi"\\\tnow\n'])
def test_a_string_choice_is_written_as_spec_text_that_reads_back(value: str) -> None:
    text = render_value(value)
    assert "\\u" not in text
    assert parse_override("name", text)[0] == value


@pytest.mark.parametrize(
    ("search", "dims", "message"),
    [
        ("halving(trials = 1000000000)", "width in choice(4)", "must be <= 100000"),
        ("random(trials = 2)", "width in int_range(1, 9223372036854775807)", "more than"),
        ("grid", "width in int_range(-9223372036854775807, 9223372036854775807)", "more than"),
    ],
)
def test_a_search_too_large_to_hold_is_a_located_error(
    search: str, dims: str, message: str
) -> None:
    with pytest.raises(DiagnosticError, match=message) as caught:
        load_spec_text(SPEC.format(search=search, dims=dims, epochs=1, samples=100))
    assert caught.value.diagnostics[0].span is not None


def test_a_uniform_step_too_fine_to_count_is_a_located_error() -> None:
    text = SPEC.format(
        search="grid", dims="rate in uniform(0.001, 1.0, 1e-300)", epochs=1, samples=100
    )
    with pytest.raises(DiagnosticError, match="more than 1,000,000,000,000,000 values") as caught:
        load_spec_text("param rate = 0.5\n" + text)
    assert caught.value.diagnostics[0].span is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--epochs", "-3"], "--epochs must be at least 1"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--workers", str((os.cpu_count() or 1) + 1)], "cores of this machine"),
        (["--address", "127.0.0.1:6379"], "--address only applies to --backend ray"),
    ],
)
def test_options_no_search_can_use_are_refused_before_the_directory_is_claimed(
    tmp_path: Path, options: list[str], message: str
) -> None:
    spec = write_spec(tmp_path)
    refused(run(spec, "--out", tmp_path / "search", *options), message)
    assert not (tmp_path / "search").exists()


def test_a_missing_ray_is_reported_before_the_directory_is_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dnnspec.api import tune

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    spec = write_spec(tmp_path)
    with pytest.raises(DiagnosticError, match="needs Ray"):
        tune(spec, out=tmp_path / "search", workers=1, backend="ray")
    assert not (tmp_path / "search").exists()
