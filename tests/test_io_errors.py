"""A corpus of bad files, built here, each rejected by read_volume with a clear VolumeReadError."""
from __future__ import annotations

import gzip
import struct
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import read_volume, write_volume
from age2hie_hub.io.volume import Volume
from conftest import package_data

sitk = pytest.importorskip("SimpleITK")

PIXDIM = 76  # byte offset of pixdim[0..7] (float32) in a NIfTI-1 header
DIM = 40  # byte offset of dim[0..7] (int16)
SROW_X = 280  # byte offset of srow_x[0..3] (float32); srow_y, srow_z follow
SROW_Y = 296  # byte offset of srow_y[0..3] (float32)
PIXDIM2 = 104  # byte offset of pixdim[0..7] (float64) in a NIfTI-2 header


def save_qform_nifti(path: Path, data: np.ndarray, zooms=(2.0, 2.0, 2.0)) -> Path:
    """A NIfTI whose affine comes from pixdim (qform only), as many scanners' converters write."""
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    img.set_qform(img.affine, 1)
    img.set_sform(None, 0)
    nib.save(img, path)
    return path


def save_sform_nifti(path: Path, data: np.ndarray, affine=None, nifti2: bool = False) -> Path:
    """A NIfTI whose affine comes from a valid sform (qform too, as dcm2niix and nibabel write)."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    img = (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(data, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    nib.save(img, path)
    return path


def patch_gz(path: Path, offset: int, fmt: str, *values) -> Path:
    """`patch` inside a .nii.gz."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def patch(path: Path, offset: int, fmt: str, *values) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(bytes(raw))
    return path


