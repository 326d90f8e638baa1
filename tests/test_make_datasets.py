"""`make datasets`: one export per shipped recipe, rebuilt only when something it depends on changed.

Three layers, cheapest first:

* ``tools/stamp.py`` (the write-if-changed stamps the Makefile watches instead of every release file);
* the Makefile's decisions, driven with a stand-in ``gazeprep`` that only records its arguments and
  writes a manifest (seconds): which exports a change rebuilds, when ``--force`` is passed, that a
  failed build is retried, which flags each dataset gets;
* the real chain on the bundled sample data (``slow``): every recipe, the tiny anatomy model and its
  masks included, then a second run that does nothing, then a touched recipe that rebuilds only its
  own export (gazeprep's resume reusing every case).

Each make run happens in a temporary copy of the repository's tracked files, so the working tree
and its out/ are never touched.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
STAMP = REPO / "tools" / "stamp.py"
RECIPE_FILES = sorted((REPO / "pipelines").glob("*.yaml"))


def _recipes(repo: Path) -> list[str]:
    """The shipped recipes of a repository copy that `make datasets` builds: those of the three
    releases (a ``dataset: declared`` template has no release to read)."""
    return sorted(
        p.stem for p in (repo / "pipelines").glob("*.yaml") if _dataset(repo, p.stem) in ("reflacx", "egd-cxr")
    )


needs_make = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("git") is None or not (REPO / ".git").exists(),
    reason="needs make, git and a git checkout",
)


# --------------------------------------------------------------------------- tools/stamp.py
def _stamp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STAMP), *args], capture_output=True, text=True)


def _bump_mtime(path: Path) -> None:
    """Touch ``path``: mtime = now, and strictly later than before (never in the future for make)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, max(time.time_ns(), st.st_mtime_ns + 1)))


def test_stamp_listing_follows_files_and_rewrites_only_on_change(tmp_path: Path) -> None:
    rel = tmp_path / "release"
    (rel / "a" / "b").mkdir(parents=True)
    (rel / "top.csv").write_text("x\n")
    (rel / "a" / "b" / "deep.jpg").write_bytes(b"\0" * 10)
    stamp = tmp_path / "s" / "release.stamp"

    r = _stamp(str(stamp), str(rel))
    assert r.returncode == 0 and "recorded (2 files)" in r.stderr
    first = stamp.read_text()
    mtime = stamp.stat().st_mtime_ns

    r = _stamp(str(stamp), str(rel))  # nothing changed: file left alone, silent
    assert r.returncode == 0 and r.stderr == ""
    assert stamp.read_text() == first and stamp.stat().st_mtime_ns == mtime

    _bump_mtime(rel / "a" / "b" / "deep.jpg")  # same content, new mtime: a listing change
    r = _stamp(str(stamp), str(rel))
    assert "changed (2 files)" in r.stderr
    second = stamp.read_text()
    assert second != first

    (rel / "a" / "new.jpg").write_bytes(b"")  # an added file
    _stamp(str(stamp), str(rel))
    third = stamp.read_text()
    assert third != second
    (rel / "a" / "new.jpg").unlink()  # removing it gives the previous listing back
    _stamp(str(stamp), str(rel))
    assert stamp.read_text() == second


def test_stamp_max_depth_sees_only_the_top_level(tmp_path: Path) -> None:
    rel = tmp_path / "mimic"
    (rel / "files" / "p10").mkdir(parents=True)
    (rel / "metadata.csv.gz").write_bytes(b"1")
    img = rel / "files" / "p10" / "x.jpg"
    img.write_bytes(b"1")
    stamp = tmp_path / "m.stamp"
    r = _stamp(str(stamp), str(rel), "--max-depth", "1")
    assert "(1 files)" in r.stderr
    before = stamp.read_text()
    img.write_bytes(b"22")  # deep change: not watched at depth 1
    _bump_mtime(img)
    _stamp(str(stamp), str(rel), "--max-depth", "1")
    assert stamp.read_text() == before
    _bump_mtime(rel / "metadata.csv.gz")  # top-level change: watched
    _stamp(str(stamp), str(rel), "--max-depth", "1")
    assert stamp.read_text() != before


