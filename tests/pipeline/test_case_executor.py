"""process_case (the one per-case pipeline), the executor interface, the labeler rules in the
resumable part key, and cases dropped at ingest in the reject fraction."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import polars as pl
import pytest

from gazeprep.errors import GazeprepError, StorageError
from gazeprep.paths import sample_data_dir
from gazeprep.pipeline.executor import LocalExecutor, make_executor
from gazeprep.recipes import KeywordWindow, PhraseWindow, SentenceWindow, WholeRecordingWindow, load_recipe

SAMPLE = sample_data_dir()


def _release(name: str) -> Path:
    root = SAMPLE / name
    if not root.exists():
        pytest.skip("sample data not generated")
    return root


# -- window rules declare their needs and own their label-group filter --------------------------
def test_window_rules_declare_whether_they_need_a_transcript():
    assert SentenceWindow().needs_transcript and KeywordWindow().needs_transcript and PhraseWindow().needs_transcript
    assert not WholeRecordingWindow(end="recording_end").needs_transcript
    assert WholeRecordingWindow(end="last_word_end").needs_transcript


def _sentence_case():
    """Two sentences; sentence 0 mentions atelectasis (a lanfredi2023 label) and a made-up label
    outside every group; sentence 1 mentions edema."""
    from gazeprep.schema import empty

    sentences = pl.DataFrame(
        {
            "sentence_idx": [0, 1],
            "t_start_s": [2.0, 6.0],
            "t_end_s": [5.0, 9.0],
            "char_start": [0, 20],
            "char_end": [19, 40],
            "text": ["a", "b"],
        }
    )
    mentions = pl.DataFrame(
        {
            "sentence_idx": [0, 0, 1],
            "label": ["atelectasis", "not_a_group_label", "edema"],
            "char_start": [2, 8, 22],
            "t_start_s": [3.0, 4.0, 7.0],
            "negated": [False, False, False],
            "uncertain": [False, False, False],
        }
    )
    return sentences, empty("words"), mentions


def test_compute_windows_keeps_only_the_label_group():
    from gazeprep.text import compute_windows, label_groups

    sentences, words, mentions = _sentence_case()
    kw = dict(
        sentences=sentences,
        words=words,
        mentions=mentions,
        recording_end_s=10.0,
        dataset="reflacx",
        case_id="c",
        recipe="r",
    )
    every = compute_windows(SentenceWindow(), **kw)
    grouped = compute_windows(SentenceWindow(label_group="lanfredi2023"), **kw)
    assert sorted(every["target"].to_list()) == ["atelectasis", "edema", "not_a_group_label"]
    assert "atelectasis" in label_groups()["lanfredi2023"] and "edema" in label_groups()["lanfredi2023"]
    assert sorted(grouped["target"].to_list()) == ["atelectasis", "edema"]
    # hand-computed 004 window of sentence 1: max(6 - 1.5, previous start 2) = 4.5 -> last mention 7.0
    row = grouped.filter(pl.col("target") == "edema").row(0, named=True)
    assert (row["t_start_s"], row["t_end_s"], row["window_idx"]) == (4.5, 7.0, 0)
    with pytest.raises(GazeprepError, match="label_group 'nope'.*known: .*lanfredi2023"):
        compute_windows(SentenceWindow(label_group="nope"), **kw)


# -- process_case ---------------------------------------------------------------------------------
def test_process_case_equals_the_built_part_and_applies_the_transcript_rule(tmp_path):
    """process_case on a sample case gives exactly the maps a build exports; without words a
    sentence window rejects the case while a whole-recording window still renders it."""
    import dataclasses

    import numpy as np

    from gazeprep.export import load_export
    from gazeprep.pipeline.build import BuildOptions, build_heatmaps, open_release
    from gazeprep.pipeline.case import process_case
    from gazeprep.text import label_groups

    root = _release("reflacx")
    recipe = load_recipe("reflacx-label-specific").with_overrides(size=32, dtype="float32")
    s = build_heatmaps(
        BuildOptions(
            dataset="reflacx",
            root=root,
            out=tmp_path / "o",
            recipe=recipe,
            workers=1,
            progress=False,
            max_reject_fraction=1.0,
        )
    )
    ex = load_export(s.out)
    cid = sorted(ex.case_ids)[0]
    release = open_release("reflacx", root, recipe)
    res = process_case(release, cid, recipe)
    assert res.case_id == cid and res.heatmaps
    assert set(res.heatmaps) <= set(label_groups()["lanfredi2023"])
    assert set(res.tables["heatmaps"]["target"]) == set(res.heatmaps)
    built = ex.heatmaps_for(cid)
    assert sorted(built) == sorted(res.heatmaps)
    for t, m in res.heatmaps.items():
        assert m.shape == (32, 32) and np.isclose(m.max(), 1.0)  # max-normalised per map
        np.testing.assert_array_equal(m, built[t])

    data = release.read_case(cid)
    no_words = dataclasses.replace(data, tables={k: v.clear() if k == "words" else v for k, v in data.tables.items()})
    sent = process_case(release, cid, recipe, data=no_words)
    assert not sent.heatmaps and any("empty transcript: no window can be placed" in r["reason"] for r in sent.rejects)
    d = recipe.resolved()
    d["window"] = {"kind": "whole_recording"}
    whole = type(recipe).model_validate(d)
    full = process_case(release, cid, whole, data=no_words)
    assert list(full.heatmaps) == ["full"]
    assert any("map built without text" in r["reason"] for r in full.rejects)


# -- the executor ---------------------------------------------------------------------------------
def _square(block: list[int]) -> list[int]:
    return [x * x for x in block]


def _fail_on(bad: int, exc: BaseException, block: list[int]) -> list[int]:
    if bad in block:
        raise exc
    return [x + 1 for x in block]


class _Bar:
    def __init__(self):
        self.n = 0

    def update(self, n=1):
        self.n += n


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_maps_blocks_in_order_with_progress(workers):
    bar = _Bar()
    run = LocalExecutor(workers=workers).map_blocks(_square, list(range(23)), block_size=4, progress=bar)
    assert run.results == [x * x for x in range(23)] and bar.n == 23 and not run.failed and not run.events


def test_local_executor_errors_are_fatal_and_io_faults_name_the_file(tmp_path):
    import errno

    ex = LocalExecutor(workers=1)
    with pytest.raises(ValueError, match="boom"):
        ex.map_blocks(partial(_fail_on, 3, ValueError("boom")), list(range(6)))
    # the per-case safety net's classification: an errno OSError is a StorageError naming its file
    from gazeprep.pipeline.executor import fatal_error

    err = fatal_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")))
    assert isinstance(err, StorageError) and "x" in str(err)
    assert fatal_error(ValueError("data")) is None


def test_ray_executor_retries_then_splits_and_reports_the_failing_item():
    """A block that keeps failing is retried, split into single items, and only the item that
    fails on every attempt is reported (the caller's rejects policy); the others keep their order."""
    ray = pytest.importorskip("ray")
    import sys

    from ray import cloudpickle

    from gazeprep.pipeline.executor import RayExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import a test module

    bar = _Bar()
    run = RayExecutor(num_cpus=1, block_retries=1).map_blocks(
        partial(_fail_on, 4, ValueError("bad item")), list(range(6)), block_size=3, progress=bar
    )
    assert run.results == [1, 2, 3, 4, 6]  # items 0..5 plus one, without the failing 4
    assert run.failed == [(4, "ValueError: bad item")] and bar.n == 6
    # block [3, 4, 5]: attempt 0 and the retry fail, then the single item 4 fails once more
    assert [(e["block_start"], e["size"], e["attempt"]) for e in run.events] == [(3, 3, 0), (3, 3, 1), (4, 1, 2)]
    assert not ray.is_initialized()


def test_unknown_executor_is_one_line():
    with pytest.raises(GazeprepError, match="unknown executor 'dask'; use local or ray"):
        make_executor("dask", workers=1)


def test_pipeline_imports_go_one_way():
    """build -> case, executor; distributed -> executor; nothing in pipeline/ imports build."""
    import ast

    pkg = Path(__import__("gazeprep.pipeline", fromlist=["x"]).__file__).parent
    imports: dict[str, set[str]] = {}
    for f in pkg.glob("*.py"):
        mods = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gazeprep.pipeline"):
                mods.add(node.module.rsplit(".", 1)[-1])
            elif isinstance(node, ast.Import):
                mods |= {a.name.rsplit(".", 1)[-1] for a in node.names if a.name.startswith("gazeprep.pipeline.")}
        imports[f.stem] = mods - {f.stem}
    assert imports["build"] >= {"case", "executor"}
    for mod, deps in imports.items():
        for dep in deps:
            assert mod not in imports.get(dep, set()), f"import cycle {mod} <-> {dep}"
    assert not any("build" in deps for mod, deps in imports.items() if mod != "build")


# -- the labeler rules are part of the resumable part key ---------------------------------------
def test_rule_edit_recomputes_cases_on_resume(tmp_path, monkeypatch):
    from gazeprep.paths import default_rules_dir
    from gazeprep.pipeline.build import BuildOptions, build_heatmaps
    from gazeprep.text import labeler as labeler_mod

    root = _release("reflacx")
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules)
    monkeypatch.setenv("GAZEPREP_RULES_DIR", str(rules))
    monkeypatch.setattr(labeler_mod, "_CACHE", {})  # labelers are cached per folder, not per content
    recipe = load_recipe("reflacx-label-specific").with_overrides(size=24)
    out = tmp_path / "out"

    def build():
        labeler_mod._CACHE.clear()
        return build_heatmaps(
            BuildOptions(
                dataset="reflacx", root=root, out=out, recipe=recipe, workers=1, progress=False, max_reject_fraction=1.0
            )
        )

    from gazeprep.export import load_export

    first = build()
    mentions0 = load_export(out).tables["mentions"]
    assert first.n_reused == 0 and build().n_reused == first.n_live  # unchanged rules: every part reused
    # edit one rule: the profile no longer recognises the label with a rule file mentioned most often
    mention_dir = rules / "profiles" / "lanfredi2023" / "mention_regex"
    counts = mentions0.group_by("label").len().sort(["len", "label"], descending=[True, False])
    label = next(lab for lab in counts["label"] if (mention_dir / f"{lab}.txt").is_file())
    (mention_dir / f"{label}.txt").write_text("")
    after = build()
    assert after.n_reused == 0  # every case recomputed (the profile hash changed)
    mentions1 = load_export(out).tables["mentions"]
    assert (mentions1["label"] == label).sum() < (mentions0["label"] == label).sum()


