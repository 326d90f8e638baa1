"""label-reports on a CSV polars cannot read: one `error:` line naming the file, exit 1."""

from __future__ import annotations

from gazeprep import cli


def test_malformed_csv_is_one_error_line(tmp_path, capsys):
    src = tmp_path / "r.csv"
    src.write_text("report_id,text\n01,No edema.,extra,fields\n02,Edema.\n")  # a ragged row
    code = cli.run(
        [
            "label-reports",
            str(src),
            "--id-column",
            "report_id",
            "--text-column",
            "text",
            "--quiet",
            "--out",
            str(tmp_path / "o.csv"),
        ]
    )
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {src}: not a readable CSV file: "), err
    assert not (tmp_path / "o.csv").exists()
