"""Byte-identity: the same results give the same bytes, whatever their order or route."""

from __future__ import annotations

import random

import numpy as np
from export_testlib import recipe, standard_results, tree_bytes

from gazeprep.export import PartStore, finalize, load_export

EXPORT_FILES = ("manifest.json", "tables", "heatmaps.zarr")


def _export_bytes(out):
    files = tree_bytes(out, skip=(".parts",))
    assert set(f.split("/")[0] for f in files) == set(EXPORT_FILES)
    return files


def test_order_of_results_does_not_change_any_byte(tmp_path):
    results = standard_results(8)
    rec = recipe("float16")
    a = finalize(tmp_path / "a", results, recipe=rec, shard_size=3)
    shuffled = results[:]
    random.Random(7).shuffle(shuffled)
    assert [r.case_id for r in shuffled] != [r.case_id for r in results]
    b = finalize(tmp_path / "b", shuffled, recipe=rec, shard_size=3)
    fa, fb = _export_bytes(a), _export_bytes(b)
    assert list(fa) == list(fb)
    for k in fa:
        assert fa[k] == fb[k], k


def test_parts_route_equals_in_memory_route(tmp_path):
    """Workers writing parts in any order (as --workers N does) == one process in memory."""
    results = standard_results(8)
    rec = recipe("float16")
    ref = _export_bytes(finalize(tmp_path / "mem", results, recipe=rec))
    out = tmp_path / "parts"
    store = PartStore(out, rec.hash(), dtype="float16")
    for r in reversed(results):
        store.put(r)
    assert _export_bytes(finalize(out, store, recipe=rec)) == ref
    # case ids + store=, mixed with an in-memory result
    ids = [r.case_id for r in results[1:]][::-1]
    assert _export_bytes(finalize(tmp_path / "parts", ids + [results[0]], store=store, recipe=rec)) == ref
    # parts encoded in another dtype are re-encoded to the same bytes
    out2 = tmp_path / "parts32"
    store32 = PartStore(out2, rec.hash(), dtype="float32")
    for r in results:
        store32.put(r)
    assert _export_bytes(finalize(out2, store32, recipe=rec)) == ref


def test_rerun_on_a_finished_export_is_identical(tmp_path):
    results = standard_results(5)
    out = finalize(tmp_path / "o", results, recipe=recipe())
    first = _export_bytes(out)
    finalize(out, results[::-1], recipe=recipe())
    assert _export_bytes(out) == first
    assert not (out / ".staging").exists() and not (out / ".trash").exists()


def test_different_content_gives_different_bytes(tmp_path):
    """The byte comparison above can fail: one changed pixel changes a shard and the manifest."""
    results = standard_results(4)
    a = _export_bytes(finalize(tmp_path / "a", results, recipe=recipe()))
    results[2].heatmaps["full"] = results[2].heatmaps["full"].copy()
    results[2].heatmaps["full"][0, 0] += np.float32(0.25)
    b = _export_bytes(finalize(tmp_path / "b", results, recipe=recipe()))
    changed = sorted(k for k in a if a[k] != b[k])
    assert "manifest.json" in changed
    assert any(k.startswith("heatmaps.zarr/") and "/c/" in k for k in changed)
    assert not any(k.startswith("tables/") for k in changed)


def test_parts_are_byte_reproducible(tmp_path):
    r = standard_results(1)[0]
    s1 = PartStore(tmp_path / "x", "rh")
    s2 = PartStore(tmp_path / "y", "rh")
    assert s1.put(r).read_bytes() == s2.put(r).read_bytes()
    ex = load_export(finalize(tmp_path / "x", s1, recipe=recipe()))
    assert ex.case_ids == [r.case_id]
