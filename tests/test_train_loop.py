"""The training loop: learns, is deterministic, early-stops, freezes the body, and resumes after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")
import torch

from age2hie_hub.models import ModelConfig, build_model
from age2hie_hub.train.data import ArrayDataset
from age2hie_hub.train.loop import LoopConfig, fit, predict
from age2hie_hub.train.objective import Objective

SHAPE = (12, 12, 12)


def toy_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 = a bright blob in the left half; learnable in a few epochs by a tiny CNN."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0, 0.3, (n, 1, *SHAPE)).astype(np.float32)
    x[y == 1, :, 1:6, 3:9, 3:9] += 1.5
    return x, y.astype(np.float32)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig("resnet3d_10", {"width": 0.125}, "outcome"))


def test_fit_learns_and_is_deterministic(tmp_path):
    x, y = toy_data(24, 0)
    xv, yv = toy_data(12, 1)
    cfg = LoopConfig(epochs=4, batch_size=6, lr=3e-3, progress=False)
    results = []
    for run in range(2):
        model = tiny_model()
        res = fit(model, Objective.for_head("outcome", y), ArrayDataset(list(x), y), ArrayDataset(list(xv), yv),
                  cfg, tmp_path / f"run{run}", seed=7)
        results.append((res, model))
    (r0, m0), (r1, m1) = results
    assert r0.history[-1]["val_accuracy"] >= 0.75
    assert r0.history[-1]["train_loss"] < r0.history[0]["train_loss"]
    for a, b in zip(r0.history, r1.history, strict=True):
        assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
    for (k, a), b in zip(m0.state_dict().items(), m1.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert (tmp_path / "run0" / "last.pt").is_file() and (tmp_path / "run0" / "best.pt").is_file()
    # checkpoints hold plain tensors/containers only: loadable with weights_only=True
    state = torch.load(tmp_path / "run0" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 4


def test_early_stopping_and_restore_best(tmp_path):
    x, y = toy_data(12, 0)
    # validation labels are flipped: val loss rises as the model learns -> stops after `patience` epochs
    xv, yv = toy_data(8, 1)
    model = tiny_model()
    res = fit(model, Objective.for_head("outcome", y), ArrayDataset(list(x), y), ArrayDataset(list(xv), 1 - yv),
              LoopConfig(epochs=20, batch_size=4, lr=1e-2, patience=2, progress=False), seed=0)
    assert res.stopped_early and len(res.history) == res.best_epoch + 3
    loss, _ = predict(model, Objective.for_head("outcome", y), ArrayDataset(list(xv), 1 - yv))
    assert loss == pytest.approx(res.best_val_loss, rel=1e-5)


def test_train_only_head_keeps_body_and_bn_stats(tmp_path):
    x, y = toy_data(8, 0)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.fc.weight.clone()
    fit(model, Objective.for_head("outcome", y), ArrayDataset(list(x), y), None,
        LoopConfig(epochs=1, batch_size=4, train_only="head", progress=False), seed=0)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.head.fc.weight, head_before)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again for the next stage


def test_resume_refuses_other_settings(tmp_path):
    x, y = toy_data(8, 0)
    obj = Objective.for_head("outcome", y)
    fit(tiny_model(), obj, ArrayDataset(list(x), y), None, LoopConfig(epochs=1, progress=False), tmp_path, seed=0)
    with pytest.raises(ValueError, match="cannot resume"):
        fit(tiny_model(), obj, ArrayDataset(list(x), y), None, LoopConfig(epochs=1, lr=0.1, progress=False),
            tmp_path, seed=0, resume=True)


def resumable_run(run_dir, kill_at: int = -1, resume: bool = False) -> list[dict]:
    """3 epochs of 12 augmented cases; the ``kill_at``-th case read SIGKILLs the process (no clean-up)."""
    from age2hie_hub.train.augment import AugmentConfig

    class Killable(ArrayDataset):
        calls = 0

        def __getitem__(self, i):
            Killable.calls += 1
            if Killable.calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__getitem__(i)

    x, y = toy_data(12, 0)
    xv, yv = toy_data(6, 1)
    train = Killable(list(x), y, AugmentConfig(), seed=3)
    cfg = LoopConfig(epochs=3, batch_size=4, lr=3e-3, progress=False)
    res = fit(tiny_model(), Objective.for_head("outcome", y), train, ArrayDataset(list(xv), yv), cfg, run_dir,
              seed=3, resume=resume)
    keep = ("epoch", "train_loss", "val_loss", "val_auc", "lr")
    return [{k: r[k] for k in keep} for r in res.history]


SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_train_loop import resumable_run

    torch.set_num_threads(1)
    print(json.dumps(resumable_run(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1")))
''')


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(folder, kill_at, resume):
        return subprocess.run([sys.executable, str(script), str(tmp_path / folder), str(kill_at), str(int(resume))],
                              capture_output=True, text=True, env=env, timeout=300)

    full = resumable_run(tmp_path / "full")  # the uninterrupted reference, in this process (also 1 thread)
    # 12 cases per epoch: item 18 is in the middle of the second epoch
    killed = run("crashed", 18, False)
    assert killed.returncode == -signal.SIGKILL
    state = torch.load(tmp_path / "crashed" / "last.pt", weights_only=True)
    assert state["epoch"] == 0  # only the first epoch was completed and saved
    resumed = run("crashed", -1, True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == json.loads(json.dumps(full))
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "crashed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
def test_amp_on_cuda(tmp_path):
    x, y = toy_data(8, 0)
    model = tiny_model()
    res = fit(model, Objective.for_head("outcome", y), ArrayDataset(list(x), y), ArrayDataset(list(x), y),
              LoopConfig(epochs=1, batch_size=4, amp=True, device="cuda", progress=False), tmp_path, seed=0)
    assert np.isfinite(res.history[0]["train_loss"]) and np.isfinite(res.history[0]["val_loss"])
    assert next(model.parameters()).is_cuda
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 0
