"""Window sweep: the 004 grid, rule names, the ranking rule (validated threshold per label, mean over
labels) on hand-made rows; end to end on the sample data when the text stage is available."""

from __future__ import annotations

import polars as pl
import pytest

from gazeprep.evaluate import metrics as M
from gazeprep.evaluate import sweep as S
from gazeprep.recipes import SentenceWindow

NT = len(M.THRESHOLDS_004)


def test_grid_contains_004_rules_once():
    g = S.window_grid()
    names = [r.name for r in g]
    assert len(names) == len(set(names))
    assert "max(sentence_start - 1.5 s, previous_sentence_start) -> last_mention" in names
    assert S.rule_name(SentenceWindow()) in names  # the recipe default is in the grid
    assert names[-1] == S.BASELINE and g[-1].window is None
    # stage 1: 3 anchors x 3 lags + 5 unlagged starts, x 4 ends; stage 2 adds 13 lags minus 2 shared
    assert len(S.window_grid("1")) == 14 * 4 + 1
    assert len(g) == 14 * 4 + 13 - 2 + 1
    assert len(S.window_grid("2")) == 13 + 1


def _row(rule, case, target, split, curve):
    return {
        "rule": rule,
        "case_id": case,
        "target": target,
        "split": split,
        "has_map": True,
        **{f"iou_{k}": float(curve[k]) for k in range(NT)},
    }


def test_rank_rules_validates_threshold_per_label_and_averages_labels():
    def curve(at: int, v: float):
        c = [0.0] * NT
        c[at] = v
        return c

    rows = [
        # rule A: label x peaks .6 at threshold 3 (both val cases), label y .2 -> (.6 + .2) / 2 = .4
        _row("A", "c1", "x", "validate", curve(3, 0.6)),
        _row("A", "c2", "x", "validate", curve(3, 0.6)),
        _row("A", "c1", "y", "validate", curve(5, 0.2)),
        # rule B: label x .5 and .3 at different thresholds -> best mean is .25; y .5 -> (.25 + .5) / 2 = .375
        _row("B", "c1", "x", "validate", curve(3, 0.5)),
        _row("B", "c2", "x", "validate", curve(4, 0.3)),
        _row("B", "c1", "y", "validate", curve(5, 0.5)),
        # test rows are ignored for the ranking
        _row("B", "c9", "x", "test", curve(3, 1.0)),
    ]
    r = S.rank_rules(pl.DataFrame(rows))
    assert r["rule"].to_list() == ["A", "B"]
    assert r["iou"].to_list() == [pytest.approx(0.4), pytest.approx(0.375)]
    assert r["rank"].to_list() == [1, 2] and r["split"][0] == "validate" and r["n_pairs"].to_list() == [3, 3]


@pytest.fixture(scope="module")
def reflacx_root(tmp_path_factory):
    from gazeprep.synth.reflacx import generate_reflacx

    root = tmp_path_factory.mktemp("reflacx")
    generate_reflacx(root, 12, 7)  # the bundled sample data's arguments (Makefile: sample-data)
    return root


def test_synthetic_release_default_rule_beats_whole_recording(reflacx_root):
    rules = [r for r in S.window_grid("2") if r.name.startswith("max(sentence_start - 1.5 s")] + [
        S.window_grid("2")[-1]
    ]
    res = S.run_sweep(reflacx_root, rules=rules, size=64, workers=1, progress=False)
    rank = dict(zip(res.ranking["rule"], res.ranking["iou"]))
    assert set(rank) == {rules[0].name, S.BASELINE}
    # the synthetic readers look at the finding while dictating its sentence: the 004 window wins
    assert rank[rules[0].name] > rank[S.BASELINE] + 0.1
    assert res.rows["has_map"].all() and res.rows.height == 2 * res.rows.filter(pl.col("rule") == S.BASELINE).height


def test_cli_sweep_windows(reflacx_root, tmp_path, capsys):
    from gazeprep.cli import main

    out = tmp_path / "rank.csv"
    try:
        main(
            [
                "sweep-windows",
                "--root",
                str(reflacx_root),
                "--stage",
                "2",
                "--workers",
                "1",
                "--size",
                "64",
                "--out",
                str(out),
            ]
        )
    except SystemExit as exc:
        assert not exc.code
    text = capsys.readouterr().out
    assert "004 default rule: rank" in text and "whole recording: rank" in text
    rank = pl.read_csv(out)
    assert rank.height == 14 and rank["rank"].to_list() == list(range(1, 15))
    assert rank["iou"].is_sorted(descending=True)


def test_sweep_on_ray_equals_local(reflacx_root):
    pytest.importorskip("ray")
    rules = [r for r in S.window_grid("2") if r.name.startswith("max(sentence_start - 1.5 s")] + [
        S.window_grid("2")[-1]
    ]
    local = S.run_sweep(reflacx_root, rules=rules, size=48, workers=1, progress=False)
    dist = S.run_sweep(reflacx_root, rules=rules, size=48, workers=2, progress=False, executor="ray")
    assert dist.rows.equals(local.rows)
    assert dist.ranking.equals(local.ranking)
