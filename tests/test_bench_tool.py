"""tools/bench.py's end-to-end suite runs `dnnspec train` against a PyTorch script on the
same samples; here one tiny case end to end on the dnnspec side (PyTorch is not a test
dependency), so a change to the data or the train command cannot break the benchmark
unnoticed."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import bench  # noqa: E402


def test_e2e_case_gives_pytorch_the_split_dnnspec_trains_on(tmp_path: Path) -> None:
    case = replace(bench.E2E[3], widths=(12, 16, 4), samples=200, epochs=2)
    ours, theirs = bench._prepare_e2e(case, tmp_path, threads=None)
    prep = bench.prepare(bench.load_spec(tmp_path / "bench.dnn"))
    data = np.load(tmp_path / "torch_data.npz")
    assert np.array_equal(data["x"], prep.train_data.x)
    assert np.array_equal(data["val_y"], prep.val_data.y)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    measured = bench._run_process(ours, env, timeout=120)
    assert measured["loop"] > 0 and measured["rss_mb"] > 0
    assert theirs[1].endswith("bench_torch.py")
