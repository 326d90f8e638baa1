"""Packaging: a wheel built from this repository works outside the checkout.

The slow tests build the wheel offline (``pip wheel --no-deps --no-build-isolation``, with this
environment's setuptools, a [dev] dependency), install it with ``--no-deps`` into a fresh venv created in
a temporary folder, and run its ``gazeprep`` entry point with the working directory outside the checkout.
The fresh venv reaches the already installed dependencies through one ``.pth`` line naming this
environment's ``site-packages``; such a path line is only appended to ``sys.path`` (Python does not
process the ``.pth`` files inside it), so the editable install of the checkout is not activated there,
and the tests assert that ``gazeprep`` is imported from the fresh venv.

The fast tests check the override order of the shipped data in-process: explicit argument >
``GAZEPREP_RECIPES_DIR`` / ``GAZEPREP_RULES_DIR`` > shipped ``pipelines/`` / ``rules/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import polars as pl
import pytest
import yaml

from gazeprep import paths
from gazeprep.errors import GazeprepError, RecipeError
from gazeprep.recipes import list_recipes, load_recipe
from gazeprep.text.rules import load_rules

REPO = Path(__file__).resolve().parent.parent
# What a wheel is built from (copied, so the build leaves no build/ or egg-info in the checkout).
_SOURCES = ("pyproject.toml", "README.md", "MANIFEST.in", "gazeprep", "rules", "pipelines")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _repo_files(folder: str, suffix: str | None = None) -> list[str]:
    """Files under ``REPO/folder`` as POSIX paths relative to it (caches left out)."""
    base = REPO / folder
    out = []
    for p in sorted(base.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc"):
            if suffix is None or p.suffix == suffix:
                out.append(p.relative_to(base).as_posix())
    return out


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no PYTHONPATH or override variables leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", paths.RECIPES_ENV, paths.RULES_ENV, "GAZEPREP_DEBUG"}
    }
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------- the wheel venv
class WheelVenv:
    """A fresh venv outside the checkout with the wheel built from the repository installed."""

    def __init__(self, root: Path):
        self.root = root
        self.wheel = self._build_wheel()
        self.venv = root / "venv"
        self.python = self.venv / "bin" / "python"
        self.gazeprep_bin = self.venv / "bin" / "gazeprep"
        self.work = root / "work"  # cwd of every command: outside the checkout
        self.work.mkdir()
        self._make_venv()

    def _build_wheel(self) -> Path:
        src = self.root / "src"
        src.mkdir()
        for name in _SOURCES:
            p = REPO / name
            if p.is_dir():
                shutil.copytree(p, src / name, ignore=_IGNORE)
            elif p.is_file():
                shutil.copy2(p, src / name)
        dist = self.root / "dist"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "-q",
                "-w",
                str(dist),
                str(src),
            ],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=_clean_env(),
            timeout=300,
        )
        assert r.returncode == 0, f"wheel build failed:\n{r.stdout}\n{r.stderr}"
        wheels = sorted(dist.glob("gazeprep-*.whl"))
        assert len(wheels) == 1, wheels
        return wheels[0]

    def _make_venv(self) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True, timeout=120)
        purelib = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            env=_clean_env(),
            cwd=self.work,
        ).stdout.strip()
        # Dependencies come from this environment's site-packages, appended after the venv's own.
        dev_sites = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        (Path(purelib) / "_gazeprep_test_deps.pth").write_text("".join(f"{d}\n" for d in dev_sites))
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(self.python),
                "install",
                "--no-deps",
                "--no-index",
                "-q",
                str(self.wheel),
            ],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=_clean_env(),
            timeout=300,
        )
        assert r.returncode == 0, f"wheel install failed:\n{r.stdout}\n{r.stderr}"

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
        """Run the venv's ``gazeprep`` entry point from the work folder."""
        return subprocess.run(
            [str(self.gazeprep_bin), *args],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=_clean_env(GAZEPREP_TRACEBACK_DIR=str(self.root / "tracebacks"), **(env or {})),
            timeout=timeout,
        )

    def python_c(self, code: str, *args: str) -> subprocess.CompletedProcess:
        """Run ``python -c code args`` with the venv's interpreter from the work folder."""
        return subprocess.run(
            [str(self.python), "-c", code, *args],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=_clean_env(GAZEPREP_TRACEBACK_DIR=str(self.root / "tracebacks")),
            timeout=300,
        )


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> WheelVenv:
    root = tmp_path_factory.mktemp("wheel")
    assert REPO not in root.resolve().parents
    return WheelVenv(root)


