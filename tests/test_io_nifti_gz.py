""".nii.gz read in one pass (io/nifti.py): same voxels as nibabel, gzip members, extensions, limits, damage."""
from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import read_volume

DIM = 40  # byte offset of dim[0..7] (int16) in a NIfTI-1 header


@pytest.fixture(autouse=True, params=["whole member", "streamed"])
def inflater(request, monkeypatch):
    """Every test runs with libdeflate's one-call inflate of the usual single-member file (the dependency) and
    with the streamed zlib path alone (what odd files, and platforms without its wheel, take)."""
    from age2hie_hub.io import nifti

    if request.param == "whole member":
        pytest.importorskip("deflate", reason="deflate (libdeflate) is not installed")
    else:
        monkeypatch.setattr(nifti, "_whole_member", lambda raw, need: None)
    return request.param


def image(nifti2: bool = False, scaled: bool = True, extension: bool = False):
    rng = np.random.default_rng(4)
    data = rng.integers(0, 250, size=(23, 19, 11)).astype(np.uint8)
    img = (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(data, np.diag([1.5, 1.2, 3.0, 1.0]))
    if scaled:
        img.header.set_slope_inter(13.895, -2.5)
    if extension:
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 3000))
    return img


def nibabel_voxels(path) -> np.ndarray:
    return np.asarray(nib.load(str(path), mmap=False).get_fdata(dtype=np.float32))


@pytest.mark.parametrize("nifti2", [False, True])
@pytest.mark.parametrize("extension", [False, True])
def test_same_voxels_and_affine_as_nibabel(tmp_path, nifti2, extension):
    path = tmp_path / "scan.nii.gz"
    nib.save(image(nifti2=nifti2, extension=extension), path)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, nibabel_voxels(path))
    np.testing.assert_array_equal(volume.affine, nib.load(str(path)).affine)


def test_several_gzip_members(tmp_path):
    """Block-gzipped files (bgzip, some pipelines' writers) are a chain of gzip members."""
    path = tmp_path / "scan.nii"
    nib.save(image(), path)
    raw = path.read_bytes()
    chained = tmp_path / "chained.nii.gz"
    chained.write_bytes(b"".join(gzip.compress(raw[i : i + 1000]) for i in range(0, len(raw), 1000)))
    np.testing.assert_array_equal(read_volume(chained).data, nibabel_voxels(path))


def test_truncated_gzip_is_named(tmp_path):
    path = tmp_path / "scan.nii.gz"
    nib.save(image(scaled=False), path)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(VolumeReadError, match=r"cut\.nii\.gz: voxel data cannot be read; the file is corrupt or "
                                              r"truncated \(the header needs \d+ bytes, the gzip stream holds \d+\)"):
        read_volume(cut)


def test_size_limit_is_checked_before_the_voxels_are_inflated(tmp_path):
    """A header claiming a huge image over a tiny gzip stream of zeros (a bomb) stops at the header."""
    raw = bytearray(gzip.decompress(_saved(tmp_path).read_bytes()))
    raw[DIM : DIM + 8] = struct.pack("<4h", 3, 2000, 2000, 2000)
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(bytes(raw) + bytes(1 << 20)))
    with pytest.raises(VolumeReadError, match=r"bomb\.nii\.gz: header dimensions \(2000, 2000, 2000\) need .* GiB, "
                                              r"over the limit"):
        read_volume(bomb, max_bytes=1 << 30)


@pytest.mark.parametrize("where", ["compressed", "stored"])
def test_damaged_stream_is_named(tmp_path, where):
    """Bytes changed inside the compressed voxels: found by the deflate codes or, in stored (uncompressed)
    blocks, by the member's CRC-32; either inflater's error is named as a damaged file."""
    path = tmp_path / "scan.nii"
    nib.save(image(scaled=False) if where == "stored" else nib.Nifti1Image(np.zeros((40, 40, 40), np.uint8),
                                                                            np.eye(4)), path)
    packed = bytearray(gzip.compress(path.read_bytes(), compresslevel=0 if where == "stored" else 6))
    middle = len(packed) // 2
    packed[middle : middle + 16] = bytes(b ^ 0x5A for b in packed[middle : middle + 16])
    bad = tmp_path / "damaged.nii.gz"
    bad.write_bytes(bytes(packed))
    with pytest.raises(VolumeReadError, match=r"damaged\.nii\.gz: (not a readable NIfTI file \(.+\)|voxel data "
                                              r"cannot be read; the file is corrupt)"):
        read_volume(bad)


