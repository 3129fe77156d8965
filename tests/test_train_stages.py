"""Stages on tiny handmade cohorts: manifests, cache, pretrain -> hub checkpoint, transfer, experiment grid."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from age2hie_hub.io import Volume
from age2hie_hub.io.writer import write_volume
from age2hie_hub.train.augment import AugmentConfig
from age2hie_hub.train.config import (
    ExperimentConfig,
    LearningCurveConfig,
    MethodConfig,
    PretrainConfig,
    TransferConfig,
)
from age2hie_hub.train.loop import LoopConfig
from age2hie_hub.train.manifest import (
    ManifestError,
    read_bids,
    read_bonbid,
    read_csv_manifest,
)

PREP = {"shape": [16, 16, 16], "spacing": [4.0, 4.0, 4.0]}
TINY = {"arch": "resnet3d_10", "arch_args": {"width": 0.125}}


def _ball_volume(rng, radius_inner: float, scale: float = 1.0, lesion: bool = False, shape=(20, 20, 18)) -> np.ndarray:
    """A bright 'brain' ellipsoid with a dark central 'ventricle' of a given radius (voxels)."""
    g = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"))
    r = np.sqrt(((g / np.array([8, 8, 7])[:, None, None, None]) ** 2).sum(0))
    v = np.where(r < 1, 1.0, 0.0) * scale
    v[np.sqrt((g ** 2).sum(0)) < radius_inner] *= 0.3
    if lesion:
        v[(np.abs(g[0] - 3) < 2.5) & (np.abs(g[1]) < 3) & (np.abs(g[2]) < 3)] *= 0.4
    return (v + rng.normal(0, 0.03, shape) * (v > 0)).astype(np.float32)


def make_t1_bids(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    aff = np.diag([3.0, 3.0, 3.5, 1.0])
    rows = []
    for i in range(n):
        age = float(rng.uniform(20, 80))
        pid = f"sub-{i:03d}"
        (root / pid / "anat").mkdir(parents=True)
        data = _ball_volume(rng, 1.0 + age / 14.0)
        write_volume(Volume(data, aff), root / pid / "anat" / f"{pid}_T1w.nii.gz")
        rows.append(f"{pid}\t{age:.2f}\t{'A' if i % 2 else 'B'}")
    (root / "participants.tsv").write_text("participant_id\tage\tsite\n" + "\n".join(rows) + "\n")
    return root


def make_bonbid(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "1ADC_ss").mkdir(parents=True)
    (root / "2Z_ADC").mkdir()
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    lines = ["subject_id,site,outcome"]
    for i in range(n):
        site = "BCH" if i % 2 else "MGH"
        sid = f"{site}_{i:03d}"
        y = int(rng.uniform() < 0.45)
        data = _ball_volume(rng, 2.0, scale=1.3 if site == "BCH" else 1.0, lesion=bool(y)) * 1.2e-3  # ADC mm^2/s
        write_volume(Volume(data, aff), root / "1ADC_ss" / f"{sid}-ADC_ss.mha")
        write_volume(Volume(data * 10, aff), root / "2Z_ADC" / f"Zmap_{sid}-ADC_smooth2mm_clipped10.mha")
        lines.append(f"{sid},{site},{y}")
    (root / "outcomes.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    base = tmp_path_factory.mktemp("cohorts")
    return make_t1_bids(base / "t1", 40), make_bonbid(base / "hie", 28)


def test_readers(cohorts, tmp_path):
    t1, hie = cohorts
    c = read_bids(t1)
    assert c.task == "regression" and len(c) == 40 and set(c.sites) == {"A", "B"} and c.sha256
    # The hash names the data, not its location: a moved copy hashes the same.
    moved = tmp_path / "elsewhere" / "t1"
    shutil.copytree(t1, moved)
    assert read_bids(moved).sha256 == c.sha256
    h = read_bonbid(hie, channels=("ADC", "Z-ADC"))
    assert h.task == "classification" and h.classes == ("0", "1") and h.n_channels == 2
    assert set(h.sites) == {"BCH", "MGH"} and h.cases[0].paths[1].endswith(".mha")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,sex,site,subject_id\n" + "\n".join(
        f"{p},{'F' if i % 2 else 'M'},s{i % 3},x{i}" for i, p in enumerate(c.cases[j].paths[0] for j in range(10))))
    m = read_csv_manifest(manifest, target="sex")
    assert m.classes == ("F", "M") and m.labels.tolist() == [1, 0] * 5 and m.subjects[0] == "x0"
    bad = tmp_path / "bad.csv"
    bad.write_text("path,age\nmissing.nii.gz,3\n")
    with pytest.raises(ManifestError, match=r"bad.csv line 2: path file .*missing.nii.gz does not exist"):
        read_csv_manifest(bad, target="age")
    with pytest.raises(ManifestError, match="no target column 'grade'"):
        read_csv_manifest(manifest, target="grade")


def test_manifest_volume_with_zero_voxel_size_is_named(tmp_path):
    import gzip
    import struct

    from age2hie_hub.errors import VolumeReadError
    from age2hie_hub.preprocess.config import PreprocessConfig
    from age2hie_hub.train.stages import cached_arrays

    data = _ball_volume(np.random.default_rng(0), 2.0)
    for name in ("good", "bad"):
        write_volume(Volume(data, np.diag([3.0, 3.0, 3.5, 1.0])), tmp_path / f"{name}.nii.gz")
    raw = bytearray(gzip.decompress((tmp_path / "bad.nii.gz").read_bytes()))
    raw[84:88] = struct.pack("<f", 0.0)  # pixdim[2] = 0 behind a valid sform
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    (tmp_path / "m.csv").write_text(f"path,age\n{tmp_path / 'good.nii.gz'},30\n{tmp_path / 'bad.nii.gz'},40\n")
    cohort = read_csv_manifest(tmp_path / "m.csv", target="age")
    with pytest.raises(VolumeReadError, match=r"bad\.nii\.gz: header voxel size .*zero or negative"):
        cached_arrays(cohort, PreprocessConfig(**PREP), tmp_path / "cache", progress=False)
    good_only = cohort.subset([0])  # negative control: the same manifest without the bad file preprocesses
    assert len(cached_arrays(good_only, PreprocessConfig(**PREP), tmp_path / "cache", progress=False)) == 1


def test_cache_is_keyed_by_content_and_config(cohorts, tmp_path):
    from age2hie_hub.preprocess.config import PreprocessConfig
    from age2hie_hub.train.cache import PreprocessCache

    t1, _ = cohorts
    case = read_bids(t1).cases[0].paths
    cache = PreprocessCache(tmp_path / "c", PreprocessConfig(**PREP))
    first = cache.ensure(case)
    arr = cache.get(case)
    assert arr.shape == (1, 16, 16, 16) and arr.dtype == np.float32
    assert cache.ensure(case) == first  # a hit, not recomputed
    other = PreprocessCache(tmp_path / "c", PreprocessConfig(**{**PREP, "intensity": "mean"}))
    assert other.path_for(case) != first
    assert not list((tmp_path / "c").rglob("*.tmp*"))


@pytest.mark.slow
def test_pretrain_beats_mean_and_writes_hub_checkpoint(cohorts, tmp_path):
    from age2hie_hub.hub import load_checkpoint
    from age2hie_hub.train.stages import pretrain

    t1, _ = cohorts
    cfg = PretrainConfig(data={"format": "bids", "path": str(t1), "target": "age"},
                         model={**TINY, "head": "age_regression"}, preprocess=PREP,
                         loop=LoopConfig(epochs=12, batch_size=8, lr=3e-3, progress=False),
                         augment=AugmentConfig(enabled=False), run_dir=str(tmp_path / "pre"),
                         cache_dir=str(tmp_path / "cache"), preprocess_workers=0, synthetic=True)
    out = pretrain(cfg)
    m = out["metrics"]
    assert m["test_mae"] < 0.8 * m["baseline_predict_mean_mae"], m
    model = load_checkpoint(tmp_path / "pre" / "checkpoint")
    prov = model.checkpoint_config.provenance
    assert model.checkpoint_config.task == "brain_age" and prov["synthetic"] is True and prov["seed"] == 0
    assert len(prov["data_manifest_sha256"]) == 64 and prov["parent"] is None
    assert model.checkpoint_config.metrics["test_mae"] == pytest.approx(m["test_mae"])
    saved = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert saved["metrics"]["n_test"] == 10  # 2 of each of the 5 age strata


def _transfer_cfg(hie: Path, tmp_path: Path, parent: str) -> TransferConfig:
    fast = LoopConfig(epochs=2, batch_size=6, lr=3e-3, progress=False)
    return TransferConfig(data={"format": "bonbid", "path": str(hie), "target": "outcome"},
                          method=MethodConfig("transfer", "checkpoint", parent), refine=fast, finetune=fast,
                          scratch=fast, augment=AugmentConfig(), run_dir=str(tmp_path / "tr"),
                          cache_dir=str(tmp_path / "cache"), preprocess_workers=0, synthetic=True)


@pytest.fixture(scope="module")
def parent(cohorts, tmp_path_factory):
    """A brain-age checkpoint (untrained is enough to test plumbing)."""
    from age2hie_hub.hub import CheckpointConfig, save_pretrained
    from age2hie_hub.models import ModelConfig, build_model
    from age2hie_hub.preprocess.config import PreprocessConfig

    folder = tmp_path_factory.mktemp("parent") / "ck"
    mc = ModelConfig(**TINY, head="age_regression", head_args={"offset": 50.0, "scale": 15.0})
    save_pretrained(build_model(mc), folder, CheckpointConfig(mc, PreprocessConfig(**PREP, intensity="mean"),
                                                              task="brain_age", labels=(), input_modalities=("T1w",)))
    return folder


def test_transfer_refine_finetune_records_parent(cohorts, parent, tmp_path):
    from age2hie_hub.hub import load_checkpoint
    from age2hie_hub.train.stages import transfer

    _, hie = cohorts
    cfg = _transfer_cfg(hie, tmp_path, str(parent))
    out = transfer(cfg)
    assert set(out["history"]) == {"refine", "finetune"}
    m = out["metrics"]
    assert 0 <= m["accuracy"] <= 1 and m["split"] == "held_out"
    # test_fraction > 0: the stratified hold-out is the test split, and fit_split carves the same fraction of
    # the rest as validation cases (watched by early stopping), so fewer cases train than the cohort holds.
    from age2hie_hub.train.splits import stratified_holdout

    strata = read_bonbid(hie).strata
    keep, held = stratified_holdout(strata, cfg.test_fraction, cfg.seed)
    assert (m["n_train"], m["n_test"]) == (keep.size, held.size) and held.size > 0
    fit_part, val_part = stratified_holdout(strata[keep], cfg.test_fraction, cfg.seed)
    first = out["history"]["finetune"][0]
    assert "val_loss" in first and val_part.size > 0 and first["steps"] == -(-fit_part.size // 6)
    model = load_checkpoint(tmp_path / "tr" / "checkpoint")
    ck = model.checkpoint_config
    assert ck.task == "hie_outcome" and ck.labels == ("favourable", "adverse") and ck.model.head == "outcome"
    assert ck.provenance["parent"] == str(parent.resolve())
    assert ck.preprocess.intensity == "mean"  # inherited from the parent checkpoint
    assert (tmp_path / "tr" / "state" / "finetune" / "last.pt").is_file()


METRIC_KEYS = {"accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "brier", "ece"}


def test_transfer_test_fraction_zero_trains_on_every_case(cohorts, parent, tmp_path, caplog):
    """test_fraction 0: the final model after a cross-validation. Every case trains, no validation part, no
    score is recorded or invented, the checkpoint loads and its card says there is no evaluation."""
    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.hub.card import render_model_card
    from age2hie_hub.hub.evaluation import read_evaluation
    from age2hie_hub.train.stages import cached_arrays, fit_split, transfer

    _, hie = cohorts
    cohort = read_bonbid(hie)
    cfg = dataclasses.replace(_transfer_cfg(hie, tmp_path, str(parent)), test_fraction=0.0)
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, patience=3))
    with caplog.at_level("WARNING", logger="age2hie_hub.train.stages"):
        out = transfer(cfg)
    assert "stage 'finetune' has no validation cases; its patience 3 is ignored" in caplog.text
    m = out["metrics"]
    assert (m["split"], m["n_train"], m["n_val"], m["n_test"]) == ("none", len(cohort), 0, 0)
    assert not METRIC_KEYS & {k.removeprefix("test_") for k in m}, m
    for stage in ("refine", "finetune"):  # every case in every epoch (batch 6), all epochs, no validation
        rows = out["history"][stage]
        assert [r["steps"] for r in rows] == [-(-len(cohort) // 6)] * 2
        assert not any("val_loss" in r for r in rows)
    saved = json.loads((tmp_path / "tr" / "metrics.json").read_text())
    assert saved["metrics"] == m

    model = from_pretrained(str(tmp_path / "tr" / "checkpoint"))
    ck = model.checkpoint_config
    assert ck.metrics == m and ck.provenance["n_training_cases"] == len(cohort)
    assert read_evaluation(ck.metrics).rows == ()
    for card in (str(render_model_card(ck, metrics=ck.metrics)), (tmp_path / "tr" / "checkpoint" / "README.md").read_text()):
        body = card.split("## Evaluation", 1)[1]
        assert "No evaluation was recorded for this checkpoint" in body and "held-out" not in body
        assert "model-index" not in card.split("---", 2)[1]  # no eval results in the YAML header either

    # The same training as the bundled-model recipe (fit_split on every case): weights bit-identical, so
    # test_fraction 0 is "every case trains", not "a split happened to be empty".
    files = cached_arrays(cohort, ck.preprocess, cfg.cache_dir, progress=False)
    every = np.arange(len(cohort))
    ref = fit_split(cfg.method, cohort, files, every, every, cfg, seed=cfg.seed, run_dir=tmp_path / "ref")
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.model.state_dict().items())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_test_fraction_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
        TransferConfig(test_fraction=bad)


@pytest.mark.slow
def test_imported_weights_baseline(cohorts, tmp_path):
    """A Kinetics-style r3d_18 state dict file (fake weights) as the starting point."""
    import torch

    from age2hie_hub.models import ModelConfig, build_model
    from age2hie_hub.train.stages import init_model

    src = build_model(ModelConfig("resnet3d_18", {"in_channels": 3}, "outcome"))
    state = {k: v.clone() for k, v in src.backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(400, 512), torch.zeros(400)
    torch.save(state, tmp_path / "r3d18.pt")
    method = MethodConfig("kinetics", "kinetics", str(tmp_path / "r3d18.pt"), model={"arch": "resnet3d_18"})
    model, prov = init_model(method, "outcome", {}, in_channels=1, seed=0)
    assert torch.allclose(model.backbone.layer1[0].conv1[0].weight, src.backbone.layer1[0].conv1[0].weight)
    assert prov["parent"] == "kinetics:r3d18.pt"
    with pytest.raises(ValueError, match="needs weights"):
        init_model(dataclasses.replace(method, weights=""), "outcome", {}, 1, 0)


@pytest.mark.slow
def test_experiment_grid_tables_and_plots(cohorts, parent, tmp_path):
    from age2hie_hub.train.experiment import run_experiment

    _, hie = cohorts
    tcfg = _transfer_cfg(hie, tmp_path, str(parent))
    one = LoopConfig(epochs=1, batch_size=8, lr=3e-3, progress=False)
    tcfg = dataclasses.replace(tcfg, refine=one, finetune=one, scratch=one, augment=AugmentConfig(enabled=False))
    cfg = ExperimentConfig(
        transfer=tcfg, k=2, seeds=(0,), n_boot=200, run_dir=str(tmp_path / "exp"), save_checkpoints=True,
        methods=(MethodConfig("transfer", "checkpoint", str(parent)),
                 MethodConfig("scratch", "scratch", model=TINY, stages=("scratch",))),
        learning_curve=LearningCurveConfig(sizes=(8, "all"), protocol="multi_site", max_splits=1))
    out = run_experiment(cfg)
    exp = tmp_path / "exp"
    for name in ("table.csv", "table.md", "comparisons.csv", "metrics.json", "learning_curve.csv",
                 "protocols_accuracy.png", "learning_curve.png", "results.jsonl"):
        assert (exp / name).is_file(), name
    # 2 methods x (same-site 2 sites x 2 folds + multi-site 2 folds + cross-site 2) + 2 learning-curve rows
    rows = [json.loads(x) for x in (exp / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (4 + 2 + 2) + 2
    with open(exp / "table.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {(r["method"], r["protocol"]) for r in table} == {
        (m, p) for m in ("transfer", "scratch") for p in ("same_site", "multi_site", "cross_site")}
    folds = sorted((exp / "checkpoints").iterdir())
    assert len(folds) == len(rows)
    from age2hie_hub.hub import load_checkpoint

    ck = load_checkpoint(folds[0]).checkpoint_config
    assert ck.provenance["split"] and ck.metrics["n_test"] > 0 and "y_pred" not in ck.metrics
    md = (exp / "table.md").read_text()
    assert "transfer - scratch" in md and "Learning curve" in md and "SYNTHETIC" in md
    assert {c["protocol"] for c in out["comparisons"]} == {"same_site", "multi_site", "cross_site"}
    # a second call resumes: every row is already done, nothing is retrained
    again = run_experiment(dataclasses.replace(cfg, learning_curve=cfg.learning_curve))
    assert again["summary"] == out["summary"]
    assert len((exp / "results.jsonl").read_text().splitlines()) == len(rows)
    # `evaluate` = the protocol grid only (no learning curves), here also served from results.jsonl
    ev = run_experiment(cfg, evaluate_only=True)
    assert ev["summary"] == out["summary"] and ev["learning_curve"] == []


def test_finetune_on_a_csv_manifest(cohorts, parent, tmp_path):
    """The notebook entry point: a checkpoint + a CSV manifest (ADC path, outcome, site) -> checkpoint."""
    from age2hie_hub.hub import load_checkpoint
    from age2hie_hub.train.stages import finetune

    _, hie = cohorts
    h = read_bonbid(hie)
    manifest = tmp_path / "hie.csv"
    manifest.write_text("path,outcome,site,subject_id\n" + "\n".join(
        f"{c.paths[0]},{c.target},{c.site},{c.subject}" for c in h.cases) + "\n")
    one = LoopConfig(epochs=1, batch_size=8, progress=False)
    out = finetune(parent, manifest, target="outcome", run_dir=tmp_path / "ft", refine=one, finetune=one,
                   cache_dir=str(tmp_path / "cache"), preprocess_workers=0)
    model = load_checkpoint(out["checkpoint"])
    assert model.checkpoint_config.provenance["training_data"] == str(manifest)
    assert model.checkpoint_config.provenance["data_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert (tmp_path / "ft" / "metrics.json").is_file()
