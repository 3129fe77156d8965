"""age2hie_hub.io: formats, geometry (LPS <-> RAS), atomic writes, and real DICOM through dcm2niix."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from age2hie_hub.errors import VolumeReadError, VolumeWriteError
from age2hie_hub.io import Volume, read_volume, write_volume
from age2hie_hub.io.itk import affine_to_itk_geometry, itk_geometry_to_affine
from conftest import package_data

sitk = pytest.importorskip("SimpleITK")


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(flip_x: bool = True) -> np.ndarray:
    """An oblique, anisotropic, LAS-like affine (rotated ~10-20 degrees on all axes)."""
    a = np.eye(4)
    a[:3, :3] = rotation(0.2, -0.15, 0.3) @ np.diag([-1.2 if flip_x else 1.2, 0.9, 3.0])
    a[:3, 3] = [81.5, -102.25, -40.0]
    return a


AFFINES = {
    "identity": np.eye(4),
    "anisotropic_las": np.diag([-0.8, 1.1, 2.5, 1.0]) + np.array([[0, 0, 0, 60], [0, 0, 0, -70], [0, 0, 0, 10],
                                                                    [0, 0, 0, 0]]),
    "oblique": oblique_affine(),
}
SUFFIXES = [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr"]


def random_volume(shape=(7, 6, 5), affine=None, seed=0, **meta) -> Volume:
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 30, size=shape).astype(np.float32)
    return Volume(data=data, affine=np.eye(4) if affine is None else affine, metadata=meta)


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", list(AFFINES))
def test_round_trip_3d_keeps_data_and_affine(tmp_path, suffix, name):
    vol = random_volume(affine=AFFINES[name])
    out = write_volume(vol, tmp_path / f"img{suffix}")
    back = read_volume(out)
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    assert back.metadata["source"] == str(out)
    # Nothing but the image (and a detached data file) is left in the folder: no temp files.
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left[0].startswith("img") and not any(n.startswith(".") for n in left)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_4d(tmp_path, suffix):
    vol = random_volume(shape=(5, 4, 3, 6), affine=AFFINES["oblique"])
    back = read_volume(write_volume(vol, tmp_path / f"dwi{suffix}"))
    assert back.shape == (5, 4, 3, 6)
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_nifti_writes_and_reads_fsl_sidecars(tmp_path):
    bvals = [0.0, 1000.0, 1000.0, 2000.0]
    bvecs = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.6, 0.8]]
    vol = random_volume(shape=(4, 4, 4, 4), bvals=bvals, bvecs=bvecs)
    out = write_volume(vol, tmp_path / "dwi.nii.gz")
    assert (tmp_path / "dwi.bval").is_file() and (tmp_path / "dwi.bvec").is_file()
    back = read_volume(out)
    assert back.metadata["bvals"] == bvals
    np.testing.assert_allclose(back.metadata["bvecs"], bvecs)


def test_bids_json_sidecar_is_read(tmp_path):
    write_volume(random_volume(), tmp_path / "sub-01_T1w.nii.gz")
    (tmp_path / "sub-01_T1w.json").write_text('{"RepetitionTime": 2.3, "MagneticFieldStrength": 3}')
    assert read_volume(tmp_path / "sub-01_T1w.nii.gz").metadata["sidecar"]["RepetitionTime"] == 2.3


def test_nifti_scaling_and_trailing_singleton_axes(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(5, 4, 3, 1)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, 10)
    nib.save(img, tmp_path / "s.nii")
    back = read_volume(tmp_path / "s.nii")
    assert back.shape == (5, 4, 3)  # (X, Y, Z, 1) is a 3D volume
    np.testing.assert_allclose(back.data, data[..., 0] * 0.5 + 10)


def test_write_units_survive_metaimage(tmp_path):
    vol = random_volume(units="mm2/s")
    assert read_volume(write_volume(vol, tmp_path / "adc.mha")).metadata["units"] == "mm2/s"


# --- geometry: ITK's LPS vs nibabel's RAS --------------------------------------------------------------------


def test_itk_geometry_conversion_inverts():
    a = oblique_affine()
    spacing, direction, origin = affine_to_itk_geometry(a)
    np.testing.assert_allclose(itk_geometry_to_affine(spacing, direction, origin), a, atol=1e-12)


def test_lps_ras_agree_between_nibabel_and_simpleitk(tmp_path):
    """The same oblique NIfTI read by nibabel and by SimpleITK maps every voxel to the same world point."""
    a = oblique_affine()
    data = np.random.default_rng(1).normal(size=(6, 5, 4)).astype(np.float32)
    img = nib.Nifti1Image(data, a)
    img.set_qform(a, 1)
    img.set_sform(a, 1)
    nib.save(img, tmp_path / "o.nii.gz")
    itk_img = sitk.ReadImage(str(tmp_path / "o.nii.gz"))
    for index in [(0, 0, 0), (5, 0, 0), (0, 4, 3), (3, 2, 1)]:
        lps = np.array(itk_img.TransformIndexToPhysicalPoint(index))
        ras = (a @ np.r_[index, 1.0])[:3]
        np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-4)
    # SimpleITK's own MetaImage of that image, read back by our ITK path, equals our nibabel path.
    sitk.WriteImage(itk_img, str(tmp_path / "o.mha"))
    via_nib, via_itk = read_volume(tmp_path / "o.nii.gz"), read_volume(tmp_path / "o.mha")
    np.testing.assert_allclose(via_itk.affine, via_nib.affine, atol=1e-4)
    np.testing.assert_array_equal(via_itk.data, via_nib.data)


def test_real_las_image_matches_nibabel():
    path = package_data("nibabel", "tests", "data", "anatomical.nii")
    vol = read_volume(path)
    ref = nib.load(str(path))
    np.testing.assert_allclose(vol.affine, ref.affine)
    assert nib.aff2axcodes(vol.affine) == ("L", "A", "S")
    np.testing.assert_allclose(vol.data, ref.get_fdata(dtype=np.float32))


# --- real DICOM through dcm2niix ----------------------------------------------------------------------------


def test_heudiconv_mosaic_dwi_reads_as_4d_series():
    folder = package_data("heudiconv", "tests", "data", "b0dwiForFmap")
    vol = read_volume(folder)
    assert vol.shape == (150, 152, 81, 3)
    np.testing.assert_allclose(vol.spacing, (1.5, 1.5, 1.5), atol=1e-4)
    assert vol.metadata["bvals"] == [5.0, 5.0, 1500.0]
    assert len(vol.metadata["bvecs"]) == 3
    assert vol.metadata["sidecar"]["Manufacturer"] == "Siemens"
    assert vol.metadata["format"] == "dicom" and vol.metadata["source"] == str(folder)


def test_dicom_zip_reads_like_its_folder(tmp_path):
    folder = package_data("heudiconv", "tests", "data", "b0dwiForFmap")
    zpath = tmp_path / "series.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(folder.glob("*.dcm")):
            zf.write(f, f"nested/{f.name}")
    a, b = read_volume(folder), read_volume(zpath)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine)
    assert b.metadata["bvals"] == a.metadata["bvals"]


def test_single_dicom_file(shared_data):
    (f,) = (shared_data / "siemens_xa30_dwi" / "scanner_adc").glob("*.dcm")
    vol = read_volume(f)
    assert vol.shape == (72, 72, 39)
    assert "ADC" in vol.metadata["sidecar"]["ImageType"]


def test_xa30_enhanced_dicom_diffusion_series(shared_data):
    vol = read_volume(shared_data / "siemens_xa30_dwi" / "dwi")
    assert vol.shape == (72, 72, 39, 21)
    np.testing.assert_allclose(vol.spacing, (3, 3, 3), atol=1e-4)
    assert vol.metadata["bvals"] == [0.0] + [2500.0] * 20
    # The scanner's ADC map of the same acquisition is on the same grid.
    adc = read_volume(shared_data / "siemens_xa30_dwi" / "scanner_adc")
    np.testing.assert_allclose(adc.affine, vol.affine, atol=1e-4)


def test_gzipped_dicom_series_reads_as_the_plain_one(tmp_path, shared_data, monkeypatch):
    # PACS exports gzip each file (IM_0001.gz, *.dcm.gz); dcm2niix cannot read them, read_volume decompresses.
    import gzip
    import tempfile

    from age2hie_hub.dwi import compute_adc

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    plain_folder = shared_data / "siemens_xa30_dwi" / "dwi"
    files = sorted(plain_folder.glob("*.dcm"))
    gz_folder = tmp_path / "gz"
    gz_folder.mkdir()
    mixed = tmp_path / "mixed" / "sub"  # some files gzipped, some not, one level down
    mixed.mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        for i, f in enumerate(files):
            name = f"{f.name}.gz" if i % 2 else f"IM_{i + 1:04d}.gz"  # both names PACS exports use
            packed = gzip.compress(f.read_bytes(), compresslevel=1)
            (gz_folder / name).write_bytes(packed)
            zf.writestr(f"study/{name}", packed)
            if i % 3:
                (mixed / name).write_bytes(packed)
            else:
                shutil.copy(f, mixed / f.name)
    plain = read_volume(plain_folder)
    adc = compute_adc(plain)
    for source in (gz_folder, tmp_path / "export.zip", tmp_path / "mixed"):
        vol = read_volume(source)
        assert vol.shape == plain.shape == (72, 72, 39, 21)
        np.testing.assert_allclose(vol.affine, plain.affine, rtol=0, atol=1e-6)
        assert vol.metadata["bvals"] == plain.metadata["bvals"] == [0.0] + [2500.0] * 20
        np.testing.assert_allclose(vol.metadata["bvecs"], plain.metadata["bvecs"], atol=1e-6)
        np.testing.assert_allclose(compute_adc(vol).data, adc.data, rtol=1e-6, atol=1e-12)
        assert list(temp.iterdir()) == []  # the temporary folder is gone
    assert all(p.name.endswith(".gz") for p in gz_folder.iterdir())  # the user's folder is left as it was
    # one gzipped file alone reads as the plain file (a 3D volume)
    single = read_volume(gz_folder / "IM_0001.gz")
    np.testing.assert_array_equal(single.data, read_volume(files[0]).data)


def test_several_series_pick_most_volumes(tmp_path, shared_data):
    src = shared_data / "siemens_xa30_dwi"
    for sub in ("dwi", "scanner_adc"):
        for f in (src / sub).glob("*.dcm"):
            shutil.copy(f, tmp_path / f"{sub}_{f.name}")
    vol = read_volume(tmp_path)
    assert vol.shape == (72, 72, 39, 21)


def test_several_series_tie_is_an_error_listing_them(tmp_path, shared_data):
    src = shared_data / "siemens_xa30_dwi"
    for sub in ("scanner_adc", "scanner_tracew"):
        for f in (src / sub).glob("*.dcm"):
            shutil.copy(f, tmp_path / f"{sub}_{f.name}")
    with pytest.raises(VolumeReadError, match=r"holds 2 series.*1 volume.*1 volume"):
        read_volume(tmp_path)


# --- writer errors --------------------------------------------------------------------------------------------


def test_write_unknown_suffix_and_missing_folder(tmp_path):
    vol = random_volume()
    with pytest.raises(VolumeWriteError, match="unknown output format"):
        write_volume(vol, tmp_path / "x.png")
    with pytest.raises(VolumeWriteError, match="does not exist"):
        write_volume(vol, tmp_path / "missing" / "x.nii.gz")


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path):
    target = tmp_path / "x.mha"
    write_volume(random_volume(seed=1), target)
    before = target.read_bytes()
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(VolumeWriteError, match="shear"):
        write_volume(random_volume(affine=sheared), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mha"]


def test_4d_axis_order_agrees_with_simpleitk(tmp_path):
    """A 4D NIfTI converted by SimpleITK itself to MetaImage reads back identically (no self-cancelling transposes)."""
    a = oblique_affine()
    data = np.random.default_rng(2).normal(size=(5, 4, 3, 2)).astype(np.float32)
    img = nib.Nifti1Image(data, a)
    img.set_qform(a, 1)
    img.set_sform(a, 1)
    nib.save(img, tmp_path / "d.nii")
    itk_img = sitk.ReadImage(str(tmp_path / "d.nii"))
    assert itk_img.GetDimension() == 4
    assert sitk.GetArrayViewFromImage(itk_img)[1, 2, 3, 4] == data[4, 3, 2, 1]
    sitk.WriteImage(itk_img, str(tmp_path / "d.mha"))
    vol = read_volume(tmp_path / "d.mha")
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, a, atol=1e-4)


def test_slicer_nrrd_dwi_gives_bvals(tmp_path):
    """Slicer's DWI NRRD: a vector image whose components are the gradients, b-values in key/value pairs."""
    grads = [[0, 0, 0], [1, 0, 0], [0, 0.7071068, 0.7071068]]
    data = np.random.default_rng(3).uniform(1, 2, size=(4, 3, 2, 3)).astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0, 3)), isVector=True)
    img.SetMetaData("DWMRI_b-value", "1000")
    for i, g in enumerate(grads):
        img.SetMetaData(f"DWMRI_gradient_{i:04d}", " ".join(map(str, g)))
    sitk.WriteImage(img, str(tmp_path / "dwi.nrrd"))
    vol = read_volume(tmp_path / "dwi.nrrd")
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.metadata["bvals"], [0, 1000, 1000], atol=1e-3)
    assert vol.metadata["bvecs_frame"] == "world"
