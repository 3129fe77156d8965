"""The same age2hie-train entry point under torchrun: 2 CPU processes, gloo, DistributedSampler, rank 0 writes."""
from __future__ import annotations

import json
import os
import shutil
import math
import subprocess

import pytest

from test_train_stages import PREP, TINY, make_t1_bids


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    data = make_t1_bids(tmp_path / "t1", 24)
    cfg = {
        "data": {"format": "bids", "path": str(data), "target": "age"},
        "model": {**TINY, "head": "age_regression"}, "preprocess": PREP,
        "loop": {"epochs": 2, "batch_size": 4, "progress": False, "threads": 1},
        "augment": {"enabled": False}, "run_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"),
        "preprocess_workers": 0, "synthetic": True,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "age2hie_hub.train.cli", "pretrain",
         str(tmp_path / "cfg.json"), "-v", "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0/2, backend gloo" in proc.stderr and "rank 1/2, backend gloo" in proc.stderr
    run = tmp_path / "run"
    assert (run / "checkpoint" / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert not list(run.rglob("*.tmp"))  # rank 1 wrote nothing half-way, nothing left behind
    metrics = json.loads(proc.stdout)  # printed once, by rank 0
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 24
    # each rank saw half of every epoch: steps per epoch = ceil(ceil(n_train / 2) / batch_size)
    state = json.loads((run / "metrics.json").read_text())
    assert len(state["history"]) == 2
    assert state["history"][0]["steps"] == math.ceil(math.ceil(metrics["n_train"] / 2) / 4)
    log = (run / "pretrain.log").read_text()
    assert "pretrain epoch 2/2" in log
