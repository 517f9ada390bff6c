"""tools/bench.py's end-to-end suite runs `dnnspec train` against a PyTorch script on the
same samples; here every case's inputs are built and one tiny case runs end to end on
the dnnspec side (PyTorch is not a test dependency), so a change to the data or the train
command cannot break the benchmark unnoticed. Where torch is installed, both sides are
checked to build the same network and the PyTorch script's loops run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import bench  # noqa: E402
from bench_models import CharTransformer, Mlp, net_from_config  # noqa: E402

from dnnspec.check.shapes import check_spec  # noqa: E402
from dnnspec.frontend import load_spec_text  # noqa: E402
from dnnspec.runtime.backend import BACKENDS  # noqa: E402

CASES = {case.name: case for case in bench.E2E}


@pytest.mark.parametrize("name", CASES)
def test_every_e2e_case_writes_one_data_file_both_programs_read(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    bench._prepare_e2e(case, tmp_path, threads=None)
    prep = bench.prepare(bench.load_spec(tmp_path / "bench.dnn"))
    data, split = np.load(tmp_path / "data.npz"), np.load(tmp_path / "split.npz")
    assert data["x"].shape[1:] == case.net.sample[1]
    assert np.array_equal(data["x"][split["train"]], prep.train_data.x)
    assert np.array_equal(data["y"][split["validation"]], prep.val_data.y)
    config = json.loads((tmp_path / "torch.json").read_text())
    assert net_from_config(config["net"]) == case.net
    assert (config["data"], config["loop"]) == (str(tmp_path / "data.npz"), case.loop)


def test_the_char_transformer_case_is_the_example_specs_network() -> None:
    ours = bench.load_spec(ROOT / "specs" / "char_transformer.dnn")
    net = CASES["char transformer d64 x2, T = 64, batch 32, adam"].net
    text = bench.spec_text(net, "text(context = 64)", "adam", 32)
    assert check_spec(load_spec_text(text, "<bench>")).param_count() == (
        check_spec(ours).param_count()
    )


def test_e2e_case_trains_under_the_runtime_auto_chose(tmp_path: Path) -> None:
    case = replace(CASES["MLP 784-1024-1024-10, sgd, batch 256"], net=Mlp((12, 16, 4)))
    case = replace(case, samples=200, epochs=2)
    ours, theirs = bench._prepare_e2e(case, tmp_path, threads=None)
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"))
    note = bench._choose_runtime(ours, env, timeout=120)
    assert note.removeprefix("runtime auto: ").split()[0] in BACKENDS
    measured = bench._run_process(ours, env, timeout=120)
    assert measured["loop"] > 0 and measured["rss_mb"] > 0
    assert theirs[1].endswith("bench_torch.py")


@pytest.mark.parametrize("name", CASES)
def test_both_programs_build_the_same_network(name: str) -> None:
    pytest.importorskip("torch")
    net = CASES[name].net
    typed = check_spec(load_spec_text(bench.spec_text(net, "digits", "sgd", 8), "<b>"))
    assert sum(p.numel() for p in net.module().parameters()) == typed.param_count()


@pytest.mark.parametrize("loop", ["same", "minimal"])
def test_the_pytorch_loops_train_on_the_written_data(tmp_path: Path, loop: str) -> None:
    pytest.importorskip("torch")
    net = CharTransformer(d=8, heads=2, layers=1, context=8)
    case = bench.E2ECase("tiny", net, 64, "adam", 1, "text", (("context", 8),), loop=loop)
    _, theirs = bench._prepare_e2e(case, tmp_path, threads=1)
    done = subprocess.run(theirs, capture_output=True, text=True, check=True)
    last = json.loads(done.stdout)["last"]
    assert 0 <= last["val_accuracy"] <= 1
