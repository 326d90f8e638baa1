"""Resumable per-case parts: one atomic, pickle-free file per finished case, in standard formats.

Layout: ``<out>/.parts/<case_id>.part``, a ZIP archive (members stored, not deflated) of::

    meta.json                    {format, version, case_id, input_hash, recipe_hash, dtype,
                                 targets, shapes, tables}
    table__<name>.arrow          one canonical table of the case, an Arrow IPC file
    maps.arrow                   the maps (targets sorted), an Arrow IPC file with one row per map:
                                 ``target`` (utf8), ``height``/``width`` (int32) and ``values``
                                 (binary: the map cast to the export dtype, little endian, C order),
                                 the IPC body compressed with LZ4

Anything that reads ZIP and Arrow (``unzip``, ``pyarrow.ipc.open_file``) can open a part; nothing in
it is unpickled. Every member carries the ZIP CRC-32, checked when it is read: a part damaged on
disk fails its checks and counts as missing (it is recomputed). A part of another format version
(such as the ``GZPPART1`` container of earlier gazeprep builds) is not a ZIP archive or says another
version in ``meta.json``: it counts as missing too and is replaced by the next ``put``.

A part is written to a temporary file in the same folder and renamed into place, so a crash
leaves either no part or a complete one (plus perhaps a stray temporary file, ignored and cleaned
by :meth:`PartStore.remove_temp_files`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from gazeprep.errors import GazeprepError
from gazeprep.export._io import atomic_write, check_dtype, is_temp_name, remove_path, to_dtype
from gazeprep.export.results import CaseResult
from gazeprep.paths import safe_component

if TYPE_CHECKING:
    from gazeprep.recipes import Recipe

PARTS_DIR = ".parts"
PART_SUFFIX = ".part"
PART_FORMAT = "gazeprep-part"
PART_VERSION = 2  # 1: the hand-written GZPPART1 container (ignored: recomputed)
META = "meta.json"
MAPS = "maps.arrow"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # no timestamps: the same case gives the same part bytes
_MAPS_SCHEMA = pa.schema(
    [("target", pa.utf8()), ("height", pa.int32()), ("width", pa.int32()), ("values", pa.large_binary())]
)
# LZ4 frames: parts are scratch files read once by finalize, which hands the maps to zarr to be
# compressed with zstd. Measured on the 3000-case bench parts: 10% larger than with zstd level 1
# (959 against 873 MB), 25% less CPU to write (the workers' share) and no slower to read; storing
# the maps uncompressed saved nothing in finalize (CRC-32 and copying 2.6x the bytes instead).
_MAPS_IPC = pa_ipc.IpcWriteOptions(compression="lz4")
# a part's buffers are small: decompressing them in Arrow's thread pool costs more than it saves
# (0.37 against 0.22 ms to read the maps of a 512 x 512 case)
_READ_IPC = pa_ipc.IpcReadOptions(use_threads=False)
_CACHE_MAPS_BELOW = 32 << 20  # a maps member smaller than this is kept after the first read


class DamagedPart(ValueError):
    """A part file that is truncated, corrupted, of another version or not a part."""


def _table_member(name: str) -> str:
    return f"table__{name}.arrow"


def _ipc_file(table: pa.Table, options: pa_ipc.IpcWriteOptions | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa_ipc.new_file(sink, table.schema, options=options) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _maps_table(targets: list[str], maps: list[np.ndarray]) -> pa.Table:
    # the ``values`` column is built over one buffer holding the maps back to back (one copy;
    # ``tobytes`` per map and then ``pa.array`` would copy every map twice)
    sizes = [m.nbytes for m in maps]
    data = (
        np.concatenate([np.ascontiguousarray(m).view(np.uint8).ravel() for m in maps])
        if maps
        else np.empty(0, np.uint8)
    )
    offsets = np.zeros(len(maps) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    values = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(maps), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return pa.table(
        {
            "target": pa.array(targets, pa.utf8()),
            "height": pa.array([m.shape[0] for m in maps], pa.int32()),
            "width": pa.array([m.shape[1] for m in maps], pa.int32()),
            "values": values,
        },
        schema=_MAPS_SCHEMA,
    )


def part_bytes(meta: dict, tables: dict[str, pl.DataFrame], targets: list[str], maps: list[np.ndarray]) -> bytes:
    """Serialise a part: ``meta`` (JSON-able), the case's tables and its maps (already cast to the
    part's dtype, shape ``(H, W)`` each, in ``targets`` order)."""
    members = [(META, json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8"))]
    # tables uncompressed: they are small next to the maps, and reading is ~5x faster this way
    members += [(_table_member(n), _ipc_file(tables[n].to_arrow())) for n in sorted(tables)]
    members.append((MAPS, _ipc_file(_maps_table(targets, maps), _MAPS_IPC)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


class PartReader:
    """Read access to one part file: ``meta.json`` at once, members on demand (CRC-checked)."""

    def __init__(self, path: Path):
        self.path = path
        self._maps: pa.Table | None = None
        try:
            self._zip = zipfile.ZipFile(path, "r")
        except zipfile.BadZipFile as exc:
            raise DamagedPart(f"{path}: not a gazeprep part ({exc})") from None
        try:
            self.meta = json.loads(self._member(META).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.close()
            raise DamagedPart(f"{path}: bad {META} ({exc})") from None
        except DamagedPart:
            self.close()
            raise
        if not isinstance(self.meta, dict) or (self.meta.get("format"), self.meta.get("version")) != (
            PART_FORMAT,
            PART_VERSION,
        ):
            self.close()
            raise DamagedPart(f"{path}: not a gazeprep part of version {PART_VERSION}")

    def _member(self, name: str) -> bytes:
        try:
            return self._zip.read(name)
        except KeyError:
            raise DamagedPart(f"{self.path}: member {name!r} is missing") from None
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:  # bad CRC-32, truncated member
            raise DamagedPart(f"{self.path}: member {name!r} is damaged ({exc})") from None

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
        try:
            return pa_ipc.open_file(pa.py_buffer(self._member(_table_member(name))), options=_READ_IPC).read_all()
        except pa.ArrowException as exc:
            raise DamagedPart(f"{self.path}: table {name!r} is damaged ({exc})") from None

    def table(self, name: str) -> pl.DataFrame:
        return cast(pl.DataFrame, pl.from_arrow(self.arrow_table(name)))  # a Table gives a DataFrame

    def tables(self) -> dict[str, pl.DataFrame]:
        return {name: self.table(name) for name in self.meta["tables"]}

    def arrow_tables(self) -> dict[str, pa.Table]:
        return {name: self.arrow_table(name) for name in self.meta["tables"]}

    def _maps_member(self) -> pa.Table:
        if self._maps is not None:
            return self._maps
        try:
            maps = pa_ipc.open_file(pa.py_buffer(self._member(MAPS)), options=_READ_IPC).read_all()
        except pa.ArrowException as exc:
            raise DamagedPart(f"{self.path}: maps are damaged ({exc})") from None
        if maps.schema != _MAPS_SCHEMA or maps.column("target").to_pylist() != self.targets:
            raise DamagedPart(f"{self.path}: maps do not match {META}")
        if maps.nbytes < _CACHE_MAPS_BELOW:
            self._maps = maps
        return maps

    def stored(self, i: int) -> np.ndarray:
        """The i-th map ``(H, W)`` as stored, in :attr:`dtype` (little endian; read-only view).

        Raises :class:`DamagedPart` when the part is damaged."""
        h, w = self.shapes[i]
        dt = check_dtype(self.dtype)
        buf = self._maps_member().column("values")[i].as_buffer()
        if buf is None or buf.size != h * w * dt.itemsize:
            raise DamagedPart(f"{self.path}: map {i} has {0 if buf is None else buf.size} bytes, not {h}x{w} {dt}")
        return np.frombuffer(buf, dtype=dt).reshape(h, w)

    def heatmap(self, i: int) -> np.ndarray:
        """The i-th map as float32 ``(H, W)`` (values as stored in :attr:`dtype`)."""
        return self.stored(i).astype(np.float32)

    def close(self) -> None:
        self._maps = None
        self._zip.close()

    def __enter__(self) -> PartReader:
        return self

    def __exit__(self, *exc: object) -> None:
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
        ``float16`` or ``float32``: the export dtype, in which maps are stored in the part
        (normally ``recipe.output.dtype``; with another dtype, :func:`finalize` casts again).
        :meth:`get` returns maps as float32 either way.
    fsync:
        fsync each part before renaming it into place. Off by default: a kill of the process
        cannot leave a partial part either way (the rename is atomic), and after a power cut a part
        whose data did not reach the disk fails its ZIP/CRC-32 checks on reading and counts as
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
    def for_recipe(cls, out_dir: str | Path, recipe: Recipe, *, fsync: bool = False) -> PartStore:
        """The store of ``recipe`` (keyed by its hash, maps stored in ``recipe.output.dtype``)."""
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
        """Validate ``result`` and store it atomically (replacing an older part of the case).

        Maps are cast to the store's dtype here (in the worker); a float16 map with values beyond
        65504 raises :class:`GazeprepError`."""
        res = result.validated()
        targets = sorted(res.heatmaps)
        maps = [to_dtype(res.heatmaps[t], self.dtype) for t in targets]
        meta = {
            "format": PART_FORMAT,
            "version": PART_VERSION,
            "case_id": res.case_id,
            "input_hash": res.input_hash,
            "recipe_hash": self.recipe_hash,
            "dtype": self.dtype,
            "targets": targets,
            "shapes": [list(m.shape) for m in maps],
            "tables": sorted(res.tables),
        }
        path = self.path(res.case_id)
        atomic_write(path, part_bytes(meta, res.tables, targets, maps), fsync=self.fsync)
        return path

    # -- read ----------------------------------------------------------------------------------
    def open(self, case_id: str) -> PartReader | None:
        """Open the part of ``case_id`` if it exists, is readable and belongs to this recipe."""
        path = self.path(case_id)
        try:
            reader = PartReader(path)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None  # damaged or old-format part (DamagedPart is a ValueError): missing, rewritten by the next put
        if reader.meta.get("recipe_hash") != self.recipe_hash or reader.meta.get("case_id") != case_id:
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
