"""The Zarr v3 store: spec-compliant shards, few files, one array per shape, per-sample chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_testlib import recipe, smooth_map

from gazeprep.export import CaseResult, finalize, load_export
from gazeprep.export._io import ZSTD_LEVEL


def _many(n: int, shape=(16, 16), seed=0) -> list[CaseResult]:
    rng = np.random.default_rng(seed)
    return [CaseResult(f"C{i:04d}", "h", {}, {"full": smooth_map(rng, shape)}, []) for i in range(n)]


def _zstd(data: np.ndarray) -> bytes:
    """The zstd frame of one chunk as the export's codec writes it (level 1, no checksum)."""
    from numcodecs.zstd import Zstd

    return bytes(Zstd(level=ZSTD_LEVEL, checksum=False).encode(np.ascontiguousarray(data)))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_shards_follow_the_sharding_spec_by_hand(tmp_path, dtype):
    """Closed form of the zarr v3 ``sharding_indexed`` spec, checked on the export's own files:
    non-empty chunks (zstd of the little-endian samples) back to back in sample order, then the
    index of (offset, nbytes) little-endian uint64 pairs (2**64-1 for an empty chunk), then the
    index's CRC32C; a shard whose chunks are all empty is not written."""
    import google_crc32c

    results = _many(10, (8, 9))
    results[3].heatmaps["full"][:] = 0  # an empty chunk inside a shard
    for i in (8, 9):  # the last (partial) shard is all empty
        results[i].heatmaps["full"][:] = 0
    out = finalize(tmp_path / "ours", results, recipe=recipe(dtype), shard_size=4)
    data = np.stack([r.heatmaps["full"] for r in results]).astype(dtype)
    m = 2**64 - 1
    for j in range(2):
        raw = (out / "heatmaps.zarr" / "h8_w9" / "c" / str(j) / "0" / "0").read_bytes()
        chunks = [b"" if not data[i].any() else _zstd(data[i]) for i in range(4 * j, 4 * j + 4)]
        body = b"".join(chunks)
        index, offset = [], 0
        for c in chunks:
            index.append([offset, len(c)] if c else [m, m])
            offset += len(c)
        assert raw[: len(body)] == body, j
        assert np.frombuffer(raw[len(body) : -4], "<u8").reshape(4, 2).tolist() == index
        assert raw[-4:] == google_crc32c.value(raw[len(body) : -4]).to_bytes(4, "little")
        assert len(raw) == len(body) + 4 * 16 + 4
    assert not (out / "heatmaps.zarr" / "h8_w9" / "c" / "2").exists()
    meta = json.loads((out / "heatmaps.zarr" / "h8_w9" / "zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    assert meta["codecs"][0]["configuration"]["chunk_shape"] == [1, 8, 9]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 8, 9]
    assert meta["data_type"] == dtype
    assert meta["fill_value"] == 0.0 and meta["dimension_names"] == ["sample", "y", "x"]
    ex = load_export(out)
    for r in results:
        assert np.array_equal(ex.heatmap(r.case_id, "full"), r.heatmaps["full"].astype(dtype).astype(np.float32))


def test_a_shard_written_in_blocks_is_the_same_file(tmp_path, monkeypatch):
    """Shards larger than the block bound (native-size float32 maps) are handed to zarr in several
    row blocks; zarr merges them into the same shard bytes as one write."""
    import gazeprep.export.writer as writer

    results = _many(11, (8, 9), seed=4)
    results[5].heatmaps["full"][:] = 0
    one = finalize(tmp_path / "one", results, recipe=recipe(), shard_size=8)
    monkeypatch.setattr(writer, "_MAX_BLOCK_BYTES", 3 * 8 * 9 * 4)  # 3 maps per block
    blocks = finalize(tmp_path / "blocks", results, recipe=recipe(), shard_size=8)
    for j in range(2):
        rel = f"heatmaps.zarr/h8_w9/c/{j}/0/0"
        assert (one / rel).read_bytes() == (blocks / rel).read_bytes()
    assert (one / "manifest.json").read_bytes() == (blocks / "manifest.json").read_bytes()


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
    assert n == len(_zstd(results[5].heatmaps["full"]))
    raw[off : off + n] = bytes(n)  # zero the 6th chunk's compressed bytes
    shard.write_bytes(bytes(raw))
    ex = load_export(out)
    for i in range(8):
        if i == 5:
            with pytest.raises(RuntimeError):  # numcodecs' zstd: the damaged frame does not decode
                ex.heatmap(f"C{i:04d}", "full")
        else:
            assert np.array_equal(ex.heatmap(f"C{i:04d}", "full"), results[i].heatmaps["full"])