def test_stamp_content_mode_ignores_touch_and_sees_edits(tmp_path: Path) -> None:
    src = tmp_path / "pkg"
    (src / "__pycache__").mkdir(parents=True)
    (src / "mod.py").write_text("x = 1\n")
    (src / "notes.txt").write_text("not code\n")
    (src / "__pycache__" / "mod.cpython-311.py").write_text("ignored\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    stamp = tmp_path / "code.stamp"
    args = [
        str(stamp),
        str(tmp_path / "pyproject.toml"),
        str(src),
        "--content",
        "--suffix",
        ".py",
        "--exclude",
        "__pycache__",
    ]
    r = _stamp(*args)
    assert "(2 files)" in r.stderr  # pyproject.toml (named directly) + mod.py
    before = stamp.read_text()
    _bump_mtime(src / "mod.py")
    (src / "notes.txt").write_text("edited, but not a .py file\n")
    (src / "__pycache__" / "mod.cpython-311.py").write_text("edited, excluded\n")
    _stamp(*args)
    assert stamp.read_text() == before
    (src / "mod.py").write_text("x = 2\n")
    _stamp(*args)
    assert stamp.read_text() != before


def test_stamp_missing_path_is_one_error_line_unless_allowed(tmp_path: Path) -> None:
    stamp = tmp_path / "x.stamp"
    r = _stamp(str(stamp), str(tmp_path / "nope"), "--what", "REFLACX_ROOT")
    assert r.returncode == 1 and not stamp.exists()
    assert r.stderr.strip().splitlines() == [f"error: REFLACX_ROOT: {tmp_path / 'nope'}: no such file or folder"]
    r = _stamp(str(stamp), str(tmp_path / "nope"), "--missing-ok")
    assert r.returncode == 0 and stamp.exists()
    absent = stamp.read_text()
    (tmp_path / "nope").mkdir()  # appearing (even empty) is a change
    _stamp(str(stamp), str(tmp_path / "nope"), "--missing-ok")
    assert stamp.read_text() != absent
    r = _stamp(str(stamp), str(tmp_path), "--max-depth", "0")
    assert r.returncode == 2


# --------------------------------------------------------------------------- repository copies
def _copy_repo(dest: Path) -> Path:
    """Copy the repository's tracked files (as they are in the working tree) to ``dest``."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in out.decode().split("\0"):
        if not rel:
            continue
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree, not yet committed
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    # the stamp helper and the Makefile are what this test is about: use the working tree's
    for rel in ("Makefile", "tools/stamp.py"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    return dest


def _make(repo: Path, *args: str, timeout: float = 900, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run make in ``repo`` without the caller's make flags or gazeprep overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "GAZEPREP_"))}
    env.update(env_extra or {})
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=repo, capture_output=True, text=True, env=env, timeout=timeout
    )


def _dataset(repo: Path, recipe: str) -> str:
    """The ``dataset:`` of a recipe file."""
    lines = (repo / "pipelines" / f"{recipe}.yaml").read_text().splitlines()
    return next(ln.split(":", 1)[1].split()[0] for ln in lines if ln.startswith("dataset:"))


def _manifest_mtimes(out: Path, recipes: list[str]) -> dict[str, int]:
    return {r: (out / r / "manifest.json").stat().st_mtime_ns for r in recipes if (out / r / "manifest.json").exists()}


# --------------------------------------------------------------------------- Makefile logic (fake gazeprep)
FAKE_GAZEPREP = r"""
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({"args": args, "rules": os.environ.get("GAZEPREP_RULES_DIR")}) + "\n")
def opt(name):
    return args[args.index(name) + 1]
if args[:2] == ["anatomy", "train"]:
    out = Path(opt("--out")); out.mkdir(parents=True, exist_ok=True)
    (out / "samed.pt").write_bytes(b"weights"); (out / "config.json").write_text("{}")
elif args[:2] == ["anatomy", "predict"]:
    Path(opt("--out")).mkdir(parents=True, exist_ok=True)
