"""`killsync import` and `killsync export`: killmails in and out as ESI bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from killcli.cli import params
from killcli.cli.context import app_context, examples, print_json
from killcli.cli.progressview import count_bar
from killcli.errors import ExitCode
from killcli.exporter import ExportFormat, export_killmails, open_output
from killcli.importer import import_killmails
from killcli.textsafe import sanitize
from killcli.values import SaveTimeValuer


def register(app: typer.Typer) -> None:
    app.command(
        "import",
        epilog=examples(
            "killsync import killmails/",
            "killsync import killmails-2024-07-24.tar.bz2 killmails-2024-07-25.tar.bz2",
            "killsync import backup.jsonl --json",
        ),
    )(import_cmd)
    app.command(
        "export",
        epilog=examples(
            "killsync export --output all.jsonl",
            "killsync export --character 2112345678 --since 2026-01-01 --format json",
            "killsync export --corporation 98000001 --output corp.jsonl",
            "killsync export --values --since 2026-01-01 --output valued.jsonl",
        ),
    )(export_cmd)


def import_cmd(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help=(
                ".json/.jsonl files (optionally .gz/.bz2), EVE Ref .tar.bz2 archives, directories."
            ),
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Import ESI killmail bodies (backfill beyond ESI's 90 days)."""
    app_ctx = app_context(ctx)
    db = app_ctx.database(create=True)  # bringing killmails in may start a database
    show = not no_progress and app_ctx.verbosity >= 0
    with count_bar(app_ctx.console, show=show, unit="saved") as progress:
        task = progress.add_task("importing", total=None)
        result = import_killmails(
            db,
            paths,
            on_file=lambda p: progress.update(task, description=p.name),
            on_batch=lambda n: progress.advance(task, n),
            valuer=SaveTimeValuer(app_ctx.settings.price_region_id, keep_window=True),
        )
    for error in result.errors:
        app_ctx.console.print(f"rejected: {sanitize(str(error))}")
    if result.rejected > len(result.errors):
        app_ctx.console.print(f"... and {result.rejected - len(result.errors)} more rejected")
    summary = result.as_dict()
    if as_json:
        print_json("import", summary)
    else:
        app_ctx.info(
            "imported: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items())
        )
    if result.rejected:
        raise typer.Exit(int(ExitCode.PARTIAL))


def export_cmd(
    ctx: typer.Context,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl (one body per line) or json.")
    ] = "jsonl",
    character: Annotated[
        int | None,
        typer.Option(
            "--character",
            help="Only killmails this tracked character received.",
            parser=params.character_id,
        ),
    ] = None,
    corporation: Annotated[
        int | None,
        typer.Option(
            "--corporation",
            help="Only killmails this tracked corporation's list held (its kills and losses).",
            parser=params.corporation_id,
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only killmails at or after this date (UTC).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (default "
            "stdout): a regular file is replaced "
            "atomically, a FIFO or device written in "
            "place, a symlink to a file refused.",
        ),
    ] = None,
    values: Annotated[
        bool,
        typer.Option(
            "--values",
            help='Each line {"killmail": BODY, "value": {total, destroyed, dropped, fitted, '
            "ship, price_date, method, unpriced_type_ids}} (null: not valued yet).",
        ),
    ] = False,
) -> None:
    """Export stored killmails as ESI bodies, exactly as ESI sent them."""
    app_ctx = app_context(ctx)
    since_at = params.parse_since(since)
    db = app_ctx.database()
    with open_output(output) as out:
        result = export_killmails(
            db,
            out,
            fmt=fmt,
            character_id=character,
            corporation_id=corporation,
            since=since_at,
            values=values,
        )
    for reason in result.skipped:
        app_ctx.console.print(f"skipped: {sanitize(reason)}")
    app_ctx.info(
        f"exported {result.written} killmails"
        + (f", skipped {result.skipped_count}" if result.skipped_count else "")
    )
    if result.skipped_count:
        raise typer.Exit(int(ExitCode.PARTIAL))
