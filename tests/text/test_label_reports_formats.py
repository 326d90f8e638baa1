"""`gazeprep label-reports` output formats (from the extension) and the wide CheXpert-style layout.

Known answers: a hand-written CSV of reports whose status per label was decided by reading each
report (written below before running the labeler), and CheXpert's aggregation rule transcribed from
stanfordmlgroup/chexpert-labeler ``stages/aggregate.py`` (``Aggregator.dict_to_vec``).
"""

from __future__ import annotations

import itertools
import re

import polars as pl
import pytest

from gazeprep import cli
from gazeprep.commands.text import MENTION_ROWS_SCHEMA, SUMMARY_SCHEMA
from gazeprep.errors import GazeprepError, StorageError
from gazeprep.text.labeler import Labeler, Mention, report_status
from gazeprep.text.labels import label_ids as canonical_label_ids
from gazeprep.text.report_tables import read_table, summary_to_wide, table_format, write_table

# id -> report text. Ids with leading zeros, one with a comma (quoted in CSV), one empty report.
REPORTS = {
    "001": "No pneumothorax. Small left pleural effusion.",
    "002": "Possible pneumothorax. Large pneumothorax. No pneumothorax on the left.",
    "003": "Possible left lower lobe atelectasis. No atelectasis on the right.",
    "0040": "Cardiomegaly. Possible mild edema.",
    "005": "",
    "006": "To evaluate for pneumothorax.",
    "007": "To evaluate for pneumothorax. No pneumothorax.",
    "08,b": "Stable, mild cardiomegaly with normal caliber pulmonary vasculature.",
    "009": "Left basilar consolidation. No consolidation on the right.",
}

# The report-level status of every label mentioned (all other labels: absent), read by hand. Implied
# labels count (labels.yaml: pleural_effusion -> pleural_abnormality; atelectasis, edema,
# consolidation -> opacity).
EXPECTED_STATUS = {
    "001": {"pneumothorax": "negative", "pleural_effusion": "positive", "pleural_abnormality": "positive"},
    "002": {"pneumothorax": "positive"},  # uncertain + positive + negative mentions
    "003": {"atelectasis": "uncertain", "opacity": "uncertain"},  # uncertain + negative
    "0040": {"enlarged_cardiac_silhouette": "positive", "edema": "uncertain", "opacity": "uncertain"},
    "005": {},
    "006": {"pneumothorax": "hypothetical"},
    "007": {"pneumothorax": "negative"},  # hypothetical + negative
    "08,b": {"enlarged_cardiac_silhouette": "positive"},  # "with normal ..." does not negate it
    "009": {"consolidation": "positive", "opacity": "positive"},  # positive + negative
}
# CheXpert codes of the wide layout (hypothetical -> not mentioned).
CODE = {"positive": 1, "uncertain": -1, "negative": 0}


def chexpert_dict_to_vec(codes: list[int]) -> int | None:
    """CheXpert's ``Aggregator.dict_to_vec`` for one category: its tests in its order."""
    if not codes:
        return None
    if len(codes) == 1:
        return codes[0]
    if 0 in codes and -1 in codes:
        return -1
    if 0 in codes and 1 in codes:
        return 1
    if -1 in codes and 1 in codes:
        return 1
    return codes[0]


