"""`dnnspec tune`: each method proposes what it should, trials run as ordinary runs, a
failing trial is recorded without stopping the search, an interrupted search resumes
without repeating finished trials, and best.dnn retrains to the recorded objective."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dnnspec.errors import DiagnosticError
from dnnspec.frontend import load_spec_text
from dnnspec.ir import SearchSpec
from dnnspec.search.methods import SEARCH_METHODS
from dnnspec.search.space import draws, grid
from dnnspec.search.strategies import HalvingStrategy, Plan
from dnnspec.tune.tuner import objective_of

ROOT = Path(__file__).resolve().parent.parent

SPEC = """param width = 8
param lr = 0.02

model tiny {{
  input p: float32[N, 2]
  dense(width) -> tanh
  dense(2)
}}

train {{
  data spirals(samples = 200, classes = 2, noise = 0.1, validation = 0.25)
  loss cross_entropy
  optimizer {optimizer}
  batch 50
  epochs {epochs}
  metrics accuracy
  seed 0
}}

search {search} {{
{dims}
}}
"""


def spec_text(search: str, dims: str, epochs: int = 3, optimizer: str = "adam(lr = lr)") -> str:
    return SPEC.format(search=search, dims=dims, epochs=epochs, optimizer=optimizer)


def searched(search: str, dims: str, epochs: int = 3) -> SearchSpec:
    spec = load_spec_text(spec_text(search, dims, epochs))
    assert spec.search is not None
    return spec.search


def run_cli(*args: str, threads: int | None = None, timeout: int = 300) -> Any:
    env = {**os.environ, **({"DNNSPEC_THREADS": str(threads)} if threads else {})}
    return subprocess.run(
        [sys.executable, "-m", "dnnspec", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def tune(tmp: Path, text: str, *args: str, out: str = "search", threads: int | None = None) -> Any:
    """Write the spec to tmp/s.dnn, tune it into tmp/<out> and return the --json summary."""
    spec = tmp / "s.dnn"
    spec.write_text(text)
    done = run_cli("tune", str(spec), "--out", str(tmp / out), "--json", *args, threads=threads)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def test_grid_enumerates_exactly_the_product_in_order() -> None:
    search = searched(
        "grid(objective = max val_accuracy)",
        "  width in choice(4, 8)\n  lr in uniform(0.01, 0.03, 0.01)",
    )
    assert list(grid(search.dims)) == [
        {"width": w, "lr": lr} for w in (4, 8) for lr in (0.01, 0.02, 0.03)
    ]
    assert list(grid(searched("grid", "  width in int_range(2, 8, 3)").dims)) == [
        {"width": 2},
        {"width": 5},
        {"width": 8},
    ]


def test_a_huge_grid_capped_by_trials_starts_at_once_and_fine_ranges_draw_at_once() -> None:
    dims = "\n".join(f"  {p} in int_range(1, 100000)" for p in ("width", "a", "b", "c"))
    dims += "\n  lr in uniform(0.001, 0.1, 1e-12)"
    text = spec_text("grid", dims).replace(
        "param lr", "param a = 1\nparam b = 1\nparam c = 1\nparam lr"
    )
    search = load_spec_text(text).search
    assert search is not None
    start = time.perf_counter()
    strategy = SEARCH_METHODS.get("grid").strategy(search, {}, 3, 3)
    plans = strategy.ask(2) + strategy.ask(5) + strategy.ask(5)
    assert [p.params for p in plans] == [
        {"width": 1, "a": 1, "b": 1, "c": 1, "lr": lr}
        for lr in (0.001, 0.001 + 1e-12, 0.001 + 2e-12)
    ]
    random = list(draws(search.dims, 3, seed=0))
    assert all(1 <= d["a"] <= 100000 and 0.001 <= d["lr"] <= 0.1 for d in random)
    assert time.perf_counter() - start < 1.0


def test_grid_refuses_a_continuous_space_without_a_step() -> None:
    with pytest.raises(DiagnosticError) as exc:
        load_spec_text(spec_text("grid", "  lr in uniform(0.01, 0.03)"))
    assert "continuous space" in exc.value.render()
    with pytest.raises(DiagnosticError) as exc:
        load_spec_text(spec_text("grid", "  width in int_range(2, 8, 0)"))
    assert "step of int_range must be a positive integer" in exc.value.render()


def test_random_draws_are_reproducible_from_the_seed_and_stay_in_their_spaces() -> None:
    search = searched(
        "random(trials = 20)",
        "  width in int_range(2, 9)\n  lr in log_uniform(1e-4, 1e-1)",
    )
    first, again = list(draws(search.dims, 20, seed=7)), list(draws(search.dims, 20, seed=7))
    assert first == again
    assert list(draws(search.dims, 20, seed=8)) != first
    assert all(2 <= d["width"] <= 9 and isinstance(d["width"], int) for d in first)
    assert all(1e-4 <= d["lr"] <= 1e-1 for d in first)
    assert len({d["width"] for d in first}) > 3


def test_halving_promotes_the_best_third_and_trains_fewer_epochs_than_the_full_search() -> None:
    search = searched(
        "halving(trials = 9, min_epochs = 1, eta = 3, objective = max val_accuracy)",
        "  lr in log_uniform(1e-4, 1e-1)",
        epochs=9,
    )
    strategy = HalvingStrategy(search, search.method.args, 9, None)
    quality = {k: float(k * 7 % 9) for k in range(9)}  # trial k's objective, any budget
    rungs: list[list[Plan]] = []
    while plans := strategy.ask(9):
        rungs.append(plans)
        for plan in plans:
            strategy.tell(plan, quality[plan.trial] + (plan.until or 9) / 100)
    assert [[p.until for p in rung][0] for rung in rungs] == [1, 3, None]
    assert [sorted(p.trial for p in rung) for rung in rungs] == [
        list(range(9)),
        sorted(sorted(range(9), key=lambda k: -quality[k])[:3]),
        [max(range(9), key=lambda k: quality[k])],
    ]
    trained = sum(p.until or 9 for rung in rungs for p in rung) - sum(
        p.until or 0 for rung in rungs[1:] for p in rung
    )
    assert trained < 9 * 9


def test_every_search_method_has_a_strategy_case() -> None:
    cases = {"grid", "random", "halving", "tpe"}
    assert set(SEARCH_METHODS) == cases


@pytest.mark.slow
def test_a_tuned_search_writes_trial_runs_a_sorted_table_and_a_best_spec(tmp_path: Path) -> None:
    text = spec_text(
        "grid(objective = max val_accuracy)",
        "  width in choice(2, 16)\n  lr in choice(0.001, 0.05)",
    )
    out = tune(tmp_path, text, "--workers", "2")
    trials = out["trials"]
    assert sorted((t["params"]["width"], t["params"]["lr"]) for t in trials) == [
        (2, 0.001),
        (2, 0.05),
        (16, 0.001),
        (16, 0.05),
    ]
    values = [t["objective"] for t in trials]
    assert values == sorted(values, reverse=True)
    assert out["best"]["objective"] == values[0] and out["best"]["params"] == trials[0]["params"]
    search = tmp_path / "search"
    for trial in trials:
        run = search / "trials" / str(trial["trial"])
        assert (run / "model.onnx").is_file() and (run / "spec.lock.json").is_file()
        assert objective_of(run, "val_accuracy", "max")[0] == trial["objective"]
    rows = (search / "results.csv").read_text().splitlines()
    assert rows[0].startswith("rank,trial,status,objective,width,lr")
    assert len(rows) == 5
    assert len((search / "results.jsonl").read_text().splitlines()) == 4
    best = (search / "best.dnn").read_text()
    assert f"param width = {out['best']['params']['width']}" in best
    assert f"param lr = {out['best']['params']['lr']}" in best
    assert "# Handwritten" not in best and best.count("search grid") == 1


@pytest.mark.slow
def test_best_spec_retrains_to_the_recorded_objective(tmp_path: Path) -> None:
    text = spec_text(
        "random(trials = 2, seed = 3, objective = min val_loss)", "  lr in log_uniform(1e-3, 1e-1)"
    )
    cores = os.cpu_count() or 1
    out = tune(tmp_path, text, "--workers", "1")  # a lone worker gets every core's thread
    again = run_cli("train", out["best"]["spec"], "--out", str(tmp_path / "again"), threads=cores)
    assert again.returncode == 0, again.stderr
    value = objective_of(tmp_path / "again", "val_loss", "min")[0]
    assert value == out["best"]["objective"]


@pytest.mark.slow
def test_a_failing_trial_is_recorded_with_its_reason_and_the_rest_complete(tmp_path: Path) -> None:
    text = """param lr = 0.01
