"""Lesion burden from BONBID-HIE lesion masks (a proxy target): handmade volumes with a known answer, three real
cases from ../shared/data/bonbid2023 (skipped where absent), the age2hie-train lesion-targets and score commands."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_train_manifest_bonbid import REAL, real_bonbid_copy

from age2hie_hub.io import Volume, read_volume
from age2hie_hub.io.writer import write_volume
from age2hie_hub.train.cli import main
from age2hie_hub.train.lesion_targets import brain_region, lesion_burden, lesion_targets, target_column, write_targets
from age2hie_hub.train.manifest import ManifestError, list_bonbid

AFF = np.diag([2.0, 2.0, 3.0, 1.0])
SHAPE = (24, 24, 16)


def brain_and_lesion(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ADC in 1e-6 mm^2/s with a zero background, lesion mask, true brain mask).

    Inside the brain: fitting-noise voxels that are negative or exactly 0 (they are brain, and are inside the
    lesion here); outside it: nothing but 0.
    """
    g = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij"))
    brain = (((g / np.array([9, 10, 6])[:, None, None, None]) ** 2).sum(0)) < 1
    adc = np.where(brain, rng.normal(1200, 150, SHAPE), 0).astype(np.float32)
    lesion = brain & (np.abs(g[0] - 3) < 3) & (np.abs(g[1]) < 3) & (np.abs(g[2]) < 2)
    adc[lesion] = 450
    cells = np.argwhere(lesion)
    adc[tuple(cells[0])] = -300.0  # negative ADC from fitting noise
    adc[tuple(cells[1])] = 0.0  # an exact zero inside the brain
    return adc, lesion.astype(np.float32), brain


