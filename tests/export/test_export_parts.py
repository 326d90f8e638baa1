"""PartStore: keyed by input hash and recipe, pickle-free, safe file names."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from export_testlib import case_result, recipe

from gazeprep.errors import GazeprepError
from gazeprep.export import CaseResult, PartStore, finalize, hash_inputs


def test_get_round_trips_and_checks_the_input_hash(tmp_path):
    r = case_result("P001R0001", {"full": (6, 7), "edema": (6, 7)}, seed=3)
    store = PartStore(tmp_path, "recipe-A")
    store.put(r)
    got = store.get("P001R0001", r.input_hash)
    assert got is not None and got.case_id == r.case_id and got.input_hash == r.input_hash
    assert sorted(got.heatmaps) == ["edema", "full"]
    for t in r.heatmaps:
        assert np.array_equal(got.heatmaps[t], r.heatmaps[t])
    assert got.tables["fixations"].equals(r.validated().tables["fixations"])
    assert got.rejects == r.rejects
    assert store.get("P001R0001", "another-hash") is None
    assert store.get("P999R0000", r.input_hash) is None
    assert PartStore(tmp_path, "recipe-B").get("P001R0001", r.input_hash) is None
    assert store.has("P001R0001", r.input_hash) and not store.has("P001R0001", "x")
    assert store.input_hash("P001R0001") == r.input_hash


def test_float16_parts_return_float16_values_as_float32(tmp_path):
    r = case_result("C1", {"full": (5, 5)}, seed=1)
    got = PartStore(tmp_path, "h", dtype="float16")
    got.put(r)
    m = got.get("C1", r.input_hash).heatmaps["full"]
    assert m.dtype == np.float32
    assert np.array_equal(m, r.heatmaps["full"].astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("bad", ["../evil", "/etc/passwd", "a/b", "", ".", "..", ".hidden", "x y"])
def test_unsafe_case_ids_are_rejected(tmp_path, bad):
    store = PartStore(tmp_path, "h")
    r = CaseResult(bad, "h", {}, {"full": np.ones((2, 2), np.float32)}, [])
    with pytest.raises(GazeprepError, match="unsafe"):
        store.put(r)
    with pytest.raises(GazeprepError, match="unsafe"):
        store.get(bad, "h")
    with pytest.raises(GazeprepError, match="unsafe"):
        finalize(tmp_path / "o", [r], recipe=recipe())
    assert not any(p.name != ".parts" for p in tmp_path.iterdir() if p.name != "o")
    assert list(store.dir.iterdir()) == []


def test_part_is_a_zip_of_json_and_arrow_ipc_and_checked(tmp_path):
    """A part opens with the standard readers (zipfile, pyarrow), and a damaged one is missing."""
    import json
    import zipfile

    import pyarrow.ipc as ipc

    r = case_result("C1", {"full": (5, 5), "x": (5, 6)}, seed=1)
    store = PartStore(tmp_path, "h", dtype="float16")
    p = store.put(r)
    with zipfile.ZipFile(p) as zf:
        assert zf.namelist() == [
            "meta.json",
            "table__cases.arrow",
            "table__fixations.arrow",
            "table__heatmaps.arrow",
            "table__rejects.arrow",
            "maps.arrow",
        ]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        meta = json.loads(zf.read("meta.json"))
        fix = ipc.open_file(zf.read("table__fixations.arrow")).read_all()
        maps = ipc.open_file(zf.read("maps.arrow")).read_all()
    assert meta["case_id"] == "C1" and meta["targets"] == ["full", "x"] and meta["version"] == 2
    assert meta["shapes"] == [[5, 5], [5, 6]] and meta["dtype"] == "float16"
    assert fix.column("fixation_idx").to_pylist() == [0, 1, 2]
    assert maps.column("target").to_pylist() == ["full", "x"]
    assert maps.column("height").to_pylist() == [5, 5] and maps.column("width").to_pylist() == [5, 6]
    x = np.frombuffer(maps.column("values")[1].as_py(), "<f2").reshape(5, 6)
    assert np.array_equal(x, r.heatmaps["x"].astype(np.float16))
    # one flipped byte in the maps member: its ZIP CRC-32 check makes the part count as missing
    raw = p.read_bytes()
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("maps.arrow")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    bad = bytearray(raw)
    bad[start + info.file_size // 2] ^= 0xFF
    p.write_bytes(bytes(bad))
    assert store.has("C1", r.input_hash)  # meta.json is intact
    assert store.get("C1", r.input_hash) is None  # but the maps are not
    with pytest.raises(GazeprepError, match="damaged"):
        finalize(tmp_path, store, recipe=recipe("float16"))
    # garbage, empty and truncated files
    for junk in (b"", b"PK\x03\x04" + b"\0" * 40, raw[: len(raw) // 2], raw[:-10]):
        p.write_bytes(junk)
        assert store.get("C1", r.input_hash) is None and store.input_hash("C1") is None


def test_part_of_the_old_gzppart1_format_is_recomputed(tmp_path):
    """A ``.part`` left by a build of export format version 1 (the hand-written GZPPART1
    container) counts as missing and is replaced by the next put."""
    import json
    import struct

    r = case_result("C1", {"full": (4, 4)}, seed=2)
    store = PartStore(tmp_path, "h")
    header = json.dumps(
        {
            "format": "gazeprep-part",
            "version": 1,
            "case_id": "C1",
            "input_hash": r.input_hash,
            "recipe_hash": "h",
            "dtype": "float32",
            "targets": ["full"],
            "shapes": [[4, 4]],
            "tables": [],
            "members": [],
        }
    ).encode()
    store.path("C1").write_bytes(b"GZPPART1" + struct.pack("<Q", len(header)) + header)
    assert store.case_ids() == ["C1"]
    assert not store.has("C1", r.input_hash) and store.get("C1", r.input_hash) is None
    with pytest.raises(GazeprepError, match="no complete part"):
        finalize(tmp_path, store, recipe=recipe())
    store.put(r)
    assert np.array_equal(store.get("C1", r.input_hash).heatmaps["full"], r.heatmaps["full"])


def test_prune_clear_and_case_ids(tmp_path):
    store = PartStore(tmp_path, "h")
    for cid in ["B", "A", "C"]:
        store.put(CaseResult(cid, "h", {}, {}, []))
    assert store.case_ids() == ["A", "B", "C"]
    assert store.prune(["A", "C"]) == ["B"]
    assert store.case_ids() == ["A", "C"]
    store.clear()
    assert store.case_ids() == []


def test_put_replaces_an_older_part(tmp_path):
    store = PartStore(tmp_path, "h")
    r1 = CaseResult("A", "v1", {}, {"full": np.ones((3, 3), np.float32)}, [])
    r2 = CaseResult("A", "v2", {}, {"full": np.full((3, 3), 2.0, np.float32)}, [])
    store.put(r1)
    store.put(r2)
    assert store.get("A", "v1") is None
    assert store.get("A", "v2").heatmaps["full"][0, 0] == 2.0
    assert [p.name for p in store.dir.iterdir()] == ["A.part"]


def test_hash_inputs(tmp_path):
    a = tmp_path / "rel1" / "x"
    a.mkdir(parents=True)
    (a / "fixations.csv").write_text("1,2\n")
    (a / "t.csv").write_text("hello\n")
    h1 = hash_inputs(tmp_path / "rel1", ["x/fixations.csv", "x/t.csv"], "recipe1")
    assert h1 == hash_inputs(tmp_path / "rel1", [a / "t.csv", a / "fixations.csv"], "recipe1")  # order, abs paths
    assert h1 != hash_inputs(tmp_path / "rel1", ["x/fixations.csv", "x/t.csv"], "recipe2")
    b = tmp_path / "moved"
    (a.parent).rename(b)
    assert hash_inputs(b, ["x/fixations.csv", "x/t.csv"], "recipe1") == h1  # folder moved: same
    (b / "x" / "t.csv").write_text("hellO\n")
    assert hash_inputs(b, ["x/fixations.csv", "x/t.csv"], "recipe1") != h1
    assert hash_inputs(b, ["x/missing.csv"]) != hash_inputs(b, [])


def test_index_rows_without_heatmaps_table_are_synthesised(tmp_path):
    r = CaseResult(
        "A", "h", {"fixations": pl.DataFrame({"case_id": ["A"]})}, {"b": np.ones((2, 3)), "a": np.ones((2, 3))}, []
    )
    v = r.validated(recipe_name="rx", dataset="egd-cxr")
    idx = v.tables["heatmaps"]
    assert idx["target"].to_list() == ["a", "b"]
    assert idx["recipe"].to_list() == ["rx", "rx"] and idx["dataset"].to_list() == ["egd-cxr"] * 2
    assert idx["height_px"].to_list() == [2, 2] and idx["width_px"].to_list() == [3, 3]


def test_float16_conversion_is_bit_identical_to_numpy():
    """The fast float16 path (exact integer rounding of values that become float16 subnormals)
    gives the same bits as numpy's cast, over random float32 bit patterns and the edge cases."""
    from gazeprep.export._io import to_dtype

    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    a = a[np.isfinite(a) & (np.abs(a) <= 65504)]
    tiny = (rng.random(200_000) * 2.0**-13).astype(np.float32) * rng.choice([-1, 1], 200_000).astype(np.float32)
    f = np.float32
    edge = np.array(
        [
            2**-25,
            -(2**-25),
            np.nextafter(f(2**-25), f(1)),
            2**-24,
            3 * 2**-26,
            5 * 2**-26,
            0.0,
            -0.0,
            1e-45,
            2**-14,
            np.nextafter(f(2**-14), f(0)),
            1023.5 * 2**-24,
            65504.0,
        ],
        dtype=np.float32,
    )
    for x in (a, tiny, edge):
        assert np.array_equal(to_dtype(x, "float16").view(np.uint16), x.astype(np.float16).view(np.uint16))
    with pytest.raises(GazeprepError, match="float16"):
        to_dtype(np.array([1.0, 70000.0], np.float32), "float16")


