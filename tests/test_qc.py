"""Input QC: features of a scan against the training inputs' record (recorded from a tiny synthetic training set)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inference_helpers import adc_affine, adc_array, make_checkpoint, write_nifti

from age2hie_hub.inference import Predictor
from age2hie_hub.inference.qc import PREFIX, accepted_range, channel_features, qc_flags
from age2hie_hub.io import Volume
from age2hie_hub.train.input_stats import annotate_checkpoint, training_input_qc
from age2hie_hub.train.manifest import Case, Cohort


def adult_t1_head(seed: int = 0) -> Volume:
    """An adult-sized whole-head T1-like volume: scalp, dark CSF rim, grey/white matter, noisy background."""
    rng = np.random.default_rng(seed)
    shape = (96, 110, 90)
    g = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")) * 2.0  # 2 mm voxels
    head = np.sqrt((g[0] / 75) ** 2 + (g[1] / 95) ** 2 + (g[2] / 80) ** 2)
    data = np.where(head < 1, 500.0, 0.0) + np.where(head < 0.9, -350.0, 0.0) + np.where(head < 0.85, 450.0, 0.0)
    data += np.where(head < 0.6, 250.0, 0.0)
    data = np.abs(data + rng.normal(0, 15, shape))
    return Volume(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """Eight neonatal-like ADC maps of a few sizes and grids, as a cohort."""
    folder = tmp_path_factory.mktemp("train")
    cases = []
    for i in range(8):
        shape = (36 + 2 * i, 44 + i, 18 + i % 3)
        spacing = (1.8 + 0.05 * i, 1.8 + 0.05 * i, 3.0)
        path = write_nifti(folder / f"c{i}.nii.gz", adc_array(shape, seed=i), adc_affine(spacing))
        cases.append(Case(f"c{i}", (str(path),), 0 if i % 2 else 1))
    cohort = Cohort(tuple(cases), "outcome", "classification", ("0", "1"), source=str(folder), sha256="x",
                    modalities=("ADC",))
    return cohort, training_input_qc(cohort, ("ADC",), workers=1)


def test_record_holds_percentiles_of_every_feature_per_channel(training):
    cohort, record = training
    (channel,) = record["channels"]
    assert record["n_cases"] == 8 and channel["n"] == 8 and channel["units"] == {"1e-6mm2/s": 8}
    for name in ("foreground_ml", "extent_mm", "zero_fraction", "p95_over_median", "skewness", "median_value"):
        s = channel["features"][name]
        assert s["min"] <= s["p01"] <= s["median"] <= s["p99"] <= s["max"], name
    json.dumps(record)  # goes into config.json as is


def test_a_right_scan_passes_and_an_adult_t1_head_is_flagged_with_reasons(training):
    _, record = training
    right = Volume(adc_array((40, 46, 19), seed=11) * 1e-6, adc_affine((1.85, 1.85, 3.0)))
    assert qc_flags([(right, "1e-6mm2/s")], record, ("ADC",)) == []
    t1 = adult_t1_head()
    flags = qc_flags([(t1, "1e-6mm2/s")], record, ("ADC",))
    names = {f.feature for f in flags}
    assert {"foreground_ml", "extent_mm"} <= names  # adult head: far too large for the neonatal training brains
    assert names & {"p05_over_median", "skewness", "p95_over_median"}  # and T1 contrast, not ADC
    assert any("age group" in f.reason for f in flags)
    message = flags[0].message("t1.nii.gz")
    assert message.startswith(f"{PREFIX}: t1.nii.gz: ") and "training 1st-99th percentile" in message


def test_ranges_come_from_the_record_not_from_fixed_numbers(training):
    """Negative control: the same right scan is flagged once the record says training brains were twice as big."""
    _, record = training
    right = Volume(adc_array((40, 46, 19), seed=11) * 1e-6, adc_affine((1.85, 1.85, 3.0)))
    shifted = json.loads(json.dumps(record))
    fg = shifted["channels"][0]["features"]["foreground_ml"]
    for k in ("min", "p01", "p05", "median", "p95", "p99", "max"):
        fg[k] *= 4
    flags = qc_flags([(right, "1e-6mm2/s")], shifted, ("ADC",))
    assert [f.feature for f in flags] == ["foreground_ml"]
    lo, hi = accepted_range(fg, "foreground_ml", record["margin"])
    assert lo < fg["p01"] and hi > fg["p99"]  # the margin widens, never narrows, the training range


def test_unit_never_seen_in_training_is_flagged(training):
    _, record = training
    right = Volume(adc_array((40, 46, 19), seed=11) * 1e-6, adc_affine((1.85, 1.85, 3.0)))
    flags = qc_flags([(right, "mm2/s")], record, ("ADC",))
    assert [f.feature for f in flags] == ["unit"] and "never seen in training" in flags[0].reason


def test_predictor_warns_through_the_checkpoints_record(training, tmp_path):
    _, record = training
    ckpt = make_checkpoint(tmp_path / "m")
    raw = json.loads((ckpt / "config.json").read_text())
    raw["input_qc"] = record
    (ckpt / "config.json").write_text(json.dumps(raw))
    predictor = Predictor.from_pretrained(ckpt, device="cpu")
    right = write_nifti(tmp_path / "right.nii.gz", adc_array((40, 46, 19), seed=12), adc_affine((1.85, 1.85, 3.0)))
    t1 = adult_t1_head()
    wrong = write_nifti(tmp_path / "t1.nii.gz", t1.data, t1.affine)
    ok, bad = predictor.predict(right), predictor.predict(wrong)
    assert not [w for w in ok.warnings if w.startswith(PREFIX)]
    qc = [w for w in bad.warnings if w.startswith(PREFIX)]
    assert qc and all("t1.nii.gz" in w for w in qc)
    plain = Predictor.from_pretrained(make_checkpoint(tmp_path / "plain"), device="cpu").predict(wrong)
    assert not [w for w in plain.warnings if w.startswith(PREFIX)]  # no record, no QC warning


def test_annotate_an_existing_checkpoint_from_its_training_config(training, tmp_path):
    cohort, _ = training
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject,path,outcome\n" + "".join(f"{c.subject},{c.paths[0]},{c.target}\n" for c in cohort.cases))
    config = tmp_path / "cfg.yaml"
    config.write_text(f"data: {{format: csv, path: {manifest}, target: outcome}}\n")
    ckpt = make_checkpoint(tmp_path / "m")
    raw = annotate_checkpoint(ckpt, config, workers=1)
    assert raw["input_qc"]["n_cases"] == 8
    from age2hie_hub.hub import read_config

    assert read_config(ckpt).input_qc["channels"][0]["n"] == 8


def test_features_of_skull_stripped_and_whole_head_scans_differ_where_expected():
    adc = channel_features(Volume(adc_array() * 1e-6, adc_affine()), "ADC", "1e-6mm2/s")
    t1 = channel_features(adult_t1_head(), "T1w")
    assert adc["zero_fraction"] > 0.3 > t1["zero_fraction"]  # masked background vs noise
    assert t1["background_ratio"] > adc["background_ratio"]
    assert t1["foreground_ml"] > 5 * adc["foreground_ml"] and t1["extent_mm"] > 1.5 * adc["extent_mm"]


def test_a_malformed_record_is_refused_when_the_model_loads(tmp_path):
    from age2hie_hub.errors import CheckpointError

    ckpt = make_checkpoint(tmp_path / "m")
    raw = json.loads((ckpt / "config.json").read_text())
    raw["input_qc"] = {"channels": [{"features": {"foreground_ml": {"median": 400}}}]}
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="foreground_ml"):
        Predictor.from_pretrained(ckpt, device="cpu")


def test_input_stats_command_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    from age2hie_hub.train.input_stats import main

    ckpt = make_checkpoint(tmp_path / "m")
    before = (ckpt / "config.json").read_bytes()
    assert main([str(ckpt), "--config", str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml" in err[0]
    (tmp_path / "nodata.yaml").write_text("seed: 0\n")
    assert main([str(ckpt), "--config", str(tmp_path / "nodata.yaml")]) == 1
    assert "no data section" in capsys.readouterr().err
    assert (ckpt / "config.json").read_bytes() == before


def test_quantiles_equal_sorting_with_many_zeros():
    """The zero-aware ranking (masked backgrounds are mostly exact zeros) picks the same elements as a sort."""
    from age2hie_hub.inference.qc import _quantiles

    rng = np.random.default_rng(11)
    qs = (0.0, 0.05, 0.5, 0.9, 0.95, 0.99, 1.0)
    for zero_share in (0.0, 0.3, 0.9, 1.0):
        for negative in (False, True):
            values = rng.normal(size=5000) if negative else rng.gamma(2.0, size=5000)
            values[rng.random(values.size) < zero_share] = 0.0
            ranked = np.sort(values)
            want = [float(ranked[min(values.size - 1, int(q * (values.size - 1)))]) for q in qs]
            assert _quantiles(values.astype(np.float32), qs) == [float(np.float32(w)) for w in want]
            assert _quantiles(values, qs) == want


def test_features_of_float32_and_float64_data_agree():
    """Float32 maps are ranked in float32: the features equal those of the same values held as float64."""
    from age2hie_hub.inference.qc import channel_features

    rng = np.random.default_rng(12)
    data = rng.gamma(2.0, 5e-4, size=(40, 40, 30)).astype(np.float32)
    data[:8] = 0.0
    single = channel_features(Volume(data, np.diag([2.0, 2.0, 2.0, 1.0])), "ADC", "mm2/s")
    double = channel_features(Volume(data.astype(np.float64), np.diag([2.0, 2.0, 2.0, 1.0])), "ADC", "mm2/s")
    assert single == double


def test_moments_and_profiles_equal_their_plain_definitions():
    """The skewness (central moments as dot products) and the extent's per-axis voxel counts (from one plane)
    equal the textbook forms: mean(((x - mean) / sd) ** 3) and a sum over the two other axes."""
    from age2hie_hub.inference.qc import _profiles

    rng = np.random.default_rng(13)
    data = (rng.gamma(1.5, 300.0, size=(30, 41, 23)) * (rng.random((30, 41, 23)) < 0.7)).astype(np.float32)
    features = channel_features(Volume(data, np.diag([4.0, 4.0, 4.0, 1.0])), "T1")  # coarse: every voxel sampled
    top = np.sort(np.abs(data).ravel())[int(0.99 * (data.size - 1))]
    values = data[np.abs(data) > np.float64(0.1 * top)].astype(np.float64)  # FOREGROUND_FRACTION's share
    plain = np.mean(((values - values.mean()) / values.std()) ** 3)
    assert features["skewness"] == pytest.approx(plain, rel=1e-12)
    assert abs(features["skewness"]) > 0.1  # a skewed sample: the check is not 0 == 0

    mask = rng.random((17, 29, 11)) < 0.3
    for axis, counts in enumerate(_profiles(mask)):
        assert np.array_equal(counts, mask.sum(axis=tuple(a for a in range(3) if a != axis)))