def write_case(root: Path, cid: str, adc: np.ndarray, lesion: np.ndarray, zadc: np.ndarray | None = None) -> None:
    for sub in ("1ADC_ss", "2Z_ADC", "3LABEL"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    write_volume(Volume(adc, AFF), root / "1ADC_ss" / f"{cid}-ADC_ss.mha")
    write_volume(Volume(lesion, AFF), root / "3LABEL" / f"{cid}_lesion.mha")
    if zadc is not None:
        write_volume(Volume(zadc, AFF), root / "2Z_ADC" / f"Zmap_{cid}-ADC_smooth2mm_clipped10.mha")


def test_burden_is_lesion_over_brain_whatever_the_background(tmp_path):
    rng = np.random.default_rng(0)
    adc, lesion, brain = brain_and_lesion(rng)
    truth = lesion.sum() / brain.sum()
    zadc = np.where(brain, rng.normal(0, 2, SHAPE), 0).astype(np.float32)
    noisy = np.where(brain, adc, rng.uniform(200, 3000, SHAPE)).astype(np.float32)  # not skull-stripped
    write_case(tmp_path, "MGHNICU_001-VISIT_01", adc, lesion, zadc)  # the published form: zero background
    write_case(tmp_path, "MGHNICU_002-VISIT_01", np.where(brain, adc, 7.0).astype(np.float32), lesion)  # constant 7
    write_case(tmp_path, "MGHNICU_003-VISIT_01", noisy, lesion, zadc)  # noise: the Z-ADC map's region is used
    rows = {r.case_id: r for r in lesion_targets(tmp_path)}
    for cid, source in (("MGHNICU_001-VISIT_01", "adc"), ("MGHNICU_002-VISIT_01", "adc"),
                        ("MGHNICU_003-VISIT_01", "zadc")):
        assert rows[cid].brain_from == source
        assert rows[cid].burden == pytest.approx(truth, rel=1e-9), cid
        assert rows[cid].site == "MGH" and rows[cid].subject_id == cid.split("-")[0]
    # `ADC > 0` would have dropped the negative and the zero voxel from the brain: this definition keeps them
    assert rows["MGHNICU_001-VISIT_01"].brain_voxels == int(brain.sum())
    assert rows["MGHNICU_001-VISIT_01"].brain_voxels > int((adc > 0).sum())
    assert rows["MGHNICU_001-VISIT_01"].lesion_outside_brain == 0
    # Negative control: noise without a Z-ADC map falls back to a foreground mask, and the answer is not exact.
    mask, source = brain_region(noisy, None)
    assert source == "adc_otsu" and mask.sum() != brain.sum()


def test_specks_are_dropped_and_lesions_count_as_brain(tmp_path):
    rng = np.random.default_rng(1)
    adc, lesion, brain = brain_and_lesion(rng)
    adc[0, 0, 8] = 1500.0  # an isolated speck left by skull stripping: not brain
    lesion[12, 22, 8] = 1.0  # a lesion voxel just outside the ADC's non-zero region: brain, and recorded
    write_case(tmp_path, "MGHNICU_004-VISIT_01", adc, lesion)
    (row,) = lesion_targets(tmp_path)
    assert row.brain_voxels == int(brain.sum()) + 1 and row.lesion_outside_brain == 1


def test_table_columns_threshold_and_no_outcome_wording(tmp_path):
    rng = np.random.default_rng(2)
    adc, lesion, brain = brain_and_lesion(rng)
    write_case(tmp_path / "d", "MGHNICU_005-VISIT_01", adc, lesion)
    write_case(tmp_path / "d", "MGHNICU_006-VISIT_01", adc, np.zeros_like(lesion))
    rows = lesion_targets(tmp_path / "d")
    out = write_targets(rows, tmp_path / "t.csv")
    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[:5] == ["case_id", "subject_id", "site", "lesion_burden", "lesion_burden_ge_1pct"]
    assert [r["lesion_burden_ge_1pct"] for r in table] == ["1", "0"]
    assert "outcome" not in out.read_text().lower()
    assert target_column(0.005) == "lesion_burden_ge_0.5pct" and target_column(0.01) == "lesion_burden_ge_1pct"
    burden = rows[0].burden
    high = write_targets(rows, tmp_path / "t2.csv", threshold=min(0.99, burden * 1.01))
    assert "lesion_burden_ge_" in high.read_text() and ",0," in high.read_text().splitlines()[1]


def test_bad_masks_are_named(tmp_path):
    rng = np.random.default_rng(3)
    adc, lesion, _ = brain_and_lesion(rng)
    write_case(tmp_path / "a", "MGHNICU_007-VISIT_01", adc, lesion[:, :, :-1].copy())
    with pytest.raises(ManifestError, match=r"MGHNICU_007-VISIT_01_lesion.mha: the lesion mask's grid"):
        lesion_targets(tmp_path / "a")
    write_case(tmp_path / "b", "MGHNICU_008-VISIT_01", adc, lesion)
    (tmp_path / "b" / "3LABEL" / "MGHNICU_008-VISIT_01_lesion.mha").unlink()
    with pytest.raises(ManifestError, match=r"3LABEL: no lesion mask for 1 case\(s\), e.g. MGHNICU_008-VISIT_01"):
        lesion_targets(tmp_path / "b")


def test_cli_writes_the_table_and_fails_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(4)
    adc, lesion, _ = brain_and_lesion(rng)
    write_case(tmp_path / "d", "MGHNICU_009-VISIT_01", adc, lesion)
    write_case(tmp_path / "d", "MGHNICU_010-VISIT_01", adc, np.zeros_like(lesion))
    assert main(["lesion-targets", str(tmp_path / "d"), "-o", str(tmp_path / "out" / "targets.csv"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_cases"] == 2 and summary["n_positive"] == 1 and summary["column"] == "lesion_burden_ge_1pct"
    assert (tmp_path / "out" / "targets.csv").is_file()
    assert main(["lesion-targets", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere: not a BONBID-HIE folder" in err[0]
    assert not (tmp_path / "x.csv").exists()


# ---- real cases ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bonbid_real(shared_data, tmp_path_factory) -> Path:
    return real_bonbid_copy(shared_data, tmp_path_factory, "3LABEL")


def test_real_cases_burden(bonbid_real, tmp_path):
    rows = {r.case_id: r for r in lesion_targets(bonbid_real)}
    assert set(rows) == set(REAL)
    for r in rows.values():
        assert r.brain_from == "adc" and 250 < r.brain_voxels * r.voxel_ml < 650  # a newborn's brain, mL
    assert rows["MGHNICU_432-VISIT_01"].burden == 0  # empty mask
    assert 0.005 < rows["MGHNICU_303-VISIT_01"].burden < 0.01  # just under the threshold
    assert 0.2 < rows["MGHNICU_062-VISIT_01"].burden < 0.3
    # The same real anatomy with its background rewritten as a constant: the same burden.
    case = next(c for c in list_bonbid(bonbid_real) if c.case_id == "MGHNICU_062-VISIT_01")
    vol = read_volume(case.adc)
    moved = tmp_path / "moved"
    write_case(moved, case.case_id, np.where(vol.data != 0, vol.data, 5.0).astype(np.float32),
               read_volume(case.label).data)
    (again,) = lesion_targets(moved)
    assert again.brain_voxels == rows[case.case_id].brain_voxels and again.burden == rows[case.case_id].burden


def test_score_command_on_real_cases(bonbid_real, tmp_path, capsys):
    """The bundled outcome model scored against the proxy target on three real cases: files and wording."""
    table = write_targets(lesion_targets(bonbid_real), tmp_path / "targets.csv")
    cfg = tmp_path / "score.yaml"
    cfg.write_text(json.dumps({"model": "age2hie", "n_boot": 50, "run_dir": str(tmp_path / "score"),
                               "data": {"format": "bonbid", "path": str(bonbid_real), "table": str(table),
                                        "target": "lesion_burden_ge_1pct"}}))
    assert main(["score", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_cases"] == 3 and out["n_positive"] == 1 and out["model_task"] == "hie_outcome"
    assert 0 <= out["metrics"]["auc"]["value"] <= 1 and out["metrics"]["brier"]["value"] >= 0
    for name in ("predictions.csv", "metrics.json", "table.md", "reliability.png"):
        assert (tmp_path / "score" / name).is_file(), name
    md = (tmp_path / "score" / "table.md").read_text()
    assert "lesion_burden_ge_1pct" in md and ("SYNTHETIC" in md) == out["model_synthetic"]
    # a continuous target cannot be scored against a probability
    cfg.write_text(json.dumps({"model": "age2hie", "run_dir": str(tmp_path / "s2"),
                               "data": {"format": "bonbid", "path": str(bonbid_real), "table": str(table),
                                        "target": "lesion_burden", "task": "regression"}}))
    assert main(["score", str(cfg)]) == 1
    assert "must have two classes" in capsys.readouterr().err
