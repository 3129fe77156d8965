"""Model cards (hub.card): rendered from a real checkpoint folder + the run's metrics.json; numbers and YAML
checked; the template ships as package data; the bundled cards render from their own inputs."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from age2hie_hub.hub.card import BASE_TAGS, render_model_card
from age2hie_hub.hub.evaluation import read_evaluation
from export.release import load_release_metadata

REPO = Path(__file__).resolve().parents[1]
CARDS = REPO / "model_cards"

# What a training run writes (shape of age2hie_hub.train.metrics.summarize per metric), with values that
# are not round so that a number invented or rounded differently by the renderer cannot match.
METRICS = {
    "evaluation": [
        {"protocol": "multi-site", "method": "transfer", "split": "5-fold CV", "n": 156, "metrics": {
            "accuracy": {"mean": 0.6812, "sd": 0.0437, "ci_low": 0.6391, "ci_high": 0.7204, "n": 5},
            "auc": {"mean": 0.7433, "sd": 0.0518, "ci_low": 0.6978, "ci_high": 0.7901, "n": 5},
            "f1": 0.6627,
        }},
        {"protocol": "cross-site", "method": "transfer", "split": "BCH->MGH", "n": 84, "metrics": {
            "accuracy": {"mean": 0.6071, "sd": 0.0, "ci_low": 0.5119, "ci_high": 0.7024},
        }},
        {"protocol": "multi-site", "method": "scratch", "split": "5-fold CV", "n": 156, "metrics": {
            "accuracy": {"mean": 0.6423, "sd": 0.0561, "ci_low": 0.5893, "ci_high": 0.6932},
        }},
    ]
}
PROVENANCE = {
    "synthetic": True,
    "seed": 1234,
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "data_manifest_sha256": "f" * 64,
    "library_version": "0.1.0",
    "method": "transfer",
    "parent": "age2hie-hub/brain-age",
    "training_data": {"generator": "age2hie_hub.synth.make_hie_cohort", "n": 156, "seed": 7,
                      "sites": ["BCH", "MGH"]},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as the training core leaves it: checkpoint/ (written by the real save_pretrained) + metrics.json."""
    from age2hie_hub.hub.checkpoint import save_pretrained
    from age2hie_hub.hub.config import CheckpointConfig
    from age2hie_hub.models import build_model
    from age2hie_hub.models.config import ModelConfig
    from age2hie_hub.preprocess.config import PreprocessConfig

    run = tmp_path_factory.mktemp("run")
    model = build_model(ModelConfig("resnet3d_10", {"in_channels": 2, "width": 0.125}, head="outcome"))
    config = CheckpointConfig(
        model=model.config,
        preprocess=PreprocessConfig(spacing=(1.5, 1.5, 2.5), shape=(24, 24, 16), intensity="adc_fixed",
                                    clip=(0.0, 3.5), channels=2),
        input_modalities=("ADC", "Z-ADC"),
        training_range={"spacing_mm": [0.7, 3.0], "adc_mm2s": [0.0, 0.0032]},
        provenance=PROVENANCE,
        metrics=METRICS,
    )
    save_pretrained(model, run / "checkpoint", config)
    (run / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    return run


def _card(run_dir: Path, **kw) -> ModelCard:
    from age2hie_hub.hub.checkpoint import read_config

    config = read_config(run_dir / "checkpoint")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return render_model_card(config, metrics=metrics, release=load_release_metadata(CARDS / "age2hie.yaml"), **kw)


def _header(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def test_header_parses_and_carries_metadata(run_dir, tmp_path):
    card = _card(run_dir, repo_id="org/age2hie")
    header = _header(card.content)
    assert header["library_name"] == "age2hie-hub"
    assert header["license"] == "cc-by-sa-4.0"  # adapted from the IXI-trained brain-age weights: share-alike
    assert header["base_model"] == "age2hie-hub/brain-age"
    assert set(BASE_TAGS) <= set(header["tags"]) and "synthetic-data" in header["tags"]
    assert {"accuracy", "roc_auc", "f1"} <= set(header["metrics"])
    # Round trip through huggingface_hub's own loader.
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.library_name == "age2hie-hub"
    assert loaded.data.model_name == "age2hie"


def test_model_index_numbers_are_the_run_files_numbers(run_dir, tmp_path):
    card = _card(run_dir)
    card.save(tmp_path / "README.md")
    results = ModelCard.load(tmp_path / "README.md").data.eval_results
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = {}
    for row in metrics["evaluation"]:
        if row["method"] != "transfer":
            continue
        for name, value in row["metrics"].items():
            expected[(row["protocol"], name)] = value["mean"] if isinstance(value, dict) else value
    ids = {"accuracy": "accuracy", "auc": "roc_auc", "f1": "f1"}
    got = {(r.dataset_config, r.metric_type): r.metric_value for r in results}
    assert got == {(p, ids[n]): v for (p, n), v in expected.items()}  # exact, and no scratch row claimed
    acc = next(r for r in results if r.dataset_config == "multi-site" and r.metric_type == "accuracy")
    assert acc.metric_args == {"ci_low": 0.6391, "ci_high": 0.7204, "sd": 0.0437}
    assert all(r.dataset_type == "synthetic" for r in results)


def test_every_metric_number_appears_in_the_evaluation_table(run_dir):
    text = _card(run_dir).content
    table = text.split("## Evaluation", 1)[1].split("## Limitations", 1)[0]
    for row in METRICS["evaluation"]:
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {row['protocol']} | {row['method']} |"))
        for value in row["metrics"].values():
            if isinstance(value, dict):
                cell = f"{value['mean']:.3f} ± {value['sd']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"
            else:
                cell = f"{value:.3f}"
            assert cell in line, (cell, line)
        assert f"| {row['n']} |" in line
    # Numbers in the table that are not in the metrics file would be invented: there are none.
    numbers = set(re.findall(r"\d+\.\d{3}", table))
    allowed = set()
    for row in METRICS["evaluation"]:
        for value in row["metrics"].values():
            for v in (value.values() if isinstance(value, dict) else [value]):
                allowed.add(f"{v:.3f}")
    assert numbers <= allowed, numbers - allowed


def test_synthetic_is_said_in_the_first_lines(run_dir):
    body = _card(run_dir).content.split("\n---\n", 1)[1].lstrip().splitlines()
    first = "\n".join(body[:3]).lower()
    assert "synthetic" in first


def test_inputs_preprocessing_and_provenance_come_from_the_checkpoint(run_dir):
    from age2hie_hub.hub.checkpoint import read_config

    config = read_config(run_dir / "checkpoint")
    text = _card(run_dir).content
    exact = text.split("The exact configuration", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(exact) == config.preprocess.to_dict()
    assert "| 0 | ADC | mm^2/s" in text and "| 1 | Z-ADC |" in text
    assert "| RAS | 1.5 x 1.5 x 2.5 | 24 x 24 x 16 |" in text
    for key in ("seed", "git_commit", "data_manifest_sha256", "library_version"):
        assert f"| {key} | {PROVENANCE[key]} |" in text
    assert "| generator | age2hie_hub.synth.make_hie_cohort |" in text
    assert "not a clinical decision tool" in text
    for cite in ("2411.05188", "10.1016/j.neunet.2022.06.014", "BONBID-HIE"):
        assert cite in text
    assert "second_channel=" in text and "--backend onnx" in text and "(N, 2, 24, 24, 16)" in text


def test_file_checksums_listed(run_dir):
    digest = "a" * 64
    text = _card(run_dir, files={"model.safetensors": digest}).content
    assert f"| model.safetensors | {digest} |" in text


def test_rendering_is_deterministic(run_dir):
    assert _card(run_dir).content == _card(run_dir).content


def test_no_metrics_says_unknown_not_zero(run_dir):
    from age2hie_hub.hub.checkpoint import read_config

    config = read_config(run_dir / "checkpoint")
    card = render_model_card(config, metrics={})
    assert "No evaluation was recorded" in card.content
    assert "model-index" not in _header(card.content)


def test_brain_age_card_from_pretrain_metrics_format():
    """The flat form train.stages.pretrain writes: test_ prefixes, _ci95 intervals, a baseline, counts, timings."""
    from age2hie_hub.hub.config import CheckpointConfig
    from age2hie_hub.models.config import ModelConfig
    from age2hie_hub.preprocess.config import PreprocessConfig

    config = CheckpointConfig(
        model=ModelConfig("sfcn", head="age_softbin", head_args={"bins": 40, "age_range": [0, 97]}),
        preprocess=PreprocessConfig(intensity="mean"), task="brain_age", labels=(), input_modalities=("T1w",),
        provenance={"synthetic": False, "training_data": "/data/site/ixi/participants.tsv", "n_training_cases": 412},
    )
    metrics = {"metrics": {"split": "held_out_test", "n_train": 330, "n_val": 41, "n_test": 103,
                           "test_mae": 3.217, "test_pearson_r": 0.912, "test_bias": -0.41,
                           "test_mae_ci95": [2.804, 3.655], "baseline_predict_mean_mae": 11.04,
                           "best_epoch": 17, "epochs_run": 20, "seconds": 812.5, "synthetic": False},
               "history": [{"epoch": 0, "train_loss": 5.0}]}
    card = render_model_card(config, metrics=metrics, release=load_release_metadata(CARDS / "brain-age.yaml"))
    header = _header(card.content)
    assert "base_model" not in header
    (result,) = header["model-index"][0]["results"]
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"mae": 3.217, "pearsonr": 0.912, "bias": -0.41}  # no baseline, count or timing claimed
    assert result["metrics"][0]["args"] == {"ci_low": 2.804, "ci_high": 3.655}
    assert result["dataset"]["name"] == "participants.tsv"  # no build-machine folders in a public card
    table = card.content.split("## Evaluation", 1)[1].split("## Limitations", 1)[0]
    assert "| held-out test |  |  | 103 | 3.217 [2.804, 3.655] | 0.912 | -0.410 | 11.040 |" in table
    assert "MAE, predict-mean baseline" in table
    assert "812" not in table and "/data/site" not in card.content
    assert "age in years with its sd" in card.content
    assert "| cases | 412 |" in card.content
    assert "synthetic" not in "\n".join(card.content.split("\n---\n", 1)[1].splitlines()[:4]).lower()


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> dict[str, Path]:
    """A real, tiny brain-age pretraining and AGE2HIE transfer run made by the training core (1 epoch each)."""
    import nibabel as nib
    import numpy as np

    from age2hie_hub.train.config import MethodConfig, PretrainConfig, TransferConfig
    from age2hie_hub.train.loop import LoopConfig
    from age2hie_hub.train.stages import pretrain, transfer

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    t1, hie = ["subject,path,age,site"], ["subject,path,outcome,site"]
    for i in range(16):
        age = float(rng.uniform(1, 90))
        nib.save(nib.Nifti1Image((rng.random((14, 14, 10)) * 0.2 + age / 90).astype(np.float32), affine),
                 root / f"t1_{i}.nii.gz")
        t1.append(f"s{i},t1_{i}.nii.gz,{age:.3f},site{i % 2}")
        adc = rng.random((14, 14, 10)) * 0.3e-3 + 1e-3 + (i % 2) * 0.4e-3
        nib.save(nib.Nifti1Image(adc.astype(np.float32), affine), root / f"adc_{i}.nii.gz")
        hie.append(f"h{i},adc_{i}.nii.gz,{i % 2},site{i % 2}")
    (root / "t1.csv").write_text("\n".join(t1) + "\n")
    (root / "hie.csv").write_text("\n".join(hie) + "\n")
    loop = {"epochs": 1, "batch_size": 4, "progress": False}
    prep = {"shape": [12, 12, 8], "spacing": [2.0, 2.0, 2.0]}
    common = {"cache_dir": str(root / "cache"), "preprocess_workers": 0, "synthetic": True, "seed": 3}
    pretrain(PretrainConfig(
        data={"format": "csv", "path": str(root / "t1.csv"), "target": "age", "modalities": ["T1w"]},
        model={"arch": "resnet3d_10", "arch_args": {"width": 0.125}, "head": "age_regression"},
        preprocess={**prep, "intensity": "zscore"}, loop=LoopConfig(**loop), run_dir=str(root / "brain-age"), **common))
    transfer(TransferConfig(
        data={"format": "csv", "path": str(root / "hie.csv"), "target": "outcome", "modalities": ["ADC"]},
        method=MethodConfig("transfer", "checkpoint", str(root / "brain-age" / "checkpoint")),
        preprocess={**prep, "intensity": "adc_fixed"}, refine=LoopConfig(train_only="head", **loop),
        finetune=LoopConfig(**loop), run_dir=str(root / "age2hie"), **common))
    return {"brain-age": root / "brain-age", "age2hie": root / "age2hie"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["brain-age", "age2hie"])
def test_card_from_a_real_training_run(real_runs, name, tmp_path):
    from age2hie_hub.hub import read_config

    run = real_runs[name]
    config = read_config(run / "checkpoint")
    written = json.loads((run / "metrics.json").read_text())["metrics"]
    card = render_model_card(config, metrics=json.loads((run / "metrics.json").read_text()),
                             release=load_release_metadata(CARDS / f"{name}.yaml"))
    card.save(tmp_path / "README.md")
    yaml.safe_load(card.content.split("---\n")[1])
    loaded = ModelCard.load(tmp_path / "README.md")
    got = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    ids = {"auc": "roc_auc", "pearson_r": "pearsonr", "sensitivity": "recall", "brier": "brier_score"}
    expected = {}
    for key, value in written.items():
        bare = key.removeprefix("test_")
        if bare in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "brier", "ece",
                    "mae", "pearson_r", "bias") and value == value:  # NaN (undefined on 2 cases) is left out
            expected[ids.get(bare, bare)] = value
    assert got == expected and expected
    body = card.content.split("\n---\n", 1)[1]
    assert "synthetic" in "\n".join(body.lstrip().splitlines()[:3]).lower()
    assert f"| {written['n_test']} |" in body.split("## Evaluation", 1)[1]
    modality = "T1w" if name == "brain-age" else "ADC"
    assert f"| 0 | {modality} |" in body and "| 12 x 12 x 8 |" in body
    assert config.provenance["data_manifest_sha256"] in body
    # The run wrote its evaluation record beside the flat keys; reading those keys the old way gives the same rows
    # (the record adds what the rows were scored against), so the card is the same from either.
    saved = json.loads((run / "metrics.json").read_text())
    record = read_evaluation(saved)
    legacy = read_evaluation({k: v for k, v in saved.items() if k != "evaluation"})
    assert record.rows and {r.task for r in record.rows} == {"age" if name == "brain-age" else "outcome"}
    assert tuple(dataclasses.replace(r, task=None) for r in record.rows) == legacy.rows
    assert render_model_card(config, metrics=legacy,
                             release=load_release_metadata(CARDS / f"{name}.yaml")).content == card.content


def test_release_metadata_files_load_and_typos_are_refused(tmp_path):
    for path in sorted(CARDS.glob("*.yaml")):
        data = load_release_metadata(path)
        assert data["license"] and data["model_name"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name: x\nlicence: mit\n")
    with pytest.raises(ValueError, match="licence"):
        load_release_metadata(bad)


def test_read_evaluation_reads_the_older_forms():
    from age2hie_hub.hub.evaluation import EvalRow

    assert read_evaluation({}).rows == ()
    (row,) = read_evaluation({"accuracy": 0.5, "ci95": [0.1, 0.2], "note": "x"}).rows
    assert row == EvalRow(protocol="held_out", metric="accuracy", value=0.5)
    (row,) = read_evaluation({"evaluation": [{"metrics": {"auc": {"value": 0.8, "ci95": [0.7, 0.9]}}}]}).rows
    assert (row.metric, row.value, row.ci_low, row.ci_high) == ("auc", 0.8, 0.7, 0.9)
    with pytest.raises(ValueError, match="entry 0"):
        read_evaluation({"evaluation": [{"protocol": "x"}]})
    # A run's flat metrics: test_ prefix and _ci95 interval joined, counts and timings skipped.
    rows = read_evaluation({"metrics": {"split": "held_out_test", "n_test": 9, "test_mae": 3.5,
                                        "test_mae_ci95": [3.0, 4.0], "seconds": 12.0, "best_epoch": 3}}).rows
    assert rows == (EvalRow("held_out_test", "mae", 3.5, n=9, ci_low=3.0, ci_high=4.0),)
    # An experiment's summary row (cells may be strings when read back from table.csv).
    (row,) = read_evaluation([{"method": "transfer", "protocol": "multi_site", "n_splits": "15", "n_seeds": "3",
                               "auc_mean": "0.7", "auc_sd": "0.1", "auc_ci_low": "0.6", "auc_ci_high": "0.8",
                               "auc_text": "0.700 ± 0.100 [0.600, 0.800]"}]).rows
    assert row == EvalRow("multi_site", "auc", 0.7, method="transfer", sd=0.1, ci_low=0.6, ci_high=0.8,
                          n_splits=15, n_seeds=3)


def test_evaluation_record_round_trips_and_refuses_what_it_cannot_read():
    from age2hie_hub.hub.evaluation import Comparison, EvalRow, Evaluation

    record = Evaluation(rows=(EvalRow("multi_site", "auc", 0.71, method="transfer", sd=0.05, ci_low=0.66,
                                      ci_high=0.76, n_splits=15, n_seeds=3, task="outcome"),
                              EvalRow("held_out", "accuracy", 0.6, n=30)),
                        comparisons=(Comparison("transfer", "scratch", "multi_site", "auc", 15, 0.04, 0.01, 0.07,
                                                0.02),),
                        n_cases=156, sites={"BCH": 72, "MGH": 84})
    data = json.loads(json.dumps(record.to_dict()))
    assert read_evaluation({"evaluation": data, "summary": [{"method": "x", "auc_mean": 0.1}]}) == record
    assert read_evaluation(record) is record
    bad_row = dict(data, rows=[dict(data["rows"][0], auc=0.7)])
    with pytest.raises(ValueError, match=r"row 0: unknown keys \['auc'\]"):
        read_evaluation({"evaluation": bad_row})
    with pytest.raises(ValueError, match="row 0: expected a number"):
        read_evaluation({"evaluation": dict(data, rows=[dict(data["rows"][0], value="high")])})
    with pytest.raises(ValueError, match="format 2"):
        read_evaluation({"evaluation": dict(data, format=2)})
    # An experiment replaces the run's own cross-validated rows; the run's held-out rows stay first.
    experiment = Evaluation(rows=(EvalRow("cross_site", "auc", 0.6, method="transfer", n_splits=2, n_seeds=1),),
                            n_cases=100)
    merged = record.with_cross_validation(experiment)
    assert [r.protocol for r in merged.rows] == ["held_out", "cross_site"]
    assert merged.n_cases == 100 and merged.comparisons == () and merged.sites == {}


@pytest.mark.parametrize("n_splits, n_seeds, text", [
    (15, 3, "15 splits (5 per seed x 3 seeds)"),
    (5, 1, "5 splits (1 seed)"),
    (7, 2, "7 splits over 2 seeds"),
    (4, None, "4 splits"),
])
def test_split_wording_counts_every_split_once(n_splits, n_seeds, text):
    """n_splits already counts the seeds: 5 folds x 3 seeds are 15 splits, never "15 splits x 3 seeds"."""
    from age2hie_hub.hub.evaluation import EvalRow, split_label

    assert split_label(EvalRow("multi_site", "auc", 0.7, n_splits=n_splits, n_seeds=n_seeds)) == text
    assert split_label(EvalRow("cross_site", "auc", 0.7, split="BCH->MGH", n_splits=2, n_seeds=1)) == "BCH->MGH"


def test_card_of_a_three_seed_experiment_says_how_many_splits(run_dir):
    """The summary of 5 folds x 3 seeds (summarize_rows: n_splits 15, n_seeds 3) reads "15 splits (5 per seed x
    3 seeds)" in the table and the model-index, never "15 splits x 3 seeds" (45 splits)."""
    from age2hie_hub.hub.checkpoint import read_config
    from age2hie_hub.train.evaluate import summarize_rows

    rows = [{"method": "transfer", "protocol": "multi_site", "seed": seed, "split": f"f{fold}",
             "learning_curve": False, "accuracy": 0.6 + 0.01 * fold + 0.002 * seed, "auc": 0.7}
            for seed in range(3) for fold in range(5)]
    summary = summarize_rows(rows, n_boot=50)
    assert (summary[0]["n_splits"], summary[0]["n_seeds"]) == (15, 3)
    card = render_model_card(read_config(run_dir / "checkpoint"), metrics={"summary": summary})
    assert "| multi-site | transfer | 15 splits (5 per seed x 3 seeds) |" in card.content
    assert {r["dataset"]["split"] for r in _header(card.content)["model-index"][0]["results"]} == {
        "15 splits (5 per seed x 3 seeds)"}
    assert "x 3 seeds |" not in card.content.replace("(5 per seed x 3 seeds)", "")


def _experiment_metrics() -> dict:
    """An experiment's metrics.json, made by the training core's own summary and comparison functions."""
    import numpy as np

    from age2hie_hub.train.evaluate import paired_comparisons, summarize_rows

    rng = np.random.default_rng(5)
    rows = []
    for protocol in ("same_site", "multi_site", "cross_site"):
        for split in range(4):
            for method, shift in (("transfer", 0.05), ("scratch", 0.0)):
                acc = float(0.6 + shift + rng.normal(0, 0.03))
                rows.append({"method": method, "protocol": protocol, "seed": 0, "split": f"f{split}",
                             "learning_curve": False, "accuracy": acc, "auc": acc + 0.05,
                             "balanced_accuracy": acc, "f1": acc - 0.02, "sensitivity": acc, "specificity": acc,
                             "brier": 0.2, "ece": 0.05})
    summary = summarize_rows(rows, n_boot=200)
    return {"summary": summary, "comparisons": paired_comparisons(rows, "scratch"), "n_cases": 156,
            "sites": {"BCH": 72, "MGH": 84}, "synthetic": True}


def test_experiment_record_agrees_with_its_summary_columns(run_dir):
    """train.evaluate.evaluation_record (what an experiment writes now) and the older summary columns read by
    read_evaluation give the same rows, comparisons and cohort, and the same card."""
    from age2hie_hub.hub.checkpoint import read_config
    from age2hie_hub.train.evaluate import evaluation_record

    exp = _experiment_metrics()
    record = evaluation_record(exp["summary"], exp["comparisons"], n_cases=exp["n_cases"], sites=exp["sites"],
                               task="outcome")
    legacy = read_evaluation(exp)
    assert len(record.rows) == 3 * 2 * 8 and {r.task for r in record.rows} == {"outcome"}
    assert tuple(dataclasses.replace(r, task=None) for r in record.rows) == legacy.rows
    assert (record.comparisons, record.n_cases, record.sites) == (legacy.comparisons, legacy.n_cases, legacy.sites)
    config = read_config(run_dir / "checkpoint")
    assert render_model_card(config, metrics={"evaluation": record.to_dict()}).content == \
        render_model_card(config, metrics=exp).content


def test_experiment_summary_and_comparisons_in_the_card(run_dir):
    from age2hie_hub.hub.checkpoint import read_config

    exp = _experiment_metrics()
    config = read_config(run_dir / "checkpoint")
    card = render_model_card(config, metrics=exp, release=load_release_metadata(CARDS / "age2hie.yaml"))
    header = _header(card.content)
    results = header["model-index"][0]["results"]
    assert {r["dataset"]["config"] for r in results} == {"same-site", "multi-site", "cross-site"}
    transfer = {r["method"] + r["protocol"]: r for r in exp["summary"] if r["method"] == "transfer"}
    for result in results:
        row = transfer["transfer" + result["dataset"]["config"].replace("-", "_")]
        acc = next(m for m in result["metrics"] if m["type"] == "accuracy")
        assert acc["value"] == row["accuracy_mean"]
        assert acc["args"] == {"ci_low": row["accuracy_ci_low"], "ci_high": row["accuracy_ci_high"],
                               "sd": row["accuracy_sd"]}
        assert result["dataset"]["split"] == "4 splits (1 seed)"
    table = card.content.split("## Evaluation", 1)[1].split("## Limitations", 1)[0]
    for row in exp["summary"]:  # both methods in the table, with the training core's own formatting
        assert row["accuracy_text"] in table
    for comp in exp["comparisons"]:
        assert f"{comp['mean_diff']:+.3f} [{comp['ci_low']:+.3f}, {comp['ci_high']:+.3f}]" in table
    assert "156 cases from sites BCH (n=72), MGH (n=84)" in table


@pytest.mark.parametrize("parent, expected", [
    ("hf-hub:age2hie-hub/brain-age@v1", "age2hie-hub/brain-age"),
    ("age2hie-hub/brain-age", "age2hie-hub/brain-age"),
    ("/home/me/runs/brain-age/checkpoint", None),  # a local folder is not a valid Hub base_model
    ("runs/brain-age/checkpoint", None),
])
def test_base_model_only_names_hub_repos(parent, expected):
    from age2hie_hub.hub.config import CheckpointConfig
    from age2hie_hub.models.config import ModelConfig
    from age2hie_hub.hub.card import model_card_data
    from age2hie_hub.preprocess.config import PreprocessConfig

    config = CheckpointConfig(model=ModelConfig("sfcn"), preprocess=PreprocessConfig(), provenance={"parent": parent})
    assert model_card_data(config).to_dict().get("base_model") == expected


# ---- the bundled models' cards, pinned -------------------------------------------------------------------------

BUNDLED = REPO / "age2hie_hub" / "data" / "models"


def _bundled_card(name: str, record: dict) -> str:
    from age2hie_hub.hub.checkpoint import read_config

    folder = BUNDLED / name
    config = read_config(folder)
    sums = dict(reversed(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
    files = {n: sums[n] for n in ("config.json", "model.safetensors", "model.onnx")}
    meta = load_release_metadata(CARDS / f"{name}.yaml")
    # As export.release.build_release: the run's own held-out rows (config.json's metrics), then the experiment's.
    evaluation = read_evaluation(config.metrics).with_cross_validation(read_evaluation(record))
    card = render_model_card(config, metrics=evaluation, release=meta, repo_id=meta["repo_id"], files=files)
    return str(card).rstrip("\n") + "\n"


@pytest.mark.parametrize("name", ["brain-age", "age2hie"])
def test_bundled_card_renders_from_its_own_inputs(name):
    """The shipped README.md is the renderer's output for the bundle's config.json, its card metadata, its
    SHA256SUMS and the cross-validated rows it shows (tests/data/bundled_cards, derived by derive.py from the
    build's runs): a change of the renderer or the template that would change a shipped card fails here."""
    record = json.loads((REPO / "tests" / "data" / "bundled_cards" / f"{name}.json").read_text())
    shipped = (BUNDLED / name / "README.md").read_text(encoding="utf-8")
    assert _bundled_card(name, record) == shipped
    # Negative control: one number of one row, off by 0.001 in the table's precision, is caught.
    row = next(r for r in record["evaluation"]["rows"] if r["method"] not in ("cnn", "transfer"))
    row["value"] = round(row["value"] + 0.001, 3)
    assert _bundled_card(name, record) != shipped


def test_the_template_is_package_data():
    """setup.cfg ships hub/templates/*.md, and the renderer reads the template through importlib.resources."""
    from importlib import resources

    from age2hie_hub.hub.card import TEMPLATE_FILE, card_template

    setup = (REPO / "setup.cfg").read_text()
    package_data = setup.split("[options.package_data]", 1)[1].split("\n[", 1)[0]
    assert "hub/templates/*.md" in package_data
    text = resources.files("age2hie_hub.hub").joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    assert text == card_template() and "{{ evaluation }}" in text and text.startswith("---\n{{ card_data }}\n---")


@pytest.mark.slow
def test_an_installed_wheel_renders_the_card(tmp_path):
    """Build the wheel (no network, no build isolation), install it into a bare folder, and render a card there:
    the template travels with the package, not only with the source tree."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "age2hie_hub", src / "age2hie_hub",
                    ignore=shutil.ignore_patterns("__pycache__", "models"))  # the bundled weights are not needed
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("age2hie_hub-*.whl")
    assert "age2hie_hub/hub/templates/modelcard.md" in zipfile.ZipFile(wheel).namelist()
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import age2hie_hub.hub.card as c, pathlib, sys\n"
            "assert pathlib.Path(c.__file__).is_relative_to(sys.argv[1]), c.__file__\n"
            "from age2hie_hub.hub.config import CheckpointConfig\n"
            "from age2hie_hub.models.config import ModelConfig\n"
            "from age2hie_hub.preprocess.config import PreprocessConfig\n"
            "cfg = CheckpointConfig(model=ModelConfig('sfcn'), preprocess=PreprocessConfig())\n"
            "print(c.build_model_card(cfg).splitlines()[-1])\n")
    run = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("<!-- age2hie-hub generated card sha256:")


def test_the_old_module_forwards_with_a_deprecation_warning():
    import age2hie_hub.modelcard as old
    from age2hie_hub.hub import card

    with pytest.warns(DeprecationWarning, match="age2hie_hub.hub.card.render_model_card"):
        assert old.render_model_card is card.render_model_card
    with pytest.raises(AttributeError, match="export.release.load_release_metadata"):
        old.load_release_metadata  # noqa: B018
