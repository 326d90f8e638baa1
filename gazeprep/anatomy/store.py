"""On-disk store of predicted anatomy masks (no torch).

Layout of an anatomy folder (the ``--out`` of ``gazeprep anatomy predict``)::

    anatomy.json      model, classes, mask grid, dataset (checked on resume)
    masks.zarr/       Zarr v3 group; array ``masks_<H>x<W>`` bool (rows, H, W), chunk = 1 row,
                      sharded, zstd; one row per (image, structure)
    masks.parquet     index (:data:`MASK_INDEX`): image_id, structure -> array, row
    rejects.parquet   images that could not be segmented, and why (schema ``rejects``)
    overrides/        optional manual corrections: ``overrides/<image_id>/<structure>.png``

Masks are stored on a fixed square grid (default 512 x 512) that covers the whole image (the image
is stretched to the grid, not letterboxed); :mod:`gazeprep.anatomy.masks` resizes them back to the
original image size. An image counts as done only once its rows are in ``masks.parquet``, which is
replaced atomically after the Zarr write, so a killed run resumes cleanly (rows past the index's
last row are overwritten). One writer at a time per folder (``gazeprep anatomy predict`` is the
writer); any number of readers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from gazeprep._atomic import atomic_write_parquet, atomic_write_text
from gazeprep.errors import GazeprepError
from gazeprep.schema import Schema

if TYPE_CHECKING:
    import zarr

MASK_INDEX: Schema = {
    "dataset": pl.Utf8,
    "case_id": pl.Utf8,  # = image_id (masks belong to images; REFLACX readings share them)
    "image_id": pl.Utf8,
    "structure": pl.Utf8,  # left_lung / right_lung / mediastinum / aortic_knob
    "source": pl.Utf8,  # samed
    "array": pl.Utf8,  # Zarr array name in masks.zarr
    "row": pl.Int64,  # index along axis 0 of that array
    "height_px": pl.Int32,  # mask grid
    "width_px": pl.Int32,
    "image_height_px": pl.Int32,  # original image size
    "image_width_px": pl.Int32,
    "area_px": pl.Int64,  # mask pixels on the grid
}

META_FILE = "anatomy.json"
INDEX_FILE = "masks.parquet"
ZARR_DIR = "masks.zarr"
REJECTS_FILE = "rejects.parquet"
OVERRIDES_DIR = "overrides"
SHARD_ROWS = 64


class MaskStore:
    """Read/append access to one anatomy folder.

    Parameters
    ----------
    folder:
        The anatomy folder.
    meta:
        When given, the folder is created if needed and its ``anatomy.json`` must match ``meta``
        (same model and grid) - a resumed run cannot mix masks of two models.
    """

    def __init__(self, folder: str | Path, meta: dict | None = None):
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if meta is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            if meta_path.is_file():
                old = json.loads(meta_path.read_text(encoding="utf-8"))
                if old != json.loads(json.dumps(meta)):
                    diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                    raise GazeprepError(
                        f"{self.folder} already holds masks made with different settings ({', '.join(diff)}); "
                        "use a new --out folder"
                    )
            else:
                atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True))
        elif not meta_path.is_file():
            raise GazeprepError(
                f"{self.folder}: not an anatomy folder (no {META_FILE}); run `gazeprep anatomy predict`"
            )
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ip = self.folder / INDEX_FILE
        self.index = pl.read_parquet(ip) if ip.is_file() else pl.DataFrame(schema=MASK_INDEX)
        self._group: zarr.Group | None = None

    # ------------------------------------------------------------------ zarr
    def _open_group(self, mode: Literal["r", "a"]) -> zarr.Group:
        import zarr

        if self._group is None or mode != "r":
            self._group = zarr.open_group(str(self.folder / ZARR_DIR), mode=mode)
        return self._group

    def _array(self, group: zarr.Group, name: str) -> zarr.Array:
        """The mask array ``name`` of the group; a group in its place is a damaged folder."""
        import zarr

        node = group[name]
        if not isinstance(node, zarr.Array):
            raise GazeprepError(f"{self.folder / ZARR_DIR / name}: a Zarr group where a mask array belongs (damaged)")
        return node

    def done_images(self) -> set[str]:
        """Image ids whose masks are complete in the index."""
        return set(self.index["image_id"].to_list())

    def append(
        self,
        dataset: str,
        images: list[tuple[str, int, int]],
        label_maps: np.ndarray,
        classes: tuple[str, ...],
        source: str = "samed",
    ) -> None:
        """Store the masks of a batch.

        ``images``: (image_id, original height, original width) per image; ``label_maps`` uint8
        (B, H, W) with class indices into ``classes`` (0 = background, not stored).
        """
        from zarr.codecs import ZstdCodec

        b, h, w = label_maps.shape
        structures = [c for c in classes[1:]]
        name = f"masks_{h}x{w}"
        group = self._open_group("a")
        if name in group:
            arr = self._array(group, name)
        else:
            arr = group.create_array(
                name,
                shape=(0, h, w),
                dtype=bool,
                chunks=(1, h, w),
                shards=(SHARD_ROWS, h, w),
                compressors=ZstdCodec(level=3),
                fill_value=False,
            )
        done = self.index.filter(pl.col("array") == name)
        start = int(done.select(pl.col("row").max()).item()) + 1 if done.height else 0
        stack = np.stack([label_maps == k for k in range(1, len(classes))], axis=1).reshape(-1, h, w)
        arr.resize((start + len(stack), h, w))
        arr[start : start + len(stack)] = stack
        rows = []
        for i, (image_id, ih, iw) in enumerate(images):
            for j, s in enumerate(structures):
                r = i * len(structures) + j
                rows.append(
                    {
                        "dataset": dataset,
                        "case_id": image_id,
                        "image_id": image_id,
                        "structure": s,
                        "source": source,
                        "array": name,
                        "row": start + r,
                        "height_px": h,
                        "width_px": w,
                        "image_height_px": ih,
                        "image_width_px": iw,
                        "area_px": int(stack[r].sum()),
                    }
                )
        new = pl.DataFrame(rows, schema=MASK_INDEX)
        self.index = pl.concat([self.index, new]) if self.index.height else new
        atomic_write_parquet(self.index, self.folder / INDEX_FILE)

    def read(self, image_id: str) -> dict[str, np.ndarray]:
        """The stored grid masks of ``image_id``: {structure: bool (H, W)} (empty dict if none)."""
        rows = self.index.filter(pl.col("image_id") == image_id)
        if rows.height == 0:
            return {}
        group = self._open_group("r")
        out: dict[str, np.ndarray] = {}
        for r in rows.iter_rows(named=True):
            out[r["structure"]] = np.asarray(self._array(group, r["array"])[int(r["row"])], dtype=bool)
        return out

    def image_shape(self, image_id: str) -> tuple[int, int] | None:
        """(height, width) of the original image of ``image_id``, or None when it has no masks."""
        rows = self.index.filter(pl.col("image_id") == image_id)
        if rows.height == 0:
            return None
        return int(rows["image_height_px"][0]), int(rows["image_width_px"][0])
