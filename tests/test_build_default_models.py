"""export/build_default_models.py step 4 (the released AGE2HIE model) on a tiny cohort: the parent is resolved once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TRANSFER_YAML = """\
run_dir: runs/age2hie-cv
protocols: [multi_site]
k: 2
seeds: [0]
transfer:
  data: {format: bonbid, path: data/hie, target: outcome}
  head: outcome
  preprocess: {spacing: [4.0, 4.0, 4.0], shape: [12, 12, 12], intensity: zscore, crop: center}
  refine: {epochs: 1, batch_size: 6, train_only: head, progress: false}
  finetune: {epochs: 1, batch_size: 6, patience: 0, progress: false}
  scratch: {epochs: 1, batch_size: 6, patience: 0, progress: false}
  test_fraction: 0.0
  preprocess_workers: 0
  cache_dir: cache
  synthetic: true
  seed: 0
methods:
  - {name: transfer, init: checkpoint, weights: runs/brain-age/checkpoint, stages: [refine, finetune]}
"""


def _tiny_work(work: Path) -> Path:
    """A 12-case BONBID-HIE-layout ADC cohort in work/data/hie and an untrained brain-age parent checkpoint."""
    from age2hie_hub.hub import CheckpointConfig, save_pretrained
    from age2hie_hub.io import Volume
    from age2hie_hub.io.writer import write_volume
    from age2hie_hub.models import ModelConfig, build_model
    from age2hie_hub.preprocess.config import PreprocessConfig

    rng = np.random.default_rng(0)
    hie = work / "data" / "hie"
    (hie / "1ADC_ss").mkdir(parents=True)
    lines = ["subject_id,site,outcome"]
    for i in range(12):
        site = "BCH" if i % 2 else "MGH"
        sid = f"{site}_{i:03d}"
        data = (rng.random((20, 20, 14)) * 0.4e-3 + 1.0e-3).astype(np.float32)
        write_volume(Volume(data, np.diag([2.0, 2.0, 3.0, 1.0])), hie / "1ADC_ss" / f"{sid}-ADC_ss.mha")
        lines.append(f"{sid},{site},{i % 3 == 0:d}")
    (hie / "outcomes.csv").write_text("\n".join(lines) + "\n")
    parent = work / "runs" / "brain-age" / "checkpoint"
    mc = ModelConfig(arch="resnet3d_10", arch_args={"width": 0.125}, head="age_regression",
                     head_args={"offset": 50.0, "scale": 15.0})
    save_pretrained(build_model(mc), parent, CheckpointConfig(mc, PreprocessConfig(shape=(12, 12, 12), spacing=(4.0,) * 3),
                                                              task="brain_age", labels=(), input_modalities=("T1w",)))
    (work / "age2hie.yaml").write_text(TRANSFER_YAML)
    return parent


@pytest.mark.slow
def test_released_age2hie_step_resolves_its_parent_once(tmp_path, monkeypatch):
    import export.build_default_models as B
    from age2hie_hub.hub.checkpoint import file_sha256
    from age2hie_hub.train import parent as P
    from age2hie_hub.train import stages

    parent = _tiny_work(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(B, "AGE2HIE_CONFIG", tmp_path / "age2hie.yaml")
    calls = []

    def counted(weights):
        calls.append(weights)
        return P.resolve_parent(weights)

    monkeypatch.setattr(stages, "resolve_parent", counted)
    sha = file_sha256(parent / "model.safetensors")
    rel = Path("runs/brain-age/checkpoint")
    with pytest.raises(B.BuildError, match="not the brain-age checkpoint this build trained"):
        B.train_age2hie(rel, "0" * 64, {})
    calls.clear()
    run_dir = B.train_age2hie(rel, sha, {})
    assert calls == ["runs/brain-age/checkpoint"]  # one resolution serves the preprocessing and the weights
    config = json.loads((tmp_path / run_dir / "checkpoint" / "config.json").read_text())
    assert config["provenance"]["parent_weights_sha256"] == sha
    assert config["preprocess"]["intensity"] == "zscore" and config["preprocess"]["shape"] == [12, 12, 12]


def test_a_step_saved_before_a_field_rename_is_reused(tmp_path):
    """build_inputs.json written with TransferConfig's former 'val_fraction' describes the same inputs as today's
    'test_fraction': the step is reused, not redone; a different value, or no config type to read it with, is not."""
    from age2hie_hub.train.config import TransferConfig, to_dict
    from export.build_default_models import INPUTS, _done

    cfg = TransferConfig(test_fraction=0.0)
    inputs = {"config": to_dict(cfg), "data_manifest_sha256": "a" * 64}
    old = json.loads(json.dumps(inputs))
    old["config"]["val_fraction"] = old["config"].pop("test_fraction")
    (tmp_path / INPUTS).write_text(json.dumps(old))
    (tmp_path / "metrics.json").write_text("{}")
    assert _done(tmp_path, inputs, ("metrics.json",), TransferConfig)
    assert not _done(tmp_path, inputs, ("metrics.json",))  # compared as text, the old name differs
    changed = {**inputs, "config": to_dict(TransferConfig(test_fraction=0.2))}
    assert not _done(tmp_path, changed, ("metrics.json",), TransferConfig)
    old["config"]["no_such_field"] = 1
    (tmp_path / INPUTS).write_text(json.dumps(old))
    assert not _done(tmp_path, inputs, ("metrics.json",), TransferConfig)
