"""Read an export: :func:`load_export` -> :class:`Export`.

An export is loadable only once its ``manifest.json`` exists (the writer renames it in last); the
loader also checks that every file the manifest lists is present with its recorded size, so an
export whose files were removed or truncated afterwards is refused too. :meth:`Export.verify`
additionally compares SHA-256 checksums.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import zarr

from gazeprep import schema
from gazeprep.errors import GazeprepError
from gazeprep.export._io import sha256_file
from gazeprep.export.layout import EXPORT_FORMAT, EXPORT_VERSION, MANIFEST, TABLES_DIR, ZARR_DIR
from gazeprep.recipes import Recipe


class _Tables(Mapping):
    """``name -> polars.DataFrame``, each Parquet file read on first access and kept."""

    def __init__(self, root: Path, names: list[str]):
        self._root = root
        self._names = names
        self._cache: dict[str, pl.DataFrame] = {}

    def __getitem__(self, name: str) -> pl.DataFrame:
        if name not in self._names:
            raise KeyError(f"no table {name!r} in this export (tables: {', '.join(self._names)})")
        if name not in self._cache:
            df = pl.read_parquet(self._root / TABLES_DIR / f"{name}.parquet")
            self._cache[name] = schema.conform(df, name) if name in schema.TABLES else df
        return self._cache[name]

    def __contains__(self, name: object) -> bool:  # without reading the file
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<tables {self._names}>"


class Export:
    """A finished export folder (see :func:`load_export`).

    Attributes
    ----------
    path:
        The export folder.
    manifest:
        The parsed ``manifest.json``.
    tables:
        Lazy mapping ``name -> polars.DataFrame`` of the canonical tables (``tables["heatmaps"]`` is
        the index of the maps: ``case_id, target, recipe, array, row, height_px, width_px, ...``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.name == MANIFEST and self.path.is_file():
            self.path = self.path.parent
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            if (self.path / ".staging").exists() or (self.path / TABLES_DIR).exists() or (self.path / ZARR_DIR).exists():
                raise GazeprepError(
                    f"{self.path}: incomplete export (no {MANIFEST}; its build was interrupted or is still "
                    "running) - rerun the build to finish it"
                )
            raise GazeprepError(f"{self.path}: not a gazeprep export (no {MANIFEST})")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GazeprepError(f"{mpath}: unreadable manifest: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
            raise GazeprepError(f"{mpath}: not a gazeprep export manifest")
        if manifest.get("format_version") != EXPORT_VERSION:
            raise GazeprepError(
                f"{mpath}: export format version {manifest.get('format_version')!r}, this gazeprep reads {EXPORT_VERSION}"
            )
        for rel, info in manifest.get("files", {}).items():
            p = self.path / rel
            try:
                size = p.stat().st_size
            except OSError:
                raise GazeprepError(f"{self.path}: export is damaged: {rel} listed in the manifest is missing") from None
            if size != info["bytes"]:
                raise GazeprepError(f"{self.path}: export is damaged: {rel} has {size} bytes, manifest says {info['bytes']}")
        self.manifest: dict = manifest
        names = sorted(Path(rel).stem for rel in manifest.get("files", {}) if rel.startswith(f"{TABLES_DIR}/"))
        self.tables: Mapping[str, pl.DataFrame] = _Tables(self.path, names)
        self._lookup: dict[tuple[str, str], tuple[str, int]] | None = None
        self._by_case: dict[str, list[str]] | None = None
        self._group = None
        self._arrays: dict[str, zarr.Array] = {}

    # -- metadata ------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``ground_truth`` or ``prediction``."""
        return self.manifest["kind"]

    @property
    def dtype(self) -> str:
        """Storage dtype of the maps (``float16`` or ``float32``); reads always give float32."""
        return self.manifest["heatmaps"]["dtype"]

    @property
    def recipe(self) -> Recipe | None:
        """The recipe the maps were built with (None for exports without one)."""
        r = self.manifest.get("recipe")
        return Recipe.model_validate(r) if r is not None else None

    @property
    def targets(self) -> list[str]:
        """Sorted targets that have at least one map (label ids, ``"full"``, ...)."""
        return list(self.manifest["heatmaps"]["targets"])

    @property
    def index(self) -> pl.DataFrame:
        """The ``heatmaps`` table (one row per map)."""
        return self.tables["heatmaps"]

    @property
    def case_ids(self) -> list[str]:
        """Sorted ids of the cases that have at least one map."""
        self._build_lookup()
        return sorted(self._by_case)

    def keys(self) -> list[tuple[str, str]]:
        """All ``(case_id, target)`` pairs, sorted."""
        self._build_lookup()
        return sorted(self._lookup)

    def __len__(self) -> int:
        return int(self.manifest["heatmaps"]["count"])

    def __contains__(self, key) -> bool:
        self._build_lookup()
        return key in self._lookup

    def __repr__(self) -> str:
        return f"Export({str(self.path)!r}, kind={self.kind}, maps={len(self)}, targets={self.targets})"

    # -- maps ----------------------------------------------------------------------------------
    def _build_lookup(self) -> None:
        if self._lookup is not None:
            return
        idx = self.index.select("case_id", "target", "array", "row")
        lookup = {}
        by_case: dict[str, list[str]] = {}
        for cid, tgt, arr, row in idx.iter_rows():
            lookup[(cid, tgt)] = (arr, int(row))
            by_case.setdefault(cid, []).append(tgt)
        self._lookup = lookup
        self._by_case = {c: sorted(t) for c, t in by_case.items()}

    def array(self, name: str) -> zarr.Array:
        """The Zarr array ``name`` (e.g. ``h512_w512``), shape ``(N, H, W)``, for bulk reads."""
        if name not in self._arrays:
            if name not in self.manifest["heatmaps"]["arrays"]:
                raise KeyError(f"no array {name!r} (arrays: {sorted(self.manifest['heatmaps']['arrays'])})")
            if self._group is None:
                self._group = zarr.open_group(zarr.storage.LocalStore(self.path / ZARR_DIR, read_only=True), mode="r")
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def heatmap(self, case_id: str, target: str) -> np.ndarray:
        """The map of ``case_id`` for ``target`` as float32 ``(H, W)``.

        Raises KeyError listing the case's targets (or saying the case has none).
        """
        self._build_lookup()
        loc = self._lookup.get((case_id, target))
        if loc is None:
            have = self._by_case.get(case_id)
            if have is None:
                some = sorted(self._by_case)[:5]
                raise KeyError(
                    f"case {case_id!r} has no heatmap in {self.path} ({len(self._by_case)} cases have maps, e.g. {some})"
                )
            raise KeyError(f"case {case_id!r} has no heatmap for target {target!r}; its targets: {have}")
        arr, row = loc
        return np.asarray(self.array(arr)[row], dtype=np.float32)

    def heatmaps_for(self, case_id: str) -> dict[str, np.ndarray]:
        """``target -> float32 (H, W)`` for every map of ``case_id`` (empty dict if none)."""
        self._build_lookup()
        return {t: self.heatmap(case_id, t) for t in self._by_case.get(case_id, [])}

    # -- integrity -----------------------------------------------------------------------------
    def verify(self) -> None:
        """Recompute the SHA-256 of every file listed in the manifest; raise on any mismatch."""
        for rel, info in self.manifest.get("files", {}).items():
            got = sha256_file(self.path / rel)
            if got != info["sha256"]:
                raise GazeprepError(f"{self.path}: {rel} does not match its checksum in the manifest")

    # Picklable for DataLoader workers: caches (open zarr handles) are rebuilt on demand.
    def __getstate__(self):
        return {"path": self.path, "manifest": self.manifest}

    def __setstate__(self, state):
        self.path = state["path"]
        self.manifest = state["manifest"]
        names = sorted(Path(rel).stem for rel in self.manifest.get("files", {}) if rel.startswith(f"{TABLES_DIR}/"))
        self.tables = _Tables(self.path, names)
        self._lookup = None
        self._by_case = None
        self._group = None
        self._arrays = {}


def load_export(out_dir: str | Path) -> Export:
    """Open the export in ``out_dir`` (or given by its ``manifest.json``) (refused with :class:`GazeprepError` when it has no
    ``manifest.json``, i.e. its build never committed, or when listed files are missing)."""
    return Export(out_dir)
