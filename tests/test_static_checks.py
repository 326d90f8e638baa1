"""Static checks run with the test suite (issue 13 item 6): ruff lint, ruff format and mypy.

The tools come from the [dev] extra (pyproject.toml pins their minor versions, whose rule sets and
formatter output change between releases); their configuration is spelled out in pyproject.toml so a
user-level ruff or mypy configuration cannot change the result. Each test runs the tool of the
interpreter running the tests (``sys.executable -m ...``) from the repository root and shows the tool's
own report when it fails.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"


def test_ruff_lint_is_clean() -> None:
    proc = _run("ruff", "check", "--no-cache", "gazeprep", "tests")
    assert proc.returncode == 0, _report(proc)


def test_ruff_format_is_applied() -> None:
    proc = _run("ruff", "format", "--check", "--no-cache", "gazeprep", "tests")
    assert proc.returncode == 0, "run `ruff format gazeprep tests`\n" + _report(proc)


def test_mypy_is_clean() -> None:
    proc = _run("mypy", "--no-incremental", "--cache-dir", "/dev/null", timeout=900)
    assert proc.returncode == 0, _report(proc)


def test_config_is_explicit() -> None:
    """The settings the checks depend on live in pyproject.toml, not on the machine."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    assert cfg["ruff"]["line-length"] == 120
    assert cfg["ruff"]["target-version"] == "py311"
    assert set(cfg["ruff"]["lint"]["select"]) >= {"E", "F", "W", "I", "B", "UP"}
    assert cfg["mypy"]["python_version"] == "3.11"
    assert cfg["mypy"]["packages"] == ["gazeprep"]


def test_no_module_is_excused_from_type_checking() -> None:
    """The mypy debt list is gone: no override switches errors off for a gazeprep module."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    excused = [m for o in cfg.get("overrides", []) if o.get("ignore_errors") for m in o["module"]]
    assert excused == []
    assert cfg.get("disallow_untyped_defs") is True and cfg.get("check_untyped_defs") is True