# ----------------------------------------------------------------------------------- wheel tests
@pytest.mark.slow
def test_wheel_contains_every_module_rule_and_recipe(wheel_venv):
    names = set(zipfile.ZipFile(wheel_venv.wheel).namelist())
    modules = {f"gazeprep/{f}" for f in _repo_files("gazeprep", ".py")}
    rules = {f"gazeprep/_data/rules/{f}" for f in _repo_files("rules")}
    recipes = {f"gazeprep/_data/pipelines/{f}" for f in _repo_files("pipelines")}
    assert "gazeprep/_data/rules/labels.yaml" in rules and "gazeprep/_data/pipelines/reflacx-official.yaml" in recipes
    assert any(r.startswith("gazeprep/_data/rules/mention/") for r in rules)
    assert modules - names == set(), "modules missing from the wheel (list the package in pyproject.toml)"
    assert rules - names == set(), "rule files missing from the wheel (package-data globs in pyproject.toml)"
    assert recipes - names == set(), "recipes missing from the wheel"
    assert not any(n.startswith(("sample_data/", "tests/", "rules/", "pipelines/")) for n in names)


@pytest.mark.slow
def test_wheel_is_imported_from_the_fresh_venv(wheel_venv):
    code = (
        "import json, sys, gazeprep, gazeprep.paths as p\n"
        "print(json.dumps({'file': gazeprep.__file__, 'rules': str(p.default_rules_dir()),\n"
        "  'pipelines': str(p.default_pipelines_dir()), 'sample': p.bundled_sample_data() is None,\n"
        "  'finders': [m for m in sys.modules if m.startswith('__editable__')]}))"
    )
    r = wheel_venv.python_c(code)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    venv = wheel_venv.venv.resolve()
    for key in ("file", "rules", "pipelines"):
        assert venv in Path(info[key]).resolve().parents, (key, info[key])
    assert info["finders"] == []  # the checkout's editable finder is not active
    assert info["sample"] is True  # a wheel carries no sample data


@pytest.mark.slow
def test_wheel_recipes_lists_every_shipped_recipe(wheel_venv):
    r = wheel_venv.run("recipes")
    assert r.returncode == 0, r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert listed == sorted(p.stem for p in (REPO / "pipelines").glob("*.yaml"))
    assert len(listed) >= 8


@pytest.mark.slow
def test_wheel_recipes_env_override(wheel_venv, tmp_path):
    mine = tmp_path / "my-recipes"
    mine.mkdir()
    data = yaml.safe_load((REPO / "pipelines" / "reflacx-official.yaml").read_text())
    data["name"] = "my-official"
    (mine / "my-official.yaml").write_text(yaml.safe_dump(data))
    r = wheel_venv.run("recipes", env={paths.RECIPES_ENV: str(mine)})
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines() if line.strip()] == ["my-official"]


