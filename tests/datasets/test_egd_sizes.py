"""EGD-CXR image sizes (issue 11.6): from the MIMIC-CXR image headers under ``images_root``
(DICOM Rows/Columns or the JPG header), else the MIMIC metadata table, else the mask PNGs. A case
with none is a reject naming what was looked for, never a null size; a 0-byte or corrupt mask PNG
is a reject naming the PNG; I/O faults (EIO, EACCES) propagate instead of becoming rejects.

The truth is what the synthesiser wrote into each DICOM (``SynthMimic.images[i].rows/columns``);
the synthetic images are not square, so a swapped (height, width) fails.
"""

from __future__ import annotations

import errno
import gzip
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gazeprep.datasets import get_adapter
from gazeprep.errors import GazeprepError, InputFormatError
from gazeprep.synth import generate_egd, generate_mimic

N = 5
TR = "audio_segmentation_transcripts"
MASK_NAMES = ("left_lung.png", "right_lung.png", "mediastanum.png", "aortic_knob.png")


@pytest.fixture(scope="module")
def synth_base(tmp_path_factory):
    d = tmp_path_factory.mktemp("egd_sizes")
    m = generate_mimic(d / "mimic", N + 1, 3)
    e = generate_egd(d / "egd", N, 3, mimic_root=d / "mimic")
    return d, m, e


@pytest.fixture
def rel(synth_base, tmp_path):
    """(egd_root, mimic_root, truth sizes {dicom_id: (rows, columns)}, egd truth): fresh copies."""
    d, m, e = synth_base
    shutil.copytree(d / "mimic", tmp_path / "mimic")
    shutil.copytree(d / "egd", tmp_path / "egd")
    written = {i.dicom_id: (i.rows, i.columns) for i in m.images}
    truth = {c.dicom_id: written[c.dicom_id] for c in e.cases}  # every EGD case is a MIMIC image here
    assert len(truth) == N and any(h != w for h, w in truth.values())
    return tmp_path / "egd", tmp_path / "mimic", truth, e


def open_(root: Path, images: Path | None = None, **kw):
    return get_adapter("egd-cxr").open(root, images_root=images, **kw)


def delete_masks(root: Path) -> None:
    for p in root.glob(f"{TR}/*/*.png"):
        p.unlink()


def delete(root: Path, pattern: str) -> int:
    files = list(root.glob(pattern))
    for p in files:
        p.unlink()
    return len(files)


def sizes(release) -> dict[str, tuple[int, int]]:
    return {c: (h, w) for c, h, w in release.cases.select("case_id", "image_height_px", "image_width_px").iter_rows()}


def size_rejects(release) -> list[dict]:
    return [r for r in release.rejects if "image size unknown" in r["reason"]]


# ---- where the size comes from -------------------------------------------------------------------
def test_sizes_from_dicom_headers_without_masks(rel):
    """Masks deleted, metadata table deleted, JPGs deleted: only the DICOM headers can give the sizes."""
    root, mimic_root, truth, _ = rel
    delete_masks(root)
    assert delete(mimic_root, "mimic-cxr-2.0.0-metadata.csv.gz") == 1
    assert delete(mimic_root, "files/*/*/*/*.jpg") == N + 1
    r = open_(root, mimic_root)
    assert sizes(r) == truth
    assert r.stats["size_from_image"] == N and r.stats["size_unknown"] == 0
    assert size_rejects(r) == []
    # the size reaches the per-case tables: the shown rectangle is the whole image
    did = next(iter(truth))
    fx = r.read_case(did).tables["fixations"]
    assert (fx["shown_xmax_px"][0], fx["shown_ymax_px"][0]) == (float(truth[did][1]), float(truth[did][0]))


def test_jpg_only_mimic_root(rel):
    """A MIMIC-CXR-JPG root (no DICOM, no metadata table): sizes from the JPG headers."""
    root, mimic_root, truth, _ = rel
    delete_masks(root)
    delete(mimic_root, "mimic-cxr-2.0.0-metadata.csv.gz")
    assert delete(mimic_root, "files/*/*/*/*.dcm") == N + 1
    r = open_(root, mimic_root)
    assert sizes(r) == truth and r.stats["size_from_image"] == N


def test_image_header_wins_over_metadata(rel):
    """Metadata rows that disagree with the files (Rows/Columns doubled): the image header is used."""
    root, mimic_root, truth, _ = rel
    meta = mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz"
    df = pl.read_csv(gzip.decompress(meta.read_bytes()), infer_schema=False)
    df = df.with_columns(
        (pl.col("Rows").cast(pl.Int64) * 2).cast(pl.Utf8), (pl.col("Columns").cast(pl.Int64) * 2).cast(pl.Utf8)
    )
    meta.write_bytes(gzip.compress(df.write_csv().encode()))
    r = open_(root, mimic_root)
    assert sizes(r) == truth and r.stats["size_from_image"] == N


