"""Synthetic cohorts: the documented effects are present in the generated data, files are readable by
nibabel/SimpleITK/read_volume, and the same seed gives the same bytes. Small grids keep this fast."""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from age2hie_hub.synth import hie, t1
from age2hie_hub.synth.cohort import SyntheticCohort, make_brain_age_cohort, make_hie_cohort

COARSE_T1 = (3.0, 3.0, 3.0)
COARSE_HIE = (2.0, 2.0, 3.0)


def _t1(age: float, sex: str = "F", site: str = "A", seed: int = 7, spacing=COARSE_T1):
    return t1.synth_t1(np.random.default_rng(seed), age, sex, site, spacing=spacing)


@pytest.fixture(scope="module")
def ageing():
    """One person (same seed, so same individual draws) at three ages."""
    return {age: _t1(age) for age in (25.0, 60.0, 90.0)}


def test_ventricles_expand_and_grey_matter_thins_with_age(ageing):
    vent = [ageing[a][1]["ventricle_ml"] for a in (25.0, 60.0, 90.0)]
    gm = [ageing[a][1]["gm_ml"] for a in (25.0, 60.0, 90.0)]
    csf = [ageing[a][1]["csf_ml"] for a in (25.0, 60.0, 90.0)]
    assert vent[0] < vent[1] < vent[2] and vent[2] > 1.5 * vent[0]
    assert gm[0] > gm[1] > gm[2] and gm[2] < 0.95 * gm[0]
    assert csf[0] < csf[2]
    # intracranial volume barely moves while the brain shrinks inside it
    icv = [ageing[a][1]["icv_ml"] for a in (25.0, 90.0)]
    assert abs(icv[1] / icv[0] - 1) < 0.06


def test_csf_expansion_is_visible_in_the_image(ageing):
    """Voxels with CSF-like intensity (between half the CSF level and the CSF/GM midpoint) grow with age.
    Same seed at every age: pose, bias and noise are identical, only anatomy and contrast change."""
    from age2hie_hub.synth.sites import T1_SITES

    def csf_like(vol, truth):
        it, gain = truth["intensity"], T1_SITES["A"].gain * truth["gain"]
        return int(((vol.data > 0.5 * it["csf"] * gain) & (vol.data < 0.5 * (it["csf"] + it["gm"]) * gain)).sum())

    counts = [csf_like(*ageing[a]) for a in (25.0, 60.0, 90.0)]
    assert counts[0] < counts[1] < counts[2]


def test_newborn_head_is_small_with_inverted_t1_contrast():
    baby_vol, baby = _t1(0.05)
    adult_vol, adult = _t1(30.0)
    assert 0.25 < baby["icv_ml"] / adult["icv_ml"] < 0.5
    assert baby["intensity"]["gm"] > baby["intensity"]["wm"]  # unmyelinated WM darker than GM
    assert adult["intensity"]["wm"] > adult["intensity"]["gm"]
    assert t1.growth_volume_fraction(0) == pytest.approx(0.33, abs=0.01)
    assert 0.65 < t1.growth_volume_fraction(1) < 0.75 and t1.growth_volume_fraction(20) > 0.99


def test_sex_effect_on_head_size():
    _, f = _t1(40.0, "F")
    _, m = _t1(40.0, "M")
    assert m["icv_ml"] / f["icv_ml"] == pytest.approx(1.045 / 0.955, rel=0.02)


def test_t1_sites_differ_in_grid_orientation_and_scale():
    out = {s: t1.synth_t1(np.random.default_rng(3), 50.0, "F", s) for s in ("A", "B", "C")}
    assert {s: nib.aff2axcodes(v.affine) for s, (v, _) in out.items()} == {
        "A": ("R", "A", "S"), "B": ("L", "A", "S"), "C": ("L", "P", "S")}
    spacings = {s: tuple(round(x, 3) for x in v.spacing) for s, (v, _) in out.items()}
    assert spacings == {"A": (1.5, 1.5, 1.5), "B": (2.0, 2.0, 2.0), "C": (1.6, 1.6, 2.0)}
    p99 = {s: np.percentile(v.data, 99) for s, (v, _) in out.items()}
    assert p99["B"] > 1.3 * p99["A"] > 1.3 * p99["C"]
    assert all(np.allclose(v.data, np.round(v.data)) and v.data.min() >= 0 for v, _ in out.values())


def test_bad_subject_parameters_are_refused():
    with pytest.raises(ValueError, match="sex"):
        _t1(30.0, "X")
    with pytest.raises(ValueError, match="age"):
        _t1(-1.0)
    with pytest.raises(ValueError, match="pattern"):
        hie.synth_hie_case(np.random.default_rng(0), "BCH", pattern="stroke", spacing=COARSE_HIE)


