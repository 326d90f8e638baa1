"""``gazeprep info`` and ``gazeprep rejects``: what an export holds and what it left out."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _human_bytes(n: int) -> str:
    """``1536 -> '1.5 KiB'`` (binary units)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable, keeps type checkers content


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info_cmd(
        export: Path = typer.Argument(..., metavar="EXPORT", help="Export folder (holds manifest.json)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text"),
    ) -> None:
        """What an export holds: recipe and hash, counts, targets, shapes, dtype, size, versions."""
        from gazeprep.export import load_export
        from gazeprep.export.inspect import export_info

        info = export_info(load_export(export))
        if as_json:
            typer.echo(json.dumps(info, indent=2, sort_keys=True))
            return
        shapes = ", ".join(f"{name} {'x'.join(map(str, s))}" for name, s in info["arrays"].items()) or "none"
        lines = [
            f"export     {info['path']} ({info['kind']}, built {info['built_at']})",
            f"dataset    {info['dataset']}",
            f"recipe     {info['recipe']} (hash {str(info['recipe_hash'])[:12]})",
        ]
        if info.get("labeler_profile"):
            lines.append(f"labeler    {info['labeler_profile']}")
        lines += [
            f"cases      {info['cases']} ({info['cases_with_maps']} with maps, {info['rejected_cases']} with rejects)",
            f"maps       {info['maps']} {info['dtype']} in {shapes}",
            "targets    " + (", ".join(f"{t} ({n})" for t, n in info["targets"].items()) or "none"),
            "tables     " + ", ".join(f"{t} {n}" for t, n in info["tables"].items()),
            f"size       {_human_bytes(info['bytes_export'])} export"
            + (
                f" + {_human_bytes(info['bytes_parts'])} resumable parts (.parts, safe to delete)"
                if info["bytes_parts"]
                else ""
            ),
            "versions   " + ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items())),
        ]
        typer.echo("\n".join(lines))
        if info["rejected_cases"]:
            typer.echo(f"next: gazeprep rejects {export}", err=True)

    @app.command("rejects")
    def rejects_cmd(
        export: Path = typer.Argument(..., metavar="EXPORT", help="Export folder (holds manifest.json)"),
        stage: str | None = typer.Option(
            None, "--stage", metavar="STAGE", help="Only this stage (ingest, text, render, ...)"
        ),
        reason_contains: str | None = typer.Option(
            None, "--reason-contains", metavar="TEXT", help="Only reasons containing TEXT (case-insensitive)"
        ),
        limit: int = typer.Option(20, "--limit", min=0, help="Rows to list after the groups (0 = all)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text"),
    ) -> None:
        """What was rejected and why: grouped by reason with counts, then the rows with file and 1-based row."""
        from gazeprep.export import load_export
        from gazeprep.export.inspect import format_reject_group, format_reject_row, rejects_summary

        s = rejects_summary(load_export(export), stage=stage, reason_contains=reason_contains)
        if as_json:
            payload = {
                "table": str(s.table),
                "groups": s.groups.to_dicts(),
                "rows": s.rows.to_dicts(),
            }
            typer.echo(json.dumps(payload, indent=2, default=str))
            return
        if s.rows.height == 0:
            typer.echo("no rejects" + (" match the filter" if stage or reason_contains else ""))
            return
        typer.echo(f"{s.rows.height} rejects in {s.groups.height} groups (by stage and reason):")
        for g in s.groups.iter_rows(named=True):
            typer.echo("  " + format_reject_group(g))
        rows = s.rows if limit == 0 else s.rows.head(limit)
        typer.echo("rows:")
        for r in rows.iter_rows(named=True):
            typer.echo("  " + format_reject_row(r))
        if rows.height < s.rows.height:
            typer.echo(f"  ... {s.rows.height - rows.height} more (--limit 0 lists all)")
        typer.echo(f"full table: {s.table}")