elif args[0] == "build-heatmaps":
    recipe = Path(opt("--recipe")).stem
    fail = os.environ.get("FAKE_FAIL", "")
    out = Path(opt("--out")); out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps({"recipe": recipe}))
    if recipe == fail:
        print("error: 7 of 8 cases rejected (more than --max-reject-fraction 0.5)", file=sys.stderr)
        sys.exit(1)
"""


class FakeRepo:
    """A repository copy whose make runs call a stand-in gazeprep that logs its arguments."""

    def __init__(self, root: Path):
        self.repo = _copy_repo(root / "repo")
        self.out = root / "out"
        self.log = root / "calls.jsonl"
        fake = root / "fake_gazeprep.py"
        fake.write_text(FAKE_GAZEPREP)
        self.vars = [
            f"OUT={self.out}",
            f"BIN={Path(sys.executable).parent}",
            f"PY={sys.executable}",
            f"GAZEPREP={sys.executable} {fake}",
            "WORKERS=1",
        ]

    def run(self, *args: str, env_extra: dict | None = None) -> tuple[subprocess.CompletedProcess, list[dict]]:
        self.log.write_text("")
        r = _make(self.repo, *args, *self.vars, timeout=300, env_extra={"FAKE_LOG": str(self.log), **(env_extra or {})})
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return r, calls


def _built(calls: list[dict]) -> list[str]:
    return sorted(
        Path(c["args"][c["args"].index("--recipe") + 1]).stem for c in calls if c["args"][0] == "build-heatmaps"
    )


def _by_recipe(calls: list[dict]) -> dict[str, list[str]]:
    return {
        Path(c["args"][c["args"].index("--recipe") + 1]).stem: c["args"]
        for c in calls
        if c["args"][0] == "build-heatmaps"
    }


@needs_make
def test_make_logic_rebuilds_only_what_changed(tmp_path: Path) -> None:
    fr = FakeRepo(tmp_path)
    recipes = _recipes(fr.repo)
    n = len(recipes)

    r, calls = fr.run("-j4", "datasets")
    assert r.returncode == 0, r.stderr
    assert _built(calls) == sorted(recipes)
    assert f"datasets: rebuilt {n} of {n} exports" in r.stdout
    args = _by_recipe(calls)
    for name in recipes:
        a = args[name]
        assert a[a.index("--recipe") + 1] == f"pipelines/{name}.yaml"
        assert a[a.index("--out") + 1] == f"{fr.out}/{name}"
        assert "--force" not in a  # fresh folders: first builds are resumable
        if _dataset(fr.repo, name) == "egd-cxr":
            assert a[a.index("--root") + 1] == "sample_data/egd-cxr"
            assert a[a.index("--images") + 1] == "sample_data/mimic-cxr"
        else:
            assert a[a.index("--root") + 1] == "sample_data/reflacx"
            assert "--images" not in a
    assert args["reflacx-anatomy"][args["reflacx-anatomy"].index("--anatomy-dir") + 1] == f"{fr.out}/anatomy"
    assert all(c["rules"] == f"{fr.repo}/rules" for c in calls if c["args"][0] == "build-heatmaps")
    kinds = [c["args"][:2] for c in calls]
    assert kinds.index(["anatomy", "train"]) < kinds.index(["anatomy", "predict"])
    train = calls[kinds.index(["anatomy", "train"])]["args"]
    assert train[train.index("--preset") + 1] == "tiny"

    r, calls = fr.run("datasets")  # nothing changed
    assert r.returncode == 0 and calls == []
    assert f"datasets: all {n} exports up to date" in r.stdout

    _bump_mtime(fr.repo / "pipelines" / "reflacx-official.yaml")  # the recipe: only its export
    r, calls = fr.run("datasets")
    assert _built(calls) == ["reflacx-official"] and "--force" not in calls[0]["args"]
    assert f"datasets: rebuilt 1 of {n} exports" in r.stdout

    rec = fr.repo / "pipelines" / "reflacx-official.yaml"  # edited: gazeprep replaces it only with --force
    rec.write_text(rec.read_text() + "\n# edited\n")
    r, calls = fr.run("datasets")
    assert _built(calls) == ["reflacx-official"] and "--force" in calls[0]["args"]

    _bump_mtime(fr.repo / "rules" / "labels.yaml")  # touched, same content: nothing
    _bump_mtime(fr.repo / "gazeprep" / "recipes.py")
    r, calls = fr.run("datasets")
    assert calls == [], r.stdout

    kw = fr.repo / "rules" / "anatomy_keywords.yaml"  # keyword rules: only the recipe that uses them, forced
    kw.write_text(kw.read_text() + "\n# edited\n")
    r, calls = fr.run("datasets")
    assert _built(calls) == ["reflacx-anatomy"]
    assert "--force" in calls[0]["args"]

    ev = fr.repo / "gazeprep" / "evaluate" / "metrics.py"  # evaluation code: not a build input
    ev.write_text(ev.read_text() + "\n# edited\n")
    r, calls = fr.run("datasets")
    assert calls == []

    neg = fr.repo / "rules" / "negation" / "preceding.txt"  # labeler rules: every export, forced
    neg.write_text(neg.read_text() + "\nnot at all\n")
    r, calls = fr.run("datasets")
    assert _built(calls) == sorted(recipes)
    assert all("--force" in c["args"] for c in calls if c["args"][0] == "build-heatmaps")
    r, calls = fr.run("datasets")
    assert calls == []

    # one recipe target; a release change rebuilds that dataset's exports and re-predicts the masks
    r, calls = fr.run("reflacx-official")
    assert calls == [] and "reflacx-official: up to date" in r.stdout
    (fr.repo / "sample_data" / "reflacx" / "extra.txt").write_text("new file\n")
    r, calls = fr.run("datasets")
    assert _built(calls) == sorted(x for x in recipes if _dataset(fr.repo, x) == "reflacx")
    assert ["anatomy", "predict"] in [c["args"][:2] for c in calls]
    assert all("--force" not in c["args"] for c in calls)  # gazeprep's resume handles release changes


@needs_make
def test_make_retries_a_failed_build_and_forces_after_rules_change_until_success(tmp_path: Path) -> None:
    fr = FakeRepo(tmp_path)
    r, _ = fr.run("reflacx-official")
    assert r.returncode == 0, r.stderr

    # a build that exits 1 after writing its export (too many rejects) is not "up to date" next time
    lab = fr.repo / "rules" / "labels.yaml"
    lab.write_text(lab.read_text() + "\n# edited\n")
    r, calls = fr.run("reflacx-official", env_extra={"FAKE_FAIL": "reflacx-official"})
    assert r.returncode != 0
    assert "reflacx-official: build failed (exit 1)" in r.stderr
    assert "--force" in calls[0]["args"]
    r, calls = fr.run("reflacx-official")  # retried, still forced: the rules changed since the last success
    assert r.returncode == 0 and _built(calls) == ["reflacx-official"]
    assert "--force" in calls[0]["args"]
    r, calls = fr.run("reflacx-official")
    assert calls == []


@needs_make
def test_make_help_lists_every_recipe_with_dataset_paper_and_output(tmp_path: Path) -> None:
    r = _make(REPO, "help", "OUT=/data/gt", timeout=60)
    assert r.returncode == 0, r.stderr
    for f in RECIPE_FILES:
        if f.stem not in _recipes(REPO):
            assert f.stem in r.stdout  # named as not built
            continue
        lines = [ln for ln in r.stdout.splitlines() if ln.split()[:2] == ["make", f.stem]]
        assert len(lines) == 1, f.stem
        text = f.read_text()
        dataset = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("dataset:"))
        paper = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("paper:"))
        assert dataset in lines[0] and paper in lines[0] and f"/data/gt/{f.stem}/" in lines[0]
    assert any(ln.split()[:2] == ["make", "datasets"] for ln in r.stdout.splitlines())
    assert any(ln.split()[:2] == ["make", "anatomy"] for ln in r.stdout.splitlines())


# --------------------------------------------------------------------------- the real chain
@pytest.mark.slow
@needs_make
def test_make_datasets_on_sample_data_is_incremental(tmp_path: Path) -> None:
    missing = [m for m in ("torch", "segment_anything") if importlib.util.find_spec(m) is None]
    if missing:  # find_spec, not import: torchvision needs gazeprep's CPU shim before it imports
        pytest.skip(f"the anatomy chain needs the [ml] extra ({', '.join(missing)} not installed)")
    repo = _copy_repo(tmp_path / "repo")
    out = tmp_path / "out"
    recipes = _recipes(repo)
    mk = [
        f"OUT={out}",
        f"BIN={Path(sys.executable).parent}",  # use this environment: no .venv in the copy, nothing installed
        f"PY={sys.executable}",
        f"GAZEPREP={sys.executable} -m gazeprep",  # the copy's package (cwd first on sys.path)
        "WORKERS=1",
        "DEVICE=cpu",
    ]
    n = len(recipes)

    t0 = time.monotonic()
    r = _make(repo, "-j2", "datasets", *mk)  # parallel: one writer per output folder
    first_s = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"datasets: rebuilt {n} of {n} exports" in r.stdout
    for name in recipes:
        m = json.loads((out / name / "manifest.json").read_text())
        assert m["recipe"]["name"] == name
        assert m["counts"]["heatmaps"] > 0, name
    assert (out / "anatomy" / "masks.parquet").is_file()
    assert json.loads((out / "anatomy" / "anatomy.json").read_text())["model_config"]["name"] == "tiny"
    before = _manifest_mtimes(out, recipes)
    masks_before = (out / "anatomy" / "masks.parquet").stat().st_mtime_ns

    t0 = time.monotonic()
    r = _make(repo, "datasets", *mk)
    second_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"datasets: all {n} exports up to date" in r.stdout
    assert "building" not in r.stdout and "anatomy predict" not in r.stdout
    assert _manifest_mtimes(out, recipes) == before
    assert (out / "anatomy" / "masks.parquet").stat().st_mtime_ns == masks_before

    _bump_mtime(repo / "pipelines" / "reflacx-label-specific.yaml")
    r = _make(repo, "datasets", *mk)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"datasets: rebuilt 1 of {n} exports" in r.stdout
    after = _manifest_mtimes(out, recipes)
    assert [k for k in recipes if after[k] != before[k]] == ["reflacx-label-specific"]
    # the recipe's content did not change: no --force, and gazeprep's resume reused every live case
    assert "--force" not in r.stdout
    cases = pl.read_parquet(out / "reflacx-label-specific" / "tables" / "cases.parquet")
    live = cases.filter(~pl.col("discarded").fill_null(False)).height
    reused = re.search(r"wrote \S*reflacx-label-specific: .*\((\d+) cases reused", r.stdout + r.stderr)
    assert reused is not None and int(reused.group(1)) == live > 0
    print(f"make datasets on sample data: first {first_s:.1f} s, no-op rerun {second_s:.1f} s")


@needs_make
def test_make_clean_keeps_hand_corrected_anatomy_masks(tmp_path: Path) -> None:
    """`make clean` removes OUT, but never the masks a person corrected by hand (anatomy overrides)."""
    fr = FakeRepo(tmp_path)
    override = fr.out / "anatomy" / "overrides" / "img1" / "heart.png"
    built = [fr.out / "reflacx-official" / "manifest.json", fr.out / "anatomy" / "masks.parquet"]
    for p in [override, *built]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    r, _ = fr.run("clean")
    assert r.returncode == 0, r.stderr
    assert override.read_bytes() == b"x" and "kept the hand-corrected masks" in r.stdout
    assert not any(p.exists() for p in built) and not (fr.out / "reflacx-official").exists()
    assert sorted(p.name for p in fr.out.parent.iterdir() if p.name.startswith(".gazeprep-overrides")) == []
    override.unlink()
    override.parent.rmdir()
    r, _ = fr.run("clean")  # nothing left to keep: OUT goes entirely
    assert r.returncode == 0, r.stderr
    assert not fr.out.exists()
