"""Benchmark: the separable renderer against the naive reference on REFLACX-like inputs.

``python -m bench.render`` prints the figures; :func:`run` returns them as a dict (used by
``bench.run``). The inputs imitate one REFLACX reading: an image of ~2500 x 3000 pixels, ~300
fixations with per-fixation sigmas of 60-100 px (1 degree at REFLACX zoom levels) and shown
rectangles (zoom/pan crops). Both renderers evaluate the same contract (duration-weighted normalised
Gaussians clipped to the shown rectangles); the naive one stamps one full-grid density per fixation
in float64 (the approach of paper 004's ``get_gaussian``, itself ~10x faster than 004's scipy code).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import polars as pl

from gazeprep.heatmaps.grid import OutputGrid
from gazeprep.heatmaps.render import (
    KernelRule,
    blas_threads,
    keep_freed_memory,
    naive_render,
    render_case,
    render_points,
)
from gazeprep.recipes import load_recipe


def reflacx_like_inputs(n_fixations: int = 300, height: int = 3000, width: int = 2500, seed: int = 0) -> dict:
    """Synthetic fixations of one reading (positions, sigmas, durations, shown rects), original pixels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(width / 2, width / 5, n_fixations).clip(0, width - 1)
    y = rng.normal(height / 2, height / 5, n_fixations).clip(0, height - 1)
    ppd = rng.uniform(60, 100, n_fixations)  # px per degree varies with zoom
    sx = ppd
    sy = ppd * rng.uniform(0.97, 1.03, n_fixations)
    dur = rng.uniform(0.05, 0.6, n_fixations)
    # most fixations see the whole image; some a zoomed crop containing them
    rects = np.tile([0.0, 0.0, float(width), float(height)], (n_fixations, 1))
    zoomed = rng.random(n_fixations) < 0.3
    half_w = rng.uniform(300, 900, n_fixations)
    half_h = rng.uniform(300, 900, n_fixations)
    rects[zoomed] = np.stack([
        np.maximum(0, x - half_w), np.maximum(0, y - half_h),
        np.minimum(width, x + half_w), np.minimum(height, y + half_h)], axis=1)[zoomed]
    return {"x": x, "y": y, "sx": sx, "sy": sy, "w": dur, "rects": np.round(rects), "height": height, "width": width}


