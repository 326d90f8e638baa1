"""Read an export: :func:`load_export` -> :class:`Export`.

An export is loadable only once its ``manifest.json`` exists (the writer renames it in last); the
loader also checks that every file the manifest lists is present with its recorded size, so an
export whose files were removed or truncated afterwards is refused too. :meth:`Export.verify`
additionally compares SHA-256 checksums.

Replaced underneath: another build may replace (or delete) the folder while an :class:`Export` is
open. The export remembers its manifest (file identity and SHA-256) at opening; every table and map
read checks, after reading, that the manifest is still the same one, and a read that fails is
re-checked the same way. A changed or missing manifest raises
:class:`~gazeprep.errors.ExportReplacedError` (open the export again), never a zarr checksum
error or, worse, values from the new build. A rebuild that wrote byte-identical files (same
manifest bytes) is not a replacement. Bulk reads through :meth:`Export.array` are not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import zarr

from gazeprep import schema
from gazeprep.errors import ExportReplacedError, GazeprepError
from gazeprep.export._io import sha256_file
from gazeprep.export.layout import EXPORT_FORMAT, EXPORT_VERSION, MANIFEST, TABLES_DIR, ZARR_DIR
from gazeprep.recipes import Recipe

# errors a read can raise when its files are swapped or deleted underneath it (zarr raises
# ValueError for a shard whose CRC no longer matches, polars ComputeError for a vanished file)
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, pl.exceptions.PolarsError)

_T = TypeVar("_T")


def _stamp(path: Path) -> tuple[int, ...] | None:
    """Identity of the file ``path`` (device, inode, size, mtime, ctime), None when missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Tables(Mapping):
    """``name -> polars.DataFrame``, each Parquet file read on first access and kept.

    ``read`` wraps each file read (the export's replacement check)."""

    def __init__(self, root: Path, names: list[str], read: Callable[[Callable[[], pl.DataFrame], str], pl.DataFrame]):
        self._root = root
        self._names = names
        self._read = read
        self._cache: dict[str, pl.DataFrame] = {}

    def __getitem__(self, name: str) -> pl.DataFrame:
        if name not in self._names:
            raise KeyError(f"no table {name!r} in this export (tables: {', '.join(self._names)})")
        if name not in self._cache:
            rel = f"{TABLES_DIR}/{name}.parquet"
            df = self._read(lambda: pl.read_parquet(self._root / rel), rel)
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
        stamp = _stamp(mpath)
        if not mpath.is_file():
            if (
                (self.path / ".staging").exists()
                or (self.path / TABLES_DIR).exists()
                or (self.path / ZARR_DIR).exists()
            ):
                raise GazeprepError(
                    f"{self.path}: incomplete export (no {MANIFEST}; its build was interrupted or is still "
                    "running) - rerun the build to finish it"
                )
            raise GazeprepError(f"{self.path}: not a gazeprep export (no {MANIFEST})")
        try:
            raw = mpath.read_bytes()
            manifest = json.loads(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GazeprepError(f"{mpath}: unreadable manifest: {exc}") from None
        self._stamp = stamp
        self._manifest_sha: str | None = hashlib.sha256(raw).hexdigest()  # None: unpickled from an old state
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
                self._check_current()  # replaced while opening?
                raise GazeprepError(
                    f"{self.path}: export is damaged: {rel} listed in the manifest is missing"
                ) from None
            if size != info["bytes"]:
                self._check_current()
                raise GazeprepError(
                    f"{self.path}: export is damaged: {rel} has {size} bytes, manifest says {info['bytes']}"
                )
        self.manifest: dict = manifest
        names = sorted(Path(rel).stem for rel in manifest.get("files", {}) if rel.startswith(f"{TABLES_DIR}/"))
        self.tables: Mapping[str, pl.DataFrame] = _Tables(self.path, names, self._checked_read)
        self._lookup: dict[tuple[str, str], tuple[str, int]] | None = None
        self._by_case: dict[str, list[str]] | None = None
        self._group: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}

    # -- replacement check ---------------------------------------------------------------------
    def _check_current(self) -> bool:
        """Raise :class:`ExportReplacedError` when the manifest is gone or differs from the one read
        at opening. Returns True when the manifest file changed but holds the same bytes (an
        identical rebuild): the export is still valid, but a read that failed may be retried."""
        mpath = self.path / MANIFEST
        now = _stamp(mpath)
        if now is not None and now == self._stamp:
            return False
        try:
            raw = mpath.read_bytes()
        except FileNotFoundError:
            raise ExportReplacedError(
                f"{self.path}: the export was removed or is being rebuilt by another process since it was "
                "opened; open it again with load_export once that build has finished"
            ) from None
        except OSError as exc:
            raise ExportReplacedError(
                f"{mpath}: manifest unreadable since the export was opened ({exc.strerror})"
            ) from None
        digest = hashlib.sha256(raw).hexdigest()
        if self._manifest_sha is None:  # unpickled from a state without it: this is the baseline
            self._manifest_sha = digest
        if digest != self._manifest_sha:
            raise ExportReplacedError(
                f"{self.path}: the export was replaced by another build since it was opened; "
                "open it again with load_export"
            )
        self._stamp = _stamp(mpath) if now is None else now
        return True

    def _checked_read(self, read: Callable[[], _T], what: str) -> _T:
        """Run ``read`` (a file read of this export) and check afterwards that the export was not
        replaced meanwhile; a failed read is checked too, and retried once after an identical
        rebuild, else reported as damage naming ``what``."""
        for attempt in (0, 1):
            try:
                value = read()
            except _READ_ERRORS as exc:
                if self._check_current() and attempt == 0:
                    self._group, self._arrays = None, {}
                    continue
                raise GazeprepError(
                    f"{self.path}: export is damaged: reading {what} failed ({exc}); "
                    "Export.verify() compares every file with its checksum"
                ) from None
            self._check_current()
            return value
        raise AssertionError("unreachable")  # pragma: no cover

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
        return Recipe.from_stored(r) if r is not None else None  # its dataset need not be registered here

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
        _, by_case = self._build_lookup()
        return sorted(by_case)

    def keys(self) -> list[tuple[str, str]]:
        """All ``(case_id, target)`` pairs, sorted."""
        lookup, _ = self._build_lookup()
        return sorted(lookup)

    def __len__(self) -> int:
        return int(self.manifest["heatmaps"]["count"])

    def __contains__(self, key: object) -> bool:
        lookup, _ = self._build_lookup()
        return key in lookup

    def __repr__(self) -> str:
        return f"Export({str(self.path)!r}, kind={self.kind}, maps={len(self)}, targets={self.targets})"

    # -- maps ----------------------------------------------------------------------------------
    def _build_lookup(self) -> tuple[dict[tuple[str, str], tuple[str, int]], dict[str, list[str]]]:
        """``(case_id, target) -> (array, row)`` and ``case_id -> sorted targets``, built once."""
        if self._lookup is not None and self._by_case is not None:
            return self._lookup, self._by_case
        idx = self.index.select("case_id", "target", "array", "row")
        lookup: dict[tuple[str, str], tuple[str, int]] = {}
        by_case: dict[str, list[str]] = {}
        for cid, tgt, arr, row in idx.iter_rows():
            lookup[(cid, tgt)] = (arr, int(row))
            by_case.setdefault(cid, []).append(tgt)
        self._lookup = lookup
        self._by_case = {c: sorted(t) for c, t in by_case.items()}
        return self._lookup, self._by_case

    def array(self, name: str) -> zarr.Array:
        """The Zarr array ``name`` (e.g. ``h512_w512``), shape ``(N, H, W)``, for bulk reads."""
        if name not in self._arrays:
            if name not in self.manifest["heatmaps"]["arrays"]:
                raise KeyError(f"no array {name!r} (arrays: {sorted(self.manifest['heatmaps']['arrays'])})")
            if self._group is None:
                self._group = zarr.open_group(zarr.storage.LocalStore(self.path / ZARR_DIR, read_only=True), mode="r")
            node = self._group[name]
            if not isinstance(node, zarr.Array):
                raise GazeprepError(f"{self.path}: export is damaged: {ZARR_DIR}/{name} is not an array")
            self._arrays[name] = node
        return self._arrays[name]

    def heatmap(self, case_id: str, target: str) -> np.ndarray:
        """The map of ``case_id`` for ``target`` as float32 ``(H, W)``.

        Raises KeyError listing the case's targets (or saying the case has none).
        """
        lookup, by_case = self._build_lookup()
        loc = lookup.get((case_id, target))
        if loc is None:
            have = by_case.get(case_id)
            if have is None:
                some = sorted(by_case)[:5]
                raise KeyError(
                    f"case {case_id!r} has no heatmap in {self.path} ({len(by_case)} cases have maps, e.g. {some})"
                )
            raise KeyError(f"case {case_id!r} has no heatmap for target {target!r}; its targets: {have}")
        arr, row = loc
        return self._checked_read(lambda: np.asarray(self.array(arr)[row], dtype=np.float32), f"map {arr}[{row}]")

    def heatmaps_for(self, case_id: str) -> dict[str, np.ndarray]:
        """``target -> float32 (H, W)`` for every map of ``case_id`` (empty dict if none)."""
        _, by_case = self._build_lookup()
        return {t: self.heatmap(case_id, t) for t in by_case.get(case_id, [])}

    # -- integrity -----------------------------------------------------------------------------
    def verify(self) -> None:
        """Recompute the SHA-256 of every file listed in the manifest; raise on any mismatch."""
        for rel, info in self.manifest.get("files", {}).items():
            try:
                got = sha256_file(self.path / rel)
            except OSError as exc:
                self._check_current()
                raise GazeprepError(f"{self.path}: export is damaged: {rel}: {exc.strerror}") from None
            if got != info["sha256"]:
                self._check_current()
                raise GazeprepError(f"{self.path}: {rel} does not match its checksum in the manifest")

    # Picklable for DataLoader workers: caches (open zarr handles) are rebuilt on demand; the
    # manifest identity travels, so a worker also notices a replacement since the first opening.
    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "manifest": self.manifest, "stamp": self._stamp, "manifest_sha": self._manifest_sha}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.manifest = state["manifest"]
        self._stamp = state.get("stamp")
        self._manifest_sha = state.get("manifest_sha")
        names = sorted(Path(rel).stem for rel in self.manifest.get("files", {}) if rel.startswith(f"{TABLES_DIR}/"))
        self.tables = _Tables(self.path, names, self._checked_read)
        self._lookup = None
        self._by_case = None
        self._group = None
        self._arrays = {}


def load_export(out_dir: str | Path) -> Export:
    """Open the export in ``out_dir`` (or given by its ``manifest.json``) (refused with :class:`GazeprepError` when it has no
    ``manifest.json``, i.e. its build never committed, or when listed files are missing)."""
    return Export(out_dir)
