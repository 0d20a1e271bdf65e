"""`killsync demo`: try killsync end to end without registering an application."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from killcli.cli.context import app_context, examples, print_json
from killcli.console import PlainTextColumn, is_interactive
from killcli.demo import run_demo
from killcli.worker import JobReport


def demo(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            hidden=True,  # before 0.2: the root option now says where the demo writes
            show_default=False,
        ),
    ] = None,
    characters: Annotated[int, typer.Option("--characters", help="Simulated characters.")] = 5,
    killmails: Annotated[
        int, typer.Option("--killmails", help="Killmails in the simulated world.")
    ] = 250,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run queue -> worker -> stats against the bundled ESI simulator (no setup needed).

    The killmails go to a temporary SQLite file, or to the database named by the root
    option `killsync --database-url URL demo` (never to KILLSYNC_DATABASE_URL or the config
    file's: a demo does not write into the database you run).
    """
    app_ctx = app_context(ctx)
    if database_url is None and app_ctx.settings.sources.get("database_url") == "flag":
        database_url = app_ctx.settings.database_url
    show = is_interactive() and not as_json and app_ctx.verbosity >= 0
    columns = (
        PlainTextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=app_ctx.console, disable=not show) as progress:
        task = progress.add_task("characters synced", total=None)

        def on_job(report: JobReport, total: int) -> None:
            progress.update(task, total=total, advance=1)
            if not show:
                app_ctx.info(report.line())

        result = run_demo(
            database_url=database_url,
            characters=characters,
            killmails=killmails,
            on_step=app_ctx.info,
            on_job=on_job,
        )
    url = result.settings.database_url
    if as_json:
        print_json("demo", result.as_dict())
        return
    app_ctx.info(
        f"\ndemo done in {result.elapsed_s:.1f} s: {result.characters} characters, "
        f"{result.stats.killmails_total} killmails saved, {result.esi_requests} ESI/SSO "
        f"requests, {result.bodies_fetched_twice} bodies fetched twice.\n\nExplore it:\n"
        f"  export KILLSYNC_DATABASE_URL={url}\n"
        "  killsync stats\n  killsync users list\n  killsync export --output demo.jsonl"
    )


def register(root: typer.Typer) -> None:
    root.command(
        "demo",
        epilog=examples("killsync demo", "killsync --database-url sqlite:///demo.db demo --json"),
    )(demo)
