"""Image resolution under a MIMIC root and loading to float32 [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gazeprep.datasets.images import image_size, load_image, resolve_image
from gazeprep.errors import GazeprepError, InputFormatError

DICOM = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
REFLACX_IMAGE = f"physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000032/s50414267/{DICOM}.dcm"
EGD_PATH = f"files/p10/p10000032/s50414267/{DICOM}.dcm"


def write_dicom(
    path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", window=None, bits: int = 12, slope=None
) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope
    ds.PixelData = stored.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def stored():
    return np.array([[0, 1000, 2048], [3000, 4095, 500]], dtype=np.uint16)


# ---- resolve ---------------------------------------------------------------------------------
def test_resolve_both_path_styles_and_extension_fallback(tmp_path, stored):
    jpg = tmp_path / "files/p10/p10000032/s50414267" / f"{DICOM}.jpg"
    jpg.parent.mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((4, 3), np.uint8)).save(jpg)
    assert resolve_image(tmp_path, REFLACX_IMAGE) == jpg.resolve()  # .dcm asked, only .jpg present
    assert resolve_image(tmp_path, EGD_PATH) == jpg.resolve()
    dcm = jpg.with_suffix(".dcm")
    write_dicom(dcm, stored)
    assert resolve_image(tmp_path, REFLACX_IMAGE) == dcm.resolve()  # the written extension wins


def test_resolve_under_physionet_prefix(tmp_path, stored):
    dcm = tmp_path / "physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000032/s50414267" / f"{DICOM}.dcm"
    write_dicom(dcm, stored)
    assert resolve_image(tmp_path, REFLACX_IMAGE) == dcm.resolve()
    assert resolve_image(tmp_path, EGD_PATH) == dcm.resolve()


def test_resolve_follows_symlinks_inside_root(tmp_path, stored):
    disk = tmp_path / "other_disk"
    dcm = disk / "p10/p10000032/s50414267" / f"{DICOM}.dcm"
    write_dicom(dcm, stored)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "files").symlink_to(disk, target_is_directory=True)
    assert resolve_image(tmp_path / "root", EGD_PATH) == tmp_path / "root" / EGD_PATH


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "files/../../secret.dcm", "/etc/passwd", "files/p10/../../../x.dcm"]
)
def test_resolve_never_leaves_root(tmp_path, bad):
    (tmp_path / "root").mkdir()
    with pytest.raises(GazeprepError):
        resolve_image(tmp_path / "root", bad)


def test_resolve_missing(tmp_path):
    with pytest.raises(GazeprepError, match="not found"):
        resolve_image(tmp_path, EGD_PATH)


# ---- load ------------------------------------------------------------------------------------
def test_dicom_without_window_uses_stored_bit_range(tmp_path, stored):
    p = tmp_path / "a.dcm"
    write_dicom(p, stored)
    a = load_image(p)
    assert a.dtype == np.float32 and a.shape == (2, 3)
    np.testing.assert_allclose(a, stored / 4095.0, rtol=1e-6)
    assert image_size(p) == (2, 3)


def test_dicom_monochrome1_inverted(tmp_path, stored):
    p = tmp_path / "a.dcm"
    write_dicom(p, stored, photometric="MONOCHROME1")
    np.testing.assert_allclose(load_image(p), 1.0 - stored / 4095.0, rtol=1e-6, atol=1e-7)


def test_dicom_voi_window(tmp_path, stored):
    p = tmp_path / "a.dcm"
    write_dicom(p, stored, window=(2048, 2001))
    # DICOM linear window: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1]
    expected = np.clip((stored - 2047.5) / 2000.0 + 0.5, 0, 1)
    np.testing.assert_allclose(load_image(p), expected, rtol=1e-6)
    assert load_image(p)[0, 2] == pytest.approx(0.50025)


def test_dicom_rescale_then_window(tmp_path, stored):
    p = tmp_path / "a.dcm"
    write_dicom(p, stored, window=(1024, 1025), slope=(0.5, 0))
    expected = np.clip((stored * 0.5 - 1023.5) / 1024.0 + 0.5, 0, 1)
    np.testing.assert_allclose(load_image(p), expected, rtol=1e-6)


def test_png_and_jpg(tmp_path):
    from PIL import Image

    a = np.array([[0, 51, 255]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "m.png")
    np.testing.assert_allclose(load_image(tmp_path / "m.png"), a / 255.0, rtol=1e-6)
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "m.jpg", quality=100)
    assert abs(float(load_image(tmp_path / "m.jpg").mean()) - 200 / 255) < 2 / 255
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_image(tmp_path / "rgb.png").shape == (2, 2)


@pytest.mark.parametrize(
    "name, content",
    [("bad.dcm", b"DICM" * 50), ("bad.jpg", b"\xff\xd8\xff" + b"\x00" * 30), ("bad.png", b"\x89PNG\r\n\x1a\n garbage")],
)
def test_corrupt_image_names_file(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputFormatError) as e:
        load_image(p)
    assert str(p) in str(e.value) and "cannot" in str(e.value)


def test_truncated_dicom_pixels(tmp_path, stored):
    p = tmp_path / "t.dcm"
    write_dicom(p, np.tile(stored, (50, 50)))
    p.write_bytes(p.read_bytes()[:-1000])
    with pytest.raises(InputFormatError, match="t.dcm"):
        load_image(p)


def test_missing_image(tmp_path):
    with pytest.raises(InputFormatError, match="image file not found"):
        load_image(tmp_path / "x.dcm")