def test_missing_checksum_is_truncation(tmp_path):
    path = tmp_path / "scan.nii.gz"
    nib.save(image(scaled=False), path)
    cut = tmp_path / "nocrc.nii.gz"
    cut.write_bytes(path.read_bytes()[:-8])  # the trailer: CRC-32 and size
    with pytest.raises(VolumeReadError, match=r"nocrc\.nii\.gz: the gzip stream is truncated: it ends before its "
                                              r"checksum"):
        read_volume(cut)


def whole_member_calls(monkeypatch) -> list:
    """Record the sizes libdeflate was asked to inflate to (none when the streamed path alone is on)."""
    from age2hie_hub.io import _inflate

    calls: list = []
    original = _inflate.inflate
    monkeypatch.setattr(_inflate, "inflate", lambda raw, size, container: calls.append(size) or original(
        raw, size, container))
    return calls


def test_usual_file_is_inflated_in_one_call(tmp_path, monkeypatch, inflater):
    path = tmp_path / "scan.nii.gz"
    nib.save(image(), path)
    calls = whole_member_calls(monkeypatch)
    np.testing.assert_array_equal(read_volume(path).data, nibabel_voxels(path))
    assert calls == ([len(gzip.decompress(path.read_bytes()))] if inflater == "whole member" else [])


@pytest.mark.parametrize("lie", ["larger", "smaller", "huge"])
def test_a_wrong_size_in_the_trailer_is_not_trusted(tmp_path, monkeypatch, lie):
    """The trailer's size (ISIZE) only sizes libdeflate's buffer within a little of what the header needs; a
    wrong one (damage, or a bomb's lie) leaves the file to the streamed path, whose checksum check names it."""
    path = tmp_path / "scan.nii.gz"
    nib.save(image(), path)
    packed = bytearray(path.read_bytes())
    true_size = struct.unpack("<I", packed[-4:])[0]
    packed[-4:] = struct.pack("<I", {"larger": true_size + 100, "smaller": true_size - 100, "huge": 2**32 - 1}[lie])
    bad = tmp_path / "lying.nii.gz"
    bad.write_bytes(bytes(packed))
    calls = whole_member_calls(monkeypatch)
    with pytest.raises(VolumeReadError, match=r"lying\.nii\.gz: not a readable NIfTI file \(.*(length|size).*\)"):
        read_volume(bad)
    assert all(size <= true_size + (1 << 20) for size in calls)  # never a buffer sized by the lie beyond the bound


def test_data_past_the_image_within_the_bound_is_read(tmp_path, monkeypatch, inflater):
    """A member holding more than the image (some writers pad) is read, its checksum checked, in one call."""
    path = tmp_path / "scan.nii"
    nib.save(image(), path)
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(gzip.compress(path.read_bytes() + bytes(5000)))
    calls = whole_member_calls(monkeypatch)
    np.testing.assert_array_equal(read_volume(padded).data, nibabel_voxels(path))
    assert len(calls) == (inflater == "whole member")


def test_gzip_of_something_else_is_named(tmp_path):
    bad = tmp_path / "notnifti.nii.gz"
    bad.write_bytes(gzip.compress(b"hello, this is not an image" * 40))
    with pytest.raises(VolumeReadError, match=r"notnifti\.nii\.gz: not a readable NIfTI file"):
        read_volume(bad)


def _saved(tmp_path):
    path = tmp_path / "base.nii.gz"
    nib.save(image(scaled=False), path)
    return path


