"""Crash safety: interrupted part writes and interrupted finalizes, then resume."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from export_testlib import recipe, standard_results, tree_bytes

from gazeprep.errors import GazeprepError
from gazeprep.export import PartStore, finalize, load_export


class Crash(RuntimeError):
    pass


def _crash_replace_after(monkeypatch, n_ok: int) -> list:
    """Make os.replace work ``n_ok`` times, then raise (a kill in the middle of the commit)."""
    real = os.replace
    calls = []

    def fake(src, dst, *a, **k):
        if len(calls) >= n_ok:
            raise Crash(f"killed before replacing {dst}")
        calls.append((str(src), str(dst)))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", fake)
    return calls


def _export_bytes(out):
    return tree_bytes(out, skip=(".parts",))


def _reference(tmp_path, results, rec, **kw):
    ref = tmp_path / "reference"
    store = PartStore(ref, rec.hash(), dtype=rec.output.dtype)
    for r in results:
        store.put(r)
    finalize(ref, store, recipe=rec, **kw)
    return _export_bytes(ref)


def test_half_written_part_is_ignored_and_cleaned(tmp_path, monkeypatch):
    rec = recipe()
    results = standard_results(4)
    store = PartStore(tmp_path / "o", rec.hash())
    for r in results[:3]:
        store.put(r)
    # the 4th worker is killed while writing: its temp file stays, os.replace never happens
    _crash_replace_after(monkeypatch, 0)
    with pytest.raises(Crash):
        store.put(results[3])
    monkeypatch.undo()
    # simulate the hard kill that leaves the temp file behind (put cleans up on exceptions)
    stray = store.dir / f".{results[3].case_id}.part.tmp-999-deadbeef"
    stray.write_bytes(store.path(results[0].case_id).read_bytes()[:100])
    assert store.get(results[3].case_id, results[3].input_hash) is None
    assert store.case_ids() == sorted(r.case_id for r in results[:3])
    # resume: only the missing case is computed again
    todo = [r for r in results if not store.has(r.case_id, r.input_hash)]
    assert [r.case_id for r in todo] == [results[3].case_id]
    for r in todo:
        store.put(r)
    out = finalize(tmp_path / "o", store, recipe=rec)
    assert not stray.exists()
    assert _export_bytes(out) == _reference(tmp_path, results, rec)


def test_truncated_part_counts_as_missing(tmp_path):
    rec = recipe()
    r = standard_results(1)[0]
    store = PartStore(tmp_path / "o", rec.hash())
    p = store.put(r)
    p.write_bytes(p.read_bytes()[:-50])
    assert store.get(r.case_id, r.input_hash) is None
    with pytest.raises(GazeprepError, match="no complete part"):
        finalize(tmp_path / "o", [r.case_id], store=store, recipe=rec)


def test_finalize_killed_at_every_step_then_resumed(tmp_path, monkeypatch):
    rec = recipe()
    results = standard_results(5)
    ref = _reference(tmp_path, results, rec)
    # zarr writes each of its files (3 zarr.json, the shards) to a temporary name and renames it
    # into the staging folder: those renames come before the commit's
    probe = tmp_path / "probe"
    finalize(probe, standard_results(2), recipe=rec)
    calls = _crash_replace_after(monkeypatch, 10**6)
    finalize(probe, results, recipe=rec)
    monkeypatch.undo()
    n_stage = sum("/.staging/" in dst for _, dst in calls)
    assert n_stage >= 4 and all("/.staging/" in dst for _, dst in calls[:n_stage])
    # an older, different export is in place: a crash must never leave it (or a mix) loadable
    for k in range(50):
        out = tmp_path / f"run{k}"
        finalize(out, standard_results(2), recipe=rec)
        load_export(out)
        store = PartStore(out, rec.hash())
        for r in results:
            store.put(r)
        calls = _crash_replace_after(monkeypatch, k)
        try:
            finalize(out, store, recipe=rec)
            crashed = False
        except Crash:
            crashed = True
        monkeypatch.undo()
        if not crashed:
            break
        assert len(calls) == k
        if k < n_stage:  # killed while staging: the previous export is untouched and still loadable
            old = load_export(out)
            assert old.manifest["cases"] == 2
            first = standard_results(2)[0]
            assert np.array_equal(old.heatmap(first.case_id, "full"), first.heatmaps["full"])
        else:  # killed during the swap: no manifest, refused as incomplete
            with pytest.raises(GazeprepError, match="incomplete export|no manifest"):
                load_export(out)
        finalize(out, store, recipe=rec)  # rerun
        assert _export_bytes(out) == ref, f"crash after {k} replaces"
        assert not (out / ".staging").exists() and not (out / ".trash").exists()
    # zarr's files, then the commit: old tables -> trash, new tables in, old zarr -> trash, new
    # zarr in, manifest
    assert k == n_stage + 5
    assert _export_bytes(out) == ref


def _dying(real, kill_at: int, n: dict, half):
    def dying(path, data, *a, **kw):
        n["k"] += 1
        if n["k"] == kill_at:
            half(Path(path), data)  # half a file, then the kill
            raise Crash("killed")
        return real(path, data, *a, **kw)

    return dying


def _half_bytes(path: Path, data) -> None:
    blob = data if isinstance(data, bytes) else b"".join(data)
    path.write_bytes(blob[: len(blob) // 2])


def _half_buffer(path: Path, value) -> None:
    blob = bytes(value.as_buffer_like())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob[: len(blob) // 2])


@pytest.mark.parametrize(
    ("where", "kill_at"), [("file", 1), ("file", 14), ("file", 15), ("zarr", 1), ("zarr", 4), ("zarr", 6), ("zarr", 8)]
)
def test_finalize_killed_while_writing_files(tmp_path, monkeypatch, where, kill_at):
    """Writes into the staging folder before the commit: 14 tables then the manifest (file 15)
    through ``write_file``; zarr's files through zarr's store: the group and 2 array zarr.json
    files, then 5 shards (shard_size 2; 5 maps of one shape, 3 of another) - zarr writes the
    array metadata as it creates each array, so the order is zarr.json, 3 shards, zarr.json,
    2 shards, after the group's."""
    import zarr.storage._local as zlocal

    import gazeprep.export.writer as writer

    rec = recipe()
    results = standard_results(5)
    ref = _reference(tmp_path, results, rec, shard_size=2)
    out = tmp_path / "o"
    finalize(out, results[:2], recipe=rec)
    n = {"k": 0}
    if where == "file":
        monkeypatch.setattr(writer, "write_file", _dying(writer.write_file, kill_at, n, _half_bytes))
    else:
        monkeypatch.setattr(zlocal, "_put", _dying(zlocal._put, kill_at, n, _half_buffer))
    with pytest.raises(Crash):
        finalize(out, results, recipe=rec, shard_size=2)
    monkeypatch.undo()
    assert n["k"] >= kill_at  # writes run in background threads: a few more may have started
    # every write goes to the staging folder: the previous export is still whole and loadable
    old = load_export(out)
    assert old.manifest["cases"] == 2
    old.verify()
    assert np.array_equal(old.heatmap(results[1].case_id, "full"), results[1].heatmaps["full"])
    finalize(out, results, recipe=rec, shard_size=2)
    assert _export_bytes(out) == ref


