"""The HTML contact sheet as a reader sees it: rendered by a real headless Chromium, the screenshot
checked against expectations (an X-ray with coloured heat in the thumbnails, the legend's colours,
no broken image).

Skips only when no Chromium/Chrome binary is found (``.ci/run`` installs Debian's ``chromium``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate import preview as P

_BROWSERS = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
    "chromium-headless-shell",
)


def _browser() -> str | None:
    env = os.environ.get("GAZEPREP_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in _BROWSERS:
        p = shutil.which(name)
        if p:
            return p
    return None


BROWSER = _browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless browser found (looked for " + ", ".join(_BROWSERS) + " on PATH and $GAZEPREP_CHROMIUM); "
    "install Debian's 'chromium' package (.ci/run does) to run the screenshot test of the preview sheet",
)


def _chrome(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _screenshot(page: Path, png: Path, tmp: Path, size=(1400, 1100)) -> np.ndarray:
    r = _chrome([f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()], tmp)
    assert png.is_file(), f"chromium wrote no screenshot: {r.stderr[-2000:]}"
    with Image.open(png) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _broken_count(page: Path, tmp: Path) -> int:
    r = _chrome(["--window-size=1400,1100", "--dump-dom", page.resolve().as_uri()], tmp)
    m = re.search(r'data-broken-images="(\d+)"', r.stdout)
    assert m, f"the sheet's load check did not run: {r.stdout[:500]} {r.stderr[-1000:]}"
    return int(m.group(1))


def _xray(H: int, W: int) -> np.ndarray:
    """A chest-like phantom: smooth gradient, two dark lungs, bright spine (many grey levels)."""
    r, c = np.mgrid[0:H, 0:W]
    img = 0.55 + 0.25 * (r / H) + 0.05 * np.sin(c / 3.0)
    for cx in (0.3 * W, 0.7 * W):
        img -= 0.35 * np.exp(-(((c - cx) / (0.14 * W)) ** 2 + ((r - 0.5 * H) / (0.3 * H)) ** 2))
    img[:, int(0.47 * W) : int(0.53 * W)] += 0.2
    return np.clip(img, 0, 1).astype(np.float32)


def _export(tmp: Path) -> E.InMemoryExport:
    from gazeprep.recipes import load_recipe

    H, W, N = 120, 100, 64
    root = tmp / "mimic"
    rel = "files/p10/p100/s1/img.jpg"
    (root / rel).parent.mkdir(parents=True)
    Image.fromarray(np.rint(_xray(H, W) * 255).astype(np.uint8)).save(root / rel, quality=95)
    grid = __import__("gazeprep.heatmaps.grid", fromlist=["OutputGrid"]).OutputGrid.letterbox(H, W, N)
    rr, cc = np.mgrid[0:N, 0:N]
    maps = {}
    for cid, x, y in (("case-a", 30, 50), ("case-b", 70, 70)):
        gx, gy = grid.to_grid(x, y)
        maps[(cid, "pneumothorax")] = np.exp(-((cc - gx) ** 2 + (rr - gy) ** 2) / (2 * 6.0**2)).astype(np.float32)
    ids = ["case-a", "case-b", "case-c"]
    cases = pl.DataFrame(
        {
            "case_id": ids,
            "image_id": ["img"] * 3,
            "image_height_px": [H] * 3,
            "image_width_px": [W] * 3,
            "image_path": [rel] * 3,
        }
    )
    fx = pl.DataFrame(
        {
            "case_id": ["case-a"] * 3 + ["case-b"] * 2,
            "t_start_s": [0.0, 1.0, 2.0, 0.0, 1.0],
            "t_end_s": [0.5, 1.8, 2.4, 0.6, 1.2],
            "x_px": [30.0, 40.0, -20.0, 70.0, 65.0],
            "y_px": [50.0, 55.0, 60.0, 70.0, 75.0],
        }
    )
    ell = pl.DataFrame(
        {
            "case_id": ["case-a", "case-b"],
            "xmin_px": [15.0, 55.0],
            "ymin_px": [35.0, 55.0],
            "xmax_px": [45.0, 85.0],
            "ymax_px": [65.0, 85.0],
            "certainty": [5, 2],
            "source_label": ["Pneumothorax", "Pneumothorax"],
        }
    )
    rejects = pl.DataFrame(
        {
            "case_id": ["case-c"],
            "stage": ["render"],
            "file": [None],
            "row": [None],
            "reason": ["no fixation in any window"],
        },
        schema={"case_id": pl.Utf8, "stage": pl.Utf8, "file": pl.Utf8, "row": pl.Int64, "reason": pl.Utf8},
    )
    man = {"kind": "ground_truth", "recipe": load_recipe("reflacx-label-specific").model_dump(mode="json")}
    ex = E.InMemoryExport(maps, {"cases": cases, "fixations": fx, "ellipses": ell, "rejects": rejects}, man)
    ex.images_root = root  # type: ignore[attr-defined]
    return ex


def _smooth_grey_levels(a: np.ndarray, min_pixels: int = 20) -> int:
    """Distinct grey levels held by >= ``min_pixels`` pixels of smooth grey areas (a pixel and its 4
    neighbours grey, neighbours within 4 levels): an X-ray's gradients give many, while a flat canvas,
    the page background and anti-aliased text (steep edges) give few."""
    g = a[..., 0]
    grey = (a[..., 0] == a[..., 1]) & (a[..., 1] == a[..., 2])
    c = g[1:-1, 1:-1]
    smooth = grey[1:-1, 1:-1].copy()
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = g[1 + dy : g.shape[0] - 1 + dy, 1 + dx : g.shape[1] - 1 + dx]
        ng = grey[1 + dy : g.shape[0] - 1 + dy, 1 + dx : g.shape[1] - 1 + dx]
        smooth &= ng & (np.abs(nb - c) <= 4)
    counts = np.bincount(c[smooth].ravel(), minlength=256)
    return int((counts >= min_pixels).sum())


def _solid_block(a: np.ndarray, colour, tol: int = 6, k: int = 6) -> bool:
    """True when the screenshot holds a solid k x k block of ``colour`` (a legend swatch, not a line)."""
    hit = (np.abs(a - np.array(colour)) <= tol).all(axis=-1).astype(np.int32)
    s = np.pad(hit.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]
    return bool((win == k * k).any())


def test_contact_sheet_in_a_headless_browser(tmp_path):
    ex = _export(tmp_path)
    said: list[str] = []
    page = P.contact_sheet(
        ex, tmp_path / "sheet", images_root=ex.images_root, thumb=256, full=480, progress=False, warn=said.append
    )
    assert said == []  # the image was found
    a = _screenshot(page, tmp_path / "shot.png", tmp_path)
    assert a.shape[0] >= 1000 and a.shape[1] >= 1300

    # thumbnails show the X-ray: many grey levels in smooth areas (a grey canvas is one flat value)
    assert _smooth_grey_levels(a) > 40
    # ... with visible heat: warm ramp colours (red clearly above blue and green) over a good area
    warm = (a[..., 0] > a[..., 2] + 50) & (a[..., 0] > a[..., 1] + 20)
    assert warm.sum() > 1500

    # the legend: solid swatches of the fixation colour and of both ellipse certainty colours present
    assert _solid_block(a, P.FIX_COLOUR)
    assert _solid_block(a, P.ELLIPSE_COLOURS[5])
    assert _solid_block(a, P.ELLIPSE_COLOURS[2])
    # ... and no red "could not be loaded" banner
    assert not _solid_block(a, (170, 0, 0), tol=2, k=20)

    # no broken image; the check itself detects one when a thumbnail is missing
    assert _broken_count(page, tmp_path) == 0
    next(iter(sorted((tmp_path / "sheet" / "thumbs").rglob("*.png")))).unlink()
    assert _broken_count(page, tmp_path) == 1
    b = _screenshot(page, tmp_path / "shot2.png", tmp_path)
    assert _solid_block(b, (170, 0, 0), tol=2, k=20)  # the banner is shown


def test_grey_canvas_is_what_the_screenshot_sees_without_images(tmp_path):
    """Negative control of the first check: the same sheet without images has no X-ray grey levels."""
    ex = _export(tmp_path)
    said: list[str] = []
    page = P.contact_sheet(
        ex, tmp_path / "sheet", images_root=tmp_path / "nowhere", thumb=256, full=480, progress=False, warn=said.append
    )
    assert len(said) == 1 and "nowhere" in said[0]
    a = _screenshot(page, tmp_path / "shot.png", tmp_path)
    assert _smooth_grey_levels(a) < 15
