"""Resumable per-case parts: one atomic, pickle-free file per finished case.

Layout: ``<out>/.parts/<case_id>.part.npz``, a zip container readable with
``np.load(path, allow_pickle=False)`` whose members are all ``uint8`` byte arrays:

* ``meta``: UTF-8 JSON ``{format, version, case_id, input_hash, recipe_hash, dtype, codec, targets,
  shapes, tables}``;
* ``table__<name>``: one canonical table of the case as an Arrow IPC file (zstd);
* ``map__<i>``: the i-th map (targets sorted) already encoded as its zarr chunk (cast to the export
  dtype, zstd). Encoding in the worker keeps parts small and makes assembling the Zarr store a copy
  of bytes; an all-zero map is stored as zero bytes.

A part is written to a temporary file in the same folder, fsynced and renamed into place, so a
crash leaves either no part or a complete one (plus perhaps a stray temporary file, ignored and
cleaned by :meth:`PartStore.remove_temp_files`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl

from gazeprep.errors import GazeprepError
from gazeprep.export._io import (
    ZSTD_LEVEL,
    as_u8,
    atomic_write,
    check_dtype,
    decode_chunk,
    encode_chunk,
    is_temp_name,
    npz_bytes,
    remove_path,
)
from gazeprep.export.results import CaseResult
from gazeprep.paths import safe_component

PARTS_DIR = ".parts"
PART_SUFFIX = ".part.npz"
PART_FORMAT = "gazeprep-part"
PART_VERSION = 1


def _ipc_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_ipc(buf, compression="zstd")
    return buf.getvalue()


class PartReader:
    """Read access to one part file (meta, tables and encoded maps), opened lazily."""

    def __init__(self, path: Path):
        self.path = path
        self._npz = np.load(path, allow_pickle=False)
        try:
            self.meta = json.loads(bytes(self._npz["meta"]).decode("utf-8"))
            if self.meta.get("format") != PART_FORMAT or self.meta.get("version") != PART_VERSION:
                raise ValueError("not a gazeprep part of this version")
        except BaseException:
            self._npz.close()
            raise

    @property
    def case_id(self) -> str:
        return self.meta["case_id"]

    @property
    def targets(self) -> list[str]:
        return list(self.meta["targets"])

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(s) for s in self.meta["shapes"]]

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    def table(self, name: str) -> pl.DataFrame:
        return pl.read_ipc(io.BytesIO(bytes(self._npz[f"table__{name}"])))

    def tables(self) -> dict[str, pl.DataFrame]:
        return {name: self.table(name) for name in self.meta["tables"]}

    def encoded(self, i: int) -> bytes:
        """The i-th map's chunk bytes, encoded in :attr:`dtype`."""
        return bytes(self._npz[f"map__{i}"])

    def heatmap(self, i: int) -> np.ndarray:
        return decode_chunk(self.encoded(i), self.shapes[i], self.dtype)

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> "PartReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PartStore:
    """The finished cases of one build, stored under ``<out_dir>/.parts``.

    Parameters
    ----------
    out_dir:
        The export folder (created if missing).
    recipe_hash:
        :meth:`gazeprep.recipes.Recipe.hash` of the build's recipe; parts of another recipe are
        never returned.
    dtype:
        ``float16`` or ``float32``: the export dtype, in which maps are encoded in the part
        (normally ``recipe.output.dtype``). :meth:`get` returns them as float32 either way.
    """

    def __init__(self, out_dir: str | Path, recipe_hash: str, *, dtype: str = "float32"):
        self.out_dir = Path(out_dir)
        self.recipe_hash = str(recipe_hash)
        check_dtype(dtype)
        self.dtype = dtype
        self.dir = self.out_dir / PARTS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- names ---------------------------------------------------------------------------------
    def path(self, case_id: str) -> Path:
        """The part file of ``case_id`` (raises :class:`GazeprepError` for an unsafe id)."""
        return self.dir / f"{safe_component(case_id)}{PART_SUFFIX}"

    def case_ids(self) -> list[str]:
        """Sorted ids of the cases that have a part (of any recipe)."""
        return sorted(p.name[: -len(PART_SUFFIX)] for p in self.dir.glob(f"*{PART_SUFFIX}") if not is_temp_name(p.name))

    # -- write ---------------------------------------------------------------------------------
    def put(self, result: CaseResult) -> Path:
        """Validate ``result`` and store it atomically (replacing an older part of the case)."""
        res = result.validated()
        targets = sorted(res.heatmaps)
        meta = {
            "format": PART_FORMAT,
            "version": PART_VERSION,
            "case_id": res.case_id,
            "input_hash": res.input_hash,
            "recipe_hash": self.recipe_hash,
            "dtype": self.dtype,
            "codec": {"name": "zstd", "level": ZSTD_LEVEL},
            "targets": targets,
            "shapes": [list(res.heatmaps[t].shape) for t in targets],
            "tables": sorted(res.tables),
        }
        members: dict[str, np.ndarray] = {"meta": as_u8(json.dumps(meta, sort_keys=True).encode("utf-8"))}
        for name in sorted(res.tables):
            members[f"table__{name}"] = as_u8(_ipc_bytes(res.tables[name]))
        for i, t in enumerate(targets):
            members[f"map__{i}"] = as_u8(encode_chunk(res.heatmaps[t], self.dtype))
        path = self.path(res.case_id)
        atomic_write(path, npz_bytes(members))
        return path

    # -- read ----------------------------------------------------------------------------------
    def open(self, case_id: str) -> PartReader | None:
        """Open the part of ``case_id`` if it exists, is readable and belongs to this recipe."""
        path = self.path(case_id)
        if not path.is_file():
            return None
        try:
            reader = PartReader(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError):
            return None  # damaged part: treated as missing, rewritten by the next put
        if reader.meta.get("recipe_hash") != self.recipe_hash or reader.case_id != case_id:
            reader.close()
            return None
        return reader

    def input_hash(self, case_id: str) -> str | None:
        """The input hash stored for ``case_id`` (reads only the part's metadata), or None."""
        reader = self.open(case_id)
        if reader is None:
            return None
        with reader:
            return reader.meta.get("input_hash")

    def has(self, case_id: str, input_hash: str) -> bool:
        """Whether a complete part of this recipe with this input hash exists (cheap)."""
        return self.input_hash(case_id) == input_hash

    def get(self, case_id: str, input_hash: str) -> CaseResult | None:
        """The stored result of ``case_id`` if a complete part with the same input hash (and recipe)
        exists, else None. Maps come back as float32 (values as stored in the part's dtype)."""
        reader = self.open(case_id)
        if reader is None:
            return None
        with reader:
            if reader.meta.get("input_hash") != input_hash:
                return None
            try:
                tables = reader.tables()
                maps = {t: reader.heatmap(i) for i, t in enumerate(reader.targets)}
            except (OSError, ValueError, KeyError):
                return None
        rejects = tables.pop("rejects", None)
        rows = rejects.to_dicts() if rejects is not None else []
        return CaseResult(case_id, input_hash, tables, maps, rows)

    # -- housekeeping --------------------------------------------------------------------------
    def remove_temp_files(self) -> int:
        """Delete temporary files left by interrupted writes. Call only while no worker writes."""
        n = 0
        for p in self.dir.iterdir():
            if is_temp_name(p.name):
                remove_path(p)
                n += 1
        return n

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Delete the parts of cases not in ``keep`` (cases no longer in the input); returns them."""
        keep_set = set(keep)
        gone = [c for c in self.case_ids() if c not in keep_set]
        for c in gone:
            self.path(c).unlink(missing_ok=True)
        return gone

    def clear(self) -> None:
        """Delete every part (``--force``)."""
        remove_path(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)


class _ReaderCache:
    """A few open :class:`PartReader` objects, least recently used closed first."""

    def __init__(self, store: PartStore, size: int = 16):
        self.store = store
        self.size = size
        self._open: OrderedDict[str, PartReader] = OrderedDict()

    def get(self, case_id: str) -> PartReader:
        r = self._open.pop(case_id, None)
        if r is None:
            r = self.store.open(case_id)
            if r is None:
                raise GazeprepError(f"part of case {case_id!r} is missing or unreadable in {self.store.dir}")
        self._open[case_id] = r
        while len(self._open) > self.size:
            _, old = self._open.popitem(last=False)
            old.close()
        return r

    def close(self) -> None:
        for r in self._open.values():
            r.close()
        self._open.clear()
