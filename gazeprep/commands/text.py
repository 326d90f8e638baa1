"""CLI commands of the text area: ``gazeprep label-reports``."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import typer

from gazeprep.commands import out_file, usage_error
from gazeprep.errors import GazeprepError, InputFormatError, StorageError

MENTION_ROWS_SCHEMA = {
    "id": pl.Utf8,
    "label": pl.Utf8,
    "phrase": pl.Utf8,
    "sentence_idx": pl.Int32,
    "char_start": pl.Int32,
    "char_end": pl.Int32,
    "negated": pl.Boolean,
    "uncertain": pl.Boolean,
    "hypothetical": pl.Boolean,
}
SUMMARY_SCHEMA = {"id": pl.Utf8, "label": pl.Utf8, "status": pl.Utf8}


def label_reports(
    input_csv: Path,
    id_column: str,
    text_column: str,
    rules_dir: Path | None = None,
    profile: str | None = None,
    batch_size: int = 512,
    progress: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Label free-text reports of a CSV file.

    Returns ``(mentions, summary)``: one row per mention (id, label, phrase, sentence_idx,
    char_start, char_end, negated, uncertain, hypothetical; offsets into that row's text, sentence_idx counted in
    that text), and one row per report and emittable label (id, label, status in positive /
    uncertain / negative / hypothetical / absent). Empty texts have no mentions (every label absent).
    """
    from tqdm import tqdm

    from gazeprep.text.labeler import Labeler

    if not input_csv.is_file():
        raise GazeprepError(f"{input_csv}: file not found")
    try:
        df = pl.read_csv(input_csv, infer_schema_length=0)  # every column as text
    except pl.exceptions.PolarsError as exc:  # ComputeError, NoDataError, ... for a malformed CSV
        raise InputFormatError(input_csv, f"not a readable CSV file: {' '.join(str(exc).split())}") from None
    except OSError as exc:
        raise StorageError.from_os_error(exc, input_csv) from exc
    for col in (id_column, text_column):
        if col not in df.columns:
            raise InputFormatError(input_csv, f"no column {col!r} (columns: {', '.join(df.columns)})", column=col)
    ids = df[id_column].to_list()
    texts = df[text_column].to_list()
    first_row: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x is None or x == "":
            raise InputFormatError(input_csv, "empty id", row=i + 1, column=id_column)
        if x in first_row:  # an id names one report (one summary row per label, one wide row)
            raise InputFormatError(
                input_csv, f"duplicate id {x!r} (first at row {first_row[x]})", row=i + 1, column=id_column
            )
        first_row[x] = i + 1
    labeler = Labeler.from_rules(rules_dir, profile=profile)
    label_ids = labeler.label_ids
    m_rows: list[dict] = []
    s_rows: list[dict] = []
    bar = tqdm(total=len(texts), desc="label-reports", unit="report", disable=not progress)
    for k in range(0, len(texts), batch_size):
        chunk_ids = ids[k : k + batch_size]
        chunk = [t or "" for t in texts[k : k + batch_size]]
        for rid, ms in zip(chunk_ids, labeler.label_texts(chunk)):
            for m in ms:
                m_rows.append(
                    {
                        "id": rid,
                        "label": m.label,
                        "phrase": m.phrase,
                        "sentence_idx": m.sentence_idx,
                        "char_start": m.char_start,
                        "char_end": m.char_end,
                        "negated": m.negated,
                        "uncertain": m.uncertain,
                        "hypothetical": m.hypothetical,
                    }
                )
            st = labeler.report_status(ms)  # the profile's aggregation
            s_rows.extend({"id": rid, "label": lab, "status": st.get(lab, "absent")} for lab in label_ids)
        bar.update(len(chunk))
    bar.close()
    return pl.DataFrame(m_rows, schema=MENTION_ROWS_SCHEMA), pl.DataFrame(s_rows, schema=SUMMARY_SCHEMA)


def table_file(value: Path | None) -> Path | None:
    """Option callback for a table file: not a folder (:func:`out_file`), and an extension that names
    its format (.parquet, .csv or .tsv); anything else is a usage error (exit 2)."""
    from gazeprep.text.report_tables import table_format

    value = out_file(value)
    if value is not None:
        try:
            table_format(value)
        except GazeprepError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""

    @app.command("label-reports")
    def label_reports_cmd(
        input_csv: Path = typer.Argument(..., metavar="REPORTS_CSV", help="CSV file with one report per row."),
        id_column: str = typer.Option(..., "--id-column", help="Column holding the report id."),
        text_column: str = typer.Option(..., "--text-column", help="Column holding the report text."),
        out: Path = typer.Option(
            ...,
            "--out",
            callback=table_file,
            help="Mentions table (one row per mention); with --wide the wide report table. "
            "Format from the extension: .parquet, .csv or .tsv.",
        ),
        summary: Path | None = typer.Option(
            None,
            "--summary",
            callback=table_file,
            help="Report-level table: one row per report and label (status positive/uncertain/negative/"
            "hypothetical/absent); with --wide one row per report. Format from the extension.",
        ),
        wide: bool = typer.Option(
            False,
            "--wide",
            help="Write --out and --summary as one row per report with one column per label (labels.yaml order), "
            "CheXpert codes: 1 positive, 0 negative, -1 uncertain, empty not mentioned or hypothetical.",
        ),
        rules: Path | None = typer.Option(None, "--rules", help="Rules folder (default: the bundled rules/)."),
        profile: str | None = typer.Option(
            None,
            "--profile",
            help="Labeler profile: gazeprep (default, most accurate) or lanfredi2023 (paper 004's labeler).",
        ),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Label free-text reports with the rule-based labeler (mentions, negation, uncertainty)."""
        from gazeprep.text.labeler import Labeler
        from gazeprep.text.report_tables import summary_to_wide, write_table

        if summary is not None and summary.resolve() == out.resolve():
            raise usage_error("names the same file as --out", "--summary")
        mentions, summ = label_reports(
            input_csv, id_column, text_column, rules_dir=rules, profile=profile, progress=not quiet
        )
        n_reports = summ["id"].n_unique() if summ.height else 0
        if wide:
            labels = Labeler.from_rules(rules, profile=profile).label_ids
            table = summary_to_wide(summ, labels)  # rows in input order (ids are unique)
            outputs = ((out, table), (summary, table))
        else:
            outputs = ((out, mentions), (summary, summ))
        for path, frame in outputs:
            if path is not None:
                write_table(frame, path)
        what = (
            f"{n_reports} reports x {len(labels)} labels (wide)"
            if wide
            else f"{mentions.height} mentions in {n_reports} reports"
        )
        typer.echo(f"{what} -> {out}" + (f", summary -> {summary}" if summary is not None else ""))