def test_for_recipe_uses_hash_and_dtype(tmp_path):
    rec = recipe("float16")
    store = PartStore.for_recipe(tmp_path, rec)
    assert store.recipe_hash == rec.hash() and store.dtype == "float16"
    r = case_result("C1", {"full": (4, 4)}, seed=2)
    store.put(r)
    assert PartStore(tmp_path, rec.hash()).get("C1", r.input_hash) is not None
    assert PartStore.for_recipe(tmp_path, recipe("float16", name="other")).get("C1", r.input_hash) is None


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_empty_chunk_rule(tmp_path, dtype):
    """A chunk is left out of its shard exactly when every value casts to the fill value +0.0
    (zarr compares the bits: a map of negative zeros is stored, so it reads back with its sign;
    export format 1's own writer also left that one out - no renderer output is all -0.0)."""
    tiny = np.zeros((3, 3), np.float32)
    tiny[1, 1] = 2.0**-25  # rounds to 0 in float16 (tie to even), not in float32
    up = tiny.copy()
    up[1, 1] = np.nextafter(np.float32(2.0**-25), np.float32(1))  # rounds up to 2**-24
    maps = [np.zeros((3, 3), np.float32), np.full((3, 3), -0.0, np.float32), tiny, up]
    results = [CaseResult(f"C{i}", "h", {}, {"full": m}, []) for i, m in enumerate(maps)]
    out = finalize(tmp_path / "o", results, recipe=recipe(dtype), shard_size=4)
    shard = (out / "heatmaps.zarr" / "h3_w3" / "c" / "0" / "0" / "0").read_bytes()
    index = np.frombuffer(shard[-4 - 4 * 16 : -4], "<u8").reshape(4, 2)  # (offset, nbytes) per chunk
    empty = [bool((row == 2**64 - 1).all()) for row in index]
    assert empty == [True, False, dtype == "float16", False]


def test_hash_inputs_refuses_files_outside_the_release(tmp_path):
    import pytest as _pytest

    from gazeprep.errors import GazeprepError
    from gazeprep.export import hash_inputs

    (tmp_path / "a.csv").write_text("x")
    assert len(hash_inputs(tmp_path, [tmp_path / "a.csv"])) == 64
    for bad in ("/etc/hostname", "../a.csv", "sub/../../a.csv"):
        with _pytest.raises(GazeprepError, match="release folder"):
            hash_inputs(tmp_path, [bad])