# -- cases dropped at ingest count as rejected ----------------------------------------------------
def _egd_without_masks(tmp_path: Path, keep: int) -> Path:
    """The EGD-CXR sample with the mask PNGs of all but ``keep`` cases removed (no --images: those
    cases have no image size and the adapter drops them)."""
    src = _release("egd-cxr")
    root = tmp_path / "egd"
    shutil.copytree(src, root)
    cases = sorted(p for p in (root / "audio_segmentation_transcripts").iterdir() if p.is_dir())
    assert len(cases) == 8
    for d in cases[keep:]:
        for png in d.glob("*.png"):
            png.unlink()
    return root


def _cli(args, capsys):
    from gazeprep.cli import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_every_case_dropped_at_ingest_fails_the_build(tmp_path, capsys):
    root = _egd_without_masks(tmp_path, keep=0)
    code, cap = _cli(
        [
            "build-heatmaps",
            "--dataset",
            "egd-cxr",
            "--root",
            str(root),
            "--recipe",
            "egd-static",
            "--size",
            "16",
            "--workers",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 1, cap.err
    assert "error: no heatmaps: all 8 cases were rejected" in cap.err and "Traceback" not in cap.err


def test_six_of_eight_dropped_is_above_the_reject_limit(tmp_path, capsys):
    from gazeprep.pipeline.build import BuildOptions, RejectPolicyError, build_heatmaps

    root = _egd_without_masks(tmp_path, keep=2)
    recipe = load_recipe("egd-static").with_overrides(size=16)
    with pytest.raises(
        RejectPolicyError, match=r"6 of 8 cases \(75%\) were rejected, more than --max-reject-fraction 0.5"
    ) as ei:
        build_heatmaps(
            BuildOptions(dataset="egd-cxr", root=root, out=tmp_path / "a", recipe=recipe, workers=1, progress=False)
        )
    s = ei.value.summary
    assert (s.n_dropped, s.n_live, s.n_rejected_cases, s.n_cases) == (6, 8, 6, 2) and s.n_heatmaps > 0
    ok = build_heatmaps(
        BuildOptions(
            dataset="egd-cxr",
            root=root,
            out=tmp_path / "b",
            recipe=recipe,
            workers=1,
            progress=False,
            max_reject_fraction=0.8,
        )
    )
    assert ok.reject_fraction == pytest.approx(0.75) and ok.problem is None
