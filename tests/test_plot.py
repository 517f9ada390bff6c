"""`dnnspec plot` draws learning curves of runs, and `train` draws curves.png when
matplotlib is installed; the learning rate shown is the schedule the train step ran."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dnnspec.api import plot, train
from dnnspec.errors import DiagnosticError
from dnnspec.schema import Duration
from dnnspec.tools.plot import learning_rates
from dnnspec.training.schedules import SCHEDULES, Timing, factor_curve

SPECS = Path(__file__).resolve().parent.parent / "specs"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [
        train(
            SPECS / "digits_mlp.dnn", out=root / f"h{h}", epochs=3, device="cpu", hidden=h
        ).run_dir
        for h in (32, 64)
    ]


def test_train_draws_curves_when_matplotlib_is_installed(runs: list[Path]) -> None:
    pytest.importorskip("matplotlib")
    assert (runs[0] / "curves.png").read_bytes().startswith(PNG)


def test_several_runs_are_drawn_into_one_png(runs: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = plot(runs, tmp_path / "both.png")
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 10_000


def test_the_plotted_learning_rate_is_the_schedule_of_the_run(runs: list[Path]) -> None:
    # digits_mlp: adam(lr = 1e-3) with cosine(warmup = 1 epoch) over the 3 epochs (of 23
    # steps) the run trained, not the 30 the spec declares
    records = [{"epoch": e, "step": 23 * e} for e in (1, 2, 3)]
    rates = learning_rates(runs[0], records)
    assert rates is not None
    progress = (np.array([22, 45, 68]) - 23) / (69 - 23)
    expected = 1e-3 * np.where(progress < 0, 23 / 23, 0.5 * (1 + np.cos(np.pi * progress)))
    assert rates[1:] == pytest.approx(expected[1:], rel=1e-5, abs=1e-10)


def test_every_schedule_has_a_curve() -> None:
    timing, steps = Timing(10, 100), np.arange(0, 100, 7)
    for name in SCHEDULES:
        definition = SCHEDULES.get(name)
        args = {a.name: a.default for a in definition.signature.args if not a.required}
        args.update(every=Duration(value=2, unit="epochs"), rate=0.9)
        args = {k: v for k, v in args.items() if definition.signature.get(k) is not None}
        curve = factor_curve(name, args, timing, steps)
        assert curve.shape == steps.shape and np.isfinite(curve).all(), name


def test_plot_of_a_directory_without_epochs_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(DiagnosticError) as exc:
        plot([tmp_path], tmp_path / "x.png")
    assert "no finished epoch" in exc.value.render()
    done = subprocess.run(
        [sys.executable, "-m", "dnnspec", "plot", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
