"""The one atomic writer (gazeprep._atomic): old-or-new file, temp files cleaned, I/O faults become
StorageError naming the final file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import polars as pl
import pytest

import gazeprep._atomic as A
from gazeprep.errors import StorageError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if A.is_temp_name(p.name))


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    A.atomic_write(p, [b"ne", b"w"])  # pieces are written back to back
    assert p.read_bytes() == b"new"
    A.atomic_write_text(p, "é")
    assert p.read_bytes() == "é".encode()
    assert _leftovers(tmp_path) == []


def test_temp_names_are_recognised_and_unique(tmp_path):
    a, b = A.temp_name(tmp_path / "x.parquet"), A.temp_name(tmp_path / "x.parquet")
    assert a != b and a.parent == tmp_path
    assert A.is_temp_name(a.name) and not A.is_temp_name("x.parquet") and not A.is_temp_name("tmp-x")


def test_write_fault_is_a_storage_error_naming_the_final_file_and_keeps_the_old(tmp_path, monkeypatch):
    p = tmp_path / "index.parquet"
    p.write_bytes(b"old")

    def full(path, data, fsync):  # what write() does on a full disk: an errno, no file name
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(A, "_write_raw", full)
    with pytest.raises(StorageError) as ei:
        A.atomic_write(p, b"new")
    assert str(ei.value) == f"{p}: No space left on device" and ei.value.path == str(p)
    assert p.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_atomic_output_commits_only_a_finished_block(tmp_path):
    p = tmp_path / "t.parquet"
    df = pl.DataFrame({"a": [1, 2, 3]})
    A.atomic_write_parquet(df, p)
    assert pl.read_parquet(p).equals(df)
    with pytest.raises(RuntimeError, match="a bug"):  # a bug in the block propagates as itself
        with A.atomic_output(p) as tmp:
            pl.DataFrame({"a": [9]}).write_parquet(tmp)
            raise RuntimeError("a bug")
    assert pl.read_parquet(p).equals(df) and _leftovers(tmp_path) == []


def test_atomic_output_oserror_and_missing_file_name_the_target(tmp_path):
    p = tmp_path / "sub" / "t.csv"  # folder missing: the writer's own OSError names the temp file
    with pytest.raises(StorageError) as ei:
        with A.atomic_output(p) as tmp:
            pl.DataFrame({"a": [1]}).write_csv(tmp)
    assert ei.value.path == str(p)
    q = tmp_path / "never.bin"
    with pytest.raises(StorageError, match="never.bin"):
        with A.atomic_output(q):
            pass  # the block wrote nothing
    assert not q.exists() and _leftovers(tmp_path) == []


def test_export_io_reexports_the_same_writer():
    from gazeprep.export import _io

    assert _io.atomic_write is A.atomic_write and _io.write_file is A.write_file
    assert _io.temp_name is A.temp_name and _io.is_temp_name is A.is_temp_name


def test_parquet_writes_go_through_the_one_writer(tmp_path, monkeypatch):
    """polars reports its own write faults as ComputeError: the frame is encoded in memory and the
    bytes written by the atomic writer, so a full disk is a StorageError naming the table."""
    p = tmp_path / "cases.parquet"

    def full(path, data, fsync):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(A, "_write_raw", full)
    with pytest.raises(StorageError, match=r"cases\.parquet: File too large"):
        A.atomic_write_parquet(pl.DataFrame({"a": [1]}), p)
    assert not p.exists() and _leftovers(tmp_path) == []
