"""The Ray executor runs the same stage functions and writes byte-identical exports."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from gazeprep.paths import sample_data_dir  # noqa: E402
from gazeprep.pipeline.build import BuildOptions, build_heatmaps  # noqa: E402
from gazeprep.pipeline.executor import FAULT_ENV  # noqa: E402
from gazeprep.recipes import load_recipe  # noqa: E402


def _digests(root: Path) -> dict[str, str]:
    return {
        f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file() and ".parts" not in f.parts and ".staging" not in f.parts
    }


@pytest.fixture(scope="module")
def release():
    root = sample_data_dir() / "reflacx"
    if not root.exists():
        pytest.skip("sample data not generated")
    return root


def test_ray_build_is_byte_identical_and_retries_failed_block(release, tmp_path, monkeypatch):
    recipe = load_recipe("reflacx-label-specific").with_overrides(size=48)
    local = tmp_path / "local"
    build_heatmaps(BuildOptions(dataset="reflacx", root=release, out=local, recipe=recipe, workers=1, progress=False))

    marker = tmp_path / "fault-marker"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    distributed = tmp_path / "ray"
    summary = build_heatmaps(
        BuildOptions(
            dataset="reflacx",
            root=release,
            out=distributed,
            recipe=recipe,
            workers=2,
            progress=False,
            executor="ray",
            ray_block_size=4,
        )
    )
    # the injected fault really happened once, and the failed block was recorded and retried
    assert marker.exists()
    events = summary.extra["executor_events"]
    assert len(events) == 1 and "injected fault" in events[0]["error"]
    assert not ray.is_initialized()
    assert _digests(distributed) == _digests(local)


def test_ray_io_fault_stops_the_build_without_retries(release, tmp_path):
    """An I/O fault in a task is not a failing block to retry and then reject: the build stops at
    once naming the file, with no manifest. Here the part store cannot be created (``.parts`` is a
    regular file), so every task fails with EEXIST."""
    from gazeprep.errors import StorageError

    out = tmp_path / "out"
    out.mkdir()
    (out / ".parts").write_text("not a folder")
    recipe = load_recipe("reflacx-label-specific").with_overrides(size=32)
    with pytest.raises(StorageError, match=r"\.parts: File exists"):
        build_heatmaps(
            BuildOptions(
                dataset="reflacx",
                root=release,
                out=out,
                recipe=recipe,
                workers=2,
                progress=False,
                executor="ray",
                ray_block_size=4,
            )
        )
    assert not (out / "manifest.json").exists()
    assert not ray.is_initialized()