def test_header_check_messages_are_not_wrapped(tmp_path):
    """A bad voxel size found in the gzipped header reads exactly as in an uncompressed file."""
    raw = bytearray(gzip.decompress(_saved(tmp_path).read_bytes()))
    raw[80:84] = struct.pack("<f", 0.0)  # pixdim[1]
    bad = tmp_path / "zero.nii.gz"
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(VolumeReadError) as err:
        read_volume(bad)
    assert str(err.value).startswith(f"{bad}: header voxel size") and "zero or negative" in str(err.value)


@pytest.mark.parametrize("dtype, slope, inter", [
    (np.uint8, 13.895, 0.0),  # IXI's storage: the float32 scaling path
    (np.int16, 0.37, 0.0),
    (np.uint16, 1.0, 0.0),
    (np.int16, 0.37, -12.25),  # an intercept: nibabel's own scaling
    (np.int32, 3.1, 0.0),  # wider integers: nibabel's own scaling
    (np.float32, 2.0, 0.0),
])
def test_scaling_equals_nibabel(tmp_path, dtype, slope, inter):
    rng = np.random.default_rng(9)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    raw = (rng.integers(info.min, info.max, size=(9, 8, 7), endpoint=True) if info else rng.normal(size=(9, 8, 7)))
    img = nib.Nifti1Image(raw.astype(dtype), np.eye(4))
    img.header.set_slope_inter(slope, inter)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    got = read_volume(path).data
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, nibabel_voxels(path))


def _layout(kind: str) -> nib.Nifti1Image:
    """Images in the layouts read straight from the inflated bytes, and some that nibabel scales itself."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 250, size=(13, 11, 9))
    affine = np.array([[-1.2, 0.1, 0, 40], [0.05, 1.3, 0, -30], [0, 0, 2.5, -10], [0, 0, 0, 1]])
    if kind == "uint8 x slope":
        img = nib.Nifti1Image(raw.astype(np.uint8), affine)
        img.header.set_slope_inter(13.895, 0.0)
    elif kind == "big-endian int16 x slope":
        img = nib.Nifti1Image((raw - 100).astype(">i2"), affine)
        img.header.set_slope_inter(0.5, 0.0)
    elif kind == "float32":
        img = nib.Nifti1Image((raw * 1e-5).astype(np.float32), affine)
    elif kind == "big-endian float32":
        img = nib.Nifti1Image((raw * 1e-5).astype(">f4"), affine)
    elif kind == "float64 (nibabel)":
        img = nib.Nifti1Image(raw * 1e-5, affine)
    elif kind == "int16 x slope + intercept (nibabel)":
        img = nib.Nifti1Image(raw.astype(np.int16), affine)
        img.header.set_slope_inter(2.0, -7.0)
    else:  # qform only, its qfac -1 (a left-handed voxel order)
        img = nib.Nifti1Image(raw.astype(np.int16), None)
        flipped = np.diag([1.5, 1.5, -3.0, 1.0])
        flipped[:3, 3] = [-20, -25, 30]
        img.header.set_qform(flipped, code=1)
        img.header.set_sform(None, code=0)
    return img


@pytest.mark.parametrize("kind", ["uint8 x slope", "big-endian int16 x slope", "float32", "big-endian float32",
                                  "float64 (nibabel)", "int16 x slope + intercept (nibabel)", "qform only, qfac -1"])
def test_voxels_read_from_the_inflated_bytes_equal_nibabel(tmp_path, monkeypatch, kind):
    from age2hie_hub.io import nifti

    path = tmp_path / "scan.nii.gz"
    nib.save(_layout(kind), path)
    straight: list = []
    original = nifti._voxels_in_memory
    monkeypatch.setattr(nifti, "_voxels_in_memory", lambda *a: (lambda d: straight.append(d is not None) or d)(
        original(*a)))
    volume = read_volume(path)
    assert straight == [not kind.endswith("(nibabel)")]
    expected = nib.load(str(path))
    np.testing.assert_array_equal(volume.data, np.asarray(expected.get_fdata(dtype=np.float32)))
    np.testing.assert_array_equal(volume.affine, expected.affine)
    assert volume.data.dtype == np.float32 and volume.data.flags.writeable
