"""age2hie-adc: DWI in, ADC file out; bad input -> one-line error, exit 1, no output left behind."""
from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from age2hie_hub.cli.adc import main
from age2hie_hub.io import read_volume
from conftest import package_data

TRUE_ADC = 0.9e-3


def make_dwi(folder: Path, name: str = "dwi.nii.gz", bval: str | None = "0 1000 1000") -> Path:
    s0 = np.random.default_rng(0).uniform(500, 1000, size=(6, 5, 4))
    data = np.stack([s0, s0 * np.exp(-1000 * TRUE_ADC), s0 * np.exp(-1000 * TRUE_ADC)], axis=-1)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    path = folder / name
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    if bval is not None:
        (folder / name.replace(".nii.gz", ".bval")).write_text(bval + "\n")
    return path


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_nifti_with_bval_beside(tmp_path, capsys):
    dwi = make_dwi(tmp_path)
    out = tmp_path / "adc.nii.gz"
    assert main([str(dwi), "-o", str(out)]) == 0
    adc = read_volume(out)
    assert adc.shape == (6, 5, 4)
    np.testing.assert_allclose(adc.data, TRUE_ADC, rtol=1e-4)
    np.testing.assert_allclose(adc.affine, np.diag([1.5, 1.5, 3.0, 1.0]))  # the scan's own grid
    assert "wrote" in capsys.readouterr().out


def test_bvals_option_and_json_summary(tmp_path, capsys):
    dwi = make_dwi(tmp_path, bval=None)
    (tmp_path / "other.txt").write_text("0\n1000\n1000\n")
    out = tmp_path / "adc.mha"
    assert main([str(dwi), "--bvals", str(tmp_path / "other.txt"), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["units"] == "mm2/s" and summary["shells"] == [1000.0]
    assert summary["median_adc"] == pytest.approx(TRUE_ADC, rel=1e-4)
    assert read_volume(out).metadata["units"] == "mm2/s"


def test_dicom_folder(tmp_path):
    folder = package_data("heudiconv", "tests", "data", "b0dwiForFmap")
    out = tmp_path / "adc.nii.gz"
    assert main([str(folder), "-o", str(out), "--mask", "-q"]) == 0
    adc = read_volume(out)
    assert adc.shape == (150, 152, 81)
    brain = adc.data[adc.data > 0]
    assert 0.6e-3 <= np.median(brain) <= 1.0e-3


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing_input", "no such file"),
        ("no_bvals", "no b-values"),
        ("bad_bvals_count", "has 2 b-values but"),
        ("3d_input", "is a 3D image"),
        ("corrupt_input", "not a readable NIfTI"),
        ("bad_output_suffix", "unknown output format"),
        ("missing_output_folder", "does not exist"),
        ("no_b0", "no b~0 volume"),
        ("zero_voxel_size", "dwi.nii.gz: header voxel size (pixdim[1..3]) [1.5, 0.0, 3.0] has zero or negative"),
        ("nan_voxel_size", "dwi.nii.gz: header voxel size (pixdim[1..3]) [1.5, 1.5, nan] is not finite"),
        ("singular_affine", "dwi.nii.gz: the voxel-to-world transform is singular"),
    ],
)
def test_bad_input_one_line_exit_1_no_output(tmp_path, capfd, case, pattern):
    out = tmp_path / "adc.nii.gz"
    args: list[str]
    if case == "missing_input":
        args = [str(tmp_path / "nope.nii.gz"), "-o", str(out)]
    elif case == "no_bvals":
        args = [str(make_dwi(tmp_path, bval=None)), "-o", str(out)]
    elif case == "bad_bvals_count":
        (tmp_path / "b.txt").write_text("0 1000")
        args = [str(make_dwi(tmp_path, bval=None)), "--bvals", str(tmp_path / "b.txt"), "-o", str(out)]
    elif case == "3d_input":
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "t1.nii.gz")
        args = [str(tmp_path / "t1.nii.gz"), "-o", str(out)]
    elif case == "corrupt_input":
        (tmp_path / "bad.nii").write_bytes(b"junk" * 100)
        args = [str(tmp_path / "bad.nii"), "-o", str(out)]
    elif case == "bad_output_suffix":
        out = tmp_path / "adc.png"
        args = [str(make_dwi(tmp_path)), "-o", str(out)]
    elif case == "missing_output_folder":
        out = tmp_path / "no" / "adc.nii.gz"
        args = [str(make_dwi(tmp_path)), "-o", str(out)]
    elif case in ("zero_voxel_size", "nan_voxel_size"):
        # The case: a valid sform, but the header's voxel size is 0 (or NaN); nibabel would use 1.
        dwi = make_dwi(tmp_path)
        raw = bytearray(gzip.decompress(dwi.read_bytes()))
        axis, value = (2, 0.0) if case == "zero_voxel_size" else (3, float("nan"))
        raw[76 + 4 * axis : 80 + 4 * axis] = struct.pack("<f", value)  # pixdim[axis]; the sform stays valid
        dwi.write_bytes(gzip.compress(bytes(raw)))
        assert struct.unpack_from("<h", raw, 254)[0] > 0  # sform_code: the affine comes from the valid sform
        args = [str(dwi), "-o", str(out)]
    elif case == "singular_affine":
        dwi = make_dwi(tmp_path)
        img = nib.load(dwi)
        singular = np.diag([1.5, 1.5, 3.0, 1.0])
        singular[:3, 1] = singular[:3, 0]  # voxel axes 0 and 1 collinear
        nib.save(nib.Nifti1Image(img.get_fdata(), singular), dwi)
        args = [str(dwi), "-o", str(out)]
    else:
        args = [str(make_dwi(tmp_path, bval="1000 1000 1000")), "-o", str(out)]
    before = files(tmp_path)
    assert main(args) == 1
    err = capfd.readouterr().err.strip()  # file-descriptor level: also catches libraries printing to stderr
    assert err.startswith("age2hie-adc: error:") and "\n" not in err and pattern in err
    assert not out.exists()
    assert files(tmp_path) == before  # no temp files either


def test_existing_output_needs_force(tmp_path, capsys):
    dwi = make_dwi(tmp_path)
    out = tmp_path / "adc.nii.gz"
    out.write_bytes(b"keep me")
    assert main([str(dwi), "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main([str(dwi), "-o", str(out), "--force"]) == 0
    assert read_volume(out).shape == (6, 5, 4)


def test_usage_error_exits_2(capsys):
    assert main(["only_input.nii.gz"]) == 2
    assert "required" in capsys.readouterr().err


def test_console_script_help_is_fast_and_light():
    # --help must not import torch or SimpleITK (heavy imports live inside main's body).
    code = ("import sys; from age2hie_hub.cli.adc import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'SimpleITK', 'nibabel', 'scipy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "age2hie-adc" in proc.stdout and proc.stdout.strip().endswith("[]")
