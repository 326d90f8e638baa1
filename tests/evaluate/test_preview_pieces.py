"""Preview pieces a reader relies on: image lookup and its warnings, off-image fixations, legend,
window text, units, anatomy filtering, every case on the sheet, prediction captions and the
ground truth / prediction / difference view."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

from gazeprep.cli import main
from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate import preview as P
from gazeprep.export import CaseResult, finalize, write_prediction_export
from gazeprep.paths import bundled_sample_data
from gazeprep.recipes import Recipe, load_recipe


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _cases(rel="files/p10/p100/s1/img.jpg", H=20, W=40, cid="c1"):
    return pl.DataFrame(
        {"case_id": [cid], "image_id": ["img"], "image_height_px": [H], "image_width_px": [W], "image_path": [rel]}
    )


# --- images ------------------------------------------------------------------------------------


def test_image_found_under_images_root_and_missing_one_warned_once_naming_the_path(tmp_path):
    root = tmp_path / "mimic"
    f = root / "files/p10/p100/s1/img.jpg"
    f.parent.mkdir(parents=True)
    Image.fromarray(np.tile(np.linspace(0, 255, 40).astype(np.uint8), (20, 1))).save(f, quality=95)
    ex = E.InMemoryExport({("c1", "t"): np.ones((4, 4))}, {"cases": _cases()})
    said: list[str] = []
    img = P.ImageFinder(ex, root, said.append).load("c1")
    assert img is not None and img.shape == (20, 40) and img[:, -1].mean() > img[:, 0].mean() + 0.5
    assert said == []

    gone = E.InMemoryExport({("c1", "t"): np.ones((4, 4))}, {"cases": _cases("files/p10/p100/s1/nope.jpg")})
    finder = P.ImageFinder(gone, root, said.append)
    assert finder.load("c1") is None and finder.load("c1") is None
    assert len(said) == 1 and "nope" in said[0] and str(root) in said[0] and "c1" in said[0]

    said.clear()
    nowhere = P.ImageFinder(ex, tmp_path / "nonexistent", said.append)
    assert nowhere.load("c1") is None
    assert len(said) == 1 and "nonexistent" in said[0]


def test_image_of_the_wrong_size_is_not_drawn_and_said(tmp_path):
    root = tmp_path / "mimic"
    f = root / "files/p10/p100/s1/img.jpg"
    f.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(f)
    said: list[str] = []
    ex = E.InMemoryExport({("c1", "t"): np.ones((4, 4))}, {"cases": _cases()})
    assert P.ImageFinder(ex, root, said.append).load("c1") is None
    assert len(said) == 1 and "30x30" in said[0] and "40x20" in said[0]


@pytest.mark.skipif(bundled_sample_data() is None, reason="no bundled sample data (not a source checkout)")
def test_default_lookup_reads_the_bundled_sample_images_as_train_does():
    sample = bundled_sample_data() / "mimic-cxr"
    jpg = next(iter(sorted(sample.glob("files/p*/p*/s*/*.jpg"))))
    with Image.open(jpg) as im:
        w, h = im.size
    rel = (
        "physionet.org/files/mimic-cxr/2.0.0/" + jpg.relative_to(sample).with_suffix(".dcm").as_posix()
    )  # as REFLACX writes it
    ex = E.InMemoryExport({("c1", "t"): np.ones((4, 4))}, {"cases": _cases(rel, h, w)})
    said: list[str] = []
    finder = P.ImageFinder(ex, None, said.append)
    assert finder.root == sample and finder.source == "the bundled sample images"
    img = finder.load("c1")
    assert img is not None and img.shape == (h, w) and said == []
    assert float(img.std()) > 0.05  # an X-ray, not a flat canvas


# --- fixations ---------------------------------------------------------------------------------


def test_off_image_fixations_clamped_to_the_border_and_numbering_unbroken():
    # image H=10, W=20 at scale 2: display (x + 0.5) * 2 - 0.5
    x = np.array([5.0, -3.0, np.nan, 19.0, 25.0, 3.0])
    y = np.array([5.0, 4.0, 1.0, 9.0, -2.0, 10.0])
    m = P.fixation_marks(x, y, (10, 20), 2.0, margin=3.0)
    assert [k.number for k in m] == [1, 2, 3, 4, 5]  # the NaN one has no position and takes no number
    assert [k.off_image for k in m] == [False, True, False, True, True]
    assert (m[0].x, m[0].y) == (10.5, 10.5)
    # x = -3 -> -5.5, clamped to the margin 3; y = 4 -> 8.5 kept; points left
    assert (m[1].x, m[1].y, m[1].direction) == (3.0, 8.5, (-1.0, 0.0))
    assert (m[2].x, m[2].y) == (38.5, 18.5)  # (19, 9): the last pixel, inside
    # (25, -2): display (50.5, -3.5) -> clamped to (40 - 1 - 3, 3) = (36, 3); direction towards the corner
    assert (m[3].x, m[3].y) == (36.0, 3.0)
    dx, dy = m[3].direction
    assert dx > 0 and dy < 0 and abs(np.hypot(dx, dy) - 1) < 1e-12
    assert np.isclose(dx / -dy, 14.5 / 6.5)
    assert (m[4].x, m[4].y, m[4].direction) == (6.5, 16.0, (0.0, 1.0))  # y = 10 = H: below; 20 - 1 - 3


def _export(fx=None, ell=None, manifest=None, H=20, W=40, N=20, heat=None, tables=None):
    if heat is None:
        heat = np.zeros((N, N))
        heat[8:12, 8:12] = 1.0  # noqa: E702
    if fx is None:
        fx = pl.DataFrame(
            {
                "case_id": ["c1"] * 3,
                "t_start_s": [0.0, 1.0, 2.0],
                "t_end_s": [0.2, 1.9, 2.1],
                "x_px": [5.0, -10.0, 35.0],
                "y_px": [5.0, 10.0, 15.0],
            }
        )
    t = {"cases": _cases(H=H, W=W), "fixations": fx}
    if ell is not None:
        t["ellipses"] = ell
    t.update(tables or {})
    return E.InMemoryExport({("c1", "pneumothorax"): heat}, t, manifest)


def test_off_image_fixation_drawn_as_a_marker_at_the_left_border(tmp_path):
    ex = _export()
    img = np.zeros((20, 40), np.float32)
    im, lay = P.render_panel(ex, "c1", "pneumothorax", image=img, size=400, legend=True)
    assert [k.number for k in lay.marks] == [1, 2, 3] and [k.off_image for k in lay.marks] == [False, True, False]
    a = np.asarray(im)[:200]
    cyan = (np.abs(a.astype(int) - np.array(P.FIX_COLOUR)) <= 10).all(axis=-1)
    # the triangle at the border: cyan within the first 12 columns around row (10 + 0.5) * 10 - 0.5 = 104.5
    assert cyan[95:115, :12].sum() > 20
    # the legend explains the marker
    texts = [e.text for e in P._panel_legend(lay, None)]
    assert any("outside the image" in t for t in texts)


# --- legend, units, captions -------------------------------------------------------------------


def test_legend_entries_one_per_overlay_with_distinct_certainty_colours():
    es = P.legend_entries(
        fixations=True,
        off_image=True,
        certainties=[2, 5, 5, 3],
        boxes=["cardiac silhouette", "trachea"],
        masks=["left_lung", "heart"],
        heat_units="max-normalised (peak = 1)",
    )
    kinds = [e.overlay for e in es]
    assert kinds == ["heatmap", "fixations", "fixations", "ellipses", "ellipses", "ellipses", "boxes", "masks", "masks"]
    ell = [e for e in es if e.overlay == "ellipses"]
    assert [e.text.split(":")[0] for e in ell] == [
        "REFLACX ellipse, certainty 5",
        "REFLACX ellipse, certainty 3",
        "REFLACX ellipse, certainty 2",
    ]
    assert len({e.colour for e in ell}) == 3 and all(e.colour != (255, 255, 255) for e in ell)
    assert [e.shape for e in ell] == ["ellipse", "ellipse", "ellipse-thin"] and "not counted as positive" in ell[2].text
    assert "1 cardiac silhouette; 2 trachea" in es[6].text
    assert [e.colour for e in es[7:]] == [P.mask_colour("left_lung"), P.mask_colour("heart")]
    assert P.mask_colour("heart (mediastinum)") == P.mask_colour("heart") != P.mask_colour("left_lung")
    assert P.legend_entries() == []


def test_map_units_from_the_recipe_normalisation_and_prediction_caption():
    def ex(norm=None, kind="ground_truth", extra=None):
        man = {
            "kind": kind,
            "recipe": {"name": "r", "render": {"normalize": norm}} if norm else {},
            "extra": extra or {},
        }
        return E.InMemoryExport({}, {}, man)

    assert P.map_units(ex("max")) == "max-normalised (peak = 1)"
    assert P.map_units(ex("sum")).startswith("sum = 1")
    assert P.map_units(ex("minmax")).startswith("min-max")
    assert P.map_units(ex()) == "values"
    pred = ex("max", "prediction", {"prediction": {"model": "unet (run3)"}})
    assert P.map_units(pred) == "model output" and P.model_name(pred) == "unet (run3)"
    assert (
        P.panel_caption(pred, "c1", "t", 0.5, 3, has_image=True)
        == "c1 | t | prediction by unet (run3) | max 0.5 | 3 fixations"
    )
    assert "recipe r" in P.panel_caption(ex("max"), "c1", "t", 1, 0, has_image=False)
    assert P.model_name(ex("max")) is None


def test_captions_wrap_to_the_panel_width():
    font = P._font(12)
    text = "P102R785026 | enlarged_cardiac_silhouette | recipe reflacx-label-specific | max 0.0123 | 9 fixations"
    width = max(P._text_width(font, w) for w in text.split()) + 10  # every word fits on a line
    lines = P.wrap_text(text, font, width)
    assert len(lines) > 1 and " ".join(lines) == text
    assert all(P._text_width(font, ln) <= width for ln in lines)
    long = P.wrap_text("x" * 80, font, 100)  # one word wider than the line is cut, not lost
    assert "".join(long) == "x" * 80 and all(P._text_width(font, ln) <= 100 for ln in long)
    # the panel grows to hold every line: a small panel is taller than the image plus one line
    ex = _export()
    im = P.render_preview(ex, "c1", "pneumothorax", image=np.zeros((20, 40), np.float32), size=160, legend=False)
    assert im.size[1] > 80 + 4 * 14


def test_parse_overlays():
    assert P.parse_overlays(None) == P.DEFAULT_OVERLAYS and "boxes" not in P.DEFAULT_OVERLAYS
    assert P.parse_overlays("boxes, fixations") == ("fixations", "boxes")
    assert P.parse_overlays("all") == P.OVERLAYS and P.parse_overlays("none") == ()
    with pytest.raises(ValueError, match="'box'"):
        P.parse_overlays("box")


def test_overlays_switch_layers_off():
    ell = pl.DataFrame(
        {
            "case_id": ["c1"],
            "xmin_px": [10.0],
            "ymin_px": [4.0],
            "xmax_px": [30.0],
            "ymax_px": [16.0],
            "certainty": [5],
            "source_label": ["Pneumothorax"],
        }
    )
    ex = _export(ell=ell)
    img = np.zeros((20, 40), np.float32)
    _, on = P.render_panel(ex, "c1", "pneumothorax", image=img, size=200)
    assert on.marks and on.ellipses and on.heat is not None
    im, off = P.render_panel(ex, "c1", "pneumothorax", image=img, size=200, overlays=("fixations",))
    assert off.marks and not off.ellipses and off.heat is None
    body = np.asarray(im)[:100]
    green = (np.abs(body.astype(int) - np.array(P.ELLIPSE_COLOURS[5])) <= 20).all(axis=-1)
    assert not green.any()


# --- window text -------------------------------------------------------------------------------


def test_window_text_sentence_phrase_and_whole_recording():
    sentences = pl.DataFrame(
        {
            "case_id": ["c1", "c1"],
            "sentence_idx": [0, 1],
            "text": ["the lungs are clear.", "small right pneumothorax."],
            "t_start_s": [1.0, 4.0],
            "t_end_s": [3.0, 6.5],
        }
    )
    windows = pl.DataFrame(
        {
            "case_id": ["c1", "c1", "c1"],
            "target": ["pneumothorax", "full", "phrase_0001"],
            "window_idx": [0, 0, 0],
            "sentence_idx": [1, None, 0],
            "t_start_s": [2.5, 0.0, 1.6],
            "t_end_s": [5.25, 9.0, 2.0],
        }
    )
    words = pl.DataFrame({"case_id": ["c1"] * 3, "word_idx": [0, 1, 2], "word": ["the", "lungs", "are"]})
    man = {"recipe": {"name": "r", "window": {"kind": "sentence"}}}
    ex = E.InMemoryExport({}, {"sentences": sentences, "windows": windows, "words": words}, man)
    assert P.window_text(ex, "c1", "pneumothorax") == ['"small right pneumothorax." 2.50-5.25 s']
    assert P.window_text(ex, "c1", "full") == ["whole recording 0.00-9.00 s"]
    assert P.window_text(ex, "c1", "phrase_0001") == ['phrase "lungs" 1.60-2.00 s, in "the lungs are clear."']
    assert P.window_text(ex, "c1", "nothing") == []
    kw = E.InMemoryExport(
        {},
        {"sentences": sentences, "windows": windows.with_columns(pl.lit("heart").alias("target"))[:1]},
        {"recipe": {"window": {"kind": "keyword_sentences"}}},
    )
    assert P.window_text(kw, "c1", "heart") == ['2.50-5.25 s, up to "small right pneumothorax."']


# --- anatomy recipes ---------------------------------------------------------------------------


def test_inside_mask_rounds_as_the_recipe_then_takes_the_nearest_pixel():
    m = np.zeros((4, 6), bool)
    m[1:3, 2:4] = True  # rows 1-2, columns 2-3
    x = np.array([2.9, 3.6, 1.6, 2.0, -0.4, np.nan])
    y = np.array([1.2, 2.0, 1.0, 3.0, 1.0, 1.0])
    assert P.inside_mask(x, y, m, "floor").tolist() == [True, True, False, False, False, False]
    # no rounding: 3.6 -> nearest column 4 (outside), 1.6 -> column 2 (inside)
    assert P.inside_mask(x, y, m, "none").tolist() == [True, False, True, False, False, False]


def test_anatomy_panel_shows_its_mask_and_only_the_fixations_inside(monkeypatch):
    fx = pl.DataFrame(
        {
            "case_id": ["c1"] * 4,
            "t_start_s": [0.0, 1.0, 2.0, 3.0],
            "t_end_s": [0.5, 1.5, 2.5, 3.5],
            "x_px": [5.0, 12.0, 14.0, 35.0],
            "y_px": [5.0, 10.0, 12.0, 15.0],
        }
    )
    recipe = load_recipe("reflacx-anatomy")  # position_rounding floor, targets heart / left_lung / right_lung
    assert recipe.render.position_rounding == "floor" and recipe.anatomy.target_structures["heart"] == "heart"
    man = {"recipe": recipe.model_dump(mode="json")}
    heat = np.zeros((20, 20))
    heat[8:12, 8:12] = 1.0  # noqa: E702
    mask = np.zeros((20, 40), bool)
    mask[8:16, 10:20] = True
    ex = E.InMemoryExport({("c1", "heart"): heat}, {"cases": _cases(), "fixations": fx}, man)
    monkeypatch.setattr(P, "_anatomy_target_mask", lambda *a, **k: mask)
    im, lay = P.render_panel(ex, "c1", "heart", image=np.zeros((20, 40), np.float32), size=400)
    assert [k.number for k in lay.marks] == [1, 2]  # the 2 fixations inside, numbered without gaps
    assert lay.n_fix_note == "2 of 4 window fixations inside the mask"
    assert list(lay.masks) == ["heart"]
    legend = P._panel_legend(lay, None)
    assert any(e.overlay == "masks" and "only fixations inside it" in e.text for e in legend)
    a = np.asarray(im)[:200].astype(int)
    outline = (np.abs(a - np.array(P.mask_colour("heart"))) <= 30).all(axis=-1)
    assert outline[80:160, 98:102].any() and not outline[120, 150]  # left edge at column 10 * 10, inside not filled


# --- contact sheet: every case -----------------------------------------------------------------


def _sheet_export():
    heat = np.zeros((20, 20))
    heat[8:12, 8:12] = 1.0  # noqa: E702
    cases = pl.DataFrame(
        {
            "case_id": ["a", "b", "c", "d"],
            "image_height_px": [20] * 4,
            "image_width_px": [40] * 4,
            "image_path": ["files/p1/a.jpg"] * 4,
            "discarded": [False, False, False, True],
        }
    )
    rejects = pl.DataFrame(
        {
            "case_id": ["b", "c", "d", "zz", None],
            "stage": ["render", "ingest", "ingest", "ingest", "ingest"],
            "file": [None, "fixations.csv", None, "fixations.csv", "master_sheet.csv"],
            "row": [None, 12, None, 125, None],
            "reason": [
                "no fixations in any window",
                "bad pupil value",
                "eye-tracking data discarded",
                "calibration image",
                "release-wide thing",
            ],
        },
        schema={"case_id": pl.Utf8, "stage": pl.Utf8, "file": pl.Utf8, "row": pl.Int64, "reason": pl.Utf8},
    )
    return E.InMemoryExport(
        {("a", "t1"): heat, ("c", "t2"): heat},
        {"cases": cases, "rejects": rejects},
        {"kind": "ground_truth", "recipe": load_recipe("reflacx-label-specific").model_dump(mode="json")},
    )


def test_case_statuses_list_every_case_with_reasons():
    st = {s.case_id: s for s in P.case_statuses(_sheet_export())}
    assert sorted(st) == ["a", "b", "c", "d", "zz"]
    assert st["a"].status == "maps" and st["a"].targets == ("t1",) and st["a"].reasons == ()
    assert st["b"].status == "rejected" and st["b"].reasons == ("[render] no fixations in any window",)
    assert st["c"].status == "maps" and st["c"].reasons == ("[ingest] bad pupil value (fixations.csv, row 12)",)
    assert st["d"].status == "rejected" and st["d"].discarded
    assert st["zz"].status == "rejected" and not st["zz"].in_cases_table
    assert P.release_rejects(_sheet_export()) == ["[ingest] release-wide thing (master_sheet.csv)"]


def test_preview_of_a_rejected_case_says_why(tmp_path):
    with pytest.raises(P.GazeprepError, match=r"'b' has no heatmap.*rejected: \[render\] no fixations in any window"):
        P.preview_case(_sheet_export(), "b", tmp_path)


def test_contact_sheet_lists_rejected_cases_and_cases_without_maps(tmp_path):
    said: list[str] = []
    page = P.contact_sheet(
        _sheet_export(),
        tmp_path / "s",
        thumb=80,
        full=160,
        progress=False,
        warn=said.append,
        images_root=tmp_path / "none",
    )
    text = page.read_text()
    for cid in ("<th>a", "<th>b", "<th>c", "<th>d", "<th>zz"):
        assert cid in text
    assert "rejected: [render] no fixations in any window" in text
    assert "notes: [ingest] bad pupil value (fixations.csv, row 12)" in text
    assert "discarded in the release" in text and "release-wide thing" in text
    assert "5 cases (2 with maps, 3 rejected, 0 without a map)" in text
    assert text.count("<img") == 2 and 'id="legend"' in text and "max-normalised (peak = 1)" in text
    assert "colour scaled to this panel" in text
    assert "grey canvas" in text and len(said) == 1  # one warning for the missing --images folder
    assert (
        P.contact_sheet(
            _sheet_export(), tmp_path / "s2", max_cases=2, progress=False, warn=said.append, thumb=80, full=160
        )
        .read_text()
        .count("<tr")
        == 3
    )  # header + 2 cases
    only = P.contact_sheet(
        _sheet_export(), tmp_path / "s3", targets=["t2"], progress=False, warn=said.append, thumb=80, full=160
    ).read_text()
    assert only.count("<img") == 1 and "thumbs/c/t2.png" in only and "no map of the selected targets" in only


# --- predictions -------------------------------------------------------------------------------


def test_comparison_panels_and_difference_colours():
    gt_heat = np.zeros((20, 20))
    gt_heat[6:9, 4:7] = 1.0  # noqa: E702
    pr_heat = np.zeros((20, 20))
    pr_heat[10:13, 13:16] = 2.0  # noqa: E702
    gt = _export(heat=gt_heat)
    pred = E.InMemoryExport(
        {("c1", "pneumothorax"): pr_heat},
        {"cases": _cases()},
        {"kind": "prediction", "extra": {"prediction": {"model": "tiny-unet (r1)"}}},
    )
    im = P.render_comparison(
        gt,
        pred,
        "c1",
        "pneumothorax",
        image=np.full((20, 40), 0.5, np.float32),
        size=200,
        overlays=("heatmap",),
        warn=lambda m: None,
    )
    dh, dw, _ = P._display_grid((20, 40), 200)
    assert im.size[0] == 3 * dw + 12
    a = np.asarray(im).astype(int)
    diff = a[:dh, 2 * (dw + 6) :]
    # 20x40 letterboxed into 20x20: grid (gx, gy) <-> image x = 2 gx + 0.5, y = 2 gy - 9.5 (pixel centres);
    # nearest grid pixel: gt columns 4..6 / rows 6..8 -> image x 8..13, y 2..7 -> display (x5) 40..70, 10..40;
    # prediction columns 13..15 / rows 10..12 -> x 26..31, y 10..15 -> display 130..160, 50..80
    blue = diff[..., 2] > diff[..., 0] + 60
    red = diff[..., 0] > diff[..., 2] + 60
    assert blue[12:38, 42:68].all() and red[52:78, 132:158].all()
    assert not red[10:40, 40:70].any() and not blue[50:80, 130:160].any()
    assert not (red | blue)[:, :30].any()  # zero difference elsewhere stays grey
    assert P._source_label(pred) == "prediction by tiny-unet (r1)"


H, W, N = 40, 60, 32


def _disk_exports(root):
    recipe = Recipe.model_validate(
        {
            "name": "t",
            "dataset": "reflacx",
            "window": {"kind": "sentence"},
            "render": {"sigma": {"value": 1.0, "unit": "deg"}},
            "output": {"size": N},
        }
    )
    heat = np.zeros((N, N), np.float32)
    heat[10:20, 10:20] = 1  # noqa: E702
    tables = {
        "cases": pl.DataFrame(
            {
                "dataset": ["reflacx"],
                "case_id": ["k1"],
                "image_height_px": [H],
                "image_width_px": [W],
                "image_path": ["files/p1/p1/s1/missing.jpg"],
            }
        )
    }
    gt = finalize(
        root / "gt", [CaseResult("k1", "h", tables, {"opacity": heat})], recipe=recipe, fsync=False, progress=False
    )
    pred = write_prediction_export(
        root / "pred", {("k1", "opacity"): heat[::-1].copy()}, model="tiny (run7)", source_export=gt, fsync=False
    )
    return gt, pred


def test_cli_missing_images_warn_and_pred_side_by_side(tmp_path, capsys):
    gt, pred = _disk_exports(tmp_path)
    out = tmp_path / "p"
    assert (
        run(
            [
                "preview",
                "--export",
                str(gt),
                "--case",
                "k1",
                "--out",
                str(out),
                "--images",
                str(tmp_path / "nonexistent"),
                "--size",
                "120",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "nonexistent" in err
    assert (
        run(
            [
                "preview",
                "--export",
                str(gt),
                "--case",
                "k1",
                "--out",
                str(out),
                "--images",
                str(tmp_path),
                "--size",
                "120",
                "--pred",
                str(pred),
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert "missing" in cap.err and "k1" in cap.err  # the image path it looked for
    with Image.open(out / "k1" / "opacity_compare.png") as im:
        assert im.size[0] == 3 * 120 + 12
    assert (
        run(
            [
                "preview",
                "--export",
                str(pred),
                "--html",
                "--out",
                str(tmp_path / "s"),
                "--size",
                "120",
                "--quiet",
                "--images",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "prediction by tiny (run7)" in (tmp_path / "s" / "index.html").read_text()
    assert run(["preview", "--export", str(gt), "--html", "--out", str(tmp_path / "s"), "--overlays", "dots"]) == 2
