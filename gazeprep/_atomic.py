"""Atomic file writes: the one way gazeprep replaces a file.

Every file that another process (or a later run) may read while it is being written - export
files, ingested tables, the anatomy mask index, evaluation tables, model weights - is written to a
temporary name in the same folder and then renamed over its final name with :func:`os.replace`. A
reader, or a run that was killed half-way, sees either the old file or the complete new one, never
a prefix. With ``fsync`` (the default) the file's data and then the folder entry are flushed, so
the new file also survives a power cut.

An I/O fault (disk full, file-size limit, permission, device error) raises
:class:`~gazeprep.errors.StorageError` naming the *final* path (``write()`` errors carry no file
name of their own, and the temporary name means nothing to a user); the temporary file is removed.

This module depends on the standard library and :mod:`gazeprep.errors` only, so that every layer
(datasets, anatomy, text, evaluate, export, train) can use it without importing another.

Functions
---------
:func:`atomic_write`
    bytes (or pieces of bytes) to a file.
:func:`atomic_write_text`
    a string, UTF-8 encoded.
:func:`atomic_write_parquet`
    a polars frame as Parquet.
:func:`atomic_output`
    a context manager yielding the temporary path, for writers that want a path of their own.
    Prefer encoding in memory and :func:`atomic_write` where the writer reports its own I/O faults
    as something other than OSError (polars' Parquet writer, ``torch.save``).
:func:`write_file`
    a plain (non-atomic) write with the same error contract, for files inside a staging folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the annotation only: this module imports no third-party package at run time
    import polars as pl

from gazeprep.errors import StorageError

#: What the writers take: bytes-like, or pieces written back to back.
Data = bytes | bytearray | memoryview | Sequence[bytes]

__all__ = [
    "atomic_output",
    "atomic_write",
    "atomic_write_parquet",
    "atomic_write_text",
    "fsync_dir",
    "is_temp_name",
    "temp_name",
    "write_file",
]


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (so a rename in it survives a power cut); no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    """Flush the data of a file written (and closed) by someone else."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_raw(path: Path, data: Data, fsync: bool) -> None:
    with open(path, "wb") as f:
        if isinstance(data, (bytes, bytearray, memoryview)):
            f.write(data)
        else:
            f.writelines(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_file(path: Path, data: Data, *, fsync: bool = True) -> None:
    """Write ``data`` (bytes, or pieces written back to back) to ``path`` (no atomicity: for files
    inside a staging folder or temporary files).

    Raises :class:`~gazeprep.errors.StorageError` naming ``path`` on an I/O fault.
    """
    try:
        _write_raw(path, data, fsync)
    except OSError as exc:
        raise _storage_error(exc, path) from exc


def temp_name(path: Path) -> Path:
    """A unique temporary name next to ``path`` (same folder, hence same file system), recognised by
    :func:`is_temp_name`: ``.<name>.tmp-<pid>-<8 hex digits>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one :func:`temp_name` makes (left behind by a killed writer)."""
    return name.startswith(".") and ".tmp-" in name


def _storage_error(exc: OSError, path: Path) -> StorageError:
    """StorageError naming ``path``: the errno's text, else the OSError's own message (some
    libraries raise OSError without an errno)."""
    if exc.strerror is None and str(exc):
        return StorageError(path, str(exc))
    return StorageError.from_os_error(exc, path)


@contextlib.contextmanager
def _staged(path: Path, *, sync_file: bool, sync_dir: bool) -> Iterator[Path]:
    """The one implementation: yield a temporary name, then (fsync it,) rename it over ``path``
    (and fsync the folder); on any exception remove it, turning an OSError into StorageError."""
    tmp = temp_name(path)
    try:
        yield tmp
        if sync_file:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the original fault is the one to report
        if isinstance(exc, OSError):
            raise _storage_error(exc, path) from exc
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_output(path: str | Path, *, fsync: bool = True) -> contextlib.AbstractContextManager[Path]:
    """Context manager: yields a temporary path next to ``path``; when the block ends without an
    exception, the file written there replaces ``path`` atomically.

    Example::

        with atomic_output(out / "cases.parquet") as tmp:
            frame.write_parquet(tmp, compression="zstd")

    On any exception the temporary file is removed; an :class:`OSError` (from the block, the flush
    or the rename) becomes :class:`~gazeprep.errors.StorageError` naming ``path``. The block must
    create the file at the yielded path (not finding it is a ``StorageError`` too).
    """
    return _staged(Path(path), sync_file=fsync, sync_dir=fsync)


def atomic_write(path: str | Path, data: Data, *, fsync: bool = True) -> None:
    """Write ``data`` (bytes, or pieces written back to back) to ``path`` atomically: temporary file
    in the same folder, (fsync,) :func:`os.replace`, (fsync of the folder).

    Raises :class:`~gazeprep.errors.StorageError` naming ``path`` on an I/O fault (the temporary
    file is removed).
    """
    with _staged(Path(path), sync_file=False, sync_dir=fsync) as tmp:
        _write_raw(tmp, data, fsync)  # flushed through the open file: no second open to fsync


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """:func:`atomic_write` of ``text`` encoded as UTF-8."""
    atomic_write(path, text.encode("utf-8"), fsync=fsync)


ParquetCompression = Literal["zstd", "lz4", "snappy", "gzip", "brotli", "uncompressed"]


def atomic_write_parquet(
    frame: pl.DataFrame, path: str | Path, *, compression: ParquetCompression = "zstd", fsync: bool = True
) -> None:
    """Write a polars ``frame`` as Parquet (``compression``, default zstd: polars' own default) to
    ``path`` atomically.

    The file is encoded in memory and written by :func:`atomic_write` (the same bytes as polars
    writing the path itself): polars reports a write fault of its own as a ``ComputeError``, not an
    OSError, so only this way does a full disk become the StorageError naming ``path``.
    """
    buf = io.BytesIO()
    frame.write_parquet(buf, compression=compression)
    atomic_write(path, buf.getbuffer(), fsync=fsync)