@pytest.mark.slow
def test_wheel_build_heatmaps_on_sample_data(wheel_venv, tmp_path):
    out = tmp_path / "out"
    r = wheel_venv.run(
        "build-heatmaps",
        "--dataset",
        "reflacx",
        "--root",
        str(REPO / "sample_data" / "reflacx"),
        "--out",
        str(out),
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "reflacx-label-specific"
    assert manifest["counts"]["heatmaps"] > 0
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.slow
def test_wheel_without_root_asks_for_it(wheel_venv, tmp_path):
    r = wheel_venv.run("build-heatmaps", "--dataset", "reflacx", "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "pass --root" in lines[0] and "sample data" in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_wheel_label_reports_loads_the_shipped_rules(wheel_venv, tmp_path):
    csv = tmp_path / "reports.csv"
    csv.write_text("id,text\nr1,Small left pleural effusion. No pneumothorax.\nr2,Heart size is normal.\n")
    out, summary = tmp_path / "m.parquet", tmp_path / "s.parquet"
    r = wheel_venv.run(
        "label-reports",
        str(csv),
        "--id-column",
        "id",
        "--text-column",
        "text",
        "--out",
        str(out),
        "--summary",
        str(summary),
        "--quiet",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    s = pl.read_parquet(summary)
    status = {(row["id"], row["label"]): row["status"] for row in s.iter_rows(named=True)}
    assert status[("r1", "pleural_effusion")] == "positive"
    assert status[("r1", "pneumothorax")] == "negative"
    assert status[("r2", "pleural_effusion")] == "absent"


# A venv without the [ml] extra, simulated: torch and torchvision cannot be imported.
_NO_TORCH = """
import sys
class _NoTorch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTorch)
from gazeprep.cli import main
sys.argv = ["gazeprep", *sys.argv[1:]]
sys.exit(main())
"""


@pytest.mark.slow
def test_wheel_without_ml_extra_names_the_extra(wheel_venv):
    ok = wheel_venv.python_c(_NO_TORCH, "recipes")
    assert ok.returncode == 0, ok.stderr  # core commands do not need torch
    r = wheel_venv.python_c(_NO_TORCH, "models")
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "Traceback" not in text
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "[ml]" in lines[0], text


# ----------------------------------------------------------------------------------- overrides
def test_checkout_reads_the_top_level_folders(monkeypatch):
    monkeypatch.delenv(paths.RECIPES_ENV, raising=False)
    monkeypatch.delenv(paths.RULES_ENV, raising=False)
    assert paths.default_pipelines_dir() == REPO / "pipelines"
    assert paths.default_rules_dir() == REPO / "rules"
    assert paths.sample_data_dir() == REPO / "sample_data"


def _my_recipes(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    data = yaml.safe_load((REPO / "pipelines" / "reflacx-official.yaml").read_text())
    data["name"] = "my-official"
    data["output"]["size"] = 64
    (d / "my-official.yaml").write_text(yaml.safe_dump(data))
    return d


def test_recipes_env_replaces_the_shipped_folder(tmp_path, monkeypatch):
    d = _my_recipes(tmp_path)
    monkeypatch.setenv(paths.RECIPES_ENV, str(d))
    assert paths.default_pipelines_dir() == d
    assert list_recipes() == ["my-official"]
    assert load_recipe("my-official").output.size == 64
    with pytest.raises(RecipeError, match="known: my-official"):
        load_recipe("reflacx-official")
    # a YAML path keeps working whatever the folder, and an explicit folder beats the variable
    assert load_recipe(REPO / "pipelines" / "reflacx-official.yaml").name == "reflacx-official"
    assert load_recipe("reflacx-official", pipelines_dir=REPO / "pipelines").name == "reflacx-official"
    assert "reflacx-official" in list_recipes(REPO / "pipelines")


def test_empty_env_means_unset(monkeypatch):
    monkeypatch.setenv(paths.RECIPES_ENV, "")
    monkeypatch.setenv(paths.RULES_ENV, "  ")
    assert paths.default_pipelines_dir() == paths.shipped_data_dir("pipelines")
    assert paths.default_rules_dir() == paths.shipped_data_dir("rules")


@pytest.mark.parametrize("var", [paths.RECIPES_ENV, paths.RULES_ENV])
def test_env_naming_a_missing_folder_is_one_clear_error(var, tmp_path, monkeypatch):
    monkeypatch.setenv(var, str(tmp_path / "nope"))
    fn = paths.default_pipelines_dir if var == paths.RECIPES_ENV else paths.default_rules_dir
    with pytest.raises(GazeprepError, match=f"^{var}=.*nope.*: not a folder$"):
        fn()


def test_rules_env_replaces_the_shipped_folder(tmp_path, monkeypatch):
    d = tmp_path / "rules"
    shutil.copytree(REPO / "rules", d)
    with (d / "mention" / "pneumothorax.txt").open("a", encoding="utf-8") as f:
        f.write("\nzebra sign\n")
    monkeypatch.setenv(paths.RULES_ENV, str(d))
    assert paths.default_rules_dir() == d
    assert "zebra sign" in load_rules().mentions["pneumothorax"]
    assert "zebra sign" not in load_rules(REPO / "rules").mentions["pneumothorax"]  # explicit beats env

    from gazeprep.text.labeler import Labeler

    labels = {m.label for m in Labeler.from_rules().label_text("There is a zebra sign.")}
    assert "pneumothorax" in labels
    monkeypatch.delenv(paths.RULES_ENV)
    assert "pneumothorax" not in {m.label for m in Labeler.from_rules().label_text("There is a zebra sign.")}


def test_sample_data_dir_outside_a_checkout_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "package_root", lambda: tmp_path)  # site-packages: no pyproject, no sample_data
    assert paths.bundled_sample_data() is None
    with pytest.raises(GazeprepError, match=r"^no --root given and no bundled sample data .*; pass --root$"):
        paths.sample_data_dir()
    with pytest.raises(GazeprepError, match="pass --images$"):
        paths.sample_data_dir("--images")
    # a folder that merely holds sample_data/ is not taken for a checkout
    (tmp_path / "sample_data").mkdir()
    assert paths.bundled_sample_data() is None


def test_shipped_data_outside_a_checkout_without_package_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "package_root", lambda: tmp_path)
    (tmp_path / "rules").mkdir()  # some other distribution's rules/ in site-packages is not ours
    with pytest.raises(GazeprepError, match="GAZEPREP_RULES_DIR"):
        paths.shipped_data_dir("rules")
