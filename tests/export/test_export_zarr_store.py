"""The Zarr v3 store: spec-compliant shards, few files, one array per shape, per-sample chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from gazeprep.export import CaseResult, finalize, load_export
from gazeprep.export._io import ZSTD_LEVEL, encode_chunk
from gazeprep.export.writer import shard_bytes
from export_testlib import recipe, smooth_map


def _many(n: int, shape=(16, 16), seed=0) -> list[CaseResult]:
    rng = np.random.default_rng(seed)
    return [CaseResult(f"C{i:04d}", "h", {}, {"full": smooth_map(rng, shape)}, []) for i in range(n)]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_shards_are_byte_identical_to_zarrs_own_writer(tmp_path, dtype):
    """Our shard builder follows the sharding_indexed spec exactly: zarr writing the same data
    through its own codec pipeline produces the same shard files."""
    results = _many(10, (8, 9))
    results[3].heatmaps["full"][:] = 0  # an empty chunk inside a shard
    out = finalize(tmp_path / "ours", results, recipe=recipe(dtype), shard_size=4)
    data = np.stack([r.heatmaps["full"] for r in results]).astype(dtype)
    g = zarr.open_group(str(tmp_path / "zarr.zarr"), mode="w", zarr_format=3)
    a = g.create_array("h8_w9", shape=data.shape, chunks=(1, 8, 9), shards=(4, 8, 9), dtype=dtype,
                       compressors=ZstdCodec(level=ZSTD_LEVEL, checksum=False), fill_value=0.0,
                       dimension_names=("sample", "y", "x"))
    a[:] = data
    for j in range(3):  # 10 samples / 4 per shard; the last shard is partial
        ours = (out / "heatmaps.zarr" / "h8_w9" / "c" / str(j) / "0" / "0").read_bytes()
        theirs = (tmp_path / "zarr.zarr" / "h8_w9" / "c" / str(j) / "0" / "0").read_bytes()
        assert ours == theirs, j
    meta = json.loads((out / "heatmaps.zarr" / "h8_w9" / "zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    assert meta["codecs"][0]["configuration"]["chunk_shape"] == [1, 8, 9]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 8, 9]
    assert meta["data_type"] == dtype


def test_shard_layout_by_hand():
    """Closed form of the spec: chunks back to back, then (offset, nbytes) pairs, then CRC32C."""
    import google_crc32c

    c = [b"abc", b"", b"defgh"]
    s = shard_bytes(c, 4)
    idx = np.frombuffer(s[8:-4], dtype="<u8").reshape(4, 2)
    m = 2**64 - 1
    assert s[:8] == b"abcdefgh"
    assert idx.tolist() == [[0, 3], [m, m], [3, 5], [m, m]]
    assert s[-4:] == google_crc32c.value(s[8:-4]).to_bytes(4, "little")
    assert shard_bytes([b"", b""], 2) is None


def test_store_is_a_handful_of_files(tmp_path):
    n, k = 300, 64
    out = finalize(tmp_path / "o", _many(n), recipe=recipe("float16"), shard_size=k, progress=True)
    files = [p for p in (out / "heatmaps.zarr").rglob("*") if p.is_file()]
    shards = [p for p in files if p.name != "zarr.json"]
    assert len(shards) == -(-n // k) == 5
    assert len(files) == 5 + 2  # shards + array zarr.json + group zarr.json
    ex = load_export(out)
    assert ex.array("h16_w16").shape == (n, 16, 16)


def test_mixed_native_sizes_get_one_array_per_shape(tmp_path):
    rng = np.random.default_rng(3)
    shapes = {"A": (20, 30), "B": (30, 20), "C": (20, 30), "D": (7, 7), "E": (30, 20)}
    results = [
        CaseResult(cid, "h", {}, {"full": smooth_map(rng, s), "x": smooth_map(rng, s)}, []) for cid, s in shapes.items()
    ]
    out = finalize(tmp_path / "o", results[::-1], recipe=recipe(), shard_size=3)
    ex = load_export(out)
    arrays = ex.manifest["heatmaps"]["arrays"]
    assert sorted(arrays) == ["h20_w30", "h30_w20", "h7_w7"]
    assert arrays["h20_w30"]["shape"] == [4, 20, 30] and arrays["h30_w20"]["count"] == 4
    assert arrays["h7_w7"]["shape"] == [2, 7, 7] and arrays["h7_w7"]["shard_samples"] == 2
    idx = ex.index
    got = idx.filter(idx["array"] == "h30_w20").select("case_id", "target", "row").rows()
    assert got == [("B", "full", 0), ("B", "x", 1), ("E", "full", 2), ("E", "x", 3)]
    for r in results:
        for t, m in r.heatmaps.items():
            assert np.array_equal(ex.heatmap(r.case_id, t), m)


def test_one_sample_reads_independently_of_the_others(tmp_path):
    """Each sample is its own chunk: damaging sample 5's bytes leaves samples 0-4 and 6-7 readable
    and exact, while sample 5 no longer decodes to its values."""
    results = _many(8, (16, 16), seed=5)
    out = finalize(tmp_path / "o", results, recipe=recipe(), shard_size=8)
    shard = out / "heatmaps.zarr" / "h16_w16" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    idx = np.frombuffer(bytes(raw[-(8 * 16) - 4 : -4]), dtype="<u8").reshape(8, 2)
    off, n = (int(v) for v in idx[5])
    assert n == len(encode_chunk(results[5].heatmaps["full"], "float32"))
    raw[off : off + n] = bytes(n)  # zero the 6th chunk's compressed bytes
    shard.write_bytes(bytes(raw))
    ex = load_export(out)
    for i in range(8):
        if i == 5:
            with pytest.raises(Exception):
                v = ex.heatmap(f"C{i:04d}", "full")
                assert np.array_equal(v, results[i].heatmaps["full"])
        else:
            assert np.array_equal(ex.heatmap(f"C{i:04d}", "full"), results[i].heatmaps["full"])
