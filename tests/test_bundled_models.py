"""The bundled default models (age2hie_hub/data/models/{age2hie,brain-age}/): offline loading, pinned hashes,
the CLI on the shipped example scan, golden outputs for both backends, and a sane brain age.

They are rebuilt with ``python -m export.build_default_models --work DIR`` (docs/release.md). A rebuild that
changes the weights changes GOLDEN below: the build prints the new values (``golden_example_probability``).
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
RELEASE_FILES = {"config.json", "model.safetensors", "model.onnx", "README.md", "RELEASE.md", "SHA256SUMS"}
MAX_BYTES = 15_000_000

# The bundled age2hie model's P(adverse outcome) on age2hie_hub/data/examples/synthetic_neonatal_adc.nii.gz,
# measured when the bundle was built, for the weights whose SHA-256 is given.
GOLDEN = {
    "weights_sha256": "d8fdef30bbf684bfbfa79553960024ff726039c5e9544c10d7901db27a528693",
    "torch": 0.8357531428337097,
    "onnx": 0.8357530832290649,
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
def test_bundled_folder_is_a_small_pinned_synthetic_release(name: str) -> None:
    from age2hie_hub.hub import read_config

    folder = _require(name)
    files = {p.name for p in folder.iterdir() if p.is_file()}
    assert files == RELEASE_FILES
    assert sum((folder / f).stat().st_size for f in files) <= MAX_BYTES
    sums = dict(reversed(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == RELEASE_FILES - {"SHA256SUMS"}
    assert all(_sha256(folder / f) == digest for f, digest in sums.items())
    # The card's first lines (after the YAML header) say the weights are synthetic.
    body = (folder / "README.md").read_text(encoding="utf-8").split("---", 2)[2]
    assert "synthetic" in "\n".join(body.strip().splitlines()[:4]).lower()
    config = read_config(folder)
    assert config.provenance["synthetic"] is True
    assert config.provenance["library_version"] and config.provenance["seed"] == 0


def test_age2hie_is_transferred_from_the_bundled_brain_age_and_covers_a_neonatal_brain() -> None:
    from age2hie_hub.hub import read_config

    hie, brain = read_config(_require("age2hie")), read_config(_require("brain-age"))
    assert hie.task == "hie_outcome" and hie.input_modalities == ("ADC",) and hie.preprocess.channels == 1
    assert brain.task == "brain_age" and hie.model.arch == brain.model.arch == "resnet3d_10"
    assert hie.provenance["parent"] == "age2hie-hub/brain-age"
    assert hie.provenance["parent_weights_sha256"] == _sha256(BUNDLED_DIR / "brain-age" / "model.safetensors")
    assert hie.provenance["n_training_cases"] == 156 and brain.provenance["n_training_cases"] >= 500
    # Field of view of the network's grid (mm): a term neonate's brain is about 90 x 110 x 75 mm.
    fov = np.multiply(hie.preprocess.spacing, hie.preprocess.shape)
    assert (fov >= (100, 115, 85)).all(), fov


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


def _check_golden_is_current() -> None:
    actual = _sha256(_require("age2hie") / "model.safetensors")
    if actual != GOLDEN["weights_sha256"]:
        pytest.fail(f"the bundled age2hie weights changed (sha256 {actual}); copy the new "
                    "golden_example_probability from the build's output into GOLDEN in this file")


@pytest.mark.numerics
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_golden_probability_on_the_example_scan(backend: str, offline: None) -> None:
    from age2hie_hub.inference import Predictor
    from age2hie_hub.inference.examples import example_scan

    _check_golden_is_current()
    pred = Predictor.from_pretrained("age2hie", backend=backend, device="cpu").predict(example_scan())
    assert pred.backend == backend and pred.synthetic_model
    assert pred.probability == pytest.approx(GOLDEN[backend], abs=1e-5)


@pytest.mark.numerics
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


@pytest.mark.slow  # synthesis loads the 1 mm template (~5 s)
def test_brain_age_of_synthetic_t1_is_sane(offline: None) -> None:
    from age2hie_hub.inference import Predictor
    from age2hie_hub.synth import synth_t1

    predictor = Predictor.from_pretrained("brain-age", backend="torch", device="cpu")
    ages = {}
    for age in (3.0, 80.0):
        volume, _ = synth_t1(np.random.default_rng(7), age, "F", "A", spacing=(4.0, 4.0, 4.0))
        ages[age] = predictor.predict(volume).age
    assert all(-5.0 <= a <= 110.0 for a in ages.values()), ages
    assert ages[80.0] - ages[3.0] > 20.0, ages  # it tells a small child from an old adult


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
