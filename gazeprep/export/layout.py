"""Names of the export layout (shared by the writer and the loader)::

OUT/
  manifest.json             commit marker, written last (see gazeprep.export.writer)
  tables/<name>.parquet     every canonical table of gazeprep.schema.TABLES (zstd)
  heatmaps.zarr/            zarr v3 group; one array per output shape, e.g. "h512_w512"
    h512_w512/zarr.json     shape (N, H, W), chunk (1, H, W), shard (K, H, W), zstd
    h512_w512/c/<j>/0/0     shard j: samples [j*K, (j+1)*K)
  .parts/                   resumable per-case parts (gazeprep.export.parts), not part of the export
"""

from __future__ import annotations

MANIFEST = "manifest.json"
TABLES_DIR = "tables"
ZARR_DIR = "heatmaps.zarr"
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"
EXPORT_FORMAT = "gazeprep-export"
EXPORT_VERSION = 1
DIMENSION_NAMES = ("sample", "y", "x")


def array_name(height: int, width: int) -> str:
    """Name of the Zarr array holding maps of ``height x width`` pixels, e.g. ``h512_w512``."""
    return f"h{int(height)}_w{int(width)}"