def cube(shape=(4, 4, 4)) -> np.ndarray:
    return np.random.default_rng(0).uniform(1, 2, size=shape).astype(np.float32)


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex its error message must match)."""
    corpus: dict[str, tuple[Path, str]] = {}
    corpus["missing"] = (tmp / "nope.nii.gz", "no such file")
    (tmp / "notes.txt").write_text("not an image")
    corpus["unknown_format"] = (tmp / "notes.txt", "unknown image format")
    (tmp / "garbage.nii").write_bytes(b"\x00\x01garbage" * 50)
    corpus["garbage_nifti"] = (tmp / "garbage.nii", "not a readable NIfTI")
    (tmp / "garbage.nii.gz").write_bytes(b"\x1f\x8bnot really gzip" * 10)
    corpus["garbage_gzip"] = (tmp / "garbage.nii.gz", "not a readable NIfTI|corrupt")

    full = save_qform_nifti(tmp / "full.nii", cube((8, 8, 8)))
    (tmp / "truncated.nii").write_bytes(full.read_bytes()[:1000])
    corpus["truncated_nii"] = (tmp / "truncated.nii", "truncated")
    nib.save(nib.Nifti1Image(cube((16, 16, 16)), np.eye(4)), tmp / "full.nii.gz")
    (tmp / "truncated.nii.gz").write_bytes((tmp / "full.nii.gz").read_bytes()[:2000])
    corpus["truncated_nii_gz"] = (tmp / "truncated.nii.gz", "corrupt or truncated|not a readable")

    sitk.WriteImage(sitk.GetImageFromArray(cube((8, 8, 8))), str(tmp / "full.mha"), useCompression=False)
    raw = (tmp / "full.mha").read_bytes()
    (tmp / "truncated.mha").write_bytes(raw[: len(raw) - 1000])
    corpus["truncated_mha"] = (tmp / "truncated.mha", "truncated: the header needs 2048 bytes of voxel data")
    sitk.WriteImage(sitk.GetImageFromArray(cube((8, 8, 8))), str(tmp / "full.nrrd"), useCompression=False)
    (tmp / "truncated.nrrd").write_bytes((tmp / "full.nrrd").read_bytes()[:-1000])
    corpus["truncated_nrrd"] = (tmp / "truncated.nrrd", "corrupt or truncated")
    sitk.WriteImage(sitk.GetImageFromArray(cube()), str(tmp / "detached.mhd"), useCompression=True)
    for data_file in tmp.glob("detached.*raw"):
        data_file.unlink()
    corpus["mhd_without_data_file"] = (tmp / "detached.mhd", r"data file 'detached\.z?raw' is missing")
    (tmp / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is: nonsense\n\n\x00\x01")
    corpus["garbage_nrrd"] = (tmp / "garbage.nrrd", "not a readable|corrupt")

    nib.save(nib.Nifti1Image(np.ones((5, 5), np.float32), np.eye(4)), tmp / "flat.nii.gz")
    corpus["2d"] = (tmp / "flat.nii.gz", "is 2D")
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3, 2, 2), np.float32), np.eye(4)), tmp / "five.nii.gz")
    corpus["5d"] = (tmp / "five.nii.gz", "is 5D")
    nib.save(nib.Nifti1Image(np.zeros((0, 4, 4), np.float32), np.eye(4)), tmp / "empty.nii.gz")
    corpus["0_voxels"] = (tmp / "empty.nii.gz", "empty .*0 voxels")

    corpus["zero_spacing"] = (patch(save_qform_nifti(tmp / "zero_sp.nii", cube()), PIXDIM + 8, "<f", 0.0),
                              "zero or negative")
    corpus["negative_spacing"] = (patch(save_qform_nifti(tmp / "neg_sp.nii", cube()), PIXDIM + 4, "<f", -2.0),
                                  "zero or negative")
    corpus["nan_spacing"] = (patch(save_qform_nifti(tmp / "nan_sp.nii", cube()), PIXDIM + 12, "<f", float("nan")),
                             "not finite")
    sform = nib.Nifti1Image(cube(), np.eye(4))
    sform.set_qform(None, 0)
    sform.set_sform(np.eye(4), 1)
    nib.save(sform, tmp / "sform_zero.nii")
    corpus["zero_spacing_sform"] = (patch(tmp / "sform_zero.nii", SROW_Y, "<4f", 0, 0, 0, 0), "zero or negative")
    (tmp / "zero_sp.mha").write_bytes(raw.replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 0 1"))
    corpus["zero_spacing_mha"] = (tmp / "zero_sp.mha", "zero or negative|not a readable")

    # A valid sform does not excuse a bad voxel size in pixdim: nibabel would silently use 1 (zero) or abs()
    # (negative) and pass NaN through, and tools that read pixdim (FSL) would disagree with the sform.
    nii = save_sform_nifti
    corpus["zero_pixdim_with_sform"] = (patch(nii(tmp / "zero_pix_s.nii", cube()), PIXDIM + 4, "<f", 0.0),
                                        r"pixdim\[1\.\.3\]\) \[0\.0, 2\.0, 2\.0\] has zero or negative")
    corpus["negative_pixdim_with_sform"] = (patch(nii(tmp / "neg_pix_s.nii", cube()), PIXDIM + 8, "<f", -2.0),
                                            r"\[2\.0, -2\.0, 2\.0\] has zero or negative")
    corpus["nan_pixdim_with_sform"] = (patch(nii(tmp / "nan_pix_s.nii", cube()), PIXDIM + 12, "<f", float("nan")),
                                       r"pixdim.*is not finite")
    corpus["inf_pixdim_gz"] = (patch_gz(nii(tmp / "inf_pix.nii.gz", cube()), PIXDIM + 4, "<f", float("inf")),
                               r"pixdim.*is not finite")
    corpus["zero_pixdim_nifti2"] = (patch(nii(tmp / "zero_pix2.nii", cube(), nifti2=True), PIXDIM2 + 16, "<d", 0.0),
                                    r"pixdim.*\[2\.0, 0\.0, 2\.0\] has zero or negative")
    # sform columns (1, 1, 0), (1, 1, 0), (0, 0, 1): every voxel size is fine, the axes are collinear.
    corpus["singular_sform"] = (
        patch(save_sform_nifti(tmp / "sing_s.nii", cube()), SROW_X, "<8f", 1, 1, 0, 0, 1, 1, 0, 0), "is singular")
    corpus["nan_sform"] = (patch(save_sform_nifti(tmp / "nan_s.nii", cube()), SROW_Y, "<f", float("nan")), "non-finite")
    (tmp / "neg_sp.mha").write_bytes(raw.replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 -1 1"))
    corpus["negative_spacing_mha"] = (tmp / "neg_sp.mha", r"\[1\.0, -1\.0, 1\.0\] has zero or negative")
    (tmp / "sing.mha").write_bytes(raw.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                               b"TransformMatrix = 1 0 0 1 0 0 0 0 1"))
    corpus["singular_direction_mha"] = (tmp / "sing.mha", "is singular")
    nrrd = (tmp / "full.nrrd").read_bytes()
    (tmp / "sing.nrrd").write_bytes(nrrd.replace(b"space directions: (1,0,0) (0,1,0) (0,0,1)",
                                                 b"space directions: (1,0,0) (1,0,0) (0,0,1)"))
    corpus["singular_directions_nrrd"] = (tmp / "sing.nrrd", "is singular")
    (tmp / "zero.nrrd").write_bytes(nrrd.replace(b"space directions: (1,0,0) (0,1,0) (0,0,1)",
                                                 b"space directions: (1,0,0) (0,0,0) (0,0,1)"))
    corpus["zero_direction_nrrd"] = (tmp / "zero.nrrd", r"\[1\.0, 0\.0, 1\.0\] has zero or negative")

    # Headers claiming huge images over tiny files: rejected from the header alone.
    huge = save_qform_nifti(tmp / "huge.nii", cube())
    corpus["huge_nifti"] = (patch(huge, DIM, "<8h", 4, 4000, 4000, 4000, 1, 1, 1, 1), "need .* GiB, over the limit")
    (tmp / "huge.mha").write_bytes(raw.replace(b"DimSize = 8 8 8", b"DimSize = 4000 4000 4000"))
    corpus["huge_mha"] = (tmp / "huge.mha", "need .* GiB, over the limit")

    (tmp / "empty_dir").mkdir()
    corpus["empty_dicom_folder"] = (tmp / "empty_dir", "no DICOM")
    (tmp / "not_dicom").mkdir()
    (tmp / "not_dicom" / "readme.txt").write_text("hello")
    corpus["folder_without_dicom"] = (tmp / "not_dicom", "no DICOM")
    (tmp / "broken.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    corpus["corrupt_zip"] = (tmp / "broken.zip", "corrupt|no DICOM")
    with zipfile.ZipFile(tmp / "empty.zip", "w"):
        pass
    corpus["empty_zip"] = (tmp / "empty.zip", "zip archive is empty|no DICOM")
    (tmp / "fake.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 20)
    corpus["corrupt_dicom_file"] = (tmp / "fake.dcm", "no DICOM|dcm2niix")
    # gzipped DICOM (PACS exports): a bad .gz in a folder is named, not just "no DICOM found"
    (tmp / "gz_corrupt").mkdir()
    (tmp / "gz_corrupt" / "IM_0002.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 60)
    corpus["corrupt_gz_in_folder"] = (tmp / "gz_corrupt", r"gz_corrupt/IM_0002\.gz: not a valid gzip file")
    (tmp / "gz_truncated").mkdir()
    noise = np.random.default_rng(0).bytes(4000)  # incompressible, so cutting the .gz short really truncates it
    (tmp / "gz_truncated" / "IM_0001.dcm.gz").write_bytes(gzip.compress(b"\x00" * 128 + b"DICM" + noise)[:2000])
    corpus["truncated_gz_in_folder"] = (tmp / "gz_truncated", r"IM_0001\.dcm\.gz: gzip file is truncated")
    (tmp / "not_gzip.dcm.gz").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 20)
    corpus["single_dcm_gz_not_gzip"] = (tmp / "not_gzip.dcm.gz", r"not_gzip\.dcm\.gz: not a valid gzip file")
    (tmp / "IM_0003.gz").write_bytes(gzip.compress(b"hello, not a DICOM file"))
    corpus["gz_without_dicom"] = (tmp / "IM_0003.gz", r"IM_0003\.gz: unknown image format \(gzip-compressed\)")

    dwi = save_qform_nifti(tmp / "dwi.nii.gz", cube((4, 4, 4, 3)))
    (tmp / "dwi.bval").write_text("0 1000\n")
    corpus["bval_count_mismatch"] = (dwi, r"dwi\.bval: has 2 b-values but dwi\.nii\.gz has 3 volumes")
    dwi2 = save_qform_nifti(tmp / "dwi2.nii.gz", cube((4, 4, 4, 3)))
    (tmp / "dwi2.bval").write_text("0 abc 1000\n")
    corpus["bval_unparsable"] = (dwi2, r"dwi2\.bval: cannot parse b-values of dwi2\.nii\.gz")
    return corpus


CASES = [
    "missing", "unknown_format", "garbage_nifti", "garbage_gzip", "truncated_nii", "truncated_nii_gz",
    "truncated_mha", "truncated_nrrd", "mhd_without_data_file", "garbage_nrrd", "2d", "5d", "0_voxels",
    "zero_spacing", "negative_spacing", "nan_spacing", "zero_spacing_sform", "zero_spacing_mha",
    "zero_pixdim_with_sform", "negative_pixdim_with_sform", "nan_pixdim_with_sform", "inf_pixdim_gz",
    "zero_pixdim_nifti2", "singular_sform", "nan_sform", "negative_spacing_mha", "singular_direction_mha",
    "singular_directions_nrrd", "zero_direction_nrrd", "huge_nifti", "huge_mha", "empty_dicom_folder",
    "folder_without_dicom", "corrupt_zip", "empty_zip", "corrupt_dicom_file", "corrupt_gz_in_folder",
    "truncated_gz_in_folder", "single_dcm_gz_not_gzip", "gz_without_dicom", "bval_count_mismatch",
    "bval_unparsable",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return bad_files(tmp_path_factory.mktemp("bad"))


def test_corpus_covers_every_case(corpus):
    assert sorted(corpus) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_bad_file_gives_clear_error(corpus, case):
    path, pattern = corpus[case]
    with pytest.raises(VolumeReadError, match=pattern) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message.strip()
    assert Path(path).name in message or str(path) in message  # the error names the file


def test_huge_header_is_rejected_without_reading_data(corpus):
    # 4000^3 float32 would be ~238 GiB: the rejection must come from the header, instantly.
    start = time.perf_counter()
    with pytest.raises(VolumeReadError):
        read_volume(corpus["huge_nifti"][0])
    assert time.perf_counter() - start < 1.0


def test_max_bytes_is_a_parameter(tmp_path):
    path = save_qform_nifti(tmp_path / "ok.nii", cube((10, 10, 10)))
    assert read_volume(path, max_bytes=4000).shape == (10, 10, 10)
    with pytest.raises(VolumeReadError, match="over the limit"):
        read_volume(path, max_bytes=3999)


def test_non_finite_voxels_are_counted_zeroed_and_logged(tmp_path, caplog):
    data = cube((5, 5, 5))
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with caplog.at_level("WARNING"):
        vol = read_volume(tmp_path / "nan.nii.gz")
    assert np.all(np.isfinite(vol.data))
    assert vol.data[0, 0, 0] == vol.data[1, 1, 1] == vol.data[2, 2, 2] == 0
    np.testing.assert_array_equal(vol.data[3], data[3])
    (warning,) = vol.metadata["warnings"]
    assert "3 of 125 voxels were not finite" in warning and "replaced with 0" in warning
    assert "nan.nii.gz" in caplog.text and "not finite" in caplog.text


def test_all_zero_image_is_accepted_with_a_warning(tmp_path):
    # A lesion mask without lesions is all zero and valid: accepted, but the warning says it.
    write_volume(Volume(np.zeros((4, 4, 4)), np.eye(4)), tmp_path / "zeros.mha")
    vol = read_volume(tmp_path / "zeros.mha")
    assert not vol.data.any()
    assert any("every voxel is 0" in w for w in vol.metadata["warnings"])


def test_gzip_of_garbage_is_corrupt(tmp_path):
    (tmp_path / "g.nii.gz").write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(VolumeReadError, match="g.nii.gz"):
        read_volume(tmp_path / "g.nii.gz")


def test_valid_geometry_is_accepted(tmp_path, capfd):
    # Negative controls for the geometry checks: flips, obliques, tiny voxels, qfac -1 and NIfTI-2 all read.
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])  # a flip lives in the affine, with positive pixdim
    oblique = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    oblique[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.9, 1.1, 3.0])
    tiny = np.diag([1e-3, 1e-3, 1e-3, 1.0])  # 1 um voxels: |det| 1e-9, still invertible
    for name, affine in {"flipped": flipped, "oblique": oblique, "tiny": tiny}.items():
        vol = read_volume(save_sform_nifti(tmp_path / f"{name}.nii", cube(), affine))
        np.testing.assert_allclose(vol.affine, affine, rtol=1e-6, atol=1e-7)
    qfac = save_qform_nifti(tmp_path / "qfac.nii", cube())
    patch(qfac, PIXDIM, "<f", -1.0)  # qfac -1: a left-handed qform, not a negative voxel size
    assert read_volume(qfac).affine[2, 2] == -2.0
    assert read_volume(save_sform_nifti(tmp_path / "n2.nii", cube(), nifti2=True)).spacing == (2.0, 2.0, 2.0)
    assert read_volume(save_sform_nifti(tmp_path / "n2.nii.gz", cube())).spacing == (2.0, 2.0, 2.0)
    assert capfd.readouterr().err == ""


def test_bad_pixdim_is_refused_without_nibabel_printing(tmp_path, capfd):
    # nibabel logs its pixdim "fixes" straight to stderr; the raw header is checked before it gets the chance,
    # so a CLI's one-line error stays one line.
    bad = patch(save_sform_nifti(tmp_path / "zero.nii", cube()), PIXDIM + 4, "<f", 0.0)
    with pytest.raises(VolumeReadError, match="zero.nii"):
        read_volume(bad)
    assert capfd.readouterr().err == ""


def test_every_reader_passes_the_geometry_gate(tmp_path, monkeypatch):
    # read_volume checks what any reader returns, so a reader that forgot its own check cannot leak a bad affine.
    import age2hie_hub.io.itk as itk

    sitk.WriteImage(sitk.GetImageFromArray(cube()), str(tmp_path / "ok.mha"))
    assert read_volume(tmp_path / "ok.mha").shape == (4, 4, 4)
    singular = np.eye(4)
    singular[:3, 1] = singular[:3, 0]
    monkeypatch.setattr(itk, "read_itk", lambda path, max_bytes: (cube(), singular, {"format": "mha"}))
    with pytest.raises(VolumeReadError, match=r"ok\.mha: the voxel-to-world transform is singular"):
        read_volume(tmp_path / "ok.mha")


def test_dicom_with_zero_pixel_spacing_names_the_dicom_file(tmp_path):
    # A converted DICOM passes the same checks, and the error names the user's file, not dcm2niix's temp output.
    phantom = package_data("heudiconv", "tests", "data", "phantom.dcm")
    raw = phantom.read_bytes()
    good = b"1.625\\1.625 "  # PixelSpacing (0028,0030), explicit VR DS
    assert raw.count(good) == 1
    (tmp_path / "ok.dcm").write_bytes(raw)
    assert read_volume(tmp_path / "ok.dcm").spacing[:2] == pytest.approx((1.625, 1.625))
    (tmp_path / "zero.dcm").write_bytes(raw.replace(good, b"0.000\\0.000 "))
    with pytest.raises(VolumeReadError) as info:
        read_volume(tmp_path / "zero.dcm")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'zero.dcm'}: series ") and "has zero or negative" in message
    assert "age2hie-dicom-" not in message and "\n" not in message


def test_gzip_bombs_are_stopped_at_the_input_limit_and_named(tmp_path, monkeypatch):
    # 4 MiB of zeros gzip to ~4 KiB; with max_bytes 1 MiB an input may expand to 2 MiB (as a zip's content may).
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    bomb = gzip.compress(b"\x00" * (4 << 20))
    small = gzip.compress(b"\x00" * (1 << 20))
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "IM_0001.gz").write_bytes(small)  # 1 MiB: within the limit on its own
    (tmp_path / "series" / "IM_0002.gz").write_bytes(small)  # the second MiB ...
    (tmp_path / "series" / "IM_0003.gz").write_bytes(small)  # ... and this one crosses 2 MiB in total
    (tmp_path / "one.dcm.gz").write_bytes(bomb)
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        zf.writestr("study/IM_0001.gz", bomb)
    cases = {
        tmp_path / "series": r"series/IM_0003\.gz: decompressing this gzip file takes the input over 2\.0 MiB",
        tmp_path / "one.dcm.gz": r"one\.dcm\.gz: decompressing this gzip file takes the input over 2\.0 MiB",
        tmp_path / "export.zip": r"export\.zip: member study/IM_0001\.gz: decompressing this gzip file takes",
    }
    for path, pattern in cases.items():
        with pytest.raises(VolumeReadError, match=pattern):
            read_volume(path, max_bytes=1 << 20)
        assert list(temp.iterdir()) == []  # the temporary folder is removed after a refusal too
    # negative control: under a larger limit the same folder decompresses and reaches dcm2niix (not DICOM)
    with pytest.raises(VolumeReadError, match="no DICOM"):
        read_volume(tmp_path / "series", max_bytes=2 << 20)
    assert list(temp.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "series").iterdir()) == ["IM_0001.gz", "IM_0002.gz", "IM_0003.gz"]