def run(argv, capsys):
    capsys.readouterr()
    code = cli.run([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture()
def reports_csv(tmp_path):
    path = tmp_path / "reports.csv"
    pl.DataFrame({"report_id": list(REPORTS), "text": list(REPORTS.values())}).write_csv(path)
    assert "\n001," in path.read_text()  # written by hand-known text: the id is 001, not 1
    return path


def label_args(src, *extra):
    return ["label-reports", src, "--id-column", "report_id", "--text-column", "text", "--quiet", *extra]


def emitted_labels() -> tuple[str, ...]:
    return Labeler.from_rules().label_ids


# --- long layout ----------------------------------------------------------------------------------


def test_long_outputs_read_back_equal_in_every_format(reports_csv, tmp_path, capsys):
    frames = {}
    for ext in ("parquet", "csv", "tsv"):
        m, s = tmp_path / f"m.{ext}", tmp_path / f"s.{ext}"
        code, out, err = run(label_args(reports_csv, "--out", m, "--summary", s), capsys)
        assert code == 0, err
        assert f"-> {m}" in out
        frames[ext] = (read_table(m, MENTION_ROWS_SCHEMA), read_table(s, SUMMARY_SCHEMA))
    assert frames["parquet"][0].schema == pl.Schema(MENTION_ROWS_SCHEMA)
    for ext in ("csv", "tsv"):
        assert frames[ext][0].equals(frames["parquet"][0]), ext
        assert frames[ext][1].equals(frames["parquet"][1]), ext
    # the file content really is the named format
    assert (tmp_path / "m.parquet").read_bytes()[:4] == b"PAR1"
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == ",".join(MENTION_ROWS_SCHEMA)
    assert (tmp_path / "m.tsv").read_text().splitlines()[0] == "\t".join(MENTION_ROWS_SCHEMA)
    # known answers
    summ = frames["csv"][1]
    labels = emitted_labels()
    assert summ.height == len(REPORTS) * len(labels)
    got = {(r["id"], r["label"]): r["status"] for r in summ.iter_rows(named=True)}
    for rid, expected in EXPECTED_STATUS.items():
        for lab in labels:
            assert got[(rid, lab)] == expected.get(lab, "absent"), (rid, lab)
    assert summ["id"].unique(maintain_order=True).to_list() == list(REPORTS)  # input order, ids as text


def test_ids_keep_leading_zeros_and_commas(reports_csv, tmp_path, capsys):
    m, s = tmp_path / "m.csv", tmp_path / "w.csv"
    assert run(label_args(reports_csv, "--out", m), capsys)[0] == 0
    assert run(label_args(reports_csv, "--out", s, "--wide"), capsys)[0] == 0
    lines = s.read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["001", "002", "003", "0040", "005", "006", "007", '"08', "009"]
    assert lines[8].startswith('"08,b",')
    assert any(ln.startswith("0040,") for ln in m.read_text().splitlines())
    assert read_table(s)["id"].to_list() == list(REPORTS)
    pq = tmp_path / "w.parquet"
    assert run(label_args(reports_csv, "--out", pq, "--wide"), capsys)[0] == 0
    assert pl.read_parquet(pq).schema["id"] == pl.Utf8


# --- wide layout ----------------------------------------------------------------------------------


def expected_wide(labels) -> dict[str, dict[str, int | None]]:
    return {rid: {lab: CODE.get(st.get(lab, "absent")) for lab in labels} for rid, st in EXPECTED_STATUS.items()}


def test_wide_known_answers_csv_and_parquet(reports_csv, tmp_path, capsys):
    w_csv, w_pq = tmp_path / "w.csv", tmp_path / "w.parquet"
    code, out, err = run(label_args(reports_csv, "--out", w_csv, "--summary", w_pq, "--wide"), capsys)
    assert code == 0, err
    labels = emitted_labels()
    assert f"{len(REPORTS)} reports x {len(labels)} labels (wide)" in out
    pq = pl.read_parquet(w_pq)
    assert pq.columns == ["id", *labels]
    order = canonical_label_ids()
    assert [order.index(x) for x in labels] == sorted(order.index(x) for x in labels)  # labels.yaml order
    assert pq.schema["id"] == pl.Utf8 and all(pq.schema[lab] == pl.Int8 for lab in labels)
    cs = read_table(w_csv, {lab: pl.Int8 for lab in labels})
    assert cs.equals(pq)
    assert pq["id"].to_list() == list(REPORTS)
    want = expected_wide(labels)
    for row in pq.iter_rows(named=True):
        assert {lab: row[lab] for lab in labels} == want[row["id"]], row["id"]
    # the empty report and the hypothetical-only report are all empty fields in the CSV
    empty_row = next(ln for ln in w_csv.read_text().splitlines() if ln.startswith("005,"))
    assert empty_row == "005" + "," * len(labels)
    assert pq.filter(pl.col("id") == "006")["pneumothorax"].to_list() == [None]


def test_wide_agrees_with_chexpert_aggregation_of_the_mentions(reports_csv, tmp_path, capsys):
    """The wide codes against CheXpert's dict_to_vec applied to the mention rows: equal wherever a
    label has at most two distinct codes; report 002 (codes -1, 1, 0) is -1 in CheXpert's code and
    1 here (the documented difference)."""
    m, w = tmp_path / "m.parquet", tmp_path / "w.parquet"
    assert run(label_args(reports_csv, "--out", m), capsys)[0] == 0
    assert run(label_args(reports_csv, "--out", w, "--wide"), capsys)[0] == 0
    mentions, wide = pl.read_parquet(m), pl.read_parquet(w)
    codes: dict[tuple[str, str], list[int]] = {}
    for r in mentions.iter_rows(named=True):
        c = 0 if r["negated"] else None if r["hypothetical"] else -1 if r["uncertain"] else 1
        if c is not None:
            codes.setdefault((r["id"], r["label"]), []).append(c)
    assert sorted(codes[("002", "pneumothorax")]) == [-1, 0, 1]
    compared = 0
    for row in wide.iter_rows(named=True):
        for lab in wide.columns[1:]:
            cx = chexpert_dict_to_vec(codes.get((row["id"], lab), []))
            if (row["id"], lab) == ("002", "pneumothorax"):
                assert (cx, row[lab]) == (-1, 1)
            else:
                assert row[lab] == cx, (row["id"], lab)
                compared += cx is not None
    assert compared >= 12


def _m(label: str, status: str) -> Mention:
    return Mention(
        label,
        label,
        0,
        0,
        1,
        negated=status == "negative",
        uncertain=status == "uncertain",
        hypothetical=status == "hypothetical",
    )


@pytest.mark.parametrize(
    "statuses",
    [c for n in range(1, 5) for c in itertools.combinations(["positive", "uncertain", "negative", "hypothetical"], n)],
)
def test_precedence_of_every_status_combination(statuses):
    # hand table: positive wins, then uncertain, then negative; hypothetical alone is not mentioned
    want = 1 if "positive" in statuses else -1 if "uncertain" in statuses else 0 if "negative" in statuses else None
    mentions = [_m("edema", s) for s in statuses] + [_m("edema", s) for s in reversed(statuses)]
    st = report_status(mentions)["edema"]
    summary = pl.DataFrame({"id": ["r"], "label": ["edema"], "status": [st]})
    assert summary_to_wide(summary, ["edema"])["edema"].to_list() == [want]
    codes = [CODE[s] for s in statuses if s in CODE]
    if len(set(codes)) < 3:  # CheXpert's rule agrees except for the three-code case
        assert want == chexpert_dict_to_vec(codes)


def test_summary_to_wide_rows_and_columns():
    summary = pl.DataFrame(
        {"id": ["b", "b", "a"], "label": ["x", "y", "x"], "status": ["negative", "absent", "uncertain"]}
    )
    w = summary_to_wide(summary, ["y", "x", "z"], ids=["a", "c", "b"])
    assert w.columns == ["id", "y", "x", "z"]
    assert w.rows() == [("a", None, -1, None), ("c", None, None, None), ("b", None, 0, None)]
    with pytest.raises(ValueError):
        summary_to_wide(summary, ["x"], ids=["a", "a"])
    with pytest.raises(ValueError):
        summary_to_wide(pl.concat([summary, summary]), ["x"])


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "name"), [("--out", "m.txt"), ("--out", "m"), ("--summary", "s.json"), ("--out", "m.csv.gz")]
)
def test_unknown_extension_is_a_usage_error(reports_csv, tmp_path, capsys, option, name):
    target = tmp_path / name
    args = {"--out": tmp_path / "ok.parquet", "--summary": None}
    args[option] = target
    argv = label_args(reports_csv, "--out", args["--out"])
    if args["--summary"] is not None:
        argv += ["--summary", args["--summary"]]
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    errors = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0] and ".parquet, .csv or .tsv" in errors[0], err
    assert not target.exists() and not (tmp_path / "ok.parquet").exists()