def test_loader_refuses_damaged_or_foreign_folders(tmp_path):
    with pytest.raises(GazeprepError, match="not a gazeprep export"):
        load_export(tmp_path)
    out = finalize(tmp_path / "o", standard_results(3), recipe=recipe())
    shard = next((out / "heatmaps.zarr").rglob("c/0/0/0"))
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(GazeprepError, match="damaged"):
        load_export(out)
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, different content
    ex = load_export(out)
    with pytest.raises(GazeprepError, match="checksum"):
        ex.verify()
    (out / "tables" / "cases.parquet").unlink()
    with pytest.raises(GazeprepError, match="missing"):
        load_export(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(GazeprepError, match="unreadable manifest"):
        load_export(out)


def test_reading_does_not_see_a_new_build_in_progress(tmp_path, monkeypatch):
    """Values read before a crashed rebuild are the old ones; after the rerun, the new ones."""
    rec = recipe()
    old = standard_results(2)
    out = finalize(tmp_path / "o", old, recipe=rec)
    cid = old[0].case_id
    before = load_export(out).heatmap(cid, "full")
    new = standard_results(2)
    new[0].heatmaps["full"] = np.flipud(new[0].heatmaps["full"]).copy()
    _crash_replace_after(monkeypatch, 1)
    with pytest.raises(Crash):
        finalize(out, new, recipe=rec)
    monkeypatch.undo()
    finalize(out, new, recipe=rec)
    after = load_export(out).heatmap(cid, "full")
    assert np.array_equal(before, old[0].heatmaps["full"])
    assert np.array_equal(after, new[0].heatmaps["full"])