model reg {
  input x: float32[N, 3]
  dense(8) -> relu
  dense(1)
}
train {
  data regression(samples = 200, features = 3, noise = 0.05, validation = 0.25)
  loss mse
  optimizer sgd(lr = lr)
  batch 50
  epochs 3
  metrics mae
  seed 0
}
search grid(objective = min val_loss) {
  lr in choice(0.01, 1e30)
}
"""
    out = tune(tmp_path, text, "--workers", "2")
    by_lr = {t["params"]["lr"]: t for t in out["trials"]}
    assert by_lr[0.01]["status"] == "ok" and by_lr[0.01]["objective"] is not None
    failed = by_lr[1e30]
    assert failed["status"] == "failed" and failed["objective"] is None
    assert failed["reason"].startswith("training diverged")
    assert out["trials"][-1] == failed  # failed trials sort last
    assert out["best"]["params"]["lr"] == 0.01


@pytest.mark.slow
def test_halving_resumes_promoted_trials_from_their_checkpoints(tmp_path: Path) -> None:
    text = spec_text(
        "halving(trials = 4, min_epochs = 1, eta = 2, objective = max val_accuracy)",
        "  lr in log_uniform(1e-3, 1e-1)",
        epochs=4,
    )
    out = tune(tmp_path, text, "--workers", "2")
    lines = [
        json.loads(x) for x in (tmp_path / "search" / "results.jsonl").read_text().splitlines()
    ]
    assert [x["until"] for x in lines] == [1, 1, 1, 1, 2, 2, None]
    winner = out["best"]["trial"]
    log = (tmp_path / "search" / "trials" / str(winner) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in log] == [1, 2, 3, 4]  # continued, not retrained
    assert sum(t["epochs"] for t in out["trials"]) == 1 + 1 + 2 + 4 < 4 * 4
    # the winner trained as one uninterrupted run of the same spec would
    lr = out["best"]["params"]["lr"]
    threads = max(1, (os.cpu_count() or 1) // 2)
    whole = run_cli(
        "train",
        str(tmp_path / "s.dnn"),
        "--set",
        f"lr={lr!r}",
        "--out",
        str(tmp_path / "whole"),
        threads=threads,
    )
    assert whole.returncode == 0, whole.stderr
    assert objective_of(tmp_path / "whole", "val_accuracy", "max")[0] == out["best"]["objective"]


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    text = spec_text(
        "random(trials = 3, seed = 1, objective = min val_loss)",
        "  lr in log_uniform(1e-3, 1e-1)",
        epochs=4,
    )
    spec = tmp_path / "s.dnn"
    spec.write_text(text)
    search = tmp_path / "search"
    cmd = [sys.executable, "-m", "dnnspec", "tune", str(spec), "--out", str(search)]
    cmd += ["--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = search / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.read_text()):
        time.sleep(0.05)
    time.sleep(0.3)  # into the second trial
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    finished = [json.loads(x)["trial"] for x in results.read_text().splitlines()]
    assert 1 <= len(finished) < 3
    resumed = subprocess.run(cmd + ["--resume", "--json"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert sorted(x["trial"] for x in lines) == [0, 1, 2]  # nothing ran twice
    fresh = tune(tmp_path, text, "--workers", "1", out="fresh")
    table = [(t["trial"], t["objective"]) for t in json.loads(resumed.stdout)["trials"]]
    assert table == [(t["trial"], t["objective"]) for t in fresh["trials"]]


@pytest.mark.slow
def test_resume_refuses_a_different_search_and_a_second_search_needs_overwrite(
    tmp_path: Path,
) -> None:
    text = spec_text("grid", "  width in choice(2)")
    tune(tmp_path, text)
    spec, out = str(tmp_path / "s.dnn"), str(tmp_path / "search")
    again = run_cli("tune", spec, "--out", out)
    assert again.returncode == 2 and "already holds a search" in again.stderr
    (tmp_path / "s.dnn").write_text(text.replace("choice(2)", "choice(3)"))
    changed = run_cli("tune", spec, "--out", out, "--resume")
    assert changed.returncode == 2 and "different spec_sha256" in changed.stderr
    assert "Traceback" not in changed.stderr + again.stderr
    replaced = run_cli("tune", spec, "--out", out, "--overwrite", "--json")
    assert replaced.returncode == 0, replaced.stderr
    assert [t["params"] for t in json.loads(replaced.stdout)["trials"]] == [{"width": 3}]


def test_tpe_proposes_the_same_trials_from_the_same_seed_and_results() -> None:
    pytest.importorskip("optuna")
    search = searched(
        "tpe(trials = 12, seed = 5, objective = min val_loss)",
        "  lr in log_uniform(1e-3, 1e-1)\n  width in choice(2, 8)",
    )

    def proposals() -> list[dict[str, Any]]:
        strategy = SEARCH_METHODS.get("tpe").strategy(search, search.method.args, 3, None)
        seen = []
        while plans := strategy.ask(1):
            for plan in plans:
                seen.append(plan.params)
                strategy.tell(plan, abs(plan.params["lr"] - 0.01) + plan.params["width"] / 100)
        return seen

    first = proposals()
    assert first == proposals() and len(first) == 12
    assert all(1e-3 <= p["lr"] <= 1e-1 and p["width"] in (2, 8) for p in first)


def test_tpe_without_optuna_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    search = searched("tpe(trials = 2)", "  lr in log_uniform(1e-3, 1e-1)")
    with pytest.raises(DiagnosticError) as exc:
        SEARCH_METHODS.get("tpe").strategy(search, search.method.args, 3, None)
    assert "pip install 'dnnspec[tune]'" in exc.value.render()


@pytest.mark.slow
def test_ray_backend_runs_trials_as_ray_tasks(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    text = spec_text("grid(objective = max val_accuracy)", "  width in choice(2, 8)")
    out = tune(tmp_path, text, "--workers", "2", "--backend", "ray")
    assert sorted(t["params"]["width"] for t in out["trials"]) == [2, 8]
    for trial in out["trials"]:
        run = tmp_path / "search" / "trials" / str(trial["trial"])
        assert trial["status"] == "ok"
        assert objective_of(run, "val_accuracy", "max")[0] == trial["objective"]


@pytest.mark.slow
def test_digits_mlp_search_finds_a_configuration_at_least_as_good_as_the_default(
    tmp_path: Path,
) -> None:
    spec = str(ROOT / "specs" / "digits_mlp.dnn")
    base = run_cli("train", spec, "--epochs", "4", "--out", str(tmp_path / "default"), threads=1)
    assert base.returncode == 0, base.stderr
    default = objective_of(tmp_path / "default", "val_accuracy", "max")[0]
    done = run_cli(
        "tune",
        spec,
        "--trials",
        "4",
        "--epochs",
        "4",
        "--workers",
        "2",
        "--out",
        str(tmp_path / "search"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout)["best"]
    assert default is not None and best["objective"] >= default


STRUCTURAL = """param act = relu
param opt = adam
param depth = 1
model m {
  input x: float32[N, 4]
  repeat depth { dense(8) -> act }
  dense(2)
}
train {
  data spirals(samples = 100, classes = 2, noise = 0.1, validation = 0.25)
  loss cross_entropy
  optimizer opt(lr = 0.01)
  batch 25
  epochs 1
}
search grid {
  act in choice(relu, tanh)
  opt in choice(adam, sgd)
  depth in int_range(1, 2)
}
"""


def test_a_param_can_name_the_activation_and_the_optimizer_a_search_chooses() -> None:
    spec = load_spec_text(STRUCTURAL.replace("float32[N, 4]", "float32[N, 2]"))
    assert [n.layer for n in spec.model.nodes] == ["dense", "relu", "dense"]
    assert spec.train is not None and spec.train.optimizer.name == "adam"
    other = load_spec_text(
        STRUCTURAL.replace("float32[N, 4]", "float32[N, 2]"),
        overrides={"act": "tanh", "opt": "sgd", "depth": "2"},
    )
    assert [n.layer for n in other.model.nodes] == ["dense", "tanh", "dense", "tanh", "dense"]
    assert other.train is not None and other.train.optimizer.name == "sgd"


def test_a_choice_that_breaks_the_model_is_reported_at_the_search_line() -> None:
    broken = STRUCTURAL.replace("float32[N, 4]", "float32[N, 2]").replace(
        "choice(relu, tanh)", "choice(relu, dense)"
    )
    with pytest.raises(DiagnosticError) as exc:
        load_spec_text(broken, "s.dnn")
    text = exc.value.render()
    assert "dense needs argument 'units'" in text and "act = 'dense' comes from here" in text
