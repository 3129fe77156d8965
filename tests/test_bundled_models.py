"""The bundled default models (age2hie_hub/data/models/{age2hie,brain-age}/): offline loading, pinned hashes,
licences, the CLI on the shipped example scan, golden outputs for both backends, and a sane brain age.

They are rebuilt with ``python -m export.build_default_models --work DIR`` (docs/release.md). A rebuild that
changes the weights changes GOLDEN below: the build prints the new values (``golden``).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from age2hie_hub.errors import CheckpointError
from age2hie_hub.hub import resolve as resolve_mod
from age2hie_hub.hub.resolve import BUNDLED_DIR

NAMES = ("age2hie", "brain-age")
RELEASE_FILES = {"config.json", "model.safetensors", "model.onnx", "README.md", "RELEASE.md", "SHA256SUMS",
                 "LICENSE-DATA.md"}
MAX_BYTES = 15_000_000

# Measured when the bundle was built, for the weights whose SHA-256 is given: the age2hie model's P(adverse
# outcome) on age2hie_hub/data/examples/synthetic_neonatal_adc.nii.gz, and the brain-age model's (raw) brain
# age in years on export.build_default_models.golden_t1_volume().
GOLDEN = {
    "weights_sha256": "18fc0fc250179e532d8a18315f25ca68f0facd5351ff588b6959b65475b38c5d",
    "torch": 0.5685490965843201,
    "onnx": 0.5685490965843201,
}
GOLDEN_BRAIN_AGE = {
    "weights_sha256": "a1986818f3b17482a164a4a76e5a18b5e6755c2c374f9c99e6bb76fd0b346e91",
    "torch": 2.7047386169433594,
    "onnx": 2.7047271728515625,
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _require(name: str) -> Path:
    folder = BUNDLED_DIR / name
    if not (folder / "config.json").is_file():
        pytest.fail(f"{folder} is missing: rebuild it with python -m export.build_default_models --work DIR")
    return folder


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh install without network: offline mode, and any attempt to reach the Hub fails the test."""
    import huggingface_hub
    import huggingface_hub.constants  # noqa: F401  # read the environment now: constants are fixed at import

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a bundled model must load without contacting the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)


