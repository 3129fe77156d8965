"""MetaImage voxels read by libdeflate (io/itk.py `_metaimage_voxels`): the same arrays as SimpleITK's reader on
every layout it takes, and SimpleITK (with its messages) for everything else."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import itk, read_volume


def through_simpleitk(monkeypatch, path):
    with monkeypatch.context() as m:
        m.setattr(itk, "_metaimage_voxels", lambda *args: None)
        return read_volume(path)


def fast_reads(monkeypatch) -> list:
    """Record, per read, whether the voxels came from the libdeflate path (True) or were left to SimpleITK."""
    taken: list = []
    original = itk._metaimage_voxels

    def spy(*args):
        arr = original(*args)
        taken.append(arr is not None)
        return arr

    monkeypatch.setattr(itk, "_metaimage_voxels", spy)
    return taken


def write(path, array: np.ndarray, compressed: bool, vector: bool = False):
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing([1.5, 0.9, 3.0][: image.GetDimension()] + [1.0] * (image.GetDimension() - 3))
    image.SetOrigin([10.0, -4.0, 2.5] + [0.0] * (image.GetDimension() - 3))
    if image.GetDimension() == 3:
        angle = np.deg2rad(12.0)
        image.SetDirection([np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0])
    sitk.WriteImage(image, str(path), useCompression=compressed)
    return path


def volume(dtype, shape=(7, 9, 11)) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(np.dtype(dtype).str)) % 2**32)
    values = rng.normal(40.0, 30.0, size=shape)
    if np.dtype(dtype).kind == "u":
        values = np.abs(values)
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compressed", [True, False])
def test_same_volume_as_simpleitk(tmp_path, monkeypatch, dtype, compressed):
    path = write(tmp_path / "map.mha", volume(dtype), compressed)
    expected = through_simpleitk(monkeypatch, path)
    taken = fast_reads(monkeypatch)
    got = read_volume(path)
    assert taken == [True]
    np.testing.assert_array_equal(got.data, expected.data)
    np.testing.assert_array_equal(got.affine, expected.affine)
    assert got.data.dtype == np.float32 and got.data.shape == (11, 9, 7)
    got.data[0, 0, 0] = 1.0  # the reader's own array, not a view on read-only bytes


def test_4d_series_same_as_simpleitk(tmp_path, monkeypatch):
    path = write(tmp_path / "dwi.mha", volume(np.int16, shape=(3, 5, 6, 7)), compressed=True)
    expected = through_simpleitk(monkeypatch, path)
    taken = fast_reads(monkeypatch)
    got = read_volume(path)
    assert taken == [True] and got.data.shape == (7, 6, 5, 3)
    np.testing.assert_array_equal(got.data, expected.data)


def test_big_endian_raw_voxels(tmp_path, monkeypatch):
    """MetaImage may store big-endian voxels (BinaryDataByteOrderMSB = True): the values must not change."""
    little = write(tmp_path / "little.mha", volume(np.float32), compressed=False)
    raw = little.read_bytes()
    split = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    header = raw[:split].replace(b"BinaryDataByteOrderMSB = False", b"BinaryDataByteOrderMSB = True")
    assert header != raw[:split]
    big = tmp_path / "big.mha"
    big.write_bytes(header + np.frombuffer(raw[split:], "<f4").astype(">f4").tobytes())
    taken = fast_reads(monkeypatch)
    got = read_volume(big)
    assert taken == [True]
    np.testing.assert_array_equal(got.data, read_volume(little).data)
    np.testing.assert_array_equal(got.data, through_simpleitk(monkeypatch, big).data)


def test_two_file_metaimage_same_as_simpleitk(tmp_path, monkeypatch):
    """.mhd + .zraw (or .raw): the voxels are read from the data file beside the header."""
    for compressed in (True, False):
        path = write(tmp_path / f"map{int(compressed)}.mhd", volume(np.int16), compressed=compressed)
        assert len(list(tmp_path.glob(f"map{int(compressed)}.*raw"))) == 1
        expected = through_simpleitk(monkeypatch, path)
        taken = fast_reads(monkeypatch)
        got = read_volume(path)
        assert taken == [True]
        np.testing.assert_array_equal(got.data, expected.data)


def test_vector_voxels_are_left_to_simpleitk(tmp_path, monkeypatch):
    path = write(tmp_path / "vec.mha", volume(np.float32, shape=(5, 6, 7, 3)), compressed=True, vector=True)
    expected = through_simpleitk(monkeypatch, path)
    taken = fast_reads(monkeypatch)
    got = read_volume(path)
    assert taken == []
    np.testing.assert_array_equal(got.data, expected.data)


@pytest.mark.parametrize("damage", ["flipped bytes", "cut short"])
def test_damaged_stream_is_named(tmp_path, monkeypatch, damage):
    """Damage in the compressed voxels (bad codes, the Adler-32 checksum, a stream cut short) is named; SimpleITK
    printed "Uncompress failed" for the flipped bytes and returned an image."""
    data = np.zeros((20, 20, 20), np.float32)
    data[5:15, 5:15, 5:15] = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    path = write(tmp_path / "map.mha", data, compressed=True)
    raw = bytearray(path.read_bytes())
    split = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    body = raw[split:]
    assert zlib.decompress(bytes(body)) == data.tobytes()
    if damage == "flipped bytes":
        middle = split + len(body) // 2
        raw[middle : middle + 8] = bytes(b ^ 0x5A for b in raw[middle : middle + 8])
    else:
        raw = raw[: split + len(body) // 2]
    bad = tmp_path / "damaged.mha"
    bad.write_bytes(bytes(raw))
    taken = fast_reads(monkeypatch)
    with pytest.raises(VolumeReadError, match=r"damaged\.mha: voxel data cannot be read; the compressed voxel data "
                                              r"is (damaged|truncated)"):
        read_volume(bad)
    assert taken == []  # raised inside, before any array


def test_real_bonbid_maps_same_as_simpleitk(monkeypatch, shared_data):
    maps = sorted((shared_data / "bonbid2023" / "1ADC_ss").glob("*.mha"))[:3]
    if not maps:
        pytest.skip(f"no BONBID-HIE ADC maps under {shared_data / 'bonbid2023' / '1ADC_ss'}")
    for path in maps:
        expected = through_simpleitk(monkeypatch, path)
        taken = fast_reads(monkeypatch)
        got = read_volume(path)
        assert taken == [True], path
        np.testing.assert_array_equal(got.data, expected.data)
        np.testing.assert_array_equal(got.affine, expected.affine)
        assert got.metadata == expected.metadata


def _split(raw: bytes) -> int:
    return raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")


def test_bytes_after_the_stream_are_ignored(tmp_path, monkeypatch):
    """Without CompressedDataSize the stream runs to the end of the file; bytes after its end are not voxels."""
    path = write(tmp_path / "map.mha", volume(np.float32), compressed=True)
    raw = path.read_bytes()
    split = _split(raw)
    header = b"".join(line for line in raw[:split].splitlines(keepends=True)
                      if not line.startswith(b"CompressedDataSize"))
    padded = tmp_path / "padded.mha"
    padded.write_bytes(header + raw[split:] + b"\0" * 64)
    np.testing.assert_array_equal(read_volume(padded).data, read_volume(path).data)


def test_a_stream_larger_than_the_header_says_is_named(tmp_path):
    """The header's size bounds the inflating: a stream holding more (a bomb, or a wrong header) stops there."""
    big = np.ones((40, 40, 40), np.float32)
    path = write(tmp_path / "map.mha", big[:10], compressed=True)
    raw = path.read_bytes()
    split = _split(raw)
    header = b"".join(line for line in raw[:split].splitlines(keepends=True)
                      if not line.startswith(b"CompressedDataSize"))
    bomb = tmp_path / "bomb.mha"
    bomb.write_bytes(header + zlib.compress(big.tobytes()))
    with pytest.raises(VolumeReadError, match=r"bomb\.mha: voxel data cannot be read; the compressed voxel data "
                                              r"holds more than the 64000 bytes"):
        read_volume(bomb)