def test_metadata_when_images_are_absent(rel):
    """No image files under the root: the metadata table's Rows/Columns (the DICOM values) are used."""
    root, mimic_root, truth, _ = rel
    delete_masks(root)
    shutil.rmtree(mimic_root / "files")
    r = open_(root, mimic_root)
    assert sizes(r) == truth and r.stats["size_from_metadata"] == N


def test_masks_when_no_images_root(rel):
    """Without a MIMIC root the mask PNGs (drawn at image size) give the size."""
    root, _, truth, _ = rel
    r = open_(root)
    assert sizes(r) == truth and r.stats["size_from_masks"] == N


# ---- unknown size: a reject naming what is missing -----------------------------------------------
def test_no_masks_no_images_root_every_case_rejected(rel):
    root, _, truth, e = rel
    delete_masks(root)
    r = open_(root)
    assert r.cases.height == 0  # never a case with a null size
    rej = size_rejects(r)
    assert [x["case_id"] for x in rej] == [c.dicom_id for c in e.cases]
    for i, x in enumerate(rej, start=1):
        did = x["case_id"]
        assert x["file"] == "master_sheet.csv" and x["row"] == i and x["stage"] == "ingest"
        assert "no MIMIC-CXR root given (--images MIMIC_ROOT" in x["reason"]
        assert (
            f"no mask PNG in '{TR}/{did}/' (looked for left_lung.png, right_lung.png, mediastanum.png or mediastinum.png, aortic_knob.png)"
            in x["reason"]
        )
        assert x["reason"].endswith("case skipped")
    # their gaze rows are dropped and say why
    fix = [x for x in r.rejects if x["file"] == "fixations.csv" and x["case_id"] in truth]
    assert {x["case_id"] for x in fix} == set(truth)
    assert all("master_sheet.csv row of this DICOM_ID was rejected" in x["reason"] for x in fix)


def test_images_root_without_the_images_names_the_paths(rel):
    root, mimic_root, truth, e = rel
    delete_masks(root)
    shutil.rmtree(mimic_root / "files")
    delete(mimic_root, "mimic-cxr-2.0.0-metadata.csv.gz")
    r = open_(root, mimic_root)
    assert r.cases.height == 0
    by_case = {x["case_id"]: x["reason"] for x in size_rejects(r)}
    assert set(by_case) == set(truth)
    for c in e.cases:
        stem = mimic_root / c.path.removesuffix(".dcm")  # files/pXX/p<subject>/s<study>/<dicom_id>
        reason = by_case[c.dicom_id]
        assert f"no image under {mimic_root}: looked for '{stem}.dcm' and '{stem}.jpg'" in reason
        assert f"no mimic-cxr-2.0.0-metadata.csv[.gz] in {mimic_root}" in reason
        assert f"no mask PNG in '{TR}/{c.dicom_id}/'" in reason


def test_metadata_without_the_row_is_named(rel):
    root, mimic_root, truth, e = rel
    delete_masks(root)
    shutil.rmtree(mimic_root / "files")
    meta = mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz"
    gone = e.cases[0].dicom_id
    df = pl.read_csv(gzip.decompress(meta.read_bytes()), infer_schema=False).filter(pl.col("dicom_id") != gone)
    meta.write_bytes(gzip.compress(df.write_csv().encode()))
    r = open_(root, mimic_root)
    assert sizes(r) == {k: v for k, v in truth.items() if k != gone}
    (x,) = size_rejects(r)
    assert x["case_id"] == gone and f"no row for this dicom_id in {meta}" in x["reason"]


# ---- bad mask PNGs ------------------------------------------------------------------------------
def _truncated_png(root: Path) -> bytes:
    return next(root.glob(f"{TR}/*/left_lung.png")).read_bytes()[:20]  # signature + half an IHDR


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("empty", "empty file (0 bytes)"),
        ("garbage", "not a PNG file (bad signature)"),
        ("truncated", "cannot read image header"),
    ],
)
def test_bad_mask_png_without_images_is_a_reject_naming_the_png(rel, kind, needle):
    root, _, truth, e = rel
    content = {"empty": b"", "garbage": b"\x00garbage bytes, not an image\xff" * 3, "truncated": _truncated_png(root)}[
        kind
    ]
    did = e.cases[1].dicom_id
    delete_masks(root)
    png = root / TR / did / "left_lung.png"
    png.write_bytes(content)
    r = open_(root)
    (x,) = [x for x in size_rejects(r) if x["case_id"] == did]
    assert x["file"] == f"{TR}/{did}/left_lung.png" and x["row"] is None
    assert f"unreadable mask PNG(s): '{TR}/{did}/left_lung.png' ({needle}" in x["reason"]
    assert x["reason"].endswith("case skipped")


