"""``gazeprep synth``: write a deterministic synthetic release (REFLACX, EGD-CXR or MIMIC-CXR)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from gazeprep.errors import GazeprepError

DATASETS = ("reflacx", "egd-cxr", "mimic-cxr")


def synth(
    dataset: str = typer.Option(..., "--dataset", help="Which release to write: reflacx, egd-cxr or mimic-cxr."),
    out: Path = typer.Option(..., "--out", help="Output folder (the release root); created if missing."),
    cases: int = typer.Option(12, "--cases", min=1, help="Readings (reflacx), images (egd-cxr) or studies (mimic-cxr)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same arguments give byte-identical files."),
    mimic_root: Path | None = typer.Option(
        None, "--mimic-root",
        help="A MIMIC root written by `gazeprep synth --dataset mimic-cxr`: reflacx/egd-cxr cases use its images. "
        "Without it, image ids and sizes are invented and no image files exist.",
    ),
    gaze_cases: int = typer.Option(
        1, "--gaze-cases", min=0,
        help="reflacx only: how many readings get a 1 kHz gaze_data/<id>/gaze.csv (each is 1-5 MB).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write a synthetic release in the exact on-disk layout of the real one (see FORMATS.md)."""
    if dataset not in DATASETS:
        raise GazeprepError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if mimic_root is not None and not mimic_root.is_dir():
        raise GazeprepError(f"--mimic-root {str(mimic_root)!r} is not a folder")
    if dataset == "mimic-cxr" and mimic_root is not None:
        raise GazeprepError("--mimic-root is only for --dataset reflacx or egd-cxr")
    t0 = time.perf_counter()
    if dataset == "mimic-cxr":
        from gazeprep.synth.mimic import generate_mimic

        truth = generate_mimic(out, cases, seed)
        what = f"{len(truth.images)} images"
    elif dataset == "reflacx":
        from gazeprep.synth.reflacx import generate_reflacx

        truth = generate_reflacx(out, cases, seed, mimic_root=mimic_root, gaze_cases=gaze_cases, progress=progress)
        n_disc = sum(c.discarded for c in truth.cases)
        what = f"{len(truth.cases)} readings ({n_disc} discarded)"
    else:
        from gazeprep.synth.egd import generate_egd

        truth = generate_egd(out, cases, seed, mimic_root=mimic_root, progress=progress)
        what = f"{len(truth.cases)} images, {len(truth.calibrations)} calibration pseudo-images"
    typer.echo(f"wrote synthetic {dataset}: {what} to {out} in {time.perf_counter() - t0:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``gazeprep synth``."""
    app.command("synth")(synth)