def _time(fn, repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def case_frames(d: dict, n_windows: int = 10, n_targets: int = 6, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A fixations table and a windows table for one reading: consecutive fixations (0.1-0.3 s apart,
    0.2 s long) and ``n_windows`` sentence-like windows (with 004's 1.5 s lag) over ``n_targets`` labels."""
    rng = np.random.default_rng(seed)
    n = d["x"].shape[0]
    t0 = np.cumsum(rng.uniform(0.1, 0.3, n))
    t1 = t0 + d["w"].clip(max=0.3)
    fx = pl.DataFrame({
        "dataset": "reflacx", "case_id": "bench", "t_start_s": t0, "t_end_s": t1, "x_px": d["x"], "y_px": d["y"],
        "px_per_deg_x": d["sx"], "px_per_deg_y": d["sy"],
        "shown_xmin_px": d["rects"][:, 0], "shown_ymin_px": d["rects"][:, 1],
        "shown_xmax_px": d["rects"][:, 2], "shown_ymax_px": d["rects"][:, 3],
    })
    end = float(t1.max())
    step = end / n_windows
    win = pl.DataFrame({
        "target": [f"label{k % n_targets}" for k in range(n_windows)],
        "t_start_s": [max(0.0, k * step - 1.5) for k in range(n_windows)],
        "t_end_s": [(k + 1) * step for k in range(n_windows)],
    })
    return fx, win


def time_render_case(d: dict, size="512", repeat: int = 5) -> float:
    """Best wall time (s) of :func:`render_case` for one reading with the reflacx-label-specific recipe."""
    fx, win = case_frames(d)
    rec = load_recipe("reflacx-label-specific")
    if size == "native":
        rec = rec.with_overrides(size="native")
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        render_case(fx, win, rec, image_height_px=d["height"], image_width_px=d["width"])
        best = min(best, time.perf_counter() - t)
    return best


def run(n_fixations: int = 300, height: int = 3000, width: int = 2500, sizes=("native", 512),
        naive_fixations: int | None = None, repeat: int = 3, seed: int = 0) -> dict:
    """Time the fast renderer and the naive reference on the same inputs.

    Parameters
    ----------
    n_fixations, height, width:
        Size of the synthetic reading.
    sizes:
        Output grids to test: ``"native"`` or an int N (N x N letterbox).
    naive_fixations:
        Render only this many fixations with the naive reference (its time is linear in the number
        of fixations; the reported naive time is scaled up to ``n_fixations``) and compare both
        renderers on that subset. ``None``: all fixations (slow at native size, ~1 min).
    repeat:
        Best of ``repeat`` runs for the fast renderer.

    Returns
    -------
    dict with, per size: ``fast_s`` (one map of all fixations, one BLAS thread), ``naive_s`` (for all
    fixations), ``ratio``, ``max_abs_diff_rel_peak``, ``render_case_10_windows_s`` (one reading with ten
    sentence windows over six labels, reflacx-label-specific recipe).
    """
    d = reflacx_like_inputs(n_fixations, height, width, seed)
    results: dict = {"n_fixations": n_fixations, "image": [height, width], "sizes": {}}
    keep_freed_memory()
    for size in sizes:
        grid = (OutputGrid.native(height, width) if size == "native"
                else OutputGrid.letterbox(height, width, int(size)))
        with blas_threads(1):  # one core, as in the build's process pool
            fast_s, fast = _time(
                lambda: render_points(grid, d["x"], d["y"], d["sx"], d["sy"], d["w"], d["rects"]), repeat)
        k = n_fixations if naive_fixations is None else min(naive_fixations, n_fixations)
        t = time.perf_counter()
        naive = naive_render(grid, d["x"][:k], d["y"][:k], d["sx"][:k], d["sy"][:k], d["w"][:k], d["rects"][:k])
        naive_s = (time.perf_counter() - t) * n_fixations / k
        if k < n_fixations:  # compare on the same subset
            fast_sub = render_points(grid, d["x"][:k], d["y"][:k], d["sx"][:k], d["sy"][:k], d["w"][:k],
                                     d["rects"][:k])
        else:
            fast_sub = fast
        diff = float(np.abs(fast_sub.astype(np.float64) - naive).max() / naive.max())
        results["sizes"][str(size)] = {
            "grid": list(grid.shape),
            "fast_s": fast_s,
            "naive_s": naive_s,
            "naive_fixations_timed": k,
            "ratio": naive_s / fast_s,
            "max_abs_diff_rel_peak": diff,
            "render_case_10_windows_s": time_render_case(d, str(size), repeat),
        }
    return results


#: Border rules timed by :func:`run_border`: the contract (drop) and the paper presets' rules.
BORDER_RULES = {
    "drop": KernelRule(),
    "reflect": KernelRule("density", "reflect"),
    "reflect101": KernelRule("density", "reflect101"),
    "scipy_reflect_t4": KernelRule("discrete", "reflect", truncate_sigmas=4.0),
    "cv2_reflect101_k501": KernelRule("discrete", "reflect101", kernel_size=501),
}


def run_border(n_fixations: int = 300, height: int = 3000, width: int = 2500, sizes=("native", 512),
               naive_fixations: int | None = 20, repeat: int = 3, seed: int = 0) -> dict:
    """Time the border rules (drop, reflect, reflect101 and the scipy / OpenCV kernels) of the fast
    renderer against each other and against the naive reference under the same rule, on the same
    REFLACX-like fixations (no shown rectangles: border folding does not combine with clipping; a
    sigma of 75.5 px, MT-UNet's, so the cv2 radius is the real 250 px).

    Returns per size and rule: ``fast_s`` (best CPU time of ``5 * repeat`` renders), ``naive_s``
    (wall time, scaled from ``naive_fixations``), ``ratio``, ``max_abs_diff_rel_peak`` (on the naive
    subset) and ``slowdown_vs_drop`` (``fast_s / fast_s(drop)``; the issue-16 target is <= 1.10).
    """
    d = reflacx_like_inputs(n_fixations, height, width, seed)
    s = np.full(n_fixations, 75.5)
    x, y, w = np.floor(d["x"]), np.floor(d["y"]), d["w"]
    results: dict = {"n_fixations": n_fixations, "image": [height, width], "sigma_px": 75.5, "sizes": {}}
    keep_freed_memory()
    for size in sizes:
        grid = (OutputGrid.native(height, width) if size == "native"
                else OutputGrid.letterbox(height, width, int(size)))
        # best CPU time (one BLAS thread, so CPU time = compute time, steady on a busy machine), the
        # rules interleaved round by round so that drifts of the machine hit them alike
        fast: dict[str, float] = {}
        with blas_threads(1):
            for _ in range(max(1, repeat)):
                for name, rule in BORDER_RULES.items():
                    for _ in range(5):
                        t = time.process_time()
                        render_points(grid, x, y, s, s, w, rule=rule)
                        fast[name] = min(fast.get(name, float("inf")), time.process_time() - t)
        per: dict = {}
        for name, rule in BORDER_RULES.items():
            fast_s = fast[name]
            k = n_fixations if naive_fixations is None else min(naive_fixations, n_fixations)
            t = time.perf_counter()
            naive = naive_render(grid, x[:k], y[:k], s[:k], s[:k], w[:k], rule=rule)
            naive_s = (time.perf_counter() - t) * n_fixations / k
            fast_sub = render_points(grid, x[:k], y[:k], s[:k], s[:k], w[:k], rule=rule)
            per[name] = {
                "fast_s": fast_s,
                "naive_s": naive_s,
                "ratio": naive_s / fast_s,
                "max_abs_diff_rel_peak": float(np.abs(fast_sub.astype(np.float64) - naive).max() / naive.max()),
            }
        for name in per:
            per[name]["slowdown_vs_drop"] = per[name]["fast_s"] / per["drop"]["fast_s"]
        results["sizes"][str(size)] = {"grid": list(grid.shape), "rules": per}
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixations", type=int, default=300)
    ap.add_argument("--naive-fixations", type=int, default=None,
                    help="time the naive reference on this many fixations and scale (default: all)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--border", action="store_true", help="time the border rules instead (run_border)")
    ap.add_argument("--sizes", default="native,512", help="comma-separated grids: native and/or N (N x N)")
    a = ap.parse_args(argv)
    sizes = tuple(x if x == "native" else int(x) for x in a.sizes.split(","))
    if a.border:
        r = run_border(n_fixations=a.fixations, sizes=sizes,
                       naive_fixations=a.naive_fixations if a.naive_fixations else 20)
        if a.json:
            print(json.dumps(r, indent=2))
            return
        print(f"border rules: {r['n_fixations']} fixations, sigma {r['sigma_px']} px, image {r['image'][0]}x{r['image'][1]}")
        for size, sz in r["sizes"].items():
            for name, v in sz["rules"].items():
                print(f"  {size:>6} {name:>20}: fast {v['fast_s'] * 1e3:8.1f} ms ({v['slowdown_vs_drop']:5.2f}x drop)  "
                      f"naive {v['naive_s']:8.2f} s  ratio {v['ratio']:7.0f}x  max|diff|/peak {v['max_abs_diff_rel_peak']:.1e}")
        return
    r = run(n_fixations=a.fixations, naive_fixations=a.naive_fixations, sizes=sizes)
    if a.json:
        print(json.dumps(r, indent=2))
        return
    print(f"renderer vs naive reference: {r['n_fixations']} fixations, image {r['image'][0]}x{r['image'][1]}")
    for size, s in r["sizes"].items():
        print(f"  {size:>6} {s['grid'][0]}x{s['grid'][1]}: fast {s['fast_s'] * 1e3:8.1f} ms  naive "
              f"{s['naive_s']:8.2f} s  ratio {s['ratio']:7.0f}x  max|diff|/peak {s['max_abs_diff_rel_peak']:.1e}  "
              f"render_case (10 windows) {s['render_case_10_windows_s'] * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
