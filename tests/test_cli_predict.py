"""age2hie-predict: inputs of every form, text/JSON/CSV output, failures, challenge mode, instant --help."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from inference_helpers import adc_affine, adc_array, make_checkpoint, write_mha, write_nifti

from age2hie_hub.cli.predict import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli") / "model")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    return [write_nifti(folder / f"case{i}.nii.gz", adc_array(seed=i), adc_affine()) for i in range(3)]


def test_help_is_instant_and_imports_no_torch():
    code = (
        "import sys\nfrom age2hie_hub.cli.predict import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'SimpleITK', 'onnxruntime', 'scipy') if m in sys.modules]\n"
        "sys.exit(f'imported {heavy}' if heavy else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "--grand-challenge" in run.stdout and "--second-channel" in run.stdout


def test_python_m_is_the_predict_cli():
    run = subprocess.run([sys.executable, "-m", "age2hie_hub", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("usage: age2hie-predict")


def test_usage_errors_exit_2_and_write_nothing(tmp_path, scans, capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main([str(scans[0]), "--output", str(tmp_path / "results.txt")])
    assert exc.value.code == 2 and not (tmp_path / "results.txt").exists()


def test_files_folder_glob_and_csv_list(ckpt, scans, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text("path,age_days\n" + "".join(f"{p},3\n" for p in scans[:2]))
    out = tmp_path / "results.csv"
    code = main([str(scans[0]), str(scans[0].parent), str(scans[0].parent / "case[12].nii.gz"), str(listing),
                 "--model", str(ckpt), "--output", str(out), "--batch-size", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 + 3 + 2 + 2 and all(r["status"] == "ok" for r in rows)
    assert [r["source"] for r in rows[:4]] == [str(scans[0])] + [str(p) for p in scans]
    assert rows[0]["probability"] == rows[1]["probability"]  # same scan, same number, any batch
    sha = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert {(r["model_file"], r["model_file_sha256"], r["weights_sha256"]) for r in rows} == {
        ("model.safetensors", sha, sha)}  # weights_sha256: the deprecated column, kept for one release
    assert captured.out.count("P(adverse outcome) = ") == 8
    # the synthetic-model notice: one line, on stderr, so stdout stays clean for --json
    assert captured.err.count("trained on synthetic data only") == 1


def test_a_failing_scan_is_reported_and_the_others_go_on(ckpt, scans, tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    out = tmp_path / "results.json"
    code = main([str(scans[0]), str(bad), str(tmp_path / "nothing*.nii.gz"), str(scans[1]),
                 "--model", str(ckpt), "--json", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["status"] for line in lines].count("ok") == 2
    errors = {line["source"]: line["error"] for line in lines if line["status"] == "error"}
    assert "broken.nii.gz" in errors[str(bad)] and "no file matches" in errors[str(tmp_path / "nothing*.nii.gz")]
    saved = json.loads(out.read_text())
    assert [r["source"] for r in saved] == [str(scans[0]), str(bad), str(tmp_path / "nothing*.nii.gz"), str(scans[1])]
    ok = [r for r in saved if r["status"] == "ok"]
    assert all(r["model"] == str(ckpt) and r["synthetic_model"] is True for r in ok)


def test_a_scan_with_zero_voxel_size_is_reported_as_failed(ckpt, scans, tmp_path, capsys):
    import gzip
    import struct

    bad = write_nifti(tmp_path / "zero_spacing.nii.gz", adc_array(), adc_affine())
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[80:84] = struct.pack("<f", 0.0)  # pixdim[1] = 0 behind a valid sform
    bad.write_bytes(gzip.compress(bytes(raw)))
    code = main([str(bad), str(scans[0]), "--model", str(ckpt), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [line["status"] for line in lines] == ["error", "ok"]
    assert lines[0]["error"].startswith(f"{bad}: header voxel size") and "zero or negative" in lines[0]["error"]


def test_unloadable_model_is_one_line_exit_1_and_no_output(scans, tmp_path, capsys):
    out = tmp_path / "results.csv"
    code = main([str(scans[0]), "--model", str(tmp_path / "no-such-model"), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not out.exists()
    assert len(err) == 1 and err[0].startswith("age2hie-predict: error:") and "no-such-model" in err[0]


def test_second_channel_is_passed_per_scan(tmp_path, scans, capsys):
    two = make_checkpoint(tmp_path / "two", channels=2)
    zmap = write_nifti(tmp_path / "z.nii.gz", np.random.default_rng(0).standard_normal((40, 48, 20)).astype(np.float32),
                       adc_affine())
    assert main([str(scans[0]), "--model", str(two), "-q"]) == 1
    assert "pass the Z-ADC volume as second_channel" in capsys.readouterr().err
    assert main([str(scans[0]), "--model", str(two), "--second-channel", str(zmap), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


def test_grand_challenge_container_contract(tmp_path, capsys):
    two = make_checkpoint(tmp_path / "two", channels=2)
    inp, out = tmp_path / "input", tmp_path / "output"
    (inp / "images/skull-stripped-adc-brain-mri").mkdir(parents=True)
    (inp / "images/z-score-adc").mkdir(parents=True)
    write_mha(inp / "images/skull-stripped-adc-brain-mri/MGHNICU_010-VISIT_01-ADC_ss.mha", adc_array(), adc_affine())
    z = np.random.default_rng(2).standard_normal((40, 48, 20)).astype(np.float32)
    write_mha(inp / "images/z-score-adc/Zmap_MGHNICU_010-VISIT_01-ADC_smooth2mm_clipped10.mha", z, adc_affine())
    assert main(["--grand-challenge", str(inp), str(out), "--model", str(two)]) == 0
    value = json.loads((out / "2-year-neurocognitive-outcome.json").read_text())
    assert value in (0, 1) and isinstance(value, int)
    printed = capsys.readouterr().out
    assert ("adverse" in printed) == (value == 1)
    # Two cases in one input folder break the one-case-per-run contract: an error, no output.
    write_mha(inp / "images/skull-stripped-adc-brain-mri/other.mha", adc_array(), adc_affine())
    assert main(["--grand-challenge", str(inp), str(tmp_path / "out2"), "--model", str(two)]) == 1
    assert not (tmp_path / "out2").exists()


def test_list_models_names_the_releases(capsys):
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "age2hie" in out and "brain-age" in out


def test_example_scan_is_small_synthetic_and_predictable(ckpt, capsys):
    import nibabel as nib

    from age2hie_hub.inference import example_scan

    path = example_scan()
    assert path.stat().st_size < 300_000
    assert b"SYNTHETIC" in nib.load(str(path)).header["descrip"].tobytes()
    truth = json.loads(path.with_name("synthetic_neonatal_adc.truth.json").read_text())
    assert "not from a patient" in truth["SYNTHETIC"] and truth["ground_truth"]["outcome"] in (0, 1)
    assert main(["--example", "--model", str(ckpt), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["source"] == str(path) and row["input_unit"] == "1e-6mm2/s"


def test_bundled_default_model_runs_offline_on_the_example(capsys, monkeypatch):
    from age2hie_hub.hub.resolve import BUNDLED_DIR

    if not (BUNDLED_DIR / "age2hie" / "config.json").is_file():
        pytest.skip(f"no bundled default model in {BUNDLED_DIR / 'age2hie'} yet")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a fresh install without network
    assert main(["--example"]) == 0
    captured = capsys.readouterr()
    assert "P(adverse outcome)" in captured.out
    from age2hie_hub.hub import read_config

    if read_config(BUNDLED_DIR / "age2hie").provenance.get("synthetic"):
        assert captured.err.count("trained on synthetic data only") == 1


@pytest.fixture
def resolver_calls(monkeypatch):
    """Every call of hub.resolve.resolve_checkpoint, as (name, include_onnx): the one trip from a name to a folder."""
    import age2hie_hub.hub.resolve as resolve

    calls, real = [], resolve.resolve_checkpoint

    def counting(name, **kwargs):
        calls.append((str(name), kwargs.get("include_onnx", False)))
        return real(name, **kwargs)

    monkeypatch.setattr(resolve, "resolve_checkpoint", counting)
    return calls


def test_the_model_name_is_resolved_once_per_run(ckpt, scans, resolver_calls, capsys):
    """auto asks for model.onnx in the same trip that finds the weights; torch asks for the weights only."""
    assert main([str(scans[0]), "--model", str(ckpt), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "torch"  # no model.onnx beside the weights
    assert resolver_calls == [(str(ckpt), True)]
    resolver_calls.clear()
    assert main([str(scans[0]), "--model", str(ckpt), "--backend", "torch", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "torch"
    assert resolver_calls == [(str(ckpt), False)]


def test_auto_backend_with_an_onnx_file_or_openvino(ckpt, scans, tmp_path, resolver_calls, capsys):
    """--onnx-file makes auto choose ONNX without looking for the checkpoint's export; --openvino on a checkpoint
    without one is the torch backend's one-line error, as with --backend torch."""
    missing = tmp_path / "elsewhere.onnx"
    assert main([str(scans[0]), "--model", str(ckpt), "--onnx-file", str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{missing}: no ONNX export for model" in err[0]
    assert resolver_calls == [(str(ckpt), False)]
    for backend in ("auto", "torch"):
        assert main([str(scans[0]), "--model", str(ckpt), "--backend", backend, "--openvino"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "openvino=True is an ONNX Runtime execution provider" in err[0]


@pytest.mark.slow
def test_auto_backend_uses_the_onnx_export_when_present(tmp_path, scans, capsys):
    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.onnx.export import export_onnx

    folder = make_checkpoint(tmp_path / "m")
    assert main([str(scans[0]), "--model", str(folder), "--json"]) == 0
    via_torch = json.loads(capsys.readouterr().out)
    export_onnx(from_pretrained(folder), folder / "model.onnx", exporter="torchscript")
    assert main([str(scans[0]), "--model", str(folder), "--json"]) == 0
    via_onnx = json.loads(capsys.readouterr().out)
    assert (via_torch["backend"], via_onnx["backend"]) == ("torch", "onnx")
    assert via_onnx["probability"] == pytest.approx(via_torch["probability"], abs=1e-4)


def test_a_foreground_cut_off_by_the_box_is_a_warning_everywhere(ckpt, scans, tmp_path, capsys):
    """Predictor.warnings, the CLI's stderr and the CSV's warnings column; a scan that fits has none."""
    from age2hie_hub.inference import Predictor

    big = write_nifti(tmp_path / "big.nii.gz", adc_array(shape=(70, 48, 20)), adc_affine())  # 126 mm > 96 mm box
    p = Predictor.from_pretrained(ckpt, device="cpu").predict(str(big))
    (warning,) = [w for w in p.warnings if "cut off" in w]
    assert warning.startswith("big.nii.gz: foreground cut off by the output box: R: ") and warning in " ".join(
        ["big.nii.gz: " + n for n in p.notes])
    out = tmp_path / "results.csv"
    assert main([str(big), str(scans[0]), "--model", str(ckpt), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"age2hie-predict: warning: {warning}" in captured.err.splitlines()
    assert "cut off" not in captured.out  # stdout holds the results only
    rows = {r["source"]: r for r in csv.DictReader(out.open())}
    assert warning in rows[str(big)]["warnings"] and "cut off" not in rows[str(scans[0])]["warnings"]
