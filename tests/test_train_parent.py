"""A transfer's parent is resolved once, by any name (folder, bundled alias, Hub name), and that one result gives
both the child's preprocessing and its starting weights; keys the transfer config writes override the parent's."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_train_stages import PREP, TINY, make_bonbid

from age2hie_hub.hub import CheckpointConfig, read_config, save_pretrained
from age2hie_hub.hub.resolve import BUNDLED_DIR
from age2hie_hub.models import ModelConfig, build_model
from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.train.augment import AugmentConfig
from age2hie_hub.train.config import ExperimentConfig, MethodConfig, TransferConfig
from age2hie_hub.train.loop import LoopConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO_ID = "neonatal-lab/brain-age-tiny"
# A parent preprocessing that differs from the package defaults in every key a transfer could silently lose.
PARENT_PREP = PreprocessConfig(**PREP, intensity="mean", interpolation="nearest", foreground_threshold=1e-4)


@pytest.fixture(scope="module")
def hie(tmp_path_factory) -> Path:
    return make_bonbid(tmp_path_factory.mktemp("hie") / "hie", 16)


def _cfg(hie: Path, tmp_path: Path, weights: str, **kw) -> TransferConfig:
    one = LoopConfig(epochs=1, batch_size=8, lr=1e-3, progress=False)
    return TransferConfig(data={"format": "bonbid", "path": str(hie), "target": "outcome"},
                          method=MethodConfig("transfer", "checkpoint", weights), refine=one, finetune=one,
                          augment=AugmentConfig(enabled=False), test_fraction=0.0, run_dir=str(tmp_path / "child"),
                          cache_dir=str(tmp_path / "cache"), preprocess_workers=0, **kw)


def _child(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "child" / "checkpoint" / "config.json").read_text())


def _tiny_parent(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    mc = ModelConfig(**TINY, head="age_regression", head_args={"offset": 50.0, "scale": 15.0})
    return build_model(mc), CheckpointConfig(mc, PARENT_PREP, task="brain_age", labels=(), input_modalities=("T1w",))


@pytest.fixture
def count_resolutions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import age2hie_hub.hub as hub

    calls: list[str] = []
    real = hub.from_pretrained

    def counting(name, **kw):
        calls.append(str(name))
        return real(name, **kw)

    monkeypatch.setattr(hub, "from_pretrained", counting)
    return calls


def test_bundled_alias_parent_gives_its_preprocessing(hie, tmp_path, count_resolutions):
    from age2hie_hub.hub.checkpoint import file_sha256
    from age2hie_hub.train.stages import transfer

    if not (BUNDLED_DIR / "brain-age" / "config.json").is_file():
        pytest.skip("no bundled brain-age model in this checkout")
    parent = read_config(BUNDLED_DIR / "brain-age")
    assert parent.preprocess != PreprocessConfig()  # else equality below could not tell parent from default
    transfer(_cfg(hie, tmp_path, "brain-age"))
    child = _child(tmp_path)
    assert child["preprocess"] == parent.preprocess.to_dict()
    prov = child["provenance"]
    assert prov["parent"] == "brain-age"
    assert prov["parent_weights_sha256"] == file_sha256(BUNDLED_DIR / "brain-age" / "model.safetensors")
    assert count_resolutions == ["brain-age"]  # one trip from the name to the model, for both uses


def test_explicit_keys_override_the_parents_and_only_those(hie, tmp_path):
    from age2hie_hub.train.stages import transfer

    model, config = _tiny_parent()
    save_pretrained(model, tmp_path / "parent", config)
    # `intensity: mean` is written although it equals the parent's value: still the parent's, by either reading;
    # `spacing` differs and wins; everything not written stays the parent's (not the package default).
    transfer(_cfg(hie, tmp_path, str(tmp_path / "parent"),
                  preprocess={"spacing": [5.0, 5.0, 5.0], "intensity": "mean"}))
    child = _child(tmp_path)["preprocess"]
    assert child["spacing"] == [5.0, 5.0, 5.0]
    assert child == {**PARENT_PREP.to_dict(), "spacing": [5.0, 5.0, 5.0]}
    assert child["interpolation"] == "nearest" and child["foreground_threshold"] == 1e-4  # not the defaults


def test_hub_parent_gives_its_preprocessing_and_is_pinned(hie, tmp_path, hub, count_resolutions):
    from age2hie_hub.hub import push_to_hub
    from age2hie_hub.train.stages import transfer

    model, config = _tiny_parent()
    info = push_to_hub(model, REPO_ID, token=hub.token, config=config)
    before = len(hub.requests)
    transfer(_cfg(hie, tmp_path, f"hf-hub:{REPO_ID}"))
    child = _child(tmp_path)
    assert child["preprocess"] == PARENT_PREP.to_dict()
    assert child["preprocess"] != PreprocessConfig(channels=1).to_dict()
    prov = child["provenance"]
    assert (prov["parent"], prov["parent_commit"], prov["parent_revision"]) == (REPO_ID, info.oid, "main")
    assert count_resolutions == [f"hf-hub:{REPO_ID}"]
    # one snapshot: a single revision lookup on the server for the whole run
    revision_calls = [r for r in hub.requests[before:] if r[0] == "GET" and "/revision/" in r[1]]
    assert len(revision_calls) == 1, hub.requests[before:]


def test_experiment_resolves_each_parent_once(hie, tmp_path, count_resolutions):
    from age2hie_hub.hub import load_checkpoint
    from age2hie_hub.train.experiment import run_experiment

    model, config = _tiny_parent()
    save_pretrained(model, tmp_path / "parent", config)
    tcfg = _cfg(hie, tmp_path, str(tmp_path / "parent"))
    cfg = ExperimentConfig(transfer=tcfg, protocols=("multi_site",), k=2, seeds=(0,), n_boot=50, learning_curve=None,
                           run_dir=str(tmp_path / "exp"), save_checkpoints=True,
                           methods=(MethodConfig("transfer", "checkpoint", str(tmp_path / "parent")),
                                    MethodConfig("scratch", "scratch", model=TINY, stages=("scratch",))),)
    cfg = dataclasses.replace(cfg, transfer=dataclasses.replace(tcfg, scratch=tcfg.refine))
    run_experiment(cfg)
    assert count_resolutions == [str(tmp_path / "parent")]  # 2 folds, one resolution
    folds = sorted((tmp_path / "exp" / "checkpoints").iterdir())
    assert len(folds) == 4
    for folder in folds:
        ck = load_checkpoint(folder).checkpoint_config
        assert ck.preprocess == PARENT_PREP  # scratch folds too: every method sees the same arrays
        if "transfer" in folder.name:
            assert ck.provenance["parent"] == str((tmp_path / "parent").resolve())
            assert len(ck.provenance["parent_weights_sha256"]) == 64
        else:
            assert ck.provenance["parent"] is None