def _case(pattern: str, site: str = "BCH", seed: int = 11, **kw):
    return hie.synth_hie_case(np.random.default_rng(seed), site, pattern=pattern, spacing=COARSE_HIE, **kw)


@pytest.mark.parametrize("pattern", ["watershed", "bgt", "near_total"])
def test_hie_lesion_size_location_and_adc_in_documented_ranges(pattern):
    adc, z, lesion, truth = _case(pattern)
    kind, lo, hi = hie.LESION_FRACTION[pattern]
    assert lo <= truth["lesion_fraction_target"] <= hi
    # the lesion realises the drawn size unless the slab cuts it (it does not at this coverage)
    assert truth["lesion_fraction"] == pytest.approx(truth["lesion_fraction_target"], rel=0.1)
    les = lesion.data > 0.5
    assert les.sum() > 0 and set(np.unique(lesion.data)) <= {0.0, 1.0}
    mm2s = adc.data / truth["adc_scale"]
    assert 0.3e-3 < mm2s[les].mean() < 1.2e-3  # restricted diffusion
    brain = (adc.data > 0) & ~les
    assert 1.0e-3 < np.median(mm2s[brain]) < 1.6e-3
    assert 2.5e-3 < np.percentile(mm2s[brain], 99.5) < 3.6e-3  # CSF ~3e-3 mm^2/s
    assert z.data[les].mean() < -2.0 and np.abs(z.data).max() <= 10.0
    assert np.all(z.data[adc.data == 0] == 0)
    if pattern == "bgt":
        assert truth["deep_gm_injured"]


def test_healthy_neonate_has_white_matter_above_grey_matter():
    adc, z, lesion, truth = _case("none")
    assert not lesion.data.any() and truth["lesion_volume_ml"] == 0
    v = truth["tissue_adc_1e-3mm2s"]
    assert v["wm"] > v["cortex"] > v["deep_gm"] and v["csf"] > 2.5
    assert 250 < truth["brain_volume_ml"] < 550  # a term newborn's brain (inside the slab)
    assert np.abs(z.data[adc.data > 0]).mean() < 2.0


def test_hie_sites_differ_in_scaling_and_geometry():
    bch = [hie.synth_hie_case(np.random.default_rng(s), "BCH", pattern="none") for s in range(2)]
    mgh = [hie.synth_hie_case(np.random.default_rng(s), "MGH", pattern="none") for s in range(2)]
    mean = lambda cases: np.mean([c[3]["stored_mean_in_mask"] for c in cases])  # noqa: E731
    assert 1250 < mean(bch) < 1500 and 1800 < mean(mgh) < 2200
    for adc, *_ in bch + mgh:
        sx, sy, sz = adc.spacing
        assert 0.7 <= sx <= 2.0 and sx == pytest.approx(sy) and 2.2 <= sz <= 3.0
        assert 23 <= adc.shape[2] <= 60
        assert nib.aff2axcodes(adc.affine) == ("L", "P", "S")
    assert max(c[0].spacing[0] for c in bch) < min(c[0].spacing[0] for c in mgh)
    assert all(np.allclose(c[0].data, np.round(c[0].data)) for c in bch)