@pytest.mark.parametrize(
    "content, needle", [(b"", "empty file (0 bytes)"), (b"GIF89a not a png at all", "not a PNG file (bad signature)")]
)
def test_bad_mask_png_with_images_leaves_that_mask_out(rel, content, needle):
    root, mimic_root, truth, e = rel
    did = e.cases[0].dicom_id
    (root / TR / did / "mediastanum.png").write_bytes(content)
    r = open_(root, mimic_root)
    assert sizes(r)[did] == truth[did]  # the case keeps its size from the DICOM header
    cd = r.read_case(did)
    assert cd.tables["masks"]["structure"].to_list() == ["left_lung", "right_lung", "aortic_knob"]
    (x,) = cd.rejects
    assert x["file"] == f"{TR}/{did}/mediastanum.png" and x["case_id"] == did
    assert needle in x["reason"] and x["reason"].endswith("mask left out")
    assert cd.tables["fixations"].height > 0


def test_mask_size_disagreeing_with_the_image_keeps_the_image_size(rel):
    from PIL import Image

    root, mimic_root, truth, e = rel
    did = e.cases[2].dicom_id
    h, w = truth[did]
    Image.fromarray(np.zeros((h // 2, w // 2), np.uint8)).save(root / TR / did / "right_lung.png")
    r = open_(root, mimic_root)
    assert sizes(r)[did] == (h, w)
    cd = r.read_case(did)
    (x,) = cd.rejects
    assert x["file"] == f"{TR}/{did}/right_lung.png"
    assert f"mask PNG is {w // 2}x{h // 2} px but the image is {w}x{h} px (from the image {mimic_root}" in x["reason"]
    assert "right_lung" in cd.tables["masks"]["structure"].to_list()  # kept; resized when used


def test_anatomy_loader_names_a_bad_png(rel):
    """The anatomy filter's EGD loader (masks: egd_masks) raises InputFormatError naming the PNG."""
    from gazeprep.anatomy.masks import load_egd_anatomy_masks

    root, _, truth, e = rel
    did = e.cases[0].dicom_id
    png = root / TR / did / "left_lung.png"
    good = png.read_bytes()
    assert load_egd_anatomy_masks(root, did, truth[did])["left_lung"].shape == truth[did]
    for content, needle in (
        (b"", "empty file (0 bytes)"),
        (b"\x89PNG\r\n\x1a\nnonsense", "cannot read mask PNG"),
        (good[: len(good) // 2], "cannot read mask PNG"),
    ):
        png.write_bytes(content)
        with pytest.raises(InputFormatError) as ei:
            load_egd_anatomy_masks(root, did, truth[did])
        assert ei.value.path == str(png) and needle in str(ei.value) and "Traceback" not in str(ei.value)


# ---- I/O faults propagate -----------------------------------------------------------------------
def _raise(exc: OSError):
    def boom(*a, **k):
        raise exc

    return boom


def test_eio_on_a_dicom_header_stops_the_open(rel, monkeypatch):
    import pydicom

    root, mimic_root, _, _ = rel
    err = OSError(errno.EIO, "Input/output error", "x.dcm")
    monkeypatch.setattr(pydicom, "dcmread", _raise(err))
    with pytest.raises(OSError) as ei:
        open_(root, mimic_root)
    assert ei.value is err


def test_corrupt_dicom_header_is_not_an_io_fault(rel):
    """A DICOM whose header cannot be parsed: the next source (metadata) gives the size."""
    root, mimic_root, truth, e = rel
    c = e.cases[0]
    (mimic_root / c.path).write_bytes(b"not a dicom file at all" * 10)
    r = open_(root, mimic_root)
    assert sizes(r)[c.dicom_id] == truth[c.dicom_id] and r.stats["size_from_metadata"] == 1


def test_eacces_on_a_mask_png_propagates(rel, monkeypatch):
    from PIL import Image

    root, mimic_root, _, e = rel
    r = open_(root, mimic_root)
    err = PermissionError(errno.EACCES, "Permission denied", "left_lung.png")
    monkeypatch.setattr(Image, "open", _raise(err))
    with pytest.raises(PermissionError):
        r.read_case(e.cases[0].dicom_id)


def test_eio_reading_a_transcript_propagates(rel, monkeypatch):
    root, mimic_root, _, e = rel
    r = open_(root, mimic_root)
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "transcript.json":
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(OSError) as ei:
        r.read_case(e.cases[0].dicom_id)
    assert ei.value.errno == errno.EIO


def test_eio_reading_fixations_csv_stops_the_open(rel, monkeypatch):
    """A release-wide file that exists but cannot be read: OSError, not an InputFormatError."""
    root, _, _, _ = rel
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "fixations.csv":
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(OSError) as ei:
        open_(root)
    assert not isinstance(ei.value, GazeprepError) and ei.value.errno == errno.EIO


def test_read_mask_png_eio_propagates(tmp_path, monkeypatch):
    from PIL import Image

    from gazeprep.datasets.images import read_mask_png

    p = tmp_path / "m.png"
    Image.fromarray(np.full((3, 4), 255, np.uint8)).save(p)
    assert read_mask_png(p).shape == (3, 4) and read_mask_png(p).all()
    monkeypatch.setattr(Image, "open", _raise(OSError(errno.EIO, "Input/output error", str(p))))
    with pytest.raises(OSError):
        read_mask_png(p)


# ---- options ------------------------------------------------------------------------------------
def test_images_root_options(rel, tmp_path):
    root, mimic_root, truth, _ = rel
    delete_masks(root)
    # the old keyword still works and is the same option
    assert sizes(get_adapter("egd-cxr").open(root, mimic_root=mimic_root)) == truth
    with pytest.raises(GazeprepError, match="two MIMIC-CXR roots given"):
        get_adapter("egd-cxr").open(root, images_root=mimic_root, mimic_root=tmp_path)
    with pytest.raises(GazeprepError, match="MIMIC-CXR images folder not found"):
        open_(root, tmp_path / "nowhere")
    with pytest.raises(GazeprepError, match=r"does not take the option\(s\) \['bogus'\]"):
        get_adapter("egd-cxr").open(root, bogus=1)
    for name in ("reflacx", "mimic-cxr"):  # every adapter takes the keyword
        with pytest.raises(GazeprepError, match="MIMIC-CXR images folder not found"):
            get_adapter(name).open(root, images_root=tmp_path / "nowhere")


# ---- the build ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_build_heatmaps_with_and_without_images(rel, tmp_path):
    """The issue's failure: masks gone -> every case failed with a TypeError. Now: with the MIMIC
    root every case renders at its true size; without it the build stops with 0 maps and the rejects
    name the missing files (no TypeError anywhere)."""
    from gazeprep.export import load_export
    from gazeprep.pipeline.build import BuildOptions, RejectPolicyError, build_heatmaps
    from gazeprep.recipes import load_recipe

    root, mimic_root, truth, _ = rel
    delete_masks(root)
    recipe = load_recipe("egd-static-contract")
    s = build_heatmaps(
        BuildOptions(
            dataset="egd-cxr",
            root=root,
            out=tmp_path / "a",
            recipe=recipe,
            workers=1,
            progress=False,
            images_root=mimic_root,
        )
    )
    ex = load_export(s.out)
    idx = ex.tables["heatmaps"]
    assert set(idx["case_id"]) == set(truth)
    for cid, h, w in idx.select("case_id", "height_px", "width_px").iter_rows():
        assert (h, w) == truth[cid]
    assert not any("TypeError" in (x or "") for x in ex.tables["rejects"]["reason"].to_list())

    with pytest.raises(RejectPolicyError) as ei:
        build_heatmaps(
            BuildOptions(dataset="egd-cxr", root=root, out=tmp_path / "b", recipe=recipe, workers=1, progress=False)
        )
    rej = load_export(ei.value.summary.out).tables["rejects"]
    unknown = rej.filter(pl.col("reason").str.starts_with("image size unknown"))
    assert set(unknown["case_id"]) == set(truth) and set(unknown["file"]) == {"master_sheet.csv"}
    assert not rej["reason"].str.contains("TypeError").any()
    # the per-case paths in those reasons are quoted, so the summary shows them as one reason group
    from gazeprep.export.inspect import rejects_summary

    groups = rejects_summary(load_export(ei.value.summary.out)).groups
    sized = groups.filter(pl.col("reason").str.starts_with("image size unknown"))
    assert sized.height == 1 and sized["n_cases"][0] == len(truth) > 1


def test_mask_file_names_are_defined_once_by_the_adapter():
    """The anatomy stage asks the adapter for mask files and the generator writes the adapter's first
    name per structure, so the release spelling lives in gazeprep/datasets/egd.py only."""
    import gazeprep.anatomy.structures as structures
    from gazeprep.datasets.egd import MASK_FILES
    from gazeprep.synth.egd import MASK_FILES as WRITTEN

    assert not hasattr(structures, "EGD_MASK_FILES")
    assert WRITTEN == {"left_lung": "left_lung.png", "right_lung": "right_lung.png",
                       "mediastinum": "mediastanum.png", "aortic_knob": "aortic_knob.png"}  # fmt: skip
    assert all(WRITTEN[k] == names[0] for k, names in MASK_FILES.items())
