"""Resumable per-case parts: one atomic, pickle-free file per finished case.

Layout: ``<out>/.parts/<case_id>.part``, a small container of raw byte members::

    b"GZPPART1"                  8-byte magic
    <u8 little endian>           length of the header
    header                       UTF-8 JSON: {format, version, case_id, input_hash, recipe_hash,
                                 dtype, codec, targets, shapes, tables,
                                 members: [[name, offset, nbytes, crc32c], ...]}
    members                      back to back, offsets relative to the end of the header

Members: ``table__<name>`` is one canonical table of the case as an Arrow IPC file; ``map__<i>`` is
the i-th map (targets sorted) already encoded as its zarr chunk (cast to the export dtype, zstd).
Encoding in the worker keeps parts small and makes assembling the Zarr store a copy of bytes; an
all-zero map is an empty member. Every member carries a CRC-32C that is checked on reading.

A part is written to a temporary file in the same folder and renamed into place, so a crash
leaves either no part or a complete one (plus perhaps a stray temporary file, ignored and cleaned
by :meth:`PartStore.remove_temp_files`). A part damaged on disk fails its checks and counts as
missing (it is recomputed).
"""

from __future__ import annotations

import io
import json
import struct
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import google_crc32c
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from gazeprep.errors import GazeprepError
from gazeprep.export._io import (
    ZSTD_LEVEL,
    atomic_write,
    check_dtype,
    decode_chunk,
    encode_chunk,
    is_temp_name,
    remove_path,
)
from gazeprep.export.results import CaseResult
from gazeprep.paths import safe_component

PARTS_DIR = ".parts"
PART_SUFFIX = ".part"
PART_FORMAT = "gazeprep-part"
PART_VERSION = 1
_MAGIC = b"GZPPART1"
_MAX_HEADER = 1 << 26
_CACHE_BODY_BELOW = 32 << 20  # a region (tables / maps) smaller than this is read in one go


class DamagedPart(ValueError):
    """A part file that is truncated, corrupted or not a part."""


def _ipc_bytes(df: pl.DataFrame) -> bytes:
    # uncompressed: tables are small next to the maps, and reading is ~5x faster this way
    buf = io.BytesIO()
    df.write_ipc(buf, compression="uncompressed")
    return buf.getvalue()