def test_same_file_for_out_and_summary_is_a_usage_error(reports_csv, tmp_path, capsys):
    code, out, err = run(
        label_args(reports_csv, "--out", tmp_path / "x.csv", "--summary", tmp_path / "." / "x.csv"), capsys
    )
    assert code == 2 and "--summary" in err and "Traceback" not in err


def test_duplicate_id_is_one_error_line_naming_the_row(tmp_path, capsys):
    src = tmp_path / "r.csv"
    src.write_text("report_id,text\n01,No edema.\n02,Edema.\n01,Effusion.\n")
    code, out, err = run(label_args(src, "--out", tmp_path / "w.csv", "--wide"), capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "row 3" in lines[0] and "'01'" in lines[0], err
    assert not (tmp_path / "w.csv").exists()


def test_upper_case_extension_and_atomic_replace(reports_csv, tmp_path, capsys):
    out = tmp_path / "sub" / "M.CSV"
    assert run(label_args(reports_csv, "--out", out), capsys)[0] == 0
    assert out.read_text().startswith("id,label,")
    first = out.read_bytes()
    assert run(label_args(reports_csv, "--out", out, "--wide"), capsys)[0] == 0
    assert out.read_bytes() != first and out.read_text().startswith("id,abnormal_mediastinal_contour,")
    assert sorted(p.name for p in out.parent.iterdir()) == ["M.CSV"]  # no temporary file left


def test_write_table_errors(tmp_path):
    frame = pl.DataFrame({"id": ["1"]})
    with pytest.raises(GazeprepError, match=re.escape(".parquet, .csv or .tsv")):
        write_table(frame, tmp_path / "x.xlsx")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match=re.escape(str(blocker))):
        write_table(frame, blocker / "x.csv")
    assert table_format("A.Parquet") == "parquet" and table_format("a.tsv") == "tsv"
