"""The 3000-case build against an earlier gazeprep, alternated in one process (``make bench``).

Issue 13 asked that the refactor onto one per-case pipeline, one executor and zarr's own API cost
no more than 10% on the 3000-case build, measured against the code it started from
(``BASELINE_COMMIT``). That code is taken from this clone's own history with ``git archive``
(no download) into ``bench/_data/``, and the two builds run the same command on the same release,
alternately, ``reps`` times each; the figures are the medians of wall and CPU seconds and their
ratios (current / baseline). Alternating matters on a shared machine: one build of the same code
varies by 10-20% from run to run, and a slow spell then hits both sides.

Both sides build the baseline's own recipe file (``pipelines/reflacx-label-specific.yaml`` of that
commit): the shipped recipe has since switched to the ``lanfredi2023`` labeler (issue 15), which
finds more mentions and renders ~2% more maps, so it is not the same work. With the same recipe the
two exports must be byte-identical (tables and ``heatmaps.zarr``; the manifests differ in versions
and recipe text), which is checked and reported (``byte_identical``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench.measure import build_command, run_measured

BASELINE_COMMIT = "73b7bac"
RECIPE = "reflacx-label-specific"
REPO = Path(__file__).resolve().parents[1]


def baseline_tree(data: Path, commit: str = BASELINE_COMMIT) -> Path | None:
    """The source tree of ``commit`` under ``data`` (extracted once), or None when this clone's
    history does not hold it (a shallow clone) or git is missing."""
    tree = data / f"baseline-{commit}"
    if (tree / ".complete").exists():
        return tree
    if shutil.which("git") is None:
        return None
    has = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO, capture_output=True, check=False)
    if has.returncode != 0:
        return None
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO, stdout=tar, check=True)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as tf:
            tf.extractall(tree, filter="data")
    (tree / ".complete").write_text(commit)
    return tree


def _env(tree: Path | None) -> dict[str, str]:
    """Environment that makes ``python -m gazeprep`` the baseline (``tree``) or this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZEPREP_")}
    env["PYTHONPATH"] = str(tree if tree is not None else REPO)
    return env


def _which_gazeprep(env: dict[str, str], cwd: Path) -> Path:
    out = subprocess.run(
        [sys.executable, "-c", "import gazeprep; print(gazeprep.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()).resolve().parent.parent


def _build(
    root: Path, out: Path, recipe: str, workers: int, env: dict[str, str], cwd: Path
) -> tuple[float, float, int]:
    """One build: wall seconds, CPU seconds of the process tree, maps written."""
    import polars as pl

    shutil.rmtree(out, ignore_errors=True)
    res = run_measured(build_command(root, out, recipe=recipe, workers=workers), env=env, cwd=cwd)
    maps = pl.read_parquet(out / "tables" / "heatmaps.parquet").height
    return res["wall_s"], res["cpu_s"], maps


def run(root: Path, data: Path, out: Path, workers: int, reps: int) -> dict:
    """Alternate ``reps`` builds of the baseline and of this checkout on ``root``; medians and ratios."""
    root, data, out = root.resolve(), data.resolve(), out.resolve()  # the builds run in other folders
    tree = baseline_tree(data)
    if tree is None:
        return {"skipped": f"commit {BASELINE_COMMIT} is not in this clone's history (shallow clone?)"}
    sides = {"baseline": (_env(tree), tree), "current": (_env(None), data)}
    for name, (env, cwd) in sides.items():
        got = _which_gazeprep(env, cwd)
        want = tree if name == "baseline" else REPO
        if got != want.resolve():
            raise SystemExit(f"bench: the {name} build would import gazeprep from {got}, not {want}")
    # the baseline by name from its own tree; this checkout from the same file
    recipes = {"baseline": RECIPE, "current": str(tree / "pipelines" / f"{RECIPE}.yaml")}
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in sides}
    for rep in range(reps):
        for name, (env, cwd) in sides.items():
            r = _build(root, out / f"ab_{name}", recipes[name], workers, env, cwd)
            runs[name].append(r)
            print(f"  {name:8s} rep {rep + 1}/{reps}: wall {r[0]:.1f} s, CPU {r[1]:.1f} s, {r[2]} maps", flush=True)
    med = {
        name: {
            "wall_s": statistics.median(r[0] for r in rs),
            "cpu_s": statistics.median(r[1] for r in rs),
            "maps": rs[0][2],
        }
        for name, rs in runs.items()
    }
    b, c = med["baseline"], med["current"]
    return {
        "baseline_commit": BASELINE_COMMIT,
        "reps": reps,
        "workers": workers,
        "baseline": b,
        "current": c,
        "runs": {name: [list(r) for r in rs] for name, rs in runs.items()},
        "wall_ratio": c["wall_s"] / b["wall_s"],
        "cpu_ratio": c["cpu_s"] / b["cpu_s"],
        "byte_identical": _digest(out / "ab_baseline") == _digest(out / "ab_current"),
    }


def _digest(export: Path) -> str:
    """SHA-256 over the relative paths and bytes of an export's tables and arrays (not the manifest,
    which names versions, nor the scratch folders)."""
    h = hashlib.sha256()
    for f in sorted(p for d in ("tables", "heatmaps.zarr") for p in (export / d).rglob("*") if p.is_file()):
        h.update(f.relative_to(export).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()
