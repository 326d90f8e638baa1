"""Shared builders for the export tests (plain functions, imported by the test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from gazeprep.export import CaseResult
from gazeprep.recipes import Recipe


def recipe(dtype: str = "float32", name: str = "test-recipe") -> Recipe:
    return Recipe.model_validate(
        {
            "name": name,
            "dataset": "reflacx",
            "window": {"kind": "whole_recording"},
            "render": {"sigma": {"value": 1.0, "unit": "deg"}, "normalize": "max"},
            "output": {"size": 16, "dtype": dtype},
        }
    )


def smooth_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A max-normalised sum of a few Gaussian blobs (what the renderer produces), float32."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    m = np.zeros(shape, np.float64)
    for _ in range(3):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(1.0, max(h, w) / 4)
        m += rng.uniform(0.2, 1.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    return (m / m.max()).astype(np.float32)


def case_result(case_id: str, shapes: dict[str, tuple[int, int]], seed: int, *, n_fix: int = 3) -> CaseResult:
    """A case with fixations, an index with per-map facts, one reject and maps of given shapes."""
    rng = np.random.default_rng(seed)
    maps = {t: smooth_map(rng, s) for t, s in shapes.items()}
    fix = pl.DataFrame(
        {
            "dataset": ["reflacx"] * n_fix,
            "case_id": [case_id] * n_fix,
            "fixation_idx": list(range(n_fix)),
            "t_start_s": rng.uniform(0, 10, n_fix).round(3).tolist(),
            "x_px": rng.uniform(0, 100, n_fix).tolist(),
        }
    )
    targets = sorted(maps)
    index = pl.DataFrame(
        {
            "dataset": ["reflacx"] * len(targets),
            "case_id": [case_id] * len(targets),
            "target": targets[::-1],  # any order: the export sorts
            "n_fixations": [n_fix] * len(targets),
            "total_weight": [float(i) + 0.5 for i in range(len(targets))],
        }
    )
    cases = pl.DataFrame(
        {"dataset": ["reflacx"], "case_id": [case_id], "image_height_px": [100], "image_width_px": [120]}
    )
    rejects = [
        {
            "dataset": "reflacx",
            "case_id": case_id,
            "stage": "ingest",
            "file": "fixations.csv",
            "row": seed,
            "reason": "demo",
        }
    ]
    return CaseResult(case_id, f"hash-{case_id}", {"fixations": fix, "heatmaps": index, "cases": cases}, maps, rejects)


def standard_results(n: int = 6) -> list[CaseResult]:
    """n cases with targets 'full' and a label, mixed native sizes (two shapes)."""
    out = []
    for i in range(n):
        shape = (12, 10) if i % 3 else (9, 14)
        targets = {"full": shape, "pneumonia": shape} if i % 2 == 0 else {"full": shape}
        out.append(case_result(f"P{i:03d}R{i * 7:04d}", targets, seed=i + 1))
    return out


def tree_bytes(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` (relative posix path -> bytes), skipping top-level names in ``skip``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.split("/")[0] in skip or not p.is_file():
            continue
        out[rel] = p.read_bytes()
    return out
