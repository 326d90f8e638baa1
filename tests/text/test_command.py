"""`gazeprep label-reports` end to end."""

from __future__ import annotations

import polars as pl
from typer.testing import CliRunner

from gazeprep.cli import app


def test_label_reports(tmp_path):
    src = tmp_path / "reports.csv"
    pl.DataFrame(
        {
            "rid": ["r1", "r2", "r3"],
            "report": ["No pneumothorax. Small left effusion.", None, "Possible right lower lobe pneumonia."],
        }
    ).write_csv(src)
    out, summ = tmp_path / "m.parquet", tmp_path / "s.parquet"
    res = CliRunner().invoke(
        app,
        [
            "label-reports",
            str(src),
            "--id-column",
            "rid",
            "--text-column",
            "report",
            "--out",
            str(out),
            "--summary",
            str(summ),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    m = pl.read_parquet(out)
    assert m.columns == [
        "id",
        "label",
        "phrase",
        "sentence_idx",
        "char_start",
        "char_end",
        "negated",
        "uncertain",
        "hypothetical",
    ]
    ptx = m.filter(pl.col("label") == "pneumothorax").row(0, named=True)
    assert ptx["id"] == "r1" and ptx["negated"] and ptx["sentence_idx"] == 0
    eff = m.filter(pl.col("label") == "pleural_effusion").row(0, named=True)
    assert "No pneumothorax. Small left effusion."[eff["char_start"] : eff["char_end"]] == "effusion"
    assert eff["sentence_idx"] == 1
    s = pl.read_parquet(summ)
    st = {(r["id"], r["label"]): r["status"] for r in s.iter_rows(named=True)}
    assert st[("r1", "pneumothorax")] == "negative"
    assert st[("r1", "pleural_effusion")] == "positive"
    assert st[("r3", "pneumonia")] == "uncertain"
    assert st[("r2", "pneumonia")] == "absent"
    assert set(s["status"]) <= {"positive", "negative", "uncertain", "hypothetical", "absent"}
    assert s.filter(pl.col("id") == "r2").height == s.filter(pl.col("id") == "r1").height


def test_label_reports_missing_column(tmp_path):
    from gazeprep.cli import main

    src = tmp_path / "reports.csv"
    src.write_text("a,b\n1,no edema\n")
    import pytest

    with pytest.raises(SystemExit) as e:
        main(
            ["label-reports", str(src), "--id-column", "id", "--text-column", "b", "--out", str(tmp_path / "o.parquet")]
        )
    assert e.value.code == 1
