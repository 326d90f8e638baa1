"""Inputs of the anatomy stage (no torch): images, release masks, and the image lists of the releases.

Which images a release holds and which mask files it ships are its adapter's knowledge
(:meth:`gazeprep.datasets.base.DatasetAdapter.images` / ``mask_files``); the functions here look the
adapter up in the dataset registry by name and never test a dataset's name themselves.

Images come from the MIMIC-CXR root (DICOM ``.dcm`` or MIMIC-CXR-JPG ``.jpg``). The release files
name them by a path relative to the MIMIC-CXR release (``files/pXX/p<subject>/s<study>/<dicom_id>.dcm``;
REFLACX prefixes ``physionet.org/files/mimic-cxr/2.0.0/``); :func:`resolve_image` accepts both and
falls back from ``.dcm`` to ``.jpg`` and back.

Image lookup and decoding are the ingest stage's (:mod:`gazeprep.datasets.images`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gazeprep.anatomy.structures import STRUCTURES
from gazeprep.datasets.base import DatasetAdapter, ImageListing, ImageRecord

__all__ = [
    "ImageListing",
    "ImageRecord",
    "labels_from_masks",
    "list_images",
    "load_gray",
    "load_release_masks",
    "read_mask_png",
    "release_mask_paths",
    "resize_float",
    "resize_labels",
    "resolve_image",
]


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
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))


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


# --------------------------------------------------------------------------- releases (through the adapters)


def _adapter(dataset: str) -> DatasetAdapter:
    """The adapter of ``dataset``: a registered name, or a dataset definition YAML file."""
    from gazeprep.datasets.registry import resolve_dataset

    return resolve_dataset(dataset)


def list_images(dataset: str, root: str | Path, *, images_root: str | Path | None = None) -> ImageListing:
    """The distinct images of ``dataset``'s release at ``root``, as its adapter lists them
    (:meth:`~gazeprep.datasets.base.DatasetAdapter.images`), with rejects rows for dropped rows.

    ``dataset`` is a registered dataset name or a definition YAML file. ``images_root`` (the MIMIC
    root) is passed to adapters that need it to open their release.
    """
    return _adapter(dataset).images(Path(root), images_root=Path(images_root) if images_root is not None else None)


def release_mask_paths(dataset: str, root: str | Path, image_id: str) -> dict[str, Path]:
    """The mask files ``dataset``'s release ships for ``image_id`` ({structure: path}, missing
    structures absent), from its adapter (:meth:`~gazeprep.datasets.base.DatasetAdapter.mask_files`).

    Raises GazeprepError when the dataset ships no masks or ``image_id`` is not a plain name.
    """
    return _adapter(dataset).mask_files(Path(root), image_id)


def load_release_masks(
    dataset: str, root: str | Path, image_id: str, structures: tuple[str, ...] = STRUCTURES
) -> dict[str, np.ndarray]:
    """The release masks of ``image_id`` among ``structures`` as bool (H, W) arrays at their file
    size (missing ones absent); see :func:`release_mask_paths` and :func:`read_mask_png`."""
    paths = release_mask_paths(dataset, root, image_id)
    return {s: read_mask_png(paths[s]) for s in structures if s in paths}