def test_outcome_model_hits_the_base_rate_and_site_case_mix():
    sites = list(hie.HIE_SITES.values())
    weights = list(hie.HIE_SITE_WEIGHTS.values())
    b0 = hie.calibrate_intercept(hie.cohort_mix(sites, weights), 0.47)
    rng = np.random.default_rng(1)
    rates = {}
    for site in sites:
        names = list(site.pattern_mix)
        pats = rng.choice(names, 4000, p=np.array([site.pattern_mix[k] for k in names]))
        frac = np.array([hie.draw_lesion_fraction(rng, p) for p in pats])
        logit = hie.outcome_logit(frac, pats, b0) + rng.normal(0, hie.CLINICAL_SD, pats.size)
        rates[site.name] = float(np.mean(rng.uniform(size=pats.size) < 1 / (1 + np.exp(-logit))))
    overall = rates["BCH"] * weights[0] + rates["MGH"] * weights[1]
    assert overall == pytest.approx(0.47, abs=0.03)
    assert rates["BCH"] > rates["MGH"] + 0.1  # BCH's sicker case mix, as in BONBID-HIE
    with pytest.raises(ValueError, match="adverse rate"):
        hie.calibrate_intercept(hie.cohort_mix(sites, weights), 1.5)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_brain_age_cohort_is_bids_readable_and_reproducible(tmp_path):
    from age2hie_hub.io import read_volume

    a = make_brain_age_cohort(tmp_path / "a", 3, seed=5, age_range=(10, 80), spacing=(4, 4, 4))
    make_brain_age_cohort(tmp_path / "b", 3, seed=5, age_range=(10, 80), spacing=(4, 4, 4))
    make_brain_age_cohort(tmp_path / "c", 3, seed=6, age_range=(10, 80), spacing=(4, 4, 4))
    da, db, dc = (_digest(tmp_path / x) for x in "abc")
    assert da == db and da != dc
    assert isinstance(a, SyntheticCohort) and a.root == tmp_path / "a" and len(a.subjects) == 3
    with open(a.root / "participants.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert list(rows[0]) == ["participant_id", "age", "sex", "site"] and len(rows) == 3
    desc = json.loads((a.root / "dataset_description.json").read_text())
    assert "SYNTHETIC" in desc["Name"] and desc["BIDSVersion"]
    truth = json.loads((a.root / "synthetic_truth.json").read_text())
    assert truth["parameters"]["synthetic"] is True and len(truth["subjects"]) == 3
    for row, subj in zip(rows, truth["subjects"]):
        path = a.root / row["participant_id"] / "anat" / f"{row['participant_id']}_T1w.nii.gz"
        img = nib.load(path)
        vol = read_volume(path)
        assert 10 <= float(row["age"]) <= 80 and float(row["age"]) == pytest.approx(subj["age"])
        assert img.shape == vol.shape and np.allclose(img.affine, vol.affine, atol=1e-4)
        assert np.allclose(np.asarray(img.dataobj), vol.data)
    assert not list(tmp_path.glob(".*partial*"))  # the temporary build folder is gone


def test_hie_cohort_layout_readable_and_reproducible(tmp_path):
    import SimpleITK as sitk

    from age2hie_hub.io import read_volume

    c = make_hie_cohort(tmp_path / "a", 3, seed=2, spacing=COARSE_HIE)
    make_hie_cohort(tmp_path / "b", 3, seed=2, spacing=COARSE_HIE)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert isinstance(c, SyntheticCohort) and c.root == tmp_path / "a" and len(c.subjects) == 3
    with open(c.root / "outcomes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["site"] for r in rows] == ["BCH", "MGH", "MGH"]  # 72:84 split of 3
    assert {"case_id", "site", "outcome", "lesion_volume_ml"} <= set(rows[0])
    for r in rows:
        case = r["case_id"]
        paths = [c.root / "1ADC_ss" / f"{case}-ADC_ss.mha",
                 c.root / "2Z_ADC" / f"Zmap_{case}-ADC_smooth2mm_clipped10.mha",
                 c.root / "3LABEL" / f"{case}_lesion.mha"]
        arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in paths]
        assert arrays[0].shape == arrays[1].shape == arrays[2].shape
        vol = read_volume(paths[0])
        assert np.allclose(vol.data.T, arrays[0])
        les_ml = float(arrays[2].sum()) * math.prod(vol.spacing) / 1000
        assert les_ml == pytest.approx(float(r["lesion_volume_ml"]), rel=1e-3, abs=1e-6)
    with pytest.raises(ValueError, match="not empty"):
        make_hie_cohort(tmp_path / "a", 1, seed=2)


@pytest.mark.slow
def test_outcome_rate_of_a_generated_cohort_and_workers_do_not_change_bytes(tmp_path):
    c = make_hie_cohort(tmp_path / "one", 40, seed=9, spacing=(3.0, 3.0, 3.0))
    rate = np.mean([s["outcome"] for s in c.subjects])
    assert 0.3 < rate < 0.65
    make_hie_cohort(tmp_path / "two", 40, seed=9, spacing=(3.0, 3.0, 3.0), workers=2)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


def test_cli_writes_cohorts_and_montages(tmp_path, capsys):
    from age2hie_hub.cli.synth import main

    out = tmp_path / "t1"
    assert main(["brain-age", "--n", "2", "--out", str(out), "--seed", "1", "--spacing", "4", "--workers", "1",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"kind": "brain_age_t1", "n": 2, "out": str(out), "seed": 1, "synthetic": True}
    png = tmp_path / "m.png"
    assert main(["montage", str(out), "-o", str(png), "-q"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a non-empty output folder: one line, exit code 1, nothing changed
    before = _digest(out)
    assert main(["brain-age", "--n", "1", "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0]
    assert _digest(out) == before
    assert main(["montage", str(tmp_path), "-o", str(png)]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["hie", "--n", "0", "--out", str(tmp_path / "h")])
    assert exc.value.code == 2
