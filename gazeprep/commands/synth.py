"""``gazeprep synth``: write a deterministic synthetic release (REFLACX, EGD-CXR or MIMIC-CXR)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

import typer

from gazeprep.commands import (
    hidden_alias,
    merge_alias,
    out_folder,
    progress_alias,
    quiet_option,
    show_progress,
    usage_error,
)
from gazeprep.errors import GazeprepError


class SynthDataset(str, Enum):
    """Releases ``gazeprep synth`` can write."""

    reflacx = "reflacx"
    egd_cxr = "egd-cxr"
    mimic_cxr = "mimic-cxr"


DATASETS = tuple(d.value for d in SynthDataset)


def synth(
    dataset: SynthDataset = typer.Option(..., "--dataset", help="Which release to write."),
    out: Path = typer.Option(
        ..., "--out", callback=out_folder, help="Output folder (the release root); created if missing."
    ),
    cases: int = typer.Option(
        12, "--cases", min=1, help="Readings (reflacx), images (egd-cxr) or studies (mimic-cxr)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same arguments give byte-identical files."),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="A MIMIC root written by `gazeprep synth --dataset mimic-cxr`: reflacx/egd-cxr cases use its images. "
        "Without it, image ids and sizes are invented and no image files exist.",
    ),
    mimic_root: Path | None = hidden_alias("--mimic-root"),
    gaze_cases: int = typer.Option(
        1,
        "--gaze-cases",
        min=0,
        help="reflacx only: how many readings get a 1 kHz gaze_data/<id>/gaze.csv (each is 1-5 MB).",
    ),
    quiet: bool = quiet_option(),
    progress_old: bool | None = progress_alias(),
) -> None:
    """Write a synthetic release in the exact on-disk layout of the real one (see FORMATS.md)."""
    dataset_name = dataset.value
    images = merge_alias(images, mimic_root, "--images", "--mimic-root")
    progress = show_progress(quiet, progress_old)
    if images is not None and not images.is_dir():
        raise GazeprepError(f"--images {str(images)!r} is not a folder")
    if dataset_name == "mimic-cxr" and images is not None:
        raise usage_error("only for --dataset reflacx or egd-cxr (mimic-cxr writes the images)", "--images")
    t0 = time.perf_counter()
    if dataset_name == "mimic-cxr":
        from gazeprep.synth.mimic import generate_mimic

        mimic = generate_mimic(out, cases, seed)
        what = f"{len(mimic.images)} images"
    elif dataset_name == "reflacx":
        from gazeprep.synth.reflacx import generate_reflacx

        reflacx = generate_reflacx(out, cases, seed, mimic_root=images, gaze_cases=gaze_cases, progress=progress)
        n_disc = sum(c.discarded for c in reflacx.cases)
        what = f"{len(reflacx.cases)} readings ({n_disc} discarded)"
    else:
        from gazeprep.synth.egd import generate_egd

        egd = generate_egd(out, cases, seed, mimic_root=images, progress=progress)
        what = f"{len(egd.cases)} images, {len(egd.calibrations)} calibration pseudo-images"
    typer.echo(f"wrote synthetic {dataset_name}: {what} to {out} in {time.perf_counter() - t0:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``gazeprep synth``."""
    app.command("synth")(synth)
