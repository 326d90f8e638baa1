"""Anatomy masks at the original image size, for the renderer's mask filter (no torch).

* :func:`heart_from_mediastinum` - paper 000: the heart mask is the mediastinum mask with the top
  part of its vertical extent cut (default one third).
* :func:`load_anatomy_masks` - masks of one image from an anatomy folder (SAMed predictions, see
  :mod:`gazeprep.anatomy.store`), with manual overrides taking precedence.
* :func:`load_release_anatomy_masks` - the same from the masks a release ships (EGD-CXR's PNGs),
  found by the dataset's adapter.
* :class:`AnatomyMasks` - the same driven by a recipe's :class:`~gazeprep.recipes.AnatomyFilter`
  (``masks: samed`` reads predictions, ``masks: egd_masks`` the EGD-CXR release PNGs).

Overrides: ``<overrides_dir>/<image_id>/<structure>.png`` (any size, > 0 = inside; resized
nearest). An override of ``heart`` replaces the derived heart; an override of ``mediastinum``
changes the mediastinum and therefore the derived heart (unless the heart is overridden too).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from gazeprep.anatomy.data import load_release_masks, read_mask_png, release_mask_paths, resize_labels
from gazeprep.anatomy.store import OVERRIDES_DIR, MaskStore
from gazeprep.errors import GazeprepError
from gazeprep.paths import safe_component

if TYPE_CHECKING:
    from gazeprep.recipes import AnatomyFilter

DEFAULT_TARGET_STRUCTURES: tuple[str, ...] = ("heart", "left_lung", "right_lung")
#: the dataset whose release masks a recipe's ``masks: egd_masks`` means (the value names it)
RELEASE_MASKS_DATASET = "egd-cxr"
HEART_CUT_TOP = 1.0 / 3.0


class MissingMaskError(GazeprepError):
    """No mask (prediction or override) for an image/structure."""


def heart_from_mediastinum(mediastinum: np.ndarray, cut_top: float = HEART_CUT_TOP) -> np.ndarray:
    """The mediastinum mask (H, W) bool with its top ``cut_top`` fraction removed.

    With ``top``/``bottom`` the first/last rows holding mask pixels and ``extent = bottom - top + 1``,
    rows ``r < top + cut_top * extent`` are cleared (for extent 9 and 1/3: the top 3 rows). An empty
    mask stays empty; ``cut_top = 0`` returns a copy.
    """
    if not 0.0 <= cut_top < 1.0:
        raise GazeprepError(f"heart cut fraction must be in [0, 1), got {cut_top}")
    m = np.asarray(mediastinum, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return m.copy()
    top, bottom = int(rows[0]), int(rows[-1])
    keep_from = top + cut_top * (bottom - top + 1)
    keep_rows = np.arange(m.shape[0]) >= keep_from - 1e-9
    return m & keep_rows[:, None]


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest resize of a bool mask to ``shape`` (H, W) (pixel centres, as :func:`resize_labels`)."""
    return resize_labels(np.asarray(mask, dtype=bool), (int(shape[0]), int(shape[1])))


def read_overrides(overrides_dir: str | Path | None, image_id: str) -> dict[str, np.ndarray]:
    """Manual masks of ``image_id``: {structure: bool} from ``<overrides_dir>/<image_id>/*.png``."""
    if overrides_dir is None:
        return {}
    folder = Path(overrides_dir) / safe_component(image_id)
    if not folder.is_dir():
        return {}
    return {p.stem: read_mask_png(p) for p in sorted(folder.glob("*.png"))}


def _compose(
    base: dict[str, np.ndarray],
    overrides: dict[str, np.ndarray],
    image_shape: tuple[int, int],
    structures: tuple[str, ...],
    heart_cut_top: float,
    image_id: str,
    where: str,
) -> dict[str, np.ndarray]:
    shape = (int(image_shape[0]), int(image_shape[1]))
    merged = {k: resize_mask(v, shape) for k, v in base.items()}
    merged.update({k: resize_mask(v, shape) for k, v in overrides.items()})  # overrides win
    out: dict[str, np.ndarray] = {}
    for s in structures:
        if s in merged and (s != "heart" or "heart" in overrides):
            out[s] = merged[s]
        elif s == "heart" and "mediastinum" in merged:
            out[s] = heart_from_mediastinum(merged["mediastinum"], heart_cut_top)
        elif s in merged:
            out[s] = merged[s]
        else:
            raise MissingMaskError(f"{where}: no {s} mask for image {image_id}")
    return out


