"""The committed real-data configs (configs/real_bonbid_*.yaml) agree with each other and with the bundled parent:
the scratch baseline is the parent's architecture, the released recipe is the cross-validated one, and the target
preprocessing is fully written (it cannot drift with the parent). No data is read."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from age2hie_hub.hub import read_config
from age2hie_hub.hub.resolve import BUNDLED_DIR
from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.train.config import ExperimentConfig, TransferConfig, load_config
from age2hie_hub.train.score import ScoreConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def experiment() -> ExperimentConfig:
    return load_config(CONFIGS / "real_bonbid_lesion_burden.yaml", ExperimentConfig)


def test_scratch_is_the_parents_architecture(experiment):
    (transfer,) = [m for m in experiment.methods if m.init == "checkpoint"]
    (scratch,) = [m for m in experiment.methods if m.init == "scratch"]
    assert transfer.weights == "brain-age" and experiment.reference_method == scratch.name
    if not (BUNDLED_DIR / "brain-age" / "config.json").is_file():
        pytest.skip("no bundled brain-age model in this checkout")
    parent = read_config(BUNDLED_DIR / "brain-age").model
    args = {k: v for k, v in parent.arch_args.items() if k != "in_channels"}
    assert (scratch.model["arch"], scratch.model.get("arch_args", {})) == (parent.arch, args)


def test_target_preprocessing_is_fully_written(experiment):
    written = set(experiment.transfer.preprocess)
    every = {f.name for f in dataclasses.fields(PreprocessConfig)} - {"channels"}
    assert written == every, f"not written (would follow the parent): {sorted(every - written)}"


def test_released_recipe_is_the_cross_validated_one(experiment):
    final = load_config(CONFIGS / "real_bonbid_lesion_burden_final.yaml", TransferConfig)
    cv = experiment.transfer
    (method,) = [m for m in experiment.methods if m.init == "checkpoint"]
    assert final.method == method and final.test_fraction == 0 == cv.test_fraction
    for key in ("data", "preprocess", "head", "labels", "refine", "finetune", "augment", "class_weighted", "seed"):
        assert getattr(final, key) == getattr(cv, key), key
    assert final.head == "classification" and not any("outcome" in label for label in final.labels)
    assert final.synthetic is False and cv.synthetic is False


def test_score_config_uses_the_same_cases_and_target(experiment):
    score = load_config(CONFIGS / "real_bonbid_score_age2hie.yaml", ScoreConfig)
    assert score.model == "age2hie"
    assert {k: score.data[k] for k in ("format", "path", "table", "target")} == {
        k: experiment.transfer.data[k] for k in ("format", "path", "table", "target")}
