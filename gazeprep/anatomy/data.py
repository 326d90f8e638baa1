"""Inputs of the anatomy stage (no torch): images, EGD-CXR masks, and the image lists of the releases.

Images come from the MIMIC-CXR root (DICOM ``.dcm`` or MIMIC-CXR-JPG ``.jpg``). The release files
name them by a path relative to the MIMIC-CXR release (``files/pXX/p<subject>/s<study>/<dicom_id>.dcm``;
REFLACX prefixes ``physionet.org/files/mimic-cxr/2.0.0/``); :func:`resolve_image` accepts both and
falls back from ``.dcm`` to ``.jpg`` and back.

Image lookup and decoding are the ingest stage's (:mod:`gazeprep.datasets.images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from gazeprep.anatomy.structures import EGD_MASK_FILES, STRUCTURES
from gazeprep.errors import GazeprepError, InputFormatError
from gazeprep.paths import safe_component, safe_join


@dataclass(frozen=True)
class ImageRecord:
    """One image to segment: ``image_id`` = MIMIC dicom_id, ``image_path`` relative to the MIMIC root
    as written in the release, ``subject_id`` for subject-disjoint splits, ``source_row`` the 1-based
    data row of the release file it came from."""

    image_id: str
    image_path: str
    subject_id: str | None = None
    source_file: str | None = None
    source_row: int | None = None


# --------------------------------------------------------------------------- images


def resolve_image(images_root: str | Path, rel_path: str) -> Path:
    """The image file of a release path under the MIMIC root (``.dcm`` or ``.jpg``, with or without
    the ``physionet.org/...`` prefix); see :func:`gazeprep.datasets.images.resolve_image`."""
    from gazeprep.datasets.images import resolve_image as _resolve

    return _resolve(images_root, rel_path)


def load_gray(path: str | Path) -> np.ndarray:
    """A grey image as float32 (H, W) in [0, 1], 1 = bright (DICOM VOI window / bit range,
    MONOCHROME1 inverted; JPG / 255); see :func:`gazeprep.datasets.images.load_image`."""
    from gazeprep.datasets.images import load_image

    return load_image(path)


def resize_float(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (H, W) image to ``size`` (S or (H', W')), float32."""
    h, w = (size, size) if isinstance(size, int) else size
    if img.shape == (h, w):
        return img.astype(np.float32, copy=False)
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer/bool (H, W) map to ``size`` (same dtype).

    Output pixel (r, c) takes input pixel (floor((r + 0.5) H / H'), floor((c + 0.5) W / W')).
    """
    h, w = (size, size) if isinstance(size, int) else size
    H, W = labels.shape
    if (H, W) == (h, w):
        return labels
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return labels[rows[:, None], cols[None, :]]


def read_mask_png(path: str | Path) -> np.ndarray:
    """A mask PNG as bool (H, W): any channel value > 0 is inside (FORMATS.md 2.1).

    See :func:`gazeprep.datasets.images.read_mask_png`: an empty, non-PNG or corrupt file raises
    InputFormatError naming it (a reject); an I/O fault (EACCES, EIO) propagates as OSError.
    """
    from gazeprep.datasets.images import read_mask_png as _read

    return _read(path)


def labels_from_masks(masks: dict[str, np.ndarray], classes: tuple[str, ...]) -> np.ndarray:
    """A uint8 label map from per-structure bool masks: 0 = background, ``classes[k]`` -> k; later
    classes are drawn over earlier ones where masks overlap."""
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.uint8)
    for k, name in enumerate(classes):
        if k == 0 or name not in masks:
            continue
        out[masks[name]] = k
    return out


# --------------------------------------------------------------------------- EGD-CXR


def _read_csv(path: Path, columns: list[str]) -> pl.DataFrame:
    if not path.is_file():
        raise GazeprepError(f"{path} not found")
    try:
        df = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise InputFormatError(path, f"not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputFormatError(path, f"missing column(s) {missing}")
    return df.with_row_index("source_row", offset=1)


def list_egd_cases(root: str | Path) -> list[ImageRecord]:
    """EGD-CXR images from ``master_sheet.csv`` (dicom_id, path, patient_id)."""
    path = Path(root) / "master_sheet.csv"
    df = _read_csv(path, ["dicom_id", "path", "patient_id"])
    return [
        ImageRecord(r["dicom_id"], r["path"], r["patient_id"], str(path), int(r["source_row"]))
        for r in df.select("dicom_id", "path", "patient_id", "source_row").iter_rows(named=True)
        if r["dicom_id"]
    ]


def egd_mask_paths(root: str | Path, dicom_id: str) -> dict[str, Path]:
    """Existing mask files of one EGD-CXR case (structure -> path); missing structures are absent."""
    folder = safe_join(root, "audio_segmentation_transcripts", safe_component(dicom_id))
    found: dict[str, Path] = {}
    for name, files in EGD_MASK_FILES.items():
        for f in files:
            if (folder / f).is_file():
                found[name] = folder / f
                break
    return found


def load_egd_masks(root: str | Path, dicom_id: str, structures: tuple[str, ...] = STRUCTURES) -> dict[str, np.ndarray]:
    """The EGD-CXR masks of ``dicom_id`` as bool arrays at their PNG size (missing ones absent)."""
    paths = egd_mask_paths(root, dicom_id)
    return {s: read_mask_png(paths[s]) for s in structures if s in paths}


# --------------------------------------------------------------------------- REFLACX


def list_reflacx_images(root: str | Path) -> list[ImageRecord]:
    """Distinct REFLACX images (dicom_id) from ``main_data/metadata_phase_{1,2,3}.csv``.

    One image can have several readings; it is segmented once. Columns used: ``dicom_id``,
    ``image``, ``subject_id``.
    """
    main = Path(root) / "main_data"
    files = sorted(main.glob("metadata_phase_*.csv"))
    if not files:
        raise GazeprepError(f"{main}: no metadata_phase_*.csv (is {root} a REFLACX release folder?)")
    seen: dict[str, ImageRecord] = {}
    for f in files:
        df = _read_csv(f, ["dicom_id", "image"])
        has_sub = "subject_id" in df.columns
        for r in df.iter_rows(named=True):
            did = r["dicom_id"]
            if not did or did in seen:
                continue
            seen[did] = ImageRecord(did, r["image"], r["subject_id"] if has_sub else None, str(f), int(r["source_row"]))
    return list(seen.values())


def list_images(dataset: str, root: str | Path) -> list[ImageRecord]:
    """Images of ``dataset`` (``reflacx`` or ``egd-cxr``) under its release ``root``."""
    if dataset == "reflacx":
        return list_reflacx_images(root)
    if dataset == "egd-cxr":
        return list_egd_cases(root)
    raise GazeprepError(f"unknown dataset {dataset!r}; use reflacx or egd-cxr")
