"""The BONBID-HIE reader on the challenge's real file names: three real cases from ../shared/data/bonbid2023
(linked into a temporary folder, never copied into the project), plus handmade folders for the error paths."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from age2hie_hub.io import Volume
from age2hie_hub.io.writer import write_volume
from age2hie_hub.train.manifest import ManifestError, list_bonbid, read_bonbid, read_cohort, site_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Three real cases: an oblique real header (~0.3 rad off axis), a case whose geometry was rebuilt
# (geometry_rebuilt.txt) with a large lesion, and one whose lesion mask is empty.
REAL = ("MGHNICU_303-VISIT_01", "MGHNICU_062-VISIT_01", "MGHNICU_432-VISIT_01")


def link_real_cases(src: Path, dst: Path, cases=REAL) -> Path:
    """A BONBID-HIE folder of symbolic links to real cases (the real names, nothing copied)."""
    names = {"1ADC_ss": "{c}-ADC_ss.mha", "2Z_ADC": "Zmap_{c}-ADC_smooth2mm_clipped10.mha",
             "3LABEL": "{c}_lesion.mha"}
    for folder, pattern in names.items():
        (dst / folder).mkdir(parents=True, exist_ok=True)
        for c in cases:
            target = src / folder / pattern.format(c=c)
            if not target.is_file():
                pytest.skip(f"real case {target} is not in this copy of bonbid2023")
            (dst / folder / target.name).symlink_to(target)
    return dst


def real_bonbid_copy(shared_data: Path, tmp_path_factory, needs: str) -> Path:
    """link_real_cases from the shared bonbid2023 folder, or a skip naming it when its ``needs`` folder is absent."""
    src = shared_data / "bonbid2023"
    if not (src / needs).is_dir():
        pytest.skip(f"real BONBID-HIE cases not found at {src} (set AGE2HIE_SHARED_DATA to the shared data folder)")
    return link_real_cases(src, tmp_path_factory.mktemp("bonbid_real"))


@pytest.fixture(scope="module")
def bonbid_real(shared_data, tmp_path_factory) -> Path:
    return real_bonbid_copy(shared_data, tmp_path_factory, "1ADC_ss")


def test_real_names_subject_ids_and_derived_site(bonbid_real, tmp_path):
    cases = list_bonbid(bonbid_real)
    assert [c.case_id for c in cases] == sorted(REAL)
    assert {c.subject_id for c in cases} == {c.split("-VISIT")[0] for c in REAL}
    assert {c.site for c in cases} == {"MGH"}  # from the MGHNICU prefix: no site column anywhere
    assert all(c.zadc.name == f"Zmap_{c.case_id}-ADC_smooth2mm_clipped10.mha" for c in cases)
    assert all(c.label.name == f"{c.case_id}_lesion.mha" for c in cases)
    # A target table kept OUTSIDE the data folder, keyed by subject id (one scan each) and without a site.
    table = tmp_path / "elsewhere" / "targets.csv"
    table.parent.mkdir()
    table.write_text("subject_id,burden_ge_1pct\nMGHNICU_303,0\nMGHNICU_062,1\nMGHNICU_432,0\n")
    cohort = read_bonbid(bonbid_real, table, target="burden_ge_1pct", channels=("ADC", "Z-ADC"))
    assert cohort.n_channels == 2 and cohort.modalities == ("ADC", "Z-ADC")
    assert set(cohort.sites) == {"MGH"} and cohort.classes == ("0", "1")
    first = cohort.cases[0]
    assert first.subject == "MGHNICU_303" and first.target == "0"
    assert first.paths[0].endswith("MGHNICU_303-VISIT_01-ADC_ss.mha")
    assert first.paths[1].endswith("Zmap_MGHNICU_303-VISIT_01-ADC_smooth2mm_clipped10.mha")
    # the same through a config's data spec, keyed by the case id
    table2 = tmp_path / "t2.csv"
    table2.write_text("case_id,y\n" + "\n".join(f"{c},{i % 2}" for i, c in enumerate(REAL)) + "\n")
    spec = read_cohort({"format": "bonbid", "path": str(bonbid_real), "table": str(table2), "target": "y"})
    assert spec.subjects == list(REAL) and spec.n_channels == 1


def test_real_two_channel_cases_preprocess_train_and_predict(bonbid_real, tmp_path):
    """ADC + Z-ADC (channels: 2) on real oblique / rebuilt headers: cache, a scratch transfer run, a prediction."""
    from age2hie_hub.inference import Predictor
    from age2hie_hub.train.augment import AugmentConfig
    from age2hie_hub.train.config import MethodConfig, TransferConfig
    from age2hie_hub.train.loop import LoopConfig
    from age2hie_hub.train.stages import transfer

    table = tmp_path / "t.csv"
    table.write_text("case_id,y\nMGHNICU_303-VISIT_01,0\nMGHNICU_062-VISIT_01,1\nMGHNICU_432-VISIT_01,0\n")
    one = LoopConfig(epochs=1, batch_size=3, lr=1e-3, progress=False)
    cfg = TransferConfig(
        data={"format": "bonbid", "path": str(bonbid_real), "table": str(table), "target": "y",
              "channels": ["ADC", "Z-ADC"]},
        method=MethodConfig("scratch", "scratch", model={"arch": "resnet3d_10", "arch_args": {"width": 0.125}},
                            stages=("scratch",)),
        preprocess={"spacing": [3.5, 3.5, 3.5], "shape": [32, 36, 28]}, head="classification", scratch=one,
        augment=AugmentConfig(enabled=False), test_fraction=0.0, run_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"), preprocess_workers=0)
    out = transfer(cfg)
    arrays = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(arrays) == 3
    for path in arrays:
        a = np.load(path).astype(np.float32)
        assert a.shape == (2, 32, 36, 28) and np.isfinite(a).all()
        # both channels hold the brain: Z-ADC is resampled onto the ADC's output grid, not left empty
        assert (a[0] != 0).mean() > 0.15 and (a[1] != 0).mean() > 0.15
        assert ((a[0] != 0) & (a[1] != 0)).sum() > 0.8 * (a[1] != 0).sum()
    predictor = Predictor.from_pretrained(out["checkpoint"], device="cpu")
    assert predictor.config.preprocess.channels == 2 and predictor.config.input_modalities == ("ADC", "Z-ADC")
    case = list_bonbid(bonbid_real)[-1]  # MGHNICU_432: oblique real header
    pred = predictor.predict(case.adc, second_channel=case.zadc)
    assert pred.probabilities is not None and abs(sum(pred.probabilities) - 1) < 1e-5
    assert any("oblique" in n for n in pred.notes)


# ---- handmade folders: names, matching and errors ------------------------------------------------------------

def _write(path: Path, value: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((6, 6, 4), np.float32)
    data[1:5, 1:5, 1:3] = value
    write_volume(Volume(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)


def make_named(root: Path, ids, zmap=True, label=True) -> Path:
    for i in ids:
        _write(root / "1ADC_ss" / f"{i}-ADC_ss.mha")
        if zmap:
            _write(root / "2Z_ADC" / f"Zmap_{i}-ADC_smooth2mm_clipped10.mha", 2.0)
        if label:
            _write(root / "3LABEL" / f"{i}_lesion.mha")
    return root


def test_zmaps_of_ids_sharing_a_prefix_go_to_their_own_case(tmp_path):
    root = make_named(tmp_path, ["MGHNICU_01-VISIT_01", "MGHNICU_010-VISIT_01", "MGHNICU_010-VISIT_02"])
    cases = {c.case_id: c for c in list_bonbid(root)}
    for cid, c in cases.items():
        assert c.zadc.name.startswith(f"Zmap_{cid}-") and c.label.name == f"{cid}_lesion.mha"


def test_site_from_the_hospital_prefix():
    assert site_of("MGHNICU_010-VISIT_01") == "MGH" and site_of("BCHNICU_7-VISIT_01") == "BCH"
    assert site_of("BCH_001") == "BCH" and site_of("XYZ12") == "XYZ"


def test_errors_name_the_file(tmp_path, caplog):
    root = make_named(tmp_path / "a", ["MGHNICU_001-VISIT_01", "MGHNICU_002-VISIT_01"])
    with pytest.raises(ManifestError, match=r"found 0 target tables .* table: .*lesion-targets"):
        read_bonbid(root)
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,y\nMGHNICU_001-VISIT_01,1\nMGHNICU_003-VISIT_01,0\n")
    with pytest.raises(ManifestError, match=r"bad.csv line 3: no .*1ADC_ss/MGHNICU_003-VISIT_01-ADC_ss.mha"):
        read_bonbid(root, bad, target="y")
    dup = tmp_path / "dup.csv"
    dup.write_text("subject_id,y\nMGHNICU_001,1\nMGHNICU_001-VISIT_01,0\n")
    with pytest.raises(ManifestError, match="dup.csv line 3: case MGHNICU_001-VISIT_01 appears twice"):
        read_bonbid(root, dup, target="y")
    good = tmp_path / "good.csv"
    good.write_text("subject_id,y\nMGHNICU_001,1\nMGHNICU_002,0\n")
    with caplog.at_level(logging.INFO, logger="age2hie_hub.train.manifest"):
        cohort = read_bonbid(root, outcome_table=good, target="y")  # the older keyword still works
    assert cohort.subjects == ["MGHNICU_001", "MGHNICU_002"]
    # a second visit makes a subject id ambiguous: the table must give the case id
    _write(root / "1ADC_ss" / "MGHNICU_001-VISIT_02-ADC_ss.mha")
    with pytest.raises(ManifestError, match=r"good.csv line 2: subject MGHNICU_001 has 2 scans"):
        read_bonbid(root, good, target="y")
    # Z-ADC requested but missing for a case: the error names the ADC file it belongs to
    noz = make_named(tmp_path / "b", ["MGHNICU_005-VISIT_01"], zmap=False)
    (noz / "t.csv").write_text("case_id,y\nMGHNICU_005-VISIT_01,1\n")
    with pytest.raises(ManifestError, match=r"no 2Z_ADC/Zmap_MGHNICU_005-VISIT_01.* beside .*MGHNICU_005-VISIT_01-ADC_ss.mha"):
        read_bonbid(noz, target="y", channels=("ADC", "Z-ADC"))
    # two Z-ADC maps for one case
    _write(noz / "2Z_ADC" / "Zmap_MGHNICU_005-VISIT_01-ADC_smooth2mm_clipped10.mha")
    _write(noz / "2Z_ADC" / "Zmap_MGHNICU_005-VISIT_01-other.mha")
    with pytest.raises(ManifestError, match=r"two files for case MGHNICU_005-VISIT_01: Zmap_.*and Zmap_"):
        list_bonbid(noz)
    with pytest.raises(ManifestError, match="not a BONBID-HIE folder"):
        list_bonbid(tmp_path / "missing")
