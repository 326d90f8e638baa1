"""A small synthetic export for tests and smoke runs of the trainer (no files needed).

Each case is a grey, non-square "chest" image with one bright object at a random place; its class is
the object's shape (``disc``/``ring``/``bar``), and its gaze heatmap is a Gaussian centred on the
object (max = 1), stored under target ``full`` and under the positive label's id (004-style
label-specific maps). Two cases share each subject, so subject-disjoint splits are meaningful. A
model that learns where the blob is lowers its loss and moves its predicted maps onto the targets.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from gazeprep.train.data import MemoryExport

CLASSES = ("disc", "ring", "bar")


def make_synthetic_export(
    n_cases: int = 24, height: int = 48, width: int = 40, seed: int = 0, unannotated: int = 0
) -> MemoryExport:
    """Build a :class:`~gazeprep.train.data.MemoryExport` of ``n_cases`` cases.

    Images are (height, width) float32 in [0, 1]. The last ``unannotated`` cases have labels but no
    heatmaps (004's weakly supervised images).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cases: list[dict[str, object]] = []
    labels: list[dict[str, object]] = []
    hm_rows: list[dict[str, object]] = []
    heatmaps: dict[tuple[str, str], np.ndarray] = {}
    images: dict[str, np.ndarray] = {}
    sigma = max(height, width) / 10
    for i in range(n_cases):
        cid = f"case{i:03d}"
        cls = i % 3
        cx = (0.25 + 0.5 * rng.random()) * width
        cy = (0.25 + 0.5 * rng.random()) * height
        img = 0.25 + 0.05 * rng.standard_normal((height, width)).astype(np.float32)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        if cls == 0:
            obj = r < sigma
        elif cls == 1:
            obj = (r > sigma * 0.8) & (r < sigma * 1.6)
        else:
            obj = (np.abs(xx - cx) < sigma * 1.8) & (np.abs(yy - cy) < sigma * 0.4)
        img += 0.6 * obj.astype(np.float32)
        images[cid] = np.clip(img, 0, 1).astype(np.float32)
        heat = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)).astype(np.float32)
        heat[heat < 1e-3] = 0.0  # a truncated kernel, as rendered maps have
        heat /= heat.max()
        cases.append(
            {
                "dataset": "synthetic",
                "case_id": cid,
                "image_id": cid,
                "subject_id": i // 2,
                "split": None,
                "image_path": None,
                "image_height_px": height,
                "image_width_px": width,
                "discarded": False,
            }
        )
        for j, name in enumerate(CLASSES):
            labels.append(
                {
                    "dataset": "synthetic",
                    "case_id": cid,
                    "source": "synthetic",
                    "source_label": name,
                    "value": float(j == cls),
                    "text": None,
                }
            )
        if i < n_cases - unannotated:
            for target in ("full", CLASSES[cls]):
                heatmaps[(cid, target)] = heat
                hm_rows.append(
                    {
                        "dataset": "synthetic",
                        "case_id": cid,
                        "target": target,
                        "recipe": "synthetic",
                        "array": f"{height}x{width}",
                        "row": len(hm_rows),
                        "height_px": height,
                        "width_px": width,
                        "n_fixations": 1,
                        "total_weight": 1.0,
                    }
                )
    tables = {
        "cases": pl.DataFrame(cases, schema_overrides={"split": pl.Utf8, "image_path": pl.Utf8}),
        "case_labels": pl.DataFrame(labels, schema_overrides={"text": pl.Utf8}),
        "heatmaps": pl.DataFrame(hm_rows) if hm_rows else pl.DataFrame(schema={"case_id": pl.Utf8, "target": pl.Utf8}),
    }
    return MemoryExport(tables=tables, heatmaps=heatmaps, images=images, manifest={"recipe": {"name": "synthetic"}})