@pytest.mark.parametrize("name", NAMES)
def test_bundled_folder_is_a_small_pinned_release_with_its_data_licence(name: str) -> None:
    from age2hie_hub.hub import read_config

    folder = _require(name)
    files = {p.name for p in folder.iterdir() if p.is_file()}
    assert files == RELEASE_FILES
    assert sum((folder / f).stat().st_size for f in files) <= MAX_BYTES
    sums = dict(reversed(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == RELEASE_FILES - {"SHA256SUMS"}
    assert all(_sha256(folder / f) == digest for f, digest in sums.items())
    config = read_config(folder)
    assert config.provenance["library_version"] and config.provenance["seed"] == 0
    # Both weights descend from IXI (brain-age directly, age2hie through its parent): share-alike, credited,
    # and the SBIA agreement's Part B travels with them.
    card = (folder / "README.md").read_text(encoding="utf-8")
    header, body = card.split("---", 2)[1:]
    assert "license: cc-by-sa-4.0" in header
    terms = (folder / "LICENSE-DATA.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in terms and "IXI" in terms and "PART B. DOWNLOADING AGREEMENT" in terms
    assert "have been obtained under license from the Section of Biomedical Image Analysis" in terms
    first_lines = "\n".join(body.strip().splitlines()[:4]).lower()
    if name == "age2hie":  # synthetic outcome labels and scans: the card's first lines say so
        assert config.provenance["synthetic"] is True and "synthetic" in first_lines
    else:  # real data: nothing calls it synthetic (the provenance table's "synthetic | False" row aside)
        assert config.provenance["synthetic"] is False
        assert "synthetic" not in card.lower().replace("| synthetic | false |", "")
        assert "IXI" in card and "not a clinical decision tool" in card


def test_age2hie_is_transferred_from_the_bundled_brain_age_and_covers_a_neonatal_brain() -> None:
    from age2hie_hub.hub import read_config

    hie, brain = read_config(_require("age2hie")), read_config(_require("brain-age"))
    assert hie.task == "hie_outcome" and hie.input_modalities == ("ADC",) and hie.preprocess.channels == 1
    assert brain.task == "brain_age" and hie.model.arch == brain.model.arch == "resnet3d_10"
    assert hie.provenance["parent"] == "age2hie-hub/brain-age"
    assert hie.provenance["parent_weights_sha256"] == _sha256(BUNDLED_DIR / "brain-age" / "model.safetensors")
    assert hie.provenance["n_training_cases"] == 156 and brain.provenance["n_training_cases"] == 151
    # Field of view of the network's grid (mm): a term neonate's brain is about 90 x 110 x 75 mm.
    fov = np.multiply(hie.preprocess.spacing, hie.preprocess.shape)
    assert (fov >= (100, 115, 85)).all(), fov


def test_brain_age_records_its_cross_validation_bias_line_and_residuals() -> None:
    from age2hie_hub.hub import read_config

    config = read_config(_require("brain-age"))
    m = config.metrics
    assert m["split"] == "none" and m["n_train"] + m["n_val"] == 151 and "test_mae" not in m  # no resubstitution
    cv = m["cv"]["methods"]
    assert set(cv) >= {"cnn", "mean", "ridge_dlmuse"} and m["cv"]["n"] == 151
    for method in ("cnn", "ridge_dlmuse"):
        s = cv[method]["mae"]
        assert s["ci95"][0] < s["value"] < s["ci95"][1]
        assert s["value"] < cv["mean"]["mae"]["value"]  # both beat predicting the training mean
    line = m["age_bias_correction"]
    assert line["needs_chronological_age"] is True and 0 < line["b"] < 1  # regression to the mean, measured
    pairs = np.array(m["cv_residuals"]["pairs"])
    assert pairs.shape == (151, 2) and 20 <= pairs[:, 0].min() and pairs[:, 0].max() <= 83
    assert np.mean(np.abs(pairs[:, 1])) == pytest.approx(cv["cnn"]["mae"]["value"], abs=2e-3)
    assert config.training_range["age"] == [pytest.approx(20, abs=1), pytest.approx(82, abs=1)]


@pytest.mark.parametrize("name", NAMES)
def test_from_pretrained_works_offline(name: str, offline: None) -> None:
    from age2hie_hub.hub import from_pretrained

    model = from_pretrained(name)
    assert not model.training and model.checkpoint_source.folder == (BUNDLED_DIR / name).resolve()
    assert model.checkpoint_source.sha256 == _sha256(BUNDLED_DIR / name / "model.safetensors")


@pytest.fixture
def bundled_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled age2hie folder copied to a bundled-models root of its own (as if it were the package's)."""
    shutil.copytree(_require("age2hie"), tmp_path / "age2hie")
    monkeypatch.setattr(resolve_mod, "BUNDLED_DIR", tmp_path)
    monkeypatch.setattr(resolve_mod, "_PACKAGE_BUNDLED_DIR", tmp_path)
    return tmp_path / "age2hie"


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "model.onnx"])
def test_tampered_bundled_file_is_refused(bundled_copy: Path, victim: str, offline: None) -> None:
    from age2hie_hub.hub import from_pretrained

    assert from_pretrained("age2hie").checkpoint_source.folder == bundled_copy.resolve()  # intact: loads
    _flip_last_byte(bundled_copy / victim)
    with pytest.raises(CheckpointError, match=rf"{victim}: SHA-256 \w+\.\.\. differs from \w+\.\.\. pinned in .*SHA256SUMS"):
        from_pretrained("age2hie")
    if victim == "model.onnx":  # the ONNX backend resolves through the same check
        from age2hie_hub.inference import Predictor

        with pytest.raises(CheckpointError, match="model.onnx"):
            Predictor.from_pretrained("age2hie", backend="onnx")


def test_bundled_folder_without_or_outside_its_sums_is_refused(bundled_copy: Path, offline: None) -> None:
    from age2hie_hub.hub import from_pretrained

    sums = (bundled_copy / "SHA256SUMS").read_text()
    (bundled_copy / "SHA256SUMS").write_text("".join(l + "\n" for l in sums.splitlines() if "model.onnx" not in l))
    with pytest.raises(CheckpointError, match="model.onnx is not pinned"):
        from_pretrained("age2hie")
    (bundled_copy / "SHA256SUMS").unlink()
    with pytest.raises(CheckpointError, match="SHA256SUMS is missing"):
        from_pretrained("age2hie")
    (bundled_copy / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(CheckpointError, match="line 1"):
        from_pretrained("age2hie")


def _check_golden_is_current(name: str = "age2hie") -> dict:
    golden = GOLDEN if name == "age2hie" else GOLDEN_BRAIN_AGE
    actual = _sha256(_require(name) / "model.safetensors")
    if actual != golden["weights_sha256"]:
        pytest.fail(f"the bundled {name} weights changed (sha256 {actual}); copy the new golden values from the "
                    "build's output (build_summary.json, 'golden') into this file")
    return golden


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_golden_probability_on_the_example_scan(backend: str, offline: None) -> None:
    from age2hie_hub.inference import Predictor
    from age2hie_hub.inference.examples import example_scan

    _check_golden_is_current()
    pred = Predictor.from_pretrained("age2hie", backend=backend, device="cpu").predict(example_scan())
    assert pred.backend == backend and pred.synthetic_model
    assert pred.probability == pytest.approx(GOLDEN[backend], abs=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_golden_brain_age_on_a_fixed_volume(backend: str, offline: None) -> None:
    from age2hie_hub.inference import Predictor
    from export.build_default_models import golden_t1_volume

    golden = _check_golden_is_current("brain-age")
    pred = Predictor.from_pretrained("brain-age", backend=backend, device="cpu").predict(golden_t1_volume())
    assert pred.backend == backend and not pred.synthetic_model
    assert pred.age == pytest.approx(golden[backend], abs=1e-4)


def test_cli_example_prints_a_probability_and_one_synthetic_line(offline: None, capsys) -> None:
    from age2hie_hub.cli.predict import main

    _check_golden_is_current()
    assert main(["--example"]) == 0
    out, err = capsys.readouterr()
    assert f"P(adverse outcome) = {GOLDEN['onnx']:.3f}" in out  # auto backend: the bundled ONNX export
    assert err.count("trained on synthetic data only") == 1
    assert main(["--example", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["probability"] == pytest.approx(GOLDEN["onnx"], abs=1e-5) and row["synthetic_model"] is True


def test_cli_brain_age_prints_an_age_and_no_synthetic_line(offline: None, tmp_path: Path, capsys) -> None:
    from age2hie_hub.cli.predict import main
    from age2hie_hub.io import write_volume
    from export.build_default_models import golden_t1_volume

    golden = _check_golden_is_current("brain-age")
    scan = tmp_path / "t1.nii.gz"
    write_volume(golden_t1_volume(), scan)
    assert main([str(scan), "--model", "brain-age", "--json"]) == 0
    out, err = capsys.readouterr()
    row = json.loads(out)
    assert row["synthetic_model"] is False and "synthetic" not in err
    assert row["age"] == pytest.approx(golden["onnx"], abs=1e-3)  # written to NIfTI as float32: same voxels


def test_brain_age_of_real_t1_is_plausible(shared_data: Path, offline: None) -> None:
    """Three real IXI scans (they were in training: a sanity check of the whole path, not an accuracy figure)."""
    import csv

    from age2hie_hub.inference import Predictor

    root = shared_data / "ixi_t1"
    if not (root / "participants.tsv").is_file():
        pytest.skip(f"{root} not found")
    with open(root / "participants.tsv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["age"] not in ("", "n/a")]
    rows = sorted(rows, key=lambda r: float(r["age"]))
    picked = [rows[5], rows[len(rows) // 2], rows[-5]]  # young, middle, old
    predictor = Predictor.from_pretrained("brain-age", backend="torch", device="cpu")
    ages = []
    for r in picked:
        pid = r["participant_id"]
        pred = predictor.predict(str(root / pid / "anat" / f"{pid}_T1w.nii.gz"))
        assert abs(pred.age - float(r["age"])) < 25, (pid, pred.age, r["age"])
        ages.append(pred.age)
    assert ages[0] < ages[2]  # it tells a young adult from an old one


# ---- the build script's reuse check (export/build_default_models.py) --------------------------------------

@pytest.mark.slow
def test_build_reuses_a_cohort_only_when_it_regenerates_identically(tmp_path: Path) -> None:
    from age2hie_hub.synth import make_brain_age_cohort
    from export.build_default_models import _cohort_reusable

    spec = {"n": 3, "seed": 5, "age_range": (0.0, 97.0), "spacing": (8.0, 8.0, 8.0)}
    root = tmp_path / "t1"
    make_brain_age_cohort(root, spec["n"], spec["seed"], spec["age_range"], spacing=spec["spacing"])
    assert _cohort_reusable(root, "brain_age_t1", spec)
    assert not _cohort_reusable(root, "brain_age_t1", {**spec, "seed": 6})  # other parameters
    assert not _cohort_reusable(tmp_path / "missing", "brain_age_t1", spec)
    truth = json.loads((root / "synthetic_truth.json").read_text())
    truth["subjects"][0]["biological_age"] += 1.0  # a generator that changed since the cohort was made
    (root / "synthetic_truth.json").write_text(json.dumps(truth))
    assert not _cohort_reusable(root, "brain_age_t1", spec)


def test_export_cli_will_not_write_into_a_bundled_folder(capsys: pytest.CaptureFixture[str]) -> None:
    """A bundled folder is pinned by its SHA256SUMS: a default-location export would break its own check."""
    from age2hie_hub.cli.export import main

    folder = _require("age2hie")
    before = sorted(p.name for p in folder.iterdir())
    assert main(["onnx", "--model", "age2hie", "-q"]) == 1
    assert "is bundled with the package" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before
