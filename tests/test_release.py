"""The release recipe: run folder -> release folder (deterministic) -> loopback Hub -> from_pretrained; bundle."""
from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from numerics import assert_same_outputs, assert_same_weights

from export.release import (
    ReleaseError, build_release, bundle_release, find_checkpoint, main, push_plan, push_release, verify_sums,
)

REPO = Path(__file__).resolve().parents[1]
RELEASE_FILES = {"config.json", "model.safetensors", "model.onnx", "README.md", "RELEASE.md", "SHA256SUMS"}
METRICS = {"evaluation": [
    {"protocol": "cross-site", "method": "transfer", "split": "MGH->BCH", "n": 72,
     "metrics": {"accuracy": {"mean": 0.5833, "sd": 0.0, "ci_low": 0.4722, "ci_high": 0.6944}, "auc": 0.6517}},
]}


def _make_run(run: Path, seed: int = 0) -> Path:
    """A run folder as the training core leaves it: a hub-format checkpoint (real save_pretrained) + metrics.json."""
    from age2hie_hub.hub import CheckpointConfig, save_pretrained
    from age2hie_hub.models import build_model
    from age2hie_hub.models.config import ModelConfig
    from age2hie_hub.preprocess.config import PreprocessConfig

    torch.manual_seed(seed)
    model = build_model(ModelConfig("resnet3d_10", {"in_channels": 1, "width": 0.125}, head="outcome"))
    config = CheckpointConfig(
        model=model.config, preprocess=PreprocessConfig(shape=(16, 16, 12), intensity="adc_fixed"),
        provenance={"synthetic": True, "seed": seed, "git_commit": "0" * 40, "library_version": "0.1.0",
                    "data_manifest_sha256": "e" * 64, "method": "transfer",
                    "training_data": {"generator": "make_hie_cohort", "n": 40, "seed": seed}},
    )
    save_pretrained(model, run / "checkpoint", config)
    (run / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    (run / "last.pt").write_bytes(b"training state, never read by the recipe")
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def release(run_dir, tmp_path_factory):
    from export.release import load_release_metadata

    meta = load_release_metadata(REPO / "model_cards" / "age2hie.yaml")
    return build_release(run_dir, tmp_path_factory.mktemp("out") / "release", release_meta=meta,
                         repo_id="org/age2hie")


@pytest.mark.slow
@pytest.mark.numerics
def test_release_folder_holds_exactly_the_release_files(release, run_dir):
    from safetensors.torch import load_file

    from age2hie_hub.hub import load_checkpoint, read_config

    folder = release.folder
    assert {p.name for p in folder.iterdir()} == RELEASE_FILES
    verify_sums(folder)  # SHA256SUMS matches every other file
    model = load_checkpoint(folder)  # strict load of the clean checkpoint
    assert set(load_file(str(folder / "model.safetensors"))) == set(model.state_dict())
    original = load_checkpoint(run_dir / "checkpoint")
    assert_same_weights(model, original)  # the run's weights, bit for bit
    x = torch.randn(1, 1, 16, 16, 12, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert_same_outputs(model(x), original(x))  # two module instances: to float32 rounding (tests/numerics.py)
    assert read_config(folder).metrics == METRICS  # config.json carries the measured evaluation
    assert release.onnx["max_abs_diff"]["probability"] <= release.onnx["tolerance"]
    for p in folder.iterdir():
        assert p.stat().st_mode & stat.S_IROTH, f"{p.name} is not readable by others"


@pytest.mark.slow
def test_release_card_numbers_come_from_metrics_json(release):
    from huggingface_hub import ModelCard

    card = ModelCard.load(release.folder / "README.md")
    values = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values == {("cross-site", "accuracy"): 0.5833, ("cross-site", "roc_auc"): 0.6517}
    text = card.content
    assert "0.583 ± 0.000 [0.472, 0.694]" in text
    for name in ("config.json", "model.safetensors", "model.onnx"):
        assert f"| {name} | {release.sha256[name]} |" in text
    note = (release.folder / "RELEASE.md").read_text()
    assert "synthetic" in note and "max difference probability" in note


@pytest.mark.slow
def test_same_run_gives_identical_files(run_dir, release, tmp_path):
    from export.release import load_release_metadata

    meta = load_release_metadata(REPO / "model_cards" / "age2hie.yaml")
    again = build_release(run_dir, tmp_path / "again", release_meta=meta, repo_id="org/age2hie")
    assert again.sha256 == release.sha256  # model.onnx included: the exporter is deterministic here
    assert (again.folder / "SHA256SUMS").read_bytes() == (release.folder / "SHA256SUMS").read_bytes()


@pytest.mark.slow
def test_push_publishes_one_commit_that_loads_back(release, tmp_path, monkeypatch):
    from hub_server import HubServer

    from age2hie_hub.hub import from_pretrained

    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        commit = push_release(release.folder, "org/age2hie", token=hub.token, cache_dir=tmp_path / "cache")
        repo = hub.repos["org/age2hie"]
        assert repo.refs["main"] == commit
        pushed = repo.commits[commit]
        assert len(repo.commits) == 2 and repo.commits[pushed.parent].title == "initial commit"  # one commit
        assert set(pushed.files) >= RELEASE_FILES  # one commit holding the whole release
        for name in RELEASE_FILES:
            assert pushed.files[name] == (release.folder / name).read_bytes()
        model = from_pretrained("org/age2hie", revision=commit, cache_dir=tmp_path / "cache2", token=hub.token)
        assert model.checkpoint_source.commit == commit
        assert model.checkpoint_source.sha256 == release.sha256["model.safetensors"]


def test_dry_run_prints_the_plan_and_sends_nothing(release_no_onnx, capsys):
    from hub_server import HubServer

    with HubServer() as hub:
        text = push_plan(release_no_onnx.folder, "org/x", None)
        assert not hub.requests
    assert "would push" in text and "--no-dry-run" in text
    for name, digest in release_no_onnx.sha256.items():
        assert digest in text and name in text


@pytest.fixture(scope="module")
def release_no_onnx(run_dir, tmp_path_factory):
    return build_release(run_dir, tmp_path_factory.mktemp("out") / "rel", onnx=False)


def test_release_without_onnx(release_no_onnx):
    assert {p.name for p in release_no_onnx.folder.iterdir()} == RELEASE_FILES - {"model.onnx"}
    verify_sums(release_no_onnx.folder)
    assert "not exported" in (release_no_onnx.folder / "RELEASE.md").read_text()


def test_bundle_copies_the_release_and_checks_it(release_no_onnx, tmp_path, monkeypatch):
    dest = bundle_release(release_no_onnx.folder, "age2hie", root=tmp_path / "models")
    assert dest == tmp_path / "models" / "age2hie"
    verify_sums(dest)
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no staging left
    with pytest.raises(ValueError, match="bundle name"):
        bundle_release(release_no_onnx.folder, "../evil", root=tmp_path / "models")
    tampered = tmp_path / "tampered"
    dest.rename(tampered)
    (tampered / "RELEASE.md").write_text("edited\n")
    with pytest.raises(ReleaseError, match="RELEASE.md"):
        bundle_release(tampered, "other", root=tmp_path / "models")
    assert not (tmp_path / "models" / "other").exists()
    monkeypatch.setattr("export.release.BUNDLE_LIMIT_BYTES", 1000)
    with pytest.raises(ReleaseError, match="at most 0 MiB.*--no-onnx"):
        bundle_release(release_no_onnx.folder, "big", root=tmp_path / "models")


def test_find_checkpoint_forms(run_dir, tmp_path):
    assert find_checkpoint(run_dir) == run_dir / "checkpoint"
    assert find_checkpoint(run_dir / "checkpoint") == run_dir / "checkpoint"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReleaseError, match="no hub-format checkpoint"):
        find_checkpoint(tmp_path / "empty")


def test_checkpoint_with_foreign_keys_is_refused_and_nothing_written(tmp_path):
    from safetensors.torch import load_file, save_file

    run = _make_run(tmp_path / "run")
    weights = run / "checkpoint" / "model.safetensors"
    state = load_file(str(weights))
    state["optimizer.exp_avg"] = torch.zeros(3)
    save_file(state, str(weights))
    with pytest.raises(Exception, match="unexpected keys: optimizer.exp_avg"):
        build_release(run, tmp_path / "out", onnx=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left behind


def test_cli_errors_are_one_line_and_write_nothing(run_dir, tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
    assert not (tmp_path / "out").exists()
    (tmp_path / "exists").mkdir()
    assert main([str(run_dir), "-o", str(tmp_path / "exists"), "--no-onnx"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("licence: mit\n")
    assert main([str(run_dir), "-o", str(tmp_path / "o2"), "--card", str(bad), "--no-onnx"]) == 1
    assert "licence" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_cli_help_is_fast_and_module_runs():
    out = subprocess.run([sys.executable, "-m", "export.release", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--push" in out.stdout and "--bundle" in out.stdout
    assert re.search(r"--no-dry-run", out.stdout)


def test_evaluation_option_adds_the_experiment_table(run_dir, tmp_path):
    from age2hie_hub.train.evaluate import paired_comparisons, summarize_rows

    rows = [{"method": m, "protocol": "cross_site", "seed": 0, "split": f"s{i}", "learning_curve": False,
             "accuracy": 0.55 + 0.1 * (m == "transfer") + 0.01 * i, "auc": 0.7}
            for m in ("transfer", "scratch") for i in range(2)]
    exp = tmp_path / "experiment"
    exp.mkdir()
    summary = summarize_rows(rows, n_boot=100)
    (exp / "metrics.json").write_text(json.dumps({"summary": summary, "comparisons": paired_comparisons(rows, "scratch"),
                                                  "n_cases": 40, "sites": {"A": 20, "B": 20}}))
    rel = build_release(run_dir, tmp_path / "rel", evaluation=exp, onnx=False)
    card = (rel.folder / "README.md").read_text()
    assert summary[0]["accuracy_text"] in card and "| transfer - scratch | cross-site | Accuracy | 2 |" in card
    assert "0.583 ± 0.000 [0.472, 0.694]" in card  # the run's own held-out row stays
    assert "experiment (cross-validated evaluation) metrics file sha256" in (rel.folder / "RELEASE.md").read_text()
    from age2hie_hub.hub import read_config

    assert read_config(rel.folder).metrics == METRICS  # config.json keeps the run's own metrics only
    with pytest.raises(ReleaseError, match="no 'evaluation' record or 'summary' list"):
        build_release(run_dir, tmp_path / "rel2", evaluation=run_dir / "metrics.json", onnx=False)
    assert not (tmp_path / "rel2").exists()