@lru_cache(maxsize=8)
def _store(folder: str, index_mtime: float) -> MaskStore:
    return MaskStore(folder)


def open_store(anatomy_dir: str | Path) -> MaskStore:
    """A cached :class:`MaskStore` (re-opened when ``masks.parquet`` changes)."""
    p = Path(anatomy_dir)
    ip = p / "masks.parquet"
    return _store(str(p.resolve()), ip.stat().st_mtime if ip.is_file() else 0.0)


def load_anatomy_masks(
    anatomy_dir: str | Path,
    image_id: str,
    image_shape: tuple[int, int],
    *,
    structures: tuple[str, ...] = DEFAULT_TARGET_STRUCTURES,
    heart_cut_top: float = HEART_CUT_TOP,
    overrides_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Masks of ``image_id`` at ``image_shape`` = (height, width) of the original image, bool.

    Reads the predictions of ``anatomy_dir`` (written by ``gazeprep anatomy predict``), applies the
    overrides of ``overrides_dir`` (default ``<anatomy_dir>/overrides``), and derives ``heart`` from
    the mediastinum (:func:`heart_from_mediastinum`) unless it is overridden.

    Raises :class:`MissingMaskError` (a :class:`GazeprepError`) when a requested structure has
    neither a prediction nor an override.
    """
    folder = Path(anatomy_dir)
    if overrides_dir is None:
        overrides_dir = folder / OVERRIDES_DIR
    overrides = read_overrides(overrides_dir, image_id)
    try:
        base = open_store(folder).read(image_id)
    except GazeprepError:
        if not overrides:
            raise
        base = {}
    return _compose(base, overrides, image_shape, structures, heart_cut_top, image_id, str(folder))


def load_release_anatomy_masks(
    release_root: str | Path,
    image_id: str,
    image_shape: tuple[int, int],
    *,
    dataset: str = RELEASE_MASKS_DATASET,
    structures: tuple[str, ...] = DEFAULT_TARGET_STRUCTURES,
    heart_cut_top: float = HEART_CUT_TOP,
    overrides_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """As :func:`load_anatomy_masks`, from the masks ``dataset``'s release ships (its adapter's
    :meth:`~gazeprep.datasets.base.DatasetAdapter.mask_files`; EGD-CXR: one PNG per structure).

    Raises
    ------
    InputFormatError
        A mask PNG of the case (or an override PNG) is empty (0 bytes), not a PNG or corrupt; the
        message names the PNG (the build records it as the case's ``anatomy`` reject).
    MissingMaskError
        A requested structure has no file.
    GazeprepError
        ``dataset`` is unknown or ships no masks.
    OSError
        An I/O fault (EACCES, EIO) reading an existing PNG: propagated, never a reject.
    """
    base = load_release_masks(dataset, release_root, image_id)
    overrides = read_overrides(overrides_dir, image_id)
    return _compose(base, overrides, image_shape, structures, heart_cut_top, image_id, str(release_root))


def load_egd_anatomy_masks(
    egd_root: str | Path,
    image_id: str,
    image_shape: tuple[int, int],
    *,
    structures: tuple[str, ...] = DEFAULT_TARGET_STRUCTURES,
    heart_cut_top: float = HEART_CUT_TOP,
    overrides_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """:func:`load_release_anatomy_masks` of the EGD-CXR release (a recipe's ``masks: egd_masks``)."""
    return load_release_anatomy_masks(
        egd_root,
        image_id,
        image_shape,
        dataset=RELEASE_MASKS_DATASET,
        structures=structures,
        heart_cut_top=heart_cut_top,
        overrides_dir=overrides_dir,
    )


def export_mask_pngs(
    anatomy_dir: str | Path,
    out: str | Path,
    *,
    image_ids: list[str] | None = None,
    structures: tuple[str, ...] = ("heart", "left_lung", "right_lung", "mediastinum", "aortic_knob"),
    heart_cut_top: float = HEART_CUT_TOP,
) -> int:
    """Write ``<out>/<image_id>/<structure>.png`` (uint8 0/255 at the original image size, overrides
    applied) for every stored image (or ``image_ids``); the files have the override layout, so a
    corrected copy can go straight into ``<anatomy_dir>/overrides``. Returns the number of files."""
    from PIL import Image

    store = open_store(anatomy_dir)
    ids = image_ids if image_ids is not None else sorted(store.done_images())
    n = 0
    for image_id in ids:
        shape = store.image_shape(image_id)
        if shape is None:
            raise MissingMaskError(f"{anatomy_dir}: no masks for image {image_id}")
        masks = load_anatomy_masks(anatomy_dir, image_id, shape, structures=structures, heart_cut_top=heart_cut_top)
        folder = Path(out) / safe_component(image_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, m in masks.items():
            Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{safe_component(name)}.png")
            n += 1
    return n


def masks_table(anatomy_dir: str | Path, overrides_dir: str | Path | None = None) -> pl.DataFrame:
    """The anatomy folder as rows of the canonical ``masks`` table (:data:`gazeprep.schema.MASKS`).

    Predictions: ``source = "samed"``, ``path = "<anatomy_dir>/masks.zarr/<array>#<row>"``;
    overrides: ``source = "override"``, ``path`` = the PNG (``case_id`` is the image id). Derived heart
    masks are not listed (they are computed by :func:`load_anatomy_masks`).
    """
    from gazeprep.schema import MASKS

    folder = Path(anatomy_dir)
    store = open_store(folder)
    idx = store.index
    pred = idx.select(
        "dataset",
        pl.col("image_id").alias("case_id"),
        "structure",
        pl.lit("samed").alias("source"),
        (pl.lit(f"{folder}/masks.zarr/") + pl.col("array") + pl.lit("#") + pl.col("row").cast(pl.Utf8)).alias("path"),
    )
    ov_dir = Path(overrides_dir) if overrides_dir is not None else folder / OVERRIDES_DIR
    dataset = store.meta.get("dataset")
    ov_rows = (
        [
            {"dataset": dataset, "case_id": p.parent.name, "structure": p.stem, "source": "override", "path": str(p)}
            for p in sorted(ov_dir.glob("*/*.png"))
        ]
        if ov_dir.is_dir()
        else []
    )
    ov = pl.DataFrame(ov_rows, schema=MASKS)
    return pl.concat([pred.cast(MASKS), ov]).sort("case_id", "structure", "source")  # type: ignore[arg-type]


def release_masks_table(dataset: str, release_root: str | Path, image_ids: list[str]) -> pl.DataFrame:
    """The mask files ``dataset``'s release ships for ``image_ids`` as rows of the ``masks`` table:
    ``source`` is the adapter's ``mask_source`` (EGD-CXR: ``egd_png``) and ``path`` is relative to
    the release root, as in the adapter's per-case ``masks`` table."""
    from gazeprep.datasets.registry import resolve_dataset
    from gazeprep.schema import MASKS

    root = Path(release_root)
    source = resolve_dataset(dataset).mask_source
    rows = [
        {"dataset": dataset, "case_id": i, "structure": s, "source": source, "path": p.relative_to(root).as_posix()}
        for i in image_ids
        for s, p in release_mask_paths(dataset, root, i).items()
    ]
    return pl.DataFrame(rows, schema=MASKS)


class AnatomyMasks:
    """Masks per recipe target, configured by a recipe's ``anatomy`` section.

    Parameters
    ----------
    anatomy_filter:
        :class:`gazeprep.recipes.AnatomyFilter`.
    default_dir:
        Where the masks are when ``anatomy_filter.model_dir`` is None: the anatomy folder
        (``masks: samed``, usually ``<out>/anatomy``) or the EGD-CXR release root (``masks: egd_masks``,
        the PNGs the release ships, found by its adapter).
    """

    def __init__(self, anatomy_filter: AnatomyFilter, default_dir: str | Path | None = None):
        self.filter = anatomy_filter
        d = anatomy_filter.model_dir or default_dir
        if d is None:
            raise GazeprepError("recipe anatomy filter: no mask folder (set anatomy.model_dir or pass one)")
        self.folder = Path(d)
        self.structures = tuple(dict.fromkeys(anatomy_filter.target_structures.values()))

    def for_image(self, image_id: str, image_shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """{target: bool mask (H, W)} for every target of ``target_structures``."""
        f = self.filter
        loader = load_release_anatomy_masks if f.masks == "egd_masks" else load_anatomy_masks
        by_structure = loader(
            self.folder,
            image_id,
            image_shape,
            structures=self.structures,
            heart_cut_top=f.heart_from_mediastinum_cut_top,
            overrides_dir=f.overrides_dir,
        )
        return {t: by_structure[s] for t, s in f.target_structures.items()}
