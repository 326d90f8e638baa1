"""Synthetic chest phantoms and miniature release folders for the anatomy tests.

A phantom is a grey image with a bright body ellipse, two dark lung ellipses (the patient's right
lung on the image's left), a bright mediastinum between them and a small aortic knob at the
mediastinum's upper left; sizes and positions jitter per sample.
"""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


def phantom(rng: np.random.Generator, height: int = 96, width: int = 80) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image float32 (H, W) in [0, 1], masks {structure: bool (H, W)})."""
    rr, cc = np.mgrid[0:height, 0:width].astype(np.float64)
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    cy = height * (0.52 + j(0.04))
    cx = width * (0.5 + j(0.04))

    def ell(y0, x0, ry, rx):
        return ((rr - y0) / ry) ** 2 + ((cc - x0) / rx) ** 2 <= 1.0

    body = ell(cy, cx, height * 0.46, width * 0.46)
    ly_r = height * (0.30 + j(0.03))
    lx_r = width * (0.15 + j(0.02))
    right = ell(cy, cx - width * (0.22 + j(0.02)), ly_r, lx_r)  # image left = patient's right
    left = ell(cy + j(2.0), cx + width * (0.22 + j(0.02)), height * (0.30 + j(0.03)), width * (0.15 + j(0.02)))
    media = ell(cy + height * 0.05, cx, height * (0.28 + j(0.03)), width * (0.07 + j(0.01))) & ~left & ~right
    knob = ell(cy - height * 0.2, cx - width * 0.03, height * 0.05, width * 0.05) & media
    img = np.full((height, width), 0.05)
    img[body] = 0.55
    img[right | left] = 0.2
    img[media] = 0.8
    img[knob] = 0.95
    img = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1).astype(np.float32)
    return img, {"left_lung": left, "right_lung": right, "mediastinum": media, "aortic_knob": knob}


def _dicom_id(rng: np.random.Generator) -> str:
    h = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63))).hex
    h = (h + h)[:40]
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_releases(
    base: Path, n_egd: int = 24, n_reflacx: int = 5, seed: int = 0, size=(96, 80), misspell: bool = True
) -> dict:
    """Write ``base/{egd-cxr,mimic-cxr,reflacx}`` with EGD masks and JPG images (REFLACX as DICOM
    for one image). Returns ids and the ground-truth masks of the REFLACX images."""
    rng = np.random.default_rng(seed)
    egd, mimic, refl = base / "egd-cxr", base / "mimic-cxr", base / "reflacx"
    egd.mkdir(parents=True)
    rows = []
    for i in range(n_egd):
        did = _dicom_id(rng)
        subject = 10000000 + i // 2  # two images per subject
        study = 50000000 + i
        rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}/{did}.dcm"
        img, masks = phantom(rng, *size)
        write_png(mimic / rel.replace(".dcm", ".jpg"), (img * 255).round().astype(np.uint8))
        folder = egd / "audio_segmentation_transcripts" / did
        for name, m in masks.items():
            fname = "mediastanum.png" if (name == "mediastinum" and misspell) else f"{name}.png"
            write_png(folder / fname, (m * 255).astype(np.uint8))
        rows.append({"dicom_id": did, "path": rel, "study_id": study, "patient_id": subject})
    with open(egd / "master_sheet.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["dicom_id", "path", "study_id", "patient_id"])
        w.writeheader()
        w.writerows(rows)
    truth = {}
    refl_rows = []
    for i in range(n_reflacx):
        did = _dicom_id(rng)
        subject = 11000000 + i
        rel = f"files/p{str(subject)[:2]}/p{subject}/s{60000000 + i}/{did}.dcm"
        img, masks = phantom(rng, *size)
        truth[did] = masks
        if i == 0:
            _write_dicom(mimic / rel, (img * 4095).round().astype(np.uint16))
        else:
            write_png(mimic / rel.replace(".dcm", ".jpg"), (img * 255).round().astype(np.uint8))
        for rep in range(2 if i == 1 else 1):  # image 1 read twice
            refl_rows.append(
                {
                    "id": f"P1{i:02d}R{rep}",
                    "image": f"physionet.org/files/mimic-cxr/2.0.0/{rel}",
                    "dicom_id": did,
                    "subject_id": subject,
                    "image_size_x": size[1],
                    "image_size_y": size[0],
                }
            )
    (refl / "main_data").mkdir(parents=True)
    with open(refl / "main_data" / "metadata_phase_1.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(refl_rows[0]))
        w.writeheader()
        w.writerows(refl_rows)
    return {
        "egd": egd,
        "mimic": mimic,
        "reflacx": refl,
        "reflacx_truth": truth,
        "egd_ids": [r["dicom_id"] for r in rows],
    }


def _write_dicom(path: Path, arr: np.ndarray) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