def part_bytes(meta: dict, members: list[tuple[str, bytes]]) -> bytes:
    """Serialise a part: ``meta`` (JSON-able, without ``members``) and named byte members."""
    table, offset = [], 0
    for name, data in members:
        table.append([name, offset, len(data), google_crc32c.value(data)])
        offset += len(data)
    header = json.dumps({**meta, "members": table}, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"".join([_MAGIC, struct.pack("<Q", len(header)), header, *(d for _, d in members)])


class PartReader:
    """Read access to one part file: header at once, members on demand (CRC-checked)."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) != 16 or head[:8] != _MAGIC:
                raise DamagedPart(f"{path}: not a gazeprep part")
            (n,) = struct.unpack("<Q", head[8:])
            if n > _MAX_HEADER:
                raise DamagedPart(f"{path}: implausible header length {n}")
            raw = f.read(n)
            self._data_start = 16 + n
            self._size = f.seek(0, 2)
        self._regions: dict[int, bytes] = {}
        if len(raw) != n:
            raise DamagedPart(f"{path}: truncated header")
        try:
            self.meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DamagedPart(f"{path}: bad header ({exc})") from None
        if self.meta.get("format") != PART_FORMAT or self.meta.get("version") != PART_VERSION:
            raise DamagedPart(f"{path}: not a gazeprep part of version {PART_VERSION}")
        self._members = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in self.meta["members"]}
        end = max((o + n for o, n, _ in self._members.values()), default=0)
        self._maps_start = min((o for k, (o, _, _) in self._members.items() if k.startswith("map__")), default=end)
        if self._data_start + end != self._size:
            raise DamagedPart(f"{path}: {self._size} bytes, header describes {self._data_start + end}")

    def _read(self, offset: int, n: int) -> bytes:
        """Bytes ``[offset, offset + n)`` of the body. The body has two regions, tables then maps;
        a region below ``_CACHE_BODY_BELOW`` is read whole on first use and kept."""
        region = 0 if offset < self._maps_start else 1
        lo, hi = (0, self._maps_start) if region == 0 else (self._maps_start, self._size - self._data_start)
        if hi - lo <= _CACHE_BODY_BELOW:
            if region not in self._regions:
                with open(self.path, "rb") as f:
                    f.seek(self._data_start + lo)
                    self._regions[region] = f.read(hi - lo)
            return self._regions[region][offset - lo : offset - lo + n]
        with open(self.path, "rb") as f:
            f.seek(self._data_start + offset)
            return f.read(n)

    def member(self, name: str) -> bytes:
        """The bytes of member ``name``; raises :class:`DamagedPart` on a CRC mismatch."""
        offset, n, crc = self._members[name]
        data = self._read(offset, n)
        if len(data) != n or google_crc32c.value(data) != crc:
            raise DamagedPart(f"{self.path}: member {name!r} is damaged (CRC-32C mismatch)")
        return data

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

    def arrow_table(self, name: str) -> pa.Table:
        data = self.member(f"table__{name}")
        return pa_ipc.open_file(pa.py_buffer(data)).read_all()

    def table(self, name: str) -> pl.DataFrame:
        return pl.from_arrow(self.arrow_table(name))

    def tables(self) -> dict[str, pl.DataFrame]:
        return {name: self.table(name) for name in self.meta["tables"]}

    def arrow_tables(self) -> dict[str, pa.Table]:
        return {name: self.arrow_table(name) for name in self.meta["tables"]}

    def encoded(self, i: int) -> bytes:
        """The i-th map's chunk bytes, encoded in :attr:`dtype` (CRC-checked)."""
        try:
            return self.member(f"map__{i}")
        except DamagedPart as exc:
            raise GazeprepError(f"{exc}; delete the part and rerun the build") from None

    def heatmap(self, i: int) -> np.ndarray:
        return decode_chunk(self.member(f"map__{i}"), self.shapes[i], self.dtype)

    def close(self) -> None:  # files are opened per read; kept for the context-manager protocol
        pass

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
        (normally ``recipe.output.dtype``; with another dtype, :func:`finalize` re-encodes, which is
        correct but slower). :meth:`get` returns maps as float32 either way.
    fsync:
        fsync each part before renaming it into place. Off by default: a kill of the process
        cannot leave a partial part either way (the rename is atomic), and after a power cut a part
        whose data did not reach the disk fails its size/CRC-32C checks on reading and counts as
        missing, so it is recomputed; fsync would only cost ~5-10 ms per case.
    """

    def __init__(self, out_dir: str | Path, recipe_hash: str, *, dtype: str = "float32", fsync: bool = False):
        self.out_dir = Path(out_dir)
        self.fsync = fsync
        self.recipe_hash = str(recipe_hash)
        check_dtype(dtype)
        self.dtype = dtype
        self.dir = self.out_dir / PARTS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_recipe(cls, out_dir: str | Path, recipe, *, fsync: bool = False) -> "PartStore":
        """The store of ``recipe`` (keyed by its hash, maps encoded in ``recipe.output.dtype``)."""
        return cls(out_dir, recipe.hash(), dtype=recipe.output.dtype, fsync=fsync)

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
        members = [(f"table__{name}", _ipc_bytes(res.tables[name])) for name in sorted(res.tables)]
        members += [(f"map__{i}", encode_chunk(res.heatmaps[t], self.dtype)) for i, t in enumerate(targets)]
        path = self.path(res.case_id)
        atomic_write(path, part_bytes(meta, members), fsync=self.fsync)
        return path

    # -- read ----------------------------------------------------------------------------------
    def open(self, case_id: str) -> PartReader | None:
        """Open the part of ``case_id`` if it exists, is readable and belongs to this recipe."""
        path = self.path(case_id)
        try:
            reader = PartReader(path)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None  # damaged part (DamagedPart is a ValueError): missing, rewritten by the next put
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
                return None  # damaged member (CRC-32 mismatch, DamagedPart): recompute
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
